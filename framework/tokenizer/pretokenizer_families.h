// Byte-level BPE pre-tokenizers by family, named as GGUF's tokenizer.ggml.pre names them (llama.cpp's
// llama-vocab.cpp). Each family is the list of regexes its Hugging Face tokenizer.json splits with (Split,
// behavior Isolated, applied in order to every piece of the step before), then ByteLevel without a regex.
// The regexes are Hugging Face's own patterns (PCRE2 runs them as Oniguruma does for these patterns).
#pragma once
#include <string>
#include <vector>

namespace reglage::tokenizer {

struct PretokenizerFamily {
  std::string name;                  // the canonical tokenizer.ggml.pre value
  std::vector<std::string> regexes;  // Split patterns, in order
  bool ignore_merges = false;        // a pre-token that is already a vocab token is kept whole (Llama 3, Tekken)
  bool add_bos = false;              // llama.cpp's default when the GGUF has no tokenizer.ggml.add_bos_token
};

// The family for a tokenizer.ggml.pre value (its aliases included: "llama-bpe" is "llama3"), or nullptr.
const PretokenizerFamily* find_pretokenizer_family(const std::string& pre);

// Every accepted tokenizer.ggml.pre value, comma-separated, for error messages.
std::string known_pretokenizer_names();

}  // namespace reglage::tokenizer
