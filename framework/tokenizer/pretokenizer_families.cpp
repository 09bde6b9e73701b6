#include "framework/tokenizer/pretokenizer_families.h"

#include <utility>

namespace reglage::tokenizer {

namespace {

// GPT-2's pattern: contractions, letter runs, digit runs, other symbols (each with an optional leading
// space); whitespace runs give their last space to the following word.
const char* kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Llama 3's (tiktoken cl100k): case-insensitive contractions, a letter run with one leading non-letter,
// digits in groups of up to three, symbols with trailing newlines, newline runs, whitespace.
const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Qwen2's: Llama 3's with single digits.
const char* kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Mistral's Tekken: an upper-case run then lower case (camel case splits), single digits, symbols with a
// trailing slash or newlines.
const char* kTekken =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-4o's (o200k): Tekken's letters with case-insensitive contractions and digits in threes.
const char* kGpt4o =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// DeepSeek LLM: newlines alone, Latin/Greek/Cyrillic/... letter runs, ASCII and full-width punctuation
// runs, trailing whitespace, CJK/Hangul runs, digit runs. Six letters are written \x{...}: their code points
// (U+1F7D, U+1FD3, U+1FDB, U+1FBE, U+2126, U+212A) turn into others under Unicode normalization.
const std::vector<std::string> kDeepseekLlm = {
    R"([\r\n])",
    R"(\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+)",
    R"(\s?[!-/:-~！-／：-～‘-‟　-。]+)",
    R"(\s+$)",
    R"([一-龥ࠀ-一가-퟿]+)",
    R"(\p{N}+)",
};

// DeepSeek Coder: newlines alone, letter runs, punctuation runs, CJK/Hangul runs, single digits.
const std::vector<std::string> kDeepseekCoder = {
    R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", R"([一-龥ࠀ-一가-퟿]+)", R"(\p{N})",
};

// DeepSeek V3: digits in threes, CJK and kana runs, then the letter/punctuation split.
const std::vector<std::string> kDeepseekV3 = {
    R"(\p{N}{1,3})",
    R"([一-龥぀-ゟ゠-ヿ]+)",
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
};

// Bloom-style: a run of anything but whitespace and sentence punctuation.
const char* kBloom = R"( ?[^(\s|.,!?…。，、।۔،)]+)";

std::vector<PretokenizerFamily> make_families() {
  const std::vector<std::string> gpt2 = {kGpt2};
  const std::vector<std::string> digits_then_gpt2 = {R"(\p{N})", kGpt2};  // StarCoder: every digit alone
  std::vector<PretokenizerFamily> f = {
      // llama.cpp's fallback for a BPE GGUF written before tokenizer.ggml.pre existed.
      {"default", {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}},
      {"gpt-2", gpt2},
      {"mpt", gpt2},
      {"olmo", gpt2},
      {"jais", gpt2},
      {"phi-2", gpt2},
      {"exaone4", gpt2},
      {"trillion", gpt2},
      {"granite-docling", gpt2},
      {"llama3", {kLlama3}, /*ignore_merges=*/true, /*add_bos=*/true},
      {"dbrx", {kLlama3}},
      {"smaug-bpe", {kLlama3}},
      {"chatglm-bpe", {kLlama3}},
      {"qwen2", {kQwen2}},
      {"stablelm2", {kQwen2}},
      {"megrez", {kQwen2}},
      {"hunyuan", {kQwen2}},
      {"deepseek-llm", kDeepseekLlm},
      {"deepseek-coder", kDeepseekCoder},
      {"deepseek-v3", kDeepseekV3},
      {"falcon", {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}},
      {"starcoder", digits_then_gpt2},
      {"refact", digits_then_gpt2},
      {"command-r", digits_then_gpt2},
      {"smollm", digits_then_gpt2},
      {"codeshell", digits_then_gpt2},
      {"exaone", digits_then_gpt2},
      {"minerva-7b", digits_then_gpt2},
      {"tekken", {kTekken}, /*ignore_merges=*/true, /*add_bos=*/true},
      {"gpt-4o", {kGpt4o}},
      {"bloom", {kBloom}},
      {"poro-chat", {kBloom}},
      {"gpt3-finnish", {kBloom}},
      {"viking", {kBloom, R"(\p{N})"}},
  };
  return f;
}

// Other names llama.cpp gives the same families.
const std::vector<std::pair<std::string, std::string>> kAliases = {
    {"llama-bpe", "llama3"}, {"llama-v3", "llama3"},     {"falcon3", "llama3"},      {"pixtral", "llama3"},
    {"glm4", "chatglm-bpe"}, {"deepseek-r1-qwen", "qwen2"}, {"llama4", "gpt-4o"},    {"jina-es", "gpt-2"},
    {"jina-de", "gpt-2"},    {"jina-v2-es", "gpt-2"},   {"jina-v2-de", "gpt-2"},    {"gigachat", "gpt-2"},
};

const std::vector<PretokenizerFamily>& families() {
  static const std::vector<PretokenizerFamily> all = make_families();
  return all;
}

}  // namespace

const PretokenizerFamily* find_pretokenizer_family(const std::string& pre) {
  std::string name = pre;
  for (const auto& [alias, canonical] : kAliases)
    if (alias == pre) name = canonical;
  for (const PretokenizerFamily& f : families())
    if (f.name == name) return &f;
  return nullptr;
}

std::string known_pretokenizer_names() {
  std::string out;
  for (const PretokenizerFamily& f : families()) out += (out.empty() ? "" : ", ") + f.name;
  for (const auto& [alias, canonical] : kAliases) out += ", " + alias;
  return out;
}

}  // namespace reglage::tokenizer
