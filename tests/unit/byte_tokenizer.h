// A tokenizer for tests whose expectations are written by hand: one token per byte.
#pragma once
#include <string>
#include <vector>

#include "framework/tokenizer/tokenizer.h"

namespace reglage::test {

// One token per byte (id = byte + 3), BOS 1 (added, as llama2.c does, unless asked not to), EOS 2 (or none):
// expectations can be written by hand. Special-token text is read as bytes; a chat template can be given.
class ByteTokenizer : public tokenizer::Tokenizer {
 public:
  explicit ByteTokenizer(bool with_eos = true, bool adds_bos = true, std::string chat_template = "") {
    chat_template_ = std::move(chat_template);
    bos_id_ = 1;
    add_bos_ = adds_bos;
    eos_id_ = with_eos ? 2 : -1;
  }
  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const override {
    std::vector<int64_t> ids;
    if (add_bos) ids.push_back(bos_id_);
    for (unsigned char c : text) ids.push_back(int64_t(c) + 3);
    if (add_eos && eos_id_ >= 0) ids.push_back(eos_id_);
    return ids;
  }
  std::string decode_piece(int64_t, int64_t token) const override {
    return token >= 3 ? std::string(1, char(token - 3)) : std::string();
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string s;
    for (auto id : ids) s += decode_piece(0, id);
    return s;
  }
  int64_t vocab_size() const override { return 259; }
  std::string token_text(int64_t id) const override {
    return id == 1 ? "<s>" : id == 2 ? "</s>" : decode_piece(0, id);
  }
  void save_hf(const std::string&) const override {}
};

}  // namespace reglage::test
