// Tokenizers from GGUF metadata: llama.cpp's test vectors for 8 vocabularies (byte-level BPE families and
// SentencePiece), decode round trips, encode_prefix, special tokens, BOS/EOS flags, the `reglage tokenize`
// command on every vector, and malformed metadata (GGUF images built here in memory).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/gguf.h"
#include "framework/io/model_io.h"
#include "framework/tokenizer/gguf_tokenizer.h"
#include "framework/tokenizer/tokenizer.h"
#include "test_util.h"

using reglage::Error;
using reglage::test::expect_error;
using reglage::tokenizer::load_gguf_tokenizer;
using reglage::tokenizer::load_tokenizer;
using reglage::tokenizer::Tokenizer;

namespace {

const std::string kVocabDir = std::string(REGLAGE_SOURCE_DIR) + "/tests/data/llama.cpp-vocab/";
const std::string kSeparator = "\n__ggml_vocab_test__\n";

struct Vector {
  std::string text;
  std::vector<int64_t> ids;
};

std::vector<int64_t> parse_ids(const std::string& line) {
  std::vector<int64_t> ids;
  std::istringstream in(line);
  for (int64_t id; in >> id;) ids.push_back(id);
  return ids;
}

// llama.cpp's format (PROVENANCE.md): inputs separated by kSeparator (one also ends the file), one id line each.
std::vector<Vector> read_vectors(const std::string& family) {
  const std::string inp = reglage::core::read_file(kVocabDir + "ggml-vocab-" + family + ".gguf.inp");
  const std::string out = reglage::core::read_file(kVocabDir + "ggml-vocab-" + family + ".gguf.out");
  std::vector<Vector> v;
  size_t start = 0;
  for (size_t at; (at = inp.find(kSeparator, start)) != std::string::npos; start = at + kSeparator.size())
    v.push_back({inp.substr(start, at - start), {}});
  std::istringstream lines(out);
  std::string line;
  for (Vector& x : v) {
    if (!std::getline(lines, line)) ADD_FAILURE() << family << ": fewer id lines than inputs";
    x.ids = parse_ids(line);
  }
  return v;
}

std::string gguf_path(const std::string& family) { return kVocabDir + "ggml-vocab-" + family + ".gguf"; }

const std::vector<std::string> kFamilies = {"llama-spm", "phi-3", "gpt-2", "starcoder",
                                            "falcon", "deepseek-llm", "deepseek-coder", "mpt"};

// One tokenizer per family for the whole binary (the larger vocabularies take a moment to build).
const Tokenizer& tokenizer_of(const std::string& family) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& t = cache[family];
  if (!t) t = load_tokenizer(gguf_path(family));
  return *t;
}

std::string join(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s += " " + std::to_string(id);
  return s;
}

class GgufVocab : public ::testing::TestWithParam<std::string> {};

// Every vector, tokenized as llama.cpp's test-tokenizer-0 does: no BOS/EOS, special-token text not parsed.
TEST_P(GgufVocab, MatchesLlamaCppVectors) {
  const std::string family = GetParam();
  const Tokenizer& tok = tokenizer_of(family);
  const auto vectors = read_vectors(family);
  ASSERT_EQ(vectors.size(), 46u);
  size_t passed = 0;
  for (const Vector& v : vectors) {
    const auto ids = tok.encode_special(v.text, false, false, false);
    EXPECT_EQ(join(ids), join(v.ids)) << family << " on \"" << v.text << "\"";
    passed += ids == v.ids;
  }
  std::cout << "[ vectors  ] " << family << ": " << passed << "/" << vectors.size() << " match llama.cpp\n";
}

// Byte-level BPE keeps every byte; SentencePiece drops only the space prefix it added, so both are lossless.
TEST_P(GgufVocab, DecodeInvertsEncode) {
  const std::string family = GetParam();
  const Tokenizer& tok = tokenizer_of(family);
  for (const Vector& v : read_vectors(family)) {
    EXPECT_EQ(tok.decode(tok.encode_special(v.text, false, false, false)), v.text) << family;
    // BOS/EOS as the model adds them decode to nothing.
    EXPECT_EQ(tok.decode(tok.encode(v.text, tok.add_bos(), tok.add_eos())), v.text) << family;
    // Piece by piece, each given its predecessor, as the generate loop prints.
    const auto ids = tok.encode(v.text, true, false);
    std::string pieces;
    int64_t prev = -1;
    for (int64_t id : ids) {
      pieces += tok.decode_piece(prev, id);
      prev = id;
    }
    EXPECT_EQ(pieces, v.text) << family;
  }
}

// encode_prefix(text, k) is the first k + 1 tokens of the whole encoding (or all of them), on a long text.
TEST_P(GgufVocab, EncodePrefixIsAPrefix) {
  const std::string family = GetParam();
  const Tokenizer& tok = tokenizer_of(family);
  std::string text;
  for (int rep = 0; rep < 3; ++rep)
    for (const Vector& v : read_vectors(family)) text += v.text + (rep % 2 ? " " : "\n");
  const auto all = tok.encode(text, false, false);
  ASSERT_GT(all.size(), 300u);
  for (size_t k : {size_t(0), size_t(1), size_t(7), size_t(100), all.size() - 1, all.size(), all.size() + 5}) {
    const auto prefix = tok.encode_prefix(text, k);
    const std::vector<int64_t> want(all.begin(), all.begin() + std::min(all.size(), k + 1));
    EXPECT_EQ(prefix, want) << family << " k=" << k;
  }
}

INSTANTIATE_TEST_SUITE_P(LlamaCpp, GgufVocab, ::testing::ValuesIn(kFamilies),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// save_hf of a byte-level GGUF tokenizer reloads (tokenizer.json + tokenizer_config.json) to the same ids and
// flags. (The SentencePiece export is Hugging Face's byte_fallback layout, checked with Python by
// tests/data/llama.cpp-vocab/check_hf_interop.py.)
TEST_P(GgufVocab, SaveHfReloads) {
  const std::string family = GetParam();
  const Tokenizer& tok = tokenizer_of(family);
  reglage::test::TempDir tmp;
  tok.save_hf(tmp.path());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_TRUE(reglage::core::file_exists(tmp.path(f))) << family << " " << f;
  if (family == "llama-spm" || family == "phi-3") return;
  auto back = load_tokenizer(tmp.path());
  EXPECT_EQ(back->add_bos(), tok.add_bos()) << family;
  EXPECT_EQ(back->bos_id(), tok.bos_id()) << family;
  EXPECT_EQ(back->eos_id(), tok.eos_id()) << family;
  for (const Vector& v : read_vectors(family))
    EXPECT_EQ(join(back->encode_special(v.text, false, false, false)), join(v.ids)) << family << " on \"" << v.text << "\"";
}

// BOS/EOS flags, stop ids and chat templates as each file's metadata (or llama.cpp's default) says.
TEST(GgufTokenizer, SpecialIdsAndFlags) {
  const Tokenizer& spm = tokenizer_of("llama-spm");
  EXPECT_TRUE(spm.add_bos());
  EXPECT_FALSE(spm.add_eos());
  EXPECT_EQ(spm.bos_id(), 1);
  EXPECT_EQ(spm.eos_id(), 2);
  EXPECT_EQ(spm.encode("Hello world", spm.add_bos(), spm.add_eos()), (std::vector<int64_t>{1, 15043, 3186}));

  const Tokenizer& phi3 = tokenizer_of("phi-3");
  EXPECT_EQ(phi3.eos_id(), 32000);
  EXPECT_NE(std::find(phi3.stop_ids().begin(), phi3.stop_ids().end(), 32000), phi3.stop_ids().end());
  EXPECT_NE(std::find(phi3.stop_ids().begin(), phi3.stop_ids().end(), 32007), phi3.stop_ids().end());  // <|end|>
  EXPECT_NE(phi3.chat_template().find("<|assistant|>"), std::string::npos);

  const Tokenizer& gpt2 = tokenizer_of("gpt-2");  // no add_bos_token key: byte-level BPE adds nothing
  EXPECT_FALSE(gpt2.add_bos());
  EXPECT_EQ(gpt2.eos_id(), 50256);
  EXPECT_EQ(gpt2.stop_ids(), std::vector<int64_t>{50256});
  EXPECT_TRUE(gpt2.chat_template().empty());

  const Tokenizer& coder = tokenizer_of("deepseek-coder");  // add_bos_token = true in the file
  EXPECT_TRUE(coder.add_bos());
  EXPECT_EQ(coder.encode("a", coder.add_bos(), coder.add_eos()).front(), 32013);
}

// Special-token text becomes the token only when parsed; it decodes to nothing.
TEST(GgufTokenizer, ParseSpecial) {
  const Tokenizer& spm = tokenizer_of("llama-spm");
  const auto parsed = spm.encode_special("<s>Hi</s>", false, false, true);
  EXPECT_EQ(parsed.front(), 1);
  EXPECT_EQ(parsed.back(), 2);
  const auto plain = spm.encode_special("<s>Hi</s>", false, false, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1) + std::count(plain.begin(), plain.end(), 2), 0);
  EXPECT_EQ(spm.decode(plain), "<s>Hi</s>");
  EXPECT_EQ(spm.decode(parsed), "Hi");
  EXPECT_EQ(spm.encode("<s>Hi</s>", false, false), parsed);  // encode parses special-token text

  const Tokenizer& gpt2 = tokenizer_of("gpt-2");
  EXPECT_EQ(gpt2.encode_special("a<|endoftext|>", false, false, true).back(), 50256);
  const auto plain2 = gpt2.encode_special("a<|endoftext|>", false, false, false);
  EXPECT_GT(plain2.size(), 2u);
  EXPECT_EQ(gpt2.decode(plain2), "a<|endoftext|>");
}

// The model loader uses a GGUF model's own tokenizer, and still asks for --tokenizer when the file has none.
TEST(GgufTokenizer, ModelTokenizerFromTheGguf) {
  auto tok = reglage::io::load_model_tokenizer(gguf_path("llama-spm"), "", 32000);
  EXPECT_EQ(tok->vocab_size(), 32000);
  const std::string no_tok = std::string(REGLAGE_SOURCE_DIR) + "/tests/data/gguf/llama_f32.gguf";
  expect_error([&] { reglage::io::load_model_tokenizer(no_tok, "", 96); }, {"llama_f32.gguf", "no tokenizer", "--tokenizer"});
}

// ---- Malformed metadata: GGUF v3 images (no tensors) built in memory.

struct GgufBuilder {
  std::string kv;
  uint64_t n_kv = 0;
  void str(std::string& out, const std::string& s) {
    const uint64_t n = s.size();
    out.append(reinterpret_cast<const char*>(&n), 8);
    out += s;
  }
  template <typename T>
  void raw(std::string& out, T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void key(const std::string& k, uint32_t type) {
    ++n_kv;
    str(kv, k);
    raw(kv, type);
  }
  void add_string(const std::string& k, const std::string& v) {
    key(k, 8);
    str(kv, v);
  }
  void add_u32(const std::string& k, uint32_t v) {
    key(k, 4);
    raw(kv, v);
  }
  void add_bool(const std::string& k, bool v) {
    key(k, 7);
    raw(kv, uint8_t(v));
  }
  void add_strings(const std::string& k, const std::vector<std::string>& v) {
    key(k, 9);
    raw(kv, uint32_t(8));
    raw(kv, uint64_t(v.size()));
    for (const auto& s : v) str(kv, s);
  }
  void add_f32s(const std::string& k, const std::vector<float>& v) {
    key(k, 9);
    raw(kv, uint32_t(6));
    raw(kv, uint64_t(v.size()));
    for (float f : v) raw(kv, f);
  }
  std::string bytes() {
    std::string out = "GGUF";
    raw(out, uint32_t(3));
    raw(out, uint64_t(0));
    raw(out, n_kv);
    out += kv;
    while (out.size() % 32) out += '\0';
    return out;
  }
};

// A small valid byte-level BPE vocabulary: the bytes a, b and "ab", one merge.
GgufBuilder small_bpe(const std::string& pre = "gpt-2", const std::vector<std::string>& merges = {"a b"}) {
  GgufBuilder b;
  b.add_string("tokenizer.ggml.model", "gpt2");
  b.add_string("tokenizer.ggml.pre", pre);
  b.add_strings("tokenizer.ggml.tokens", {"a", "b", "ab", "<|endoftext|>"});
  b.add_strings("tokenizer.ggml.merges", merges);
  return b;
}

std::string load_error(GgufBuilder b) {
  const std::string image = b.bytes();
  try {
    reglage::io::GgufFile g(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "bad.gguf");
    load_gguf_tokenizer(g);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_parts(const std::string& msg, const std::vector<std::string>& parts) {
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST(GgufTokenizerBadInput, SmallVocabularyLoads) {
  const std::string image = small_bpe().bytes();
  reglage::io::GgufFile g(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "ok.gguf");
  auto tok = load_gguf_tokenizer(g);
  EXPECT_EQ(tok->encode_special("abab", false, false, false), (std::vector<int64_t>{2, 2}));
}

TEST(GgufTokenizerBadInput, WrongTypedScores) {
  GgufBuilder b;
  b.add_string("tokenizer.ggml.model", "llama");
  b.add_strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xe2\x96\x81"});
  b.add_strings("tokenizer.ggml.scores", {"0", "0", "0", "0"});
  expect_parts(load_error(b), {"bad.gguf", "tokenizer.ggml.scores", "array of string", "expected an array of float32"});
}

TEST(GgufTokenizerBadInput, TooFewScores) {
  GgufBuilder b;
  b.add_string("tokenizer.ggml.model", "llama");
  b.add_strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xe2\x96\x81"});
  b.add_f32s("tokenizer.ggml.scores", {0, 0});
  expect_parts(load_error(b), {"bad.gguf", "tokenizer.ggml.scores", "2 entries for 4 tokens"});
}

TEST(GgufTokenizerBadInput, MergeOfUnknownToken) {
  GgufBuilder b = small_bpe("gpt-2", {"a b", "a c"});
  expect_parts(load_error(b), {"bad.gguf", "merge \"a c\" (rank 1)", "missing from the vocabulary"});
}

TEST(GgufTokenizerBadInput, MergeWithoutSpace) {
  GgufBuilder b = small_bpe("gpt-2", {"ab"});
  expect_parts(load_error(b), {"bad.gguf", "tokenizer.ggml.merges[0]", "expected \"left right\""});
}

TEST(GgufTokenizerBadInput, BosOutOfRange) {
  GgufBuilder b = small_bpe();
  b.add_u32("tokenizer.ggml.bos_token_id", 4);
  expect_parts(load_error(b), {"bad.gguf", "tokenizer.ggml.bos_token_id", "= 4", "outside the vocabulary of 4"});
}

TEST(GgufTokenizerBadInput, AddBosWithoutBos) {
  GgufBuilder b = small_bpe();
  b.add_bool("tokenizer.ggml.add_bos_token", true);
  expect_parts(load_error(b), {"bad.gguf", "add_bos_token", "bos_token_id", "not set"});
}

TEST(GgufTokenizerBadInput, UnknownPreTokenizer) {
  GgufBuilder b = small_bpe("no-such-family");
  expect_parts(load_error(b), {"bad.gguf", "tokenizer.ggml.pre", "no-such-family", "known:", "llama3", "qwen2"});
}

TEST(GgufTokenizerBadInput, UnknownModelAndMissingKeys) {
  GgufBuilder bert;
  bert.add_string("tokenizer.ggml.model", "bert");
  expect_parts(load_error(bert), {"bad.gguf", "tokenizer.ggml.model", "bert", "gpt2", "llama"});
  GgufBuilder none;
  none.add_string("general.name", "x");
  expect_parts(load_error(none), {"bad.gguf", "tokenizer.ggml.model"});
  GgufBuilder no_tokens;
  no_tokens.add_string("tokenizer.ggml.model", "gpt2");
  expect_parts(load_error(no_tokens), {"bad.gguf", "tokenizer.ggml.tokens"});
  GgufBuilder no_merges;
  no_merges.add_string("tokenizer.ggml.model", "gpt2");
  no_merges.add_strings("tokenizer.ggml.tokens", {"a"});
  expect_parts(load_error(no_merges), {"bad.gguf", "tokenizer.ggml.merges"});
}

// ---- The command, on every vector of every family (one run per family with --separator).

TEST(TokenizeCommand, EveryVectorOfEveryFamily) {
  for (const std::string& family : kFamilies) {
    auto r = reglage::test::run_reglage("tokenize --model " + gguf_path(family) + " --text-file " + gguf_path(family) +
                                        ".inp --add-special no --separator '\\n__ggml_vocab_test__\\n'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto vectors = read_vectors(family);
    std::istringstream lines(r.out);
    std::string line;
    size_t n = 0;
    for (const Vector& v : vectors) {
      ASSERT_TRUE(std::getline(lines, line)) << family << ": output ends after " << n << " lines";
      EXPECT_EQ(join(parse_ids(line)), join(v.ids)) << family << " on \"" << v.text << "\"";
      ++n;
    }
    EXPECT_FALSE(std::getline(lines, line)) << family << ": more output lines than inputs";
  }
}

TEST(TokenizeCommand, TextDecodeAndSpecialFlags) {
  const std::string spm = gguf_path("llama-spm");
  auto r = reglage::test::run_reglage("tokenize --model " + spm + " --text 'Hello world'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1 15043 3186\n");  // auto: the file says add_bos_token
  r = reglage::test::run_reglage("tokenize --model " + spm + " --text 'Hello world' --add-special no");
  EXPECT_EQ(r.out, "15043 3186\n");
  r = reglage::test::run_reglage("tokenize --model " + spm + " --text 'Hello world' --add-special yes");
  EXPECT_EQ(r.out, "1 15043 3186 2\n");
  r = reglage::test::run_reglage("tokenize --model " + spm + " --text '<s>x' --add-special no --parse-special yes");
  EXPECT_EQ(parse_ids(r.out).front(), 1);
  r = reglage::test::run_reglage("tokenize --model " + spm + " --text '<s>x' --add-special no");
  EXPECT_NE(parse_ids(r.out).front(), 1);
  r = reglage::test::run_reglage("tokenize --model " + spm + " --decode '1 15043 3186 2'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world");  // exact bytes, no newline
}

TEST(TokenizeCommand, BadInputIsOneLine) {
  const std::string spm = gguf_path("llama-spm");
  auto r = reglage::test::run_reglage("tokenize --model " + spm + " --decode '1 32000'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("token id 32000 is outside the vocabulary [0, 32000)"), std::string::npos) << r.err;
  r = reglage::test::run_reglage("tokenize --model " + spm + " --decode '1 x2'");
  EXPECT_NE(r.err.find("'x2' is not an integer token id"), std::string::npos) << r.err;
  r = reglage::test::run_reglage("tokenize --model " + spm + " --text a --decode 1");
  EXPECT_NE(r.err.find("exactly one of --text, --text-file, --decode and --save-hf"), std::string::npos) << r.err;
  r = reglage::test::run_reglage("tokenize --model " + spm + " --text a --parse-special maybe");
  EXPECT_NE(r.err.find("--parse-special = 'maybe' (expected yes or no)"), std::string::npos) << r.err;
  r = reglage::test::run_reglage("tokenize --model /no/such.gguf --text a");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/no/such.gguf"), std::string::npos) << r.err;
}

}  // namespace
