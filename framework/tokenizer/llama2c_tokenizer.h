// llama2.c tokenizer (tokenizer.bin / tok512.bin): SentencePiece-style BPE with per-piece scores.
// File format: int32 max_token_length, then per token: float32 score, int32 byte length, the bytes.
// encode/decode replicate llama2.c run.c exactly (dummy prefix, UTF-8 codepoint loop, byte fallback at
// id byte + 3, greedy highest-score merges, leftmost on ties), except that a NUL byte is an ordinary byte
// (<0x00>, as SentencePiece has it) instead of the end of a C string. The merges run on a heap over a linked
// list of symbols, O(n log n), and the text is cut where no merge can cross (see can_split); save_hf writes an
// equivalent Hugging Face "Llama" tokenizer.
#pragma once
#include <array>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "framework/tokenizer/tokenizer.h"

namespace reglage::tokenizer {

class Llama2cTokenizer : public Tokenizer {
 public:
  static constexpr int64_t kUnkId = 0;
  static constexpr int64_t kBosId = 1;
  static constexpr int64_t kEosId = 2;
  static constexpr int64_t kByteOffset = 3;  // byte b falls back to id b + 3 (<0x00> is id 3)

  // Parses a llama2.c tokenizer file; throws reglage::Error naming the file (and the token index) when it
  // is truncated, holds impossible lengths (negative, past the end, over the header's max_token_length) or a
  // score that is NaN or infinite.
  explicit Llama2cTokenizer(const std::string& path);
  Llama2cTokenizer(const Llama2cTokenizer&) = delete;  // piece_to_id_ holds views into pieces_
  Llama2cTokenizer& operator=(const Llama2cTokenizer&) = delete;

  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const override;
  std::vector<int64_t> encode_prefix(const std::string& text, size_t max_tokens) const override;
  std::string decode_piece(int64_t prev_token, int64_t token) const override;
  // Skips BOS and EOS; the piece after a BOS loses its leading space, so decode(encode(t, true, false)) == t.
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string token_text(int64_t id) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  void save_hf(const std::string& dir) const override;

  const std::string& piece(int64_t id) const { return pieces_.at(static_cast<size_t>(id)); }
  float score(int64_t id) const { return scores_.at(static_cast<size_t>(id)); }

 private:
  int64_t lookup(std::string_view s) const;   // id of a piece, -1 when absent (run.c's str_lookup)
  std::string tokenizer_json() const;         // the Hugging Face tokenizer.json text
  void build_merge_tables();                  // pair_merge_, joinable_, split_ok_ from the pieces
  int64_t merged_id(int64_t left, int64_t right) const;  // id of piece(left) + piece(right), -1 when absent
  // True when no merge can ever join a symbol ending like `left` with one starting like `right`.
  bool can_split(int64_t left, int64_t right) const;
  // Appends the tokens of text (no BOS/EOS) to out; stops after a segment once out holds more than max_tokens.
  void encode_into(const std::string& text, size_t max_tokens, std::vector<int64_t>* out) const;
  // Merges one segment of initial symbols (ids) greedily and appends the result to out.
  void merge_segment(std::vector<int64_t>* ids, std::vector<int64_t>* out) const;

  std::string path_;                                      // where it was loaded from, for messages
  std::string file_bytes_;                                // the original file, copied verbatim by save_hf
  std::vector<std::string> pieces_;                       // (vocab_size) piece bytes, space as ' '
  std::vector<float> scores_;                             // (vocab_size) merge priority: higher merges first
  std::unordered_map<std::string_view, int64_t> piece_to_id_;  // views into pieces_; first id wins for duplicates
  std::unordered_map<uint64_t, int64_t> pair_merge_;  // (first id of left piece << 32 | of right) -> merged id
  std::vector<int64_t> first_id_;                     // (vocab_size) the first id with the same piece
  std::array<bool, 256 * 256> joinable_{};  // [a * 256 + b]: bytes a, b adjacent inside a merge result piece
  bool split_ok_ = false;                   // no piece is empty, so can_split's byte test is exact
};

}  // namespace reglage::tokenizer
