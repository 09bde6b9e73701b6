// UTF-8 helpers shared by the SentencePiece-style tokenizers.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace reglage::tokenizer {

// Byte offsets where a UTF-8 code point starts (continuation bytes excluded), as Python's str indexing sees it.
inline std::vector<size_t> codepoint_starts(const std::string& s) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) starts.push_back(i);
  return starts;
}

}  // namespace reglage::tokenizer
