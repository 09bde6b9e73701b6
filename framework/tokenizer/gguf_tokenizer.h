// The tokenizer a GGUF file carries in its tokenizer.ggml.* metadata, read as llama.cpp reads it:
//   model "gpt2":  byte-level BPE (tokens, merges), pre-tokenized by the family tokenizer.ggml.pre names
//                  (pretokenizer_families.h); an unknown name is an error listing the known ones.
//   model "llama": SentencePiece BPE by scores with <0xXX> byte fallback (spm_tokenizer.h).
// Token types: CONTROL (3) and UNKNOWN (2) tokens are special (matched in text only when special tokens are
// parsed, decoded to nothing); USER_DEFINED (4) tokens are always matched whole and decode to their text.
// BOS/EOS are added as tokenizer.ggml.add_bos_token / add_eos_token say; where absent, as llama.cpp defaults
// (SentencePiece adds BOS; byte-level BPE adds nothing except the Llama 3 and Tekken families). Stop ids: EOS,
// EOT and EOM (eot_token_id / eom_token_id, else a token named as llama.cpp recognises an end of turn).
// chat_template() is tokenizer.chat_template.
#pragma once
#include <memory>
#include <string>

#include "framework/tokenizer/tokenizer.h"

namespace reglage::io {
class GgufFile;
}

namespace reglage::tokenizer {

// Throws reglage::Error naming the file and the key: missing or wrong-typed metadata, a merge naming an unknown
// token, a special token id outside the vocabulary, an unknown tokenizer model or pre-tokenizer.
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const io::GgufFile& gguf);
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path);

// True when the file has tokenizer metadata (a tokenizer.ggml.tokens list).
bool gguf_has_tokenizer(const io::GgufFile& gguf);

}  // namespace reglage::tokenizer
