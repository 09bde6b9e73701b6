// Hugging Face byte-level BPE (GPT-2 family, Qwen2, Llama 3): bytes map to printable code points, a regex
// pre-tokenizer splits the text, and merges apply by rank within each piece (a heap of candidate pairs,
// O(n log n) per piece; pieces are encoded one at a time, so encode_prefix stops as soon as it has enough).
// Loads vocab.json + merges.txt, or a tokenizer.json whose model is BPE with a ByteLevel pre-tokenizer.
#pragma once
#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "framework/tokenizer/tokenizer.h"

namespace reglage::tokenizer {

class Pcre2Regex;  // compiled pre-tokenizer pattern (bpe_tokenizer.cpp)

class BpeTokenizer : public Tokenizer {
 public:
  // GPT-2 files: vocab.json maps token -> id; merges.txt holds one "a b" merge per line, by rank
  // (a leading "#version" line is skipped). Text is split with the GPT-2 regex.
  static std::unique_ptr<BpeTokenizer> from_vocab_merges(const std::string& vocab_path, const std::string& merges_path);
  // A tokenizer.json with model.type "BPE" and a ByteLevel pre-tokenizer (optionally after Split regexes).
  static std::unique_ptr<BpeTokenizer> from_tokenizer_json(const std::string& path);

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
  // list; every EOS id becomes a stop id). Missing files are skipped.
  void load_special_ids(const std::string& dir);

  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const override;
  std::vector<int64_t> encode_special(const std::string& text, bool add_bos, bool add_eos,
                                      bool parse_special) const override;
  std::vector<int64_t> encode_prefix(const std::string& text, size_t max_tokens) const override;
  std::string decode_piece(int64_t prev_token, int64_t token) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  // Writes vocab.json, merges.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json.
  void save_hf(const std::string& dir) const override;

  ~BpeTokenizer() override;

 private:
  struct AddedToken {
    std::string content;
    int64_t id;
    bool special;  // special tokens decode to nothing
  };
  struct Merge {
    int32_t rank;       // lower merges first
    int64_t merged_id;  // id of left + right
  };

  BpeTokenizer();
  void set_vocab(const std::string& source, std::vector<std::pair<std::string, int64_t>> vocab);
  void add_merge(const std::string& source, const std::string& left, const std::string& right);
  void add_token(const std::string& content, int64_t id, bool special);
  void default_specials();
  int64_t token_id(const std::string& token) const;                              // vocab or added token, -1 when absent
  void encode_piece(const std::string& piece, std::vector<int64_t>* out) const;  // one pre-token, merged by rank
  // Text without added tokens: pre-tokenized and encoded piece by piece until out holds more than max_tokens
  // (then false).
  bool encode_text(const std::string& text, size_t max_tokens, std::vector<int64_t>* out) const;
  // With added tokens (special ones only when parse_special).
  void encode_into(const std::string& text, size_t max_tokens, std::vector<int64_t>* out,
                   bool parse_special = true) const;

  std::string source_;                                           // file it came from, for messages
  std::vector<std::string> id_to_token_;                         // (vocab_size) byte-mapped token strings
  std::unordered_map<std::string, int64_t> token_to_id_;         // vocab, byte-mapped strings
  std::unordered_map<uint64_t, Merge> merges_;                   // (left id << 32 | right id) -> merge
  std::vector<std::pair<std::string, std::string>> merge_list_;  // in rank order, for save_hf
  std::vector<AddedToken> added_;                                // matched whole in the input, longest first
  std::array<bool, 256> added_first_byte_{};                     // bytes that start some added token
  std::vector<std::string> split_patterns_;             // Split steps' "pattern" objects as JSON text, for save_hf
  std::vector<std::unique_ptr<Pcre2Regex>> splitters_;  // split_patterns_ compiled, then GPT-2's if byte_level_regex_
  bool byte_level_regex_ = false;                       // ByteLevel's use_regex: split with the GPT-2 pattern last
  bool add_prefix_space_ = false;  // ByteLevel's add_prefix_space: a space before text not starting with one
  bool ignore_merges_ = false;     // a pre-token that is already a vocab token is emitted whole (Llama 3)
  bool nfc_normalizer_ = false;    // tokenizer.json asked for NFC (input is taken as already NFC)

  mutable std::mutex cache_mutex_;                                       // encode is const and may run on threads
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;  // pre-token -> ids
};

}  // namespace reglage::tokenizer
