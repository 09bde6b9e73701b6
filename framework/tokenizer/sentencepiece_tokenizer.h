// A model directory with only tokenizer.model (a SentencePiece protobuf: Llama 2, Mistral, TinyLlama), encoded by
// libsentencepiece the way transformers' LlamaTokenizer encodes it: BOS/EOS/<unk> strings in the text are matched
// as special tokens, and only a text that starts the input (and does not start with a space) gets the dummy "▁"
// prefix (Metaspace prepend_scheme "first", legacy=false).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "framework/tokenizer/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace reglage::tokenizer {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // model_path: tokenizer.model. add_bos / add_eos default to LlamaTokenizer's (true / false) until
  // load_config reads tokenizer_config.json.
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer() override;
  // tokenizer_config.json in dir (if any): add_bos_token, add_eos_token, bos_token, eos_token, chat_template.
  void load_config(const std::string& dir);

  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const override;
  // Text between special tokens is encoded one span at a time, so encode_prefix stops after the span that
  // passes max_tokens.
  std::vector<int64_t> encode_prefix(const std::string& text, size_t max_tokens) const override;
  std::string decode_piece(int64_t prev_token, int64_t token) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  // Writes tokenizer.model, tokenizer_config.json (LlamaTokenizer) and special_tokens_map.json; transformers
  // converts tokenizer.model itself (no tokenizer.json is written).
  void save_hf(const std::string& dir) const override;

 private:
  void encode_into(const std::string& text, size_t max_tokens, std::vector<int64_t>* out) const;
  std::string join(const std::vector<int64_t>& ids) const;  // pieces as text, before the leading space is dropped

  std::string path_;
  std::string proto_;                                             // tokenizer.model's bytes
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;      // as the model says (dummy prefix)
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_bare_; // the same without the dummy prefix
  std::vector<std::string> pieces_;                                // (vocab) piece strings
  std::vector<char> special_;                                      // (vocab) control and unknown pieces
  std::vector<int> byte_;                                          // (vocab) byte value of <0xNN> pieces, else -1
  std::vector<std::pair<std::string, int64_t>> specials_;          // matched in text, longest first
  int64_t unk_id_ = -1;
};

}  // namespace reglage::tokenizer
