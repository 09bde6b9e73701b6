// llama2.c tokenizer (tokenizer.bin / tok512.bin): SentencePiece-style BPE with per-piece scores.
// File format: int32 max_token_length, then per token: float32 score, int32 byte length, the bytes.
// encode/decode replicate llama2.c run.c exactly (dummy prefix, UTF-8 codepoint loop, byte fallback at
// id byte + 3, greedy highest-score merges); save_hf writes an equivalent Hugging Face "Llama" tokenizer.
#pragma once
#include <string>
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
  // is truncated or holds impossible lengths.
  explicit Llama2cTokenizer(const std::string& path);

  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const override;
  std::string decode_piece(int64_t prev_token, int64_t token) const override;
  // Skips BOS and EOS; the piece after a BOS loses its leading space, so decode(encode(t, true, false)) == t.
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  void save_hf(const std::string& dir) const override;

  const std::string& piece(int64_t id) const { return pieces_.at(static_cast<size_t>(id)); }
  float score(int64_t id) const { return scores_.at(static_cast<size_t>(id)); }

 private:
  int64_t lookup(const std::string& s) const;  // id of a piece, -1 when absent (run.c's str_lookup)
  std::string tokenizer_json() const;          // the Hugging Face tokenizer.json text

  std::string path_;                                      // where it was loaded from, for messages
  std::string file_bytes_;                                // the original file, copied verbatim by save_hf
  std::vector<std::string> pieces_;                       // (vocab_size) piece bytes, space as ' '
  std::vector<float> scores_;                             // (vocab_size) merge priority: higher merges first
  std::unordered_map<std::string, int64_t> piece_to_id_;  // first id wins for duplicate pieces
};

}  // namespace reglage::tokenizer
