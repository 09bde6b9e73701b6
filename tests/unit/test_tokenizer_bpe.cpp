// Byte-level BPE: llama.cpp's 46 GPT-2 vectors, fixtures made by Hugging Face `tokenizers` (Qwen2-style Split
// regex, add_prefix_space, ignore_merges, added tokens), save_hf round trips, special ids, bad files.
#include <gtest/gtest.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/tokenizer/bpe_tokenizer.h"
#include "framework/tokenizer/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using reglage::test::expect_error;
using reglage::test::temp_dir;
using reglage::core::read_file;
using reglage::core::write_file_atomic;
using reglage::tokenizer::BpeTokenizer;
using reglage::tokenizer::load_tokenizer;
using reglage::tokenizer::Tokenizer;

namespace {

const std::string kData = std::string(REGLAGE_SOURCE_DIR) + "/tests/data";
const std::string kGpt2Vocab = kData + "/gpt2/encoder.json";
const std::string kGpt2Merges = kData + "/gpt2/vocab.bpe";

struct Vector {
  std::string text;
  std::vector<int64_t> ids;
};

// llama.cpp's format: inputs joined by "\n__ggml_vocab_test__\n" (one after the last), one id line each.
std::vector<Vector> gpt2_vectors() {
  const std::string inp = read_file(kData + "/gpt2/ggml-vocab-gpt-2.gguf.inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Vector> out;
  for (size_t at = 0; at < inp.size();) {
    const size_t end = inp.find(sep, at);
    if (end == std::string::npos) break;
    out.push_back({inp.substr(at, end - at), {}});
    at = end + sep.size();
  }
  std::istringstream lines(read_file(kData + "/gpt2/ggml-vocab-gpt-2.gguf.out"));
  std::string line;
  for (Vector& v : out) {
    if (!std::getline(lines, line)) break;
    std::istringstream ids(line);
    for (int64_t id; ids >> id;) v.ids.push_back(id);
  }
  return out;
}



// GPT-2 loads in about a second; the suite shares one.
class TokenizerBpeGpt2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { gpt2_ = BpeTokenizer::from_vocab_merges(kGpt2Vocab, kGpt2Merges).release(); }
  static void TearDownTestSuite() {
    delete gpt2_;
    gpt2_ = nullptr;
  }
  static void expect_all_vectors(const Tokenizer& tok) {
    const auto vectors = gpt2_vectors();
    ASSERT_EQ(vectors.size(), 46u);
    for (const Vector& v : vectors) {
      EXPECT_EQ(tok.encode(v.text, false, false), v.ids) << "input \"" << v.text << "\"";
      EXPECT_EQ(tok.decode(v.ids), v.text);
    }
  }
  static BpeTokenizer* gpt2_;
};
BpeTokenizer* TokenizerBpeGpt2::gpt2_ = nullptr;

}  // namespace

TEST_F(TokenizerBpeGpt2, LlamaCppVectors) {
  EXPECT_EQ(gpt2_->vocab_size(), 50257);
  expect_all_vectors(*gpt2_);
}

TEST_F(TokenizerBpeGpt2, SpecialTokensAndDefaults) {
  // GPT2Tokenizer's defaults: <|endoftext|> is BOS and EOS, and is matched whole in text.
  EXPECT_EQ(gpt2_->bos_id(), 50256);
  EXPECT_EQ(gpt2_->eos_id(), 50256);
  EXPECT_EQ(gpt2_->stop_ids(), (std::vector<int64_t>{50256}));
  EXPECT_EQ(gpt2_->encode("Hello world", true, true), (std::vector<int64_t>{50256, 15496, 995, 50256}));
  EXPECT_EQ(gpt2_->encode("a<|endoftext|>b", false, false), (std::vector<int64_t>{64, 50256, 65}));
  EXPECT_EQ(gpt2_->decode({15496, 50256, 995}), "Hello world");  // special tokens decode to nothing
  EXPECT_EQ(gpt2_->decode_piece(15496, 995), " world");
  EXPECT_THROW(gpt2_->decode_piece(0, 50257), reglage::Error);
}

TEST_F(TokenizerBpeGpt2, InvalidUtf8RoundTrips) {
  for (const std::string& text :
       {std::string("\xff\xfe"), std::string("abc \xc3 def"), std::string("\x80\x80 x \xf0\x9f\x98"),
        std::string("ok \xed\xa0\x80 surrogate"), std::string("nul\0byte", 8)}) {
    const auto ids = gpt2_->encode(text, false, false);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(gpt2_->decode(ids), text);
  }
}

TEST_F(TokenizerBpeGpt2, SaveHfRoundTrip) {
  const fs::path dir = temp_dir("bpe_save_hf");
  gpt2_->save_hf(dir.string());
  for (const char* f :
       {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  // The directory loads through tokenizer.json, and also from the vocab.json + merges.txt it wrote.
  auto from_dir = load_tokenizer(dir.string(), 50257);
  ASSERT_NE(dynamic_cast<BpeTokenizer*>(from_dir.get()), nullptr);
  expect_all_vectors(*from_dir);
  EXPECT_EQ(from_dir->bos_id(), 50256);
  EXPECT_EQ(from_dir->eos_id(), 50256);
  auto from_pair = load_tokenizer((dir / "vocab.json").string());
  ASSERT_NE(dynamic_cast<BpeTokenizer*>(from_pair.get()), nullptr);
  expect_all_vectors(*from_pair);
  EXPECT_EQ(from_pair->eos_id(), 50256);
  fs::remove_all(dir);
}

TEST_F(TokenizerBpeGpt2, SpecialIdsFromModelDir) {
  const fs::path dir = temp_dir("bpe_special_ids");
  fs::copy_file(kGpt2Vocab, dir / "vocab.json");
  fs::copy_file(kGpt2Merges, dir / "merges.txt");
  write_file_atomic((dir / "config.json").string(), R"({"bos_token_id": 50256, "eos_token_id": 50256})");
  write_file_atomic((dir / "generation_config.json").string(), R"({"eos_token_id": [50256, 198]})");
  auto tok = load_tokenizer(dir.string());
  EXPECT_EQ(tok->bos_id(), 50256);
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_EQ(tok->stop_ids(), (std::vector<int64_t>{50256, 198}));

  // tokenizer_config.json wins: names as strings or {content: ...}; null means none.
  write_file_atomic((dir / "tokenizer_config.json").string(),
                    R"({"bos_token": null, "eos_token": {"content": "<|endoftext|>", "special": true}})");
  tok = load_tokenizer(dir.string());
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_EQ(tok->encode("Hi", true, false), (std::vector<int64_t>{17250}));  // no BOS to add

  write_file_atomic((dir / "tokenizer_config.json").string(), R"({"eos_token": "<|no_such_token|>"})");
  expect_error([&] { load_tokenizer(dir.string()); }, {"tokenizer_config.json", "<|no_such_token|>"});
  write_file_atomic((dir / "tokenizer_config.json").string(), R"({"added_tokens_decoder": {"7": 3}})");
  expect_error([&] { load_tokenizer(dir.string()); }, {dir.string(), "added_tokens_decoder[7]"});
  write_file_atomic((dir / "tokenizer_config.json").string(), R"({"eos_token": )");
  expect_error([&] { load_tokenizer(dir.string()); }, {"tokenizer_config.json", "invalid JSON"});
  fs::remove_all(dir);
}

// Small tokenizers trained and saved by Hugging Face `tokenizers` (tests/data/tokenizer/gen_bpe_fixtures.py),
// with that library's encodings of each text.
TEST(TokenizerBpeHfFixtures, MatchesTokenizersLibrary) {
  const std::string base = kData + "/tokenizer/";
  std::ifstream in(base + "bpe_small_vectors.jsonl");
  ASSERT_TRUE(in);
  std::map<std::string, std::unique_ptr<Tokenizer>> toks;
  std::string line;
  int count = 0;
  while (std::getline(in, line)) {
    const auto v = nlohmann::json::parse(line);
    const std::string name = v["fixture"];
    if (!toks.count(name)) toks[name] = load_tokenizer(base + name + "/tokenizer.json");
    const std::string text = v["text"];
    const auto ids = toks[name]->encode(text, false, false);
    EXPECT_EQ(ids, v["ids"].get<std::vector<int64_t>>()) << name << ": \"" << text << "\"";
    ++count;
  }
  EXPECT_EQ(count, 44);
  ASSERT_EQ(toks.size(), 2u);
  // Qwen2-style: the special tokens sit after the vocab, which sets the size.
  EXPECT_EQ(toks["bpe_small_qwen"]->vocab_size(), 703);
  EXPECT_EQ(toks["bpe_small_qwen"]->decode(
                toks["bpe_small_qwen"]->encode("<|im_start|>user\nCafé 😀<|im_end|>", false, false)),
            "user\nCafé 😀");
}

TEST(TokenizerBpeHfFixtures, SaveHfKeepsSplitRegexAndFlags) {
  for (const char* name : {"bpe_small_qwen", "bpe_small_prefix"}) {
    auto tok = load_tokenizer(kData + "/tokenizer/" + name + "/tokenizer.json");
    const fs::path dir = temp_dir(std::string("bpe_resave_") + name);
    tok->save_hf(dir.string());
    auto back = load_tokenizer(dir.string());
    for (const char* text : {"It's HER'S 12345 Café\n\n  <|endoftext|>x", " leading and trailing  ", "中文😀"})
      EXPECT_EQ(back->encode(text, false, false), tok->encode(text, false, false)) << name << ": " << text;
    EXPECT_EQ(back->vocab_size(), tok->vocab_size());
    fs::remove_all(dir);
  }
}

TEST(TokenizerBpeErrors, BadFilesThrow) {
  const fs::path dir = temp_dir("bpe_bad");
  const std::string vocab = (dir / "vocab.json").string();
  write_file_atomic(vocab, R"({"a": 0, "b": 1, "ab": 2})");
  const std::string merges = (dir / "merges.txt").string();
  write_file_atomic(merges, "#version: 0.2\na b\nab\n");
  expect_error([&] { BpeTokenizer::from_vocab_merges(vocab, merges); }, {merges, ":3:", "left right"});
  write_file_atomic(merges, "a c\n");
  expect_error([&] { BpeTokenizer::from_vocab_merges(vocab, merges); }, {merges, "a c", "missing from the vocabulary"});
  write_file_atomic(vocab, R"(["a", "b"])");
  expect_error([&] { BpeTokenizer::from_vocab_merges(vocab, merges); }, {vocab, "JSON object"});

  const std::string json = (dir / "tokenizer.json").string();
  write_file_atomic(json, R"({"model": {"type": "Unigram", "vocab": []}})");
  expect_error([&] { load_tokenizer(json); }, {json, "Unigram"});
  write_file_atomic(json, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                             "pre_tokenizer": {"type": "BertPreTokenizer"}})");
  expect_error([&] { load_tokenizer(json); }, {json, "pre_tokenizer", "BertPreTokenizer", "not supported"});
  write_file_atomic(json, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                             "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                               {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"},
                               {"type": "ByteLevel"}]}})");
  expect_error([&] { load_tokenizer(json); }, {json, "regex does not compile"});
  // Wrong JSON shapes are reglage::Errors too, never nlohmann exceptions or crashes.
  write_file_atomic(json, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                             "pre_tokenizer": {"type": "Sequence"}})");
  expect_error([&] { load_tokenizer(json); }, {json, "unexpected content"});
  write_file_atomic(json, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                             "added_tokens": [{"id": 1, "content": 5}], "pre_tokenizer": {"type": "ByteLevel"}})");
  expect_error([&] { load_tokenizer(json); }, {json, "unexpected content"});
  write_file_atomic(json, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]},
                             "pre_tokenizer": {"type": "ByteLevel"}})");
  expect_error([&] { load_tokenizer(json); }, {json, "merge 0"});
  write_file_atomic(json, "{not json");
  expect_error([&] { load_tokenizer(json); }, {json, "invalid JSON"});
  // Vocabulary larger than the model's embedding.
  write_file_atomic(json, R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2}, "merges": []},
                             "pre_tokenizer": {"type": "ByteLevel"}})");
  expect_error([&] { load_tokenizer(json, 2); }, {json, "has 3 tokens, model expects 2"});
  fs::remove_all(dir);
}

namespace {

// GPT-2's bytes_to_unicode, written out again for the reference.
std::vector<std::string> gpt2_byte_chars() {
  std::vector<std::string> out(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const uint32_t cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    }
    out[b] = s;
  }
  return out;
}

// Yesterday's per-piece merge loop, kept as the reference: every round a scan of all adjacent pairs for the
// lowest rank (leftmost on ties), then an erase. Quadratic, and exact.
struct ReferenceBpe {
  std::map<std::string, int64_t> vocab;
  std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>> merges;  // (l, r) -> (rank, merged)
  std::vector<std::string> byte_chars = gpt2_byte_chars();

  std::vector<int64_t> encode(const std::string& piece) const {
    std::vector<int64_t> ids;
    for (unsigned char b : piece) ids.push_back(vocab.at(byte_chars[b]));
    while (ids.size() > 1) {
      int64_t best_rank = INT64_MAX, best_id = -1;
      size_t best_i = 0;
      for (size_t i = 0; i + 1 < ids.size(); ++i) {
        auto it = merges.find({ids[i], ids[i + 1]});
        if (it != merges.end() && it->second.first < best_rank) {
          best_rank = it->second.first;
          best_i = i;
          best_id = it->second.second;
        }
      }
      if (best_id < 0) break;
      ids[best_i] = best_id;
      ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best_i) + 1);
    }
    return ids;
  }
};

std::string random_bpe_text(std::mt19937& rng) {
  static const std::vector<std::string> kBits = {
      "the", "ing", " the", "hello", "world", "aaaa", "ababab", "Once", "upon", "12345", " ",  "  ", "\n", "\t",
      ".",   ",",   "!?",   "'s",    "é",     "中文", "😀",     "\xff", "\x80", "\xe4\xb8", std::string(1, '\0')};
  std::string s;
  const int n = int(rng() % 20);
  for (int i = 0; i < n; ++i) s += kBits[rng() % kBits.size()];
  return s;
}

}  // namespace

// The heap against the quadratic reference: GPT-2's vocab and merges with ByteLevel's regex off, so that the
// whole random text is one piece (no <|endoftext|> in the texts). Then encode_prefix on the regex tokenizer.
TEST_F(TokenizerBpeGpt2, HeapMatchesQuadraticReference) {
  const auto vocab = nlohmann::json::parse(read_file(kGpt2Vocab));
  ReferenceBpe ref;
  nlohmann::json merges = nlohmann::json::array();
  std::istringstream lines(read_file(kGpt2Merges));
  std::string line;
  for (int64_t rank = 0; std::getline(lines, line);) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    const std::string l = line.substr(0, space), r = line.substr(space + 1);
    ref.merges.emplace(std::make_pair(vocab.at(l).get<int64_t>(), vocab.at(r).get<int64_t>()),
                       std::make_pair(rank, vocab.at(l + r).get<int64_t>()));
    merges.push_back(line);
    ++rank;
  }
  for (auto it = vocab.begin(); it != vocab.end(); ++it) ref.vocab[it.key()] = it.value().get<int64_t>();
  nlohmann::json j;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  const fs::path dir = temp_dir("bpe_property");
  write_file_atomic((dir / "tokenizer.json").string(), j.dump());
  auto whole = load_tokenizer((dir / "tokenizer.json").string());

  std::mt19937 rng(4321);
  for (int i = 0; i < 2000; ++i) {
    const std::string text = random_bpe_text(rng);
    ASSERT_EQ(whole->encode(text, false, false), ref.encode(text)) << "input \"" << text << "\"";
    const auto ids = gpt2_->encode(text, false, false);
    EXPECT_EQ(gpt2_->decode(ids), text);
    const size_t k = rng() % (ids.size() + 2);
    auto expected = ids;
    if (expected.size() > k) expected.resize(k + 1);
    ASSERT_EQ(gpt2_->encode_prefix(text, k), expected) << "k " << k << " input \"" << text << "\"";
  }
  // One long piece (about 2 KB), where the heap's order matters most.
  std::string word;
  for (int i = 0; i < 400; ++i) word += random_bpe_text(rng).substr(0, 5);
  EXPECT_EQ(whole->encode(word, false, false), ref.encode(word));
  fs::remove_all(dir);
}
