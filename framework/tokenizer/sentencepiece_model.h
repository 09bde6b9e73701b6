// SentencePiece tokenizer.model files (a ModelProto protobuf: Llama 2, Mistral, TinyLlama), read by reglage itself
// and turned into the tokenizer.json that transformers (5.x LlamaTokenizer) builds from the same file, so that a
// model directory with only tokenizer.model loads as a BpeTokenizer. Debian's libsentencepiece is not linked: it
// exports its own protobuf-lite 3.14, which clashes with LibTorch's libprotobuf 3.21 (crash before main).
// Only BPE models (trainer_spec.model_type 2) are supported; unigram, word and char models are refused.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "framework/tokenizer/bpe_tokenizer.h"

namespace reglage::tokenizer {

// SentencePiece.Type in sentencepiece_model.proto.
enum SpmPieceType : int32_t {
  kSpmNormal = 1,
  kSpmUnknown = 2,
  kSpmControl = 3,       // <s>, </s>: special added tokens
  kSpmUserDefined = 4,   // matched whole in the text: non-special added tokens
  kSpmUnused = 5,
  kSpmByte = 6,          // <0x00> .. <0xFF>
};

struct SpmPiece {
  std::string piece;          // the piece text, ▁ for spaces
  float score = 0.0f;         // BPE: -rank (higher merges first)
  int32_t type = kSpmNormal;  // SpmPieceType
};

// The parts of ModelProto the conversion reads; the defaults are the proto's.
struct SpmModel {
  std::vector<SpmPiece> pieces;   // (vocab) in id order
  int32_t model_type = 1;         // trainer_spec.model_type: 1 unigram, 2 BPE, 3 word, 4 char
  bool byte_fallback = false;     // trainer_spec.byte_fallback: <0xNN> pieces stand for bytes missing from the vocab
  int32_t unk_id = 0;             // trainer_spec.unk_id
  int32_t bos_id = 1;             // trainer_spec.bos_id (-1: none)
  int32_t eos_id = 2;             // trainer_spec.eos_id (-1: none)
  bool add_dummy_prefix = true;   // normalizer_spec.add_dummy_prefix (read, not used: transformers ignores it too)
};

// The choices tokenizer_config.json makes for LlamaTokenizer (transformers' defaults).
struct SpmConvertOptions {
  bool legacy = false;           // true: Metaspace prepends ▁ to every text between added tokens, not only the first
  bool add_prefix_space = true;  // false: no ▁ prepended, and decode keeps a leading space
  bool add_bos = true;           // post-processor: [BOS] $A
  bool add_eos = false;          // post-processor: $A [EOS]
};

// Parses tokenizer.model's bytes. Throws reglage::Error naming path on a malformed protobuf (truncated, wrong
// wire type, length past the end), on an unsupported model_type, and on ids outside the pieces.
SpmModel parse_spm_model(const std::string& bytes, const std::string& path);
SpmModel read_spm_model(const std::string& path);

// transformers' generate_merges(vocab): for each piece in id order, every split into two pieces of the vocab;
// ordered by the merged piece's id, then by the left part's length.
std::vector<std::pair<std::string, std::string>> spm_merges(const SpmModel& model);

// The tokenizer.json object transformers' LlamaTokenizer builds from the model: BPE vocab + merges (fuse_unk,
// byte_fallback), Metaspace pre-tokenizer, Replace/ByteFallback/Fuse/Strip decoder, BOS template, control and
// user-defined pieces as added tokens.
nlohmann::json spm_to_tokenizer_json(const SpmModel& model, const SpmConvertOptions& options);

// tokenizer.model as a BpeTokenizer: options from dir's tokenizer_config.json (legacy, add_prefix_space,
// add_bos_token, add_eos_token), then BOS/EOS/stop ids as load_special_ids reads them.
std::unique_ptr<BpeTokenizer> load_sentencepiece_model(const std::string& model_path, const std::string& dir);

}  // namespace reglage::tokenizer
