// Tokenizers: the interface every stage uses, and the loader that picks the right one from the user's files.
//   llama2.c tokenizer files (tok512.bin): SentencePiece-style BPE with scores, BOS, dummy prefix, byte fallback.
//   Hugging Face byte-level BPE (GPT-2 family, Qwen2): vocab.json + merges.txt, or tokenizer.json.
//   GGUF files' own tokenizer (tokenizer.ggml.* metadata): byte-level BPE by pre-tokenizer family, or
//   SentencePiece BPE by scores with byte fallback (gguf_tokenizer.h).
//   SentencePiece BPE tokenizer.model (Llama 2, Mistral), read by reglage and converted as transformers converts it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace reglage::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text to ids; BOS/EOS prepended/appended when asked and when the tokenizer has them.
  virtual std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const = 0;

  // encode with the reading of special-token text chosen. parse_special = true is what encode does: the text of
  // a special token ("<|im_start|>", "<s>", a GGUF CONTROL token) becomes that token. false reads it as ordinary
  // characters (llama.cpp's parse_special = false, transformers' split_special_tokens = True); added tokens that
  // are not special (GGUF USER_DEFINED) are matched either way. llama2.c tokenizers match no token text, so
  // the flag changes nothing there (this default).
  virtual std::vector<int64_t> encode_special(const std::string& text, bool add_bos, bool add_eos,
                                              bool parse_special) const {
    (void)parse_special;
    return encode(text, add_bos, add_eos);
  }

  // The first min(n, max_tokens + 1) tokens of encode(text, false, false), where n is its length: all of them
  // when they fit, else an exact prefix one token longer than max_tokens, so the caller knows the text did not
  // fit. Both tokenizers stop early (at a boundary no token can cross), so a huge text costs about what is
  // kept; data readers pass what max_seq_len leaves. This default encodes everything and cuts.
  virtual std::vector<int64_t> encode_prefix(const std::string& text, size_t max_tokens) const {
    std::vector<int64_t> ids = encode(text, false, false);
    if (ids.size() > max_tokens) ids.resize(max_tokens + 1);
    return ids;
  }

  // Bytes of one token given the token before it (llama2.c drops a piece's leading space right after BOS).
  virtual std::string decode_piece(int64_t prev_token, int64_t token) const = 0;

  // Bytes of a whole sequence: the pieces joined (special tokens such as BOS/EOS contribute nothing).
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;

  virtual int64_t vocab_size() const = 0;

  // A token's string as the vocabulary holds it ("<|im_end|>", "<s>", "▁the"): what transformers passes to a chat
  // template as bos_token / eos_token. Throws for an id outside the vocabulary.
  virtual std::string token_text(int64_t id) const = 0;

  // Writes this tokenizer's files into a Hugging Face model directory (tokenizer.json, tokenizer_config.json,
  // special_tokens_map.json, and for llama2.c tokenizers also the original tokenizer.bin).
  virtual void save_hf(const std::string& dir) const = 0;

  int64_t bos_id() const { return bos_id_; }  // -1 when the tokenizer has none
  // Whether the model's own tokenizer puts BOS / EOS around a text (transformers' add_special_tokens=True):
  // llama2.c and SentencePiece-Llama tokenizers add BOS; GPT-2, Qwen2 and SmolLM add nothing. Never a default:
  // each loader sets it from what the files say (add_bos_token, the post_processor's template, GGUF metadata).
  bool add_bos() const { return add_bos_ && bos_id_ >= 0; }
  bool add_eos() const { return add_eos_ && eos_id_ >= 0; }
  // The model's chat template (Jinja source) as its tokenizer files carry it: tokenizer_config.json's
  // "chat_template" or GGUF's tokenizer.chat_template; empty when there is none. save_hf writes it back.
  const std::string& chat_template() const { return chat_template_; }
  int64_t eos_id() const { return eos_id_; }  // -1 when the tokenizer has none
  // Tokens that end generation (EOS, and for llama2.c models also BOS, as run.c stops on it).
  const std::vector<int64_t>& stop_ids() const { return stop_ids_; }

 protected:
  int64_t bos_id_ = -1;
  int64_t eos_id_ = -1;
  bool add_bos_ = false;
  bool add_eos_ = false;
  std::string chat_template_;
  std::vector<int64_t> stop_ids_;
};

// Loads a tokenizer from a path:
//   - a llama2.c tokenizer file (*.bin),
//   - a tokenizer.json file,
//   - a GGUF file (named *.gguf or starting with "GGUF"): the tokenizer in its tokenizer.ggml.* metadata,
//   - a SentencePiece tokenizer.model (*.model; BPE models only),
//   - a directory holding tokenizer.bin, tokenizer.json, vocab.json + merges.txt, or tokenizer.model (a Hugging
//     Face model dir), tried in that order;
//     BOS/EOS ids come from the directory's tokenizer_config.json / config.json / generation_config.json.
// expected_vocab: the model's vocabulary size, checked against the tokenizer's (0 = no check).
// Throws reglage::Error naming the file and the problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path, int64_t expected_vocab = 0);

}  // namespace reglage::tokenizer
