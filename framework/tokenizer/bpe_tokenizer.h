// Hugging Face BPE tokenizers: byte-level (GPT-2 family, Qwen2, Llama 3, SmolLM) and SentencePiece-style with
// byte fallback (Llama 2, Mistral, TinyLlama, Phi-3 tokenizer.json files). A text is split at added tokens,
// normalized, pre-tokenized into pieces, and merges apply by rank within each piece (a heap of candidate pairs,
// O(n log n) per piece). Pieces are encoded one at a time, and a piece is cut at symbols no merge uses, so
// encode_prefix stops as soon as it has enough. Loads vocab.json + merges.txt, or a tokenizer.json
// (tokenizer_json.cpp); the text steps are in hf_pipeline.h.
#pragma once
#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "framework/tokenizer/hf_pipeline.h"
#include "framework/tokenizer/tokenizer.h"

namespace reglage::tokenizer {

class BpeTokenizer : public Tokenizer {
 public:
  // GPT-2 files: vocab.json maps token -> id; merges.txt holds one "a b" merge per line, by rank
  // (a leading "#version" line is skipped). Text is split with the GPT-2 regex.
  static std::unique_ptr<BpeTokenizer> from_vocab_merges(const std::string& vocab_path, const std::string& merges_path);
  // A tokenizer.json whose model is BPE: its normalizer, pre-tokenizer, decoder, post-processor (which decides
  // add_bos / add_eos) and added tokens (with lstrip, rstrip, single_word, normalized, special).
  static std::unique_ptr<BpeTokenizer> from_tokenizer_json(const std::string& path);
  // The same from a tokenizer.json already parsed (or built: sentencepiece_model.h); source names it in messages.
  static std::unique_ptr<BpeTokenizer> from_tokenizer_json_value(const nlohmann::json& j, const std::string& source);

  // A byte-level BPE read elsewhere (GGUF metadata, gguf_tokenizer.cpp): every field already parsed.
  struct Parts {
    struct Added {
      std::string content;  // matched whole in raw text
      int64_t id;
      bool special;  // matched only when special tokens are parsed; decodes to nothing
    };
    std::string source;                                        // the file, for messages
    std::vector<std::pair<std::string, int64_t>> vocab;        // byte-mapped token -> id
    std::vector<std::pair<std::string, std::string>> merges;   // (left, right) by rank
    std::vector<std::string> split_regexes;  // Split patterns (Isolated) in order, then ByteLevel without regex
    std::vector<Added> added;                // replaces the <|endoftext|> default
    bool ignore_merges = false;
    int64_t bos_id = -1, eos_id = -1;
    bool add_bos = false, add_eos = false;
    std::vector<int64_t> stop_ids;
    std::string chat_template;
  };
  static std::unique_ptr<BpeTokenizer> from_parts(const Parts& parts);

  // BOS/EOS/stop ids from a Hugging Face model directory: tokenizer_config.json's bos_token/eos_token
  // (strings or {content: ...}), then config.json and generation_config.json ids (eos_token_id may be a
  // list; every EOS id becomes a stop id). add_bos_token / add_eos_token are read when no tokenizer.json
  // post-processor decided, or when tokenizer_class is a Llama one (LlamaTokenizerFast rebuilds its template
  // from them). Missing files are skipped.
  void load_special_ids(const std::string& dir);
  // BOS/EOS ids a loader knows from outside tokenizer.json (a SentencePiece model's trainer_spec), set before
  // load_special_ids reads the configs; EOS becomes the stop id. -1: none.
  void set_special_ids(int64_t bos_id, int64_t eos_id);

  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const override;
  std::vector<int64_t> encode_special(const std::string& text, bool add_bos, bool add_eos,
                                      bool parse_special) const override;
  std::vector<int64_t> encode_prefix(const std::string& text, size_t max_tokens) const override;
  // Decoded after prev_token: the first token of a text (prev_token -1 or BOS) gets the decoder's start rules
  // (SentencePiece's leading space dropped).
  std::string decode_piece(int64_t prev_token, int64_t token) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string token_text(int64_t id) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  // Writes tokenizer.json (the steps it was read with), tokenizer_config.json and special_tokens_map.json,
  // and for byte-level tokenizers also vocab.json and merges.txt.
  void save_hf(const std::string& dir) const override;

  ~BpeTokenizer() override;

 private:
  struct AddedToken {
    std::string content;  // as written in the files
    int64_t id;
    bool special;             // special tokens decode to nothing
    bool lstrip = false;      // swallows the whitespace before it
    bool rstrip = false;      // swallows the whitespace after it
    bool single_word = false; // matched only when no word character touches it
    bool normalized = false;  // matched in the normalized text (as its normalized content)
    std::string match;        // the text that is matched: content, normalized when `normalized`
  };
  struct Merge {
    int32_t rank;       // lower merges first
    int64_t merged_id;  // id of left + right
  };
  using TextVisit = std::function<bool(size_t begin, size_t end, bool at_start)>;
  using IdVisit = std::function<bool(int64_t id)>;

  BpeTokenizer();
  void set_vocab(const std::string& source, std::vector<std::pair<std::string, int64_t>> vocab);
  void add_merge(const std::string& source, const std::string& left, const std::string& right);
  void add_token(AddedToken token);
  void add_token(const std::string& content, int64_t id, bool special);
  void default_specials();
  void finish(const std::string& source);  // byte tables and checks, once the vocabulary and steps are known
  void parse_post_processor(const nlohmann::json& j, const std::string& where);
  int64_t token_id(const std::string& token) const;  // vocab or added token, -1 when absent
  // One pre-token: its symbols (bytes or characters), merged by rank between symbols no merge uses. Appends to
  // out and returns false once out holds more than max_tokens.
  bool encode_piece(const std::string& piece, size_t max_tokens, std::vector<int64_t>* out) const;
  void merge_symbols(std::vector<int64_t>* ids) const;  // the heap merge over one run of symbols
  bool encode_text(const std::string& text, bool at_start, size_t max_tokens, std::vector<int64_t>* out) const;
  // Splits text at the added tokens whose `normalized` flag is as given (leftmost, longest; lstrip, rstrip,
  // single_word as HF). Returns false when a visitor stopped.
  // parse_special false: special added tokens are not looked for (their text is encoded as text).
  bool split_added(const std::string& text, bool normalized, bool at_start, bool parse_special,
                   const TextVisit& on_text, const IdVisit& on_token) const;
  void encode_into(const std::string& text, size_t max_tokens, std::vector<int64_t>* out,
                   bool parse_special = true) const;
  bool is_special(int64_t id) const;
  bool raw_added(int64_t id) const;  // a byte-level added token decoded as its own bytes
  std::string content_of(int64_t id) const;  // an added token's content, else the vocabulary string

  std::string source_;                                           // file it came from, for messages
  std::vector<std::string> id_to_token_;                         // (vocab_size) token strings as the model holds them
  std::unordered_map<std::string, int64_t> token_to_id_;         // model vocabulary
  std::unordered_map<uint64_t, Merge> merges_;                   // (left id << 32 | right id) -> merge
  std::vector<std::pair<std::string, std::string>> merge_list_;  // in rank order, for save_hf
  std::vector<char> mergeable_;                                  // (vocab) 1 when a merge uses the id
  std::vector<AddedToken> added_;                                // longest match first
  std::array<std::array<bool, 256>, 2> added_first_byte_{};      // [normalized] bytes that start some added token
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  Decoder decoder_;
  std::array<int64_t, 256> byte_ids_{};  // byte-level: the id of each byte's character (-1: none)
  std::array<int64_t, 256> fallback_ids_{};  // byte_fallback: the id of <0xNN>
  bool byte_fallback_ = false;
  int64_t unk_id_ = -1;          // model.unk_token: characters missing from the vocabulary (no byte fallback)
  bool fuse_unk_ = false;        // consecutive unknown characters become one unk token
  bool ignore_merges_ = false;   // a pre-token that is already a vocab token is emitted whole (Llama 3)
  bool has_post_processor_ = false;  // a tokenizer.json post_processor decided add_bos_ / add_eos_

  mutable std::mutex cache_mutex_;                                       // encode is const and may run on threads
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;  // pre-token -> ids
};

}  // namespace reglage::tokenizer
