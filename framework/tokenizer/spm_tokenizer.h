// SentencePiece BPE as llama.cpp runs it for GGUF files with tokenizer.ggml.model "llama" (Llama 2, Mistral,
// TinyLlama, Phi-3): spaces become "▁", a "▁" is prepended to the text and to each piece of text after a special
// token (add_space_prefix), the text is split into UTF-8 characters, and the adjacent pair whose concatenation
// is a token with the highest score merges first (leftmost on ties) until none is left; characters that are no
// token fall back to their bytes' <0xXX> tokens. The merges run on a heap over a linked list of symbols,
// O(n log n), and the text is cut where no token can join the two sides, so encode_prefix stops early.
// Special tokens (CONTROL, UNKNOWN) are matched in the text only when special tokens are parsed;
// USER_DEFINED tokens are matched always (llama.cpp's tokenizer_st_partition).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "framework/tokenizer/tokenizer.h"

namespace reglage::tokenizer {

// GGUF's tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

class SpmTokenizer : public Tokenizer {
 public:
  struct Parts {
    std::string source;               // the file, for messages
    std::vector<std::string> pieces;  // (V) token text, spaces as "▁"; byte tokens as "<0xXX>"
    std::vector<float> scores;        // (V) merge priority: higher first
    std::vector<TokenType> types;     // (V)
    std::vector<bool> lstrip, rstrip; // (V) or empty: whitespace beside a matched special token is dropped
    int64_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
    bool add_bos = true, add_eos = false;
    bool add_space_prefix = true;
    std::vector<int64_t> stop_ids;
    std::string chat_template;
  };
  // Checks the parts (sizes agree, ids in range, no duplicate piece) and builds the lookup tables.
  explicit SpmTokenizer(Parts parts);
  SpmTokenizer(const SpmTokenizer&) = delete;  // piece_to_id_ holds views into pieces_
  SpmTokenizer& operator=(const SpmTokenizer&) = delete;

  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const override;
  std::vector<int64_t> encode_special(const std::string& text, bool add_bos, bool add_eos,
                                      bool parse_special) const override;
  std::vector<int64_t> encode_prefix(const std::string& text, size_t max_tokens) const override;
  // A normal piece with "▁" as spaces, a byte token's byte, a user-defined token's text; special and unused
  // tokens give nothing. With add_space_prefix, the leading space of a piece that starts the text or follows a
  // special or user-defined token is dropped (encode put it there), so decode(encode(t)) == t.
  std::string decode_piece(int64_t prev_token, int64_t token) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string token_text(int64_t id) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(p_.pieces.size()); }
  // tokenizer.json in Hugging Face's Llama layout (BPE with byte_fallback, merges derived from the scores,
  // Prepend/Replace normalizer, TemplateProcessing for BOS/EOS), tokenizer_config.json, special_tokens_map.json.
  void save_hf(const std::string& dir) const override;

  TokenType type(int64_t id) const { return p_.types.at(static_cast<size_t>(id)); }

 private:
  bool is_special(int64_t id) const;   // CONTROL or UNKNOWN: matched only when parsing special tokens
  bool is_matched(int64_t id) const;   // matched whole in text: special or USER_DEFINED
  int64_t lookup(std::string_view s) const;  // id of a piece, -1 when absent
  // Appends the tokens of text (no BOS/EOS); stops once out holds more than max_tokens.
  void encode_into(const std::string& text, size_t max_tokens, bool parse_special, std::vector<int64_t>* out) const;
  // One piece of raw text between special tokens: escaped, cut where safe, each segment merged. False: enough.
  bool encode_fragment(std::string_view text, bool space_prefix, size_t max_tokens, std::vector<int64_t>* out) const;
  // Merges one segment (escaped text) by scores and appends its tokens.
  void merge_segment(const std::string& seg, std::vector<int64_t>* out) const;
  std::string tokenizer_json() const;

  Parts p_;
  std::unordered_map<std::string_view, int64_t> piece_to_id_;  // views into p_.pieces
  std::vector<int64_t> matched_;                              // special + user-defined ids, longest text first
  std::array<bool, 256> matched_first_byte_{};                // bytes that start some matched token
  std::array<int64_t, 256> byte_token_{};                     // <0xXX> token of each byte, -1 when absent
  std::array<bool, 256 * 256> joinable_{};  // [a * 256 + b]: bytes a, b adjacent inside some piece
};

}  // namespace reglage::tokenizer
