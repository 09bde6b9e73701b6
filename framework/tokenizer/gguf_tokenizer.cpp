#include "framework/tokenizer/gguf_tokenizer.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <vector>

#include "framework/core/error.h"
#include "framework/io/gguf.h"
#include "framework/tokenizer/bpe_tokenizer.h"
#include "framework/tokenizer/pretokenizer_families.h"
#include "framework/tokenizer/spm_tokenizer.h"

namespace reglage::tokenizer {

namespace {

using io::GgufFile;
using io::GgufValue;
using io::GgufValueType;

// Token names llama.cpp takes as an end of turn (or of a message) when the metadata names none: each present
// one is a stop id, and the first present one is EOT.
const char* const kEndOfTurnNames[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                       "<|end_of_text|>", "<EOT>", "_<EOT>", "<|eom_id|>", "<end_of_utterance>",
                                       "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"};

// An array value whose elements have one of `types`; nullptr when absent and not required.
const GgufValue* get_array(const GgufFile& g, const std::string& key, std::initializer_list<GgufValueType> types,
                           const char* expected, bool required) {
  const GgufValue* v = g.find(key);
  if (!v) {
    if (required) fail(g.path(), ": missing metadata key '", key, "' (", expected, ")");
    return nullptr;
  }
  const bool ok = v->type == GgufValueType::kArray &&
                  std::find(types.begin(), types.end(), v->elem_type) != types.end();
  if (!ok)
    fail(g.path(), ": metadata key '", key, "' is ",
         v->type == GgufValueType::kArray ? std::string("an array of ") + io::gguf_type_name(v->elem_type)
                                          : std::string(io::gguf_type_name(v->type)),
         " (expected ", expected, ")");
  return v;
}

bool get_bool(const GgufFile& g, const std::string& key, bool fallback) {
  const GgufValue* v = g.find(key);
  if (!v) return fallback;
  if (v->type != GgufValueType::kBool)
    fail(g.path(), ": metadata key '", key, "' has type ", io::gguf_type_name(v->type), " (expected bool)");
  return v->u != 0;
}

// A special token id: the key's value, else `fallback` (-1: none). Out of the vocabulary is an error.
int64_t get_token_id(const GgufFile& g, const std::string& key, int64_t fallback, int64_t n_tokens) {
  if (!g.find(key)) return fallback < n_tokens ? fallback : -1;
  const int64_t id = g.get_int(key, -1);
  if (id < 0 || id >= n_tokens)
    fail(g.path(), ": metadata key '", key, "' = ", id, " is outside the vocabulary of ", n_tokens, " tokens");
  return id;
}

// What both tokenizer kinds read: tokens, their types, the special ids and flags.
struct Common {
  std::vector<std::string> tokens;  // (n) token text
  std::vector<TokenType> types;     // (n)
  int64_t bos = -1, eos = -1, unk = -1, pad = -1, eot = -1, eom = -1;
  std::vector<int64_t> stop_ids;    // EOS, EOT, EOM, then other end-of-turn tokens
  std::string chat_template;
};

Common read_common(const GgufFile& g, bool spm) {
  Common c;
  const GgufValue* tokens = get_array(g, "tokenizer.ggml.tokens", {GgufValueType::kString}, "an array of strings", true);
  const int64_t n = int64_t(tokens->count);
  if (n == 0) fail(g.path(), ": metadata key 'tokenizer.ggml.tokens' is empty");
  c.tokens.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    std::string t(tokens->string_at(uint64_t(i)));
    if (t.empty()) t = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp names an empty token
    c.tokens.push_back(std::move(t));
  }
  c.types.assign(size_t(n), TokenType::kNormal);
  if (const GgufValue* types =
          get_array(g, "tokenizer.ggml.token_type", {GgufValueType::kInt32}, "an array of int32", false)) {
    if (int64_t(types->count) < n)
      fail(g.path(), ": metadata key 'tokenizer.ggml.token_type' has ", types->count, " entries for ", n, " tokens");
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = types->integer_at(uint64_t(i));
      c.types[size_t(i)] = t >= 0 && t <= 6 ? TokenType(t) : TokenType::kUndefined;
    }
  }
  // llama.cpp's defaults: SentencePiece models have <unk> 0, <s> 1, </s> 2; byte-level BPE names its own.
  c.bos = get_token_id(g, "tokenizer.ggml.bos_token_id", spm ? 1 : -1, n);
  c.eos = get_token_id(g, "tokenizer.ggml.eos_token_id", spm ? 2 : -1, n);
  c.unk = get_token_id(g, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1, n);
  c.eot = get_token_id(g, "tokenizer.ggml.eot_token_id", -1, n);
  c.eom = get_token_id(g, "tokenizer.ggml.eom_token_id", -1, n);
  // A padding id outside the vocabulary is dropped, as llama.cpp does: padding never reaches the model.
  const int64_t pad = g.find("tokenizer.ggml.padding_token_id") ? g.get_int("tokenizer.ggml.padding_token_id", -1) : -1;
  c.pad = pad >= 0 && pad < n ? pad : -1;

  std::vector<int64_t> named;  // end-of-turn tokens present, in kEndOfTurnNames order
  for (const char* name : kEndOfTurnNames) {
    auto it = std::find(c.tokens.begin(), c.tokens.end(), name);
    if (it != c.tokens.end()) named.push_back(int64_t(it - c.tokens.begin()));
  }
  if (c.eot < 0 && !named.empty()) c.eot = named[0];
  for (int64_t id : {c.eos, c.eot, c.eom})
    if (id >= 0 && std::find(c.stop_ids.begin(), c.stop_ids.end(), id) == c.stop_ids.end()) c.stop_ids.push_back(id);
  for (int64_t id : named)
    if (std::find(c.stop_ids.begin(), c.stop_ids.end(), id) == c.stop_ids.end()) c.stop_ids.push_back(id);
  c.chat_template = g.get_string("tokenizer.chat_template", "");
  return c;
}

void check_add_special(const GgufFile& g, bool add, int64_t id, const char* add_key, const char* id_key) {
  if (add && id < 0) fail(g.path(), ": metadata key '", add_key, "' is true but '", id_key, "' is not set");
}

std::unique_ptr<Tokenizer> load_bpe(const GgufFile& g) {
  Common c = read_common(g, false);
  const std::string pre = g.get_string("tokenizer.ggml.pre", "default");
  const PretokenizerFamily* family = find_pretokenizer_family(pre);
  if (!family)
    fail(g.path(), ": tokenizer.ggml.pre = \"", pre, "\" is not a pre-tokenizer reglage knows (known: ",
         known_pretokenizer_names(), ")");

  BpeTokenizer::Parts parts;
  parts.source = g.path();
  parts.vocab.reserve(c.tokens.size());
  for (size_t i = 0; i < c.tokens.size(); ++i) {
    parts.vocab.emplace_back(c.tokens[i], int64_t(i));
    const TokenType t = c.types[i];
    if (t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUserDefined)
      parts.added.push_back({c.tokens[i], int64_t(i), t != TokenType::kUserDefined});
  }
  const GgufValue* merges = get_array(g, "tokenizer.ggml.merges", {GgufValueType::kString},
                                      "an array of \"left right\" strings", true);
  parts.merges.reserve(merges->count);
  for (uint64_t i = 0; i < merges->count; ++i) {
    const std::string m(merges->string_at(i));
    const size_t space = m.find(' ', 1);  // as llama.cpp splits: a merge's left side is never empty
    if (space == std::string::npos)
      fail(g.path(), ": tokenizer.ggml.merges[", i, "] = \"", m, "\" (expected \"left right\")");
    parts.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
  }
  parts.split_regexes = family->regexes;
  parts.ignore_merges = family->ignore_merges;
  parts.bos_id = c.bos;
  parts.eos_id = c.eos;
  parts.add_bos = get_bool(g, "tokenizer.ggml.add_bos_token", family->add_bos);
  parts.add_eos = get_bool(g, "tokenizer.ggml.add_eos_token", false);
  check_add_special(g, parts.add_bos, c.bos, "tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id");
  check_add_special(g, parts.add_eos, c.eos, "tokenizer.ggml.add_eos_token", "tokenizer.ggml.eos_token_id");
  parts.stop_ids = c.stop_ids;
  parts.chat_template = c.chat_template;
  return BpeTokenizer::from_parts(parts);
}

std::unique_ptr<Tokenizer> load_spm(const GgufFile& g) {
  Common c = read_common(g, true);
  SpmTokenizer::Parts parts;
  parts.source = g.path();
  const size_t n = c.tokens.size();
  parts.scores.assign(n, 0.0f);
  if (const GgufValue* scores = get_array(g, "tokenizer.ggml.scores", {GgufValueType::kFloat32, GgufValueType::kInt32},
                                          "an array of float32 (or int32)", false)) {
    if (scores->count < n)
      fail(g.path(), ": metadata key 'tokenizer.ggml.scores' has ", scores->count, " entries for ", n, " tokens");
    for (size_t i = 0; i < n; ++i) parts.scores[i] = float(scores->number_at(i));
  }
  parts.types = c.types;
  // Phi-3's special tokens swallow the whitespace after them (llama.cpp sets this by model name: GGUF has no
  // per-token lstrip/rstrip), except <unk>, <s> and <|endoftext|>.
  std::string name = g.get_string("general.name", "");
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    parts.rstrip.assign(n, false);
    for (size_t i = 0; i < n; ++i) {
      const TokenType t = c.types[i];
      const std::string& s = c.tokens[i];
      const bool matched = t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUserDefined;
      parts.rstrip[i] = (matched || s == "</s>") && s != "<unk>" && s != "<s>" && s != "<|endoftext|>";
    }
  }
  parts.pieces = std::move(c.tokens);
  parts.bos_id = c.bos;
  parts.eos_id = c.eos;
  parts.unk_id = c.unk;
  parts.pad_id = c.pad;
  parts.add_bos = get_bool(g, "tokenizer.ggml.add_bos_token", true);
  parts.add_eos = get_bool(g, "tokenizer.ggml.add_eos_token", false);
  check_add_special(g, parts.add_bos, c.bos, "tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id");
  check_add_special(g, parts.add_eos, c.eos, "tokenizer.ggml.add_eos_token", "tokenizer.ggml.eos_token_id");
  parts.add_space_prefix = get_bool(g, "tokenizer.ggml.add_space_prefix", true);
  parts.stop_ids = c.stop_ids;
  parts.chat_template = c.chat_template;
  return std::make_unique<SpmTokenizer>(std::move(parts));
}

}  // namespace

bool gguf_has_tokenizer(const io::GgufFile& gguf) { return gguf.find("tokenizer.ggml.tokens") != nullptr; }

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const io::GgufFile& gguf) {
  const std::string model = gguf.get_string("tokenizer.ggml.model", "", /*required=*/true);
  if (model == "gpt2") return load_bpe(gguf);
  if (model == "llama") return load_spm(gguf);
  fail(gguf.path(), ": tokenizer.ggml.model = \"", model,
       "\" is not supported (expected \"gpt2\": byte-level BPE, or \"llama\": SentencePiece BPE)");
}

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) {
  const io::GgufFile gguf(path);
  return load_gguf_tokenizer(gguf);
}

}  // namespace reglage::tokenizer
