// A model directory with only tokenizer.model (SentencePiece BPE), read by reglage's own protobuf reader and
// converted as transformers' LlamaTokenizer converts it: tests/data/hf-families/spm_model/ (made by its
// make_spm_model.py) against transformers' ids, merges, legacy ids and decode; spm-small's rows of
// hf-families/vectors.jsonl; the BOS defaults; save_hf; then unsupported model types and malformed protobufs
// (hand-made ones and 500 seeded mutations of the fixture), each one reglage::Error naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <cstring>
#include <stdexcept>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/tokenizer/bpe_tokenizer.h"
#include "framework/tokenizer/sentencepiece_model.h"
#include "framework/tokenizer/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using reglage::Error;
using reglage::core::read_file;
using reglage::core::write_file_atomic;
using reglage::test::expect_error;
using reglage::test::temp_dir;
using reglage::tokenizer::load_tokenizer;
using reglage::tokenizer::Tokenizer;
namespace tk = reglage::tokenizer;

namespace {

const std::string kFamilies = std::string(REGLAGE_SOURCE_DIR) + "/tests/data/hf-families";
const std::string kSpmDir = kFamilies + "/spm_model";
const std::string kSpmModel = kSpmDir + "/tokenizer.model";

struct Row {
  std::string text;
  std::vector<int64_t> ids, ids_plain, ids_legacy;
  std::string decoded;
};

std::vector<Row> read_rows(const std::string& path, const std::string& family) {
  std::vector<Row> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const json v = json::parse(line);
    if (!family.empty() && v.value("family", "") != family) continue;
    rows.push_back({v["text"], v["ids"].get<std::vector<int64_t>>(), v["ids_plain"].get<std::vector<int64_t>>(),
                    v.value("ids_legacy", std::vector<int64_t>()), v["decoded"]});
  }
  return rows;
}

// ids with and without BOS, decode whole and piece by piece, encode_prefix; returns the rows checked.
int check_rows(const Tokenizer& tok, const std::string& what, const std::vector<Row>& rows) {
  int n = 0;
  for (const Row& r : rows) {
    SCOPED_TRACE(what + ": \"" + r.text + "\"");
    EXPECT_EQ(tok.encode(r.text, tok.add_bos(), tok.add_eos()), r.ids);
    EXPECT_EQ(tok.encode(r.text, false, false), r.ids_plain);
    EXPECT_EQ(tok.decode(r.ids_plain), r.decoded);
    const bool specials_inside = r.text.find("<s>") != std::string::npos || r.text.find("</s>") != std::string::npos ||
                                 r.text.find("<unk>") != std::string::npos;
    std::string streamed;
    int64_t prev = -1;
    for (int64_t id : r.ids) {
      streamed += tok.decode_piece(prev, id);
      prev = id;
    }
    if (!specials_inside) {
      EXPECT_EQ(streamed, tok.decode(r.ids));
    }
    for (size_t k : {size_t(0), size_t(1), r.ids_plain.size() / 2, r.ids_plain.size()}) {
      std::vector<int64_t> expected = r.ids_plain;
      if (expected.size() > k) expected.resize(k + 1);
      EXPECT_EQ(tok.encode_prefix(r.text, k), expected) << "k=" << k;
    }
    ++n;
  }
  return n;
}

const Row& find_row(const std::vector<Row>& rows, const std::string& text) {
  for (const Row& r : rows)
    if (r.text == text) return r;
  throw std::runtime_error("no vector for \"" + text + "\"");
}

// A directory holding the fixture's tokenizer.model and, when given, this tokenizer_config.json.
fs::path model_dir(const std::string& name, const std::string& config) {
  const fs::path dir = temp_dir(name);
  fs::copy_file(kSpmModel, dir / "tokenizer.model");
  if (!config.empty()) write_file_atomic((dir / "tokenizer_config.json").string(), config);
  return dir;
}

// Protobuf writing, for hand-made models.
std::string varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string field_varint(int number, uint64_t v) { return varint(uint64_t(number) << 3) + varint(v); }
std::string field_bytes(int number, const std::string& payload) {
  return varint((uint64_t(number) << 3) | 2) + varint(payload.size()) + payload;
}
std::string piece(const std::string& text, float score, int type) {
  std::string score_bits(4, '\0');
  std::memcpy(&score_bits[0], &score, 4);  // fixed32, little-endian on the machines we build for
  return field_bytes(1, field_bytes(1, text) + varint((2 << 3) | 5) + score_bits + field_varint(3, type));
}
// <unk> <s> </s> a b c ab abc (no byte pieces), with this trainer_spec.
std::string tiny_model(const std::string& trainer_spec) {
  std::string m = piece("<unk>", 0, tk::kSpmUnknown) + piece("<s>", 0, tk::kSpmControl) +
                  piece("</s>", 0, tk::kSpmControl);
  const char* pieces[] = {"\xe2\x96\x81", "a", "b", "c", "ab", "abc", "\xe2\x96\x81" "ab"};
  float score = -1;
  for (const char* p : pieces) m += piece(p, score--, tk::kSpmNormal);
  return m + field_bytes(2, trainer_spec);
}

}  // namespace

TEST(TokenizerSentencePiece, ReadsTheModelProto) {
  const tk::SpmModel m = tk::read_spm_model(kSpmModel);
  ASSERT_EQ(m.pieces.size(), 600u);
  EXPECT_EQ(m.model_type, 2);
  EXPECT_TRUE(m.byte_fallback);
  EXPECT_EQ(m.unk_id, 0);
  EXPECT_EQ(m.bos_id, 1);
  EXPECT_EQ(m.eos_id, 2);
  EXPECT_EQ(m.pieces[0].piece, "<unk>");
  EXPECT_EQ(m.pieces[0].type, tk::kSpmUnknown);
  EXPECT_EQ(m.pieces[1].type, tk::kSpmControl);
  EXPECT_EQ(m.pieces[3].piece, "<0x00>");
  EXPECT_EQ(m.pieces[3].type, tk::kSpmByte);
  EXPECT_EQ(m.pieces[258].piece, "<0xFF>");
  // BPE pieces after the bytes: scores fall with the id.
  EXPECT_GT(m.pieces[259].score, m.pieces[260].score);
}

TEST(TokenizerSentencePiece, MergesAreTransformers) {
  const auto merges = tk::spm_merges(tk::read_spm_model(kSpmModel));
  std::vector<std::pair<std::string, std::string>> expected;
  std::ifstream in(kSpmDir + "/transformers_merges.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const json m = json::parse(line);
    expected.emplace_back(m[0], m[1]);
  }
  ASSERT_EQ(expected.size(), 290u);
  EXPECT_EQ(merges, expected);
}

TEST(TokenizerSentencePiece, MatchesTransformersLlamaTokenizer) {
  const auto rows = read_rows(kSpmDir + "/vectors.jsonl", "");
  auto tok = load_tokenizer(kSpmDir, 600);
  ASSERT_NE(dynamic_cast<tk::BpeTokenizer*>(tok.get()), nullptr);
  EXPECT_EQ(tok->vocab_size(), 600);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_FALSE(tok->add_eos());
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(check_rows(*tok, "spm_model", rows), 65);
  // The file itself (a path ending in .model) reads the tokenizer_config.json beside it.
  auto direct = load_tokenizer(kSpmModel);
  EXPECT_TRUE(direct->add_bos());
  const Row& r = find_row(rows, " Hello world");
  EXPECT_EQ(direct->encode(r.text, true, false), r.ids);
}

TEST(TokenizerSentencePiece, LegacyPrependsAfterEverySpecialToken) {
  const auto rows = read_rows(kSpmDir + "/vectors.jsonl", "");
  const fs::path dir = model_dir("spm_legacy", R"({"tokenizer_class": "LlamaTokenizer", "legacy": true})");
  auto tok = load_tokenizer(dir.string());
  int differ = 0;
  for (const Row& r : rows) {
    EXPECT_EQ(tok->encode(r.text, false, false), r.ids_legacy) << r.text;
    differ += r.ids_legacy != r.ids_plain;
  }
  EXPECT_GT(differ, 0);  // texts after a special token get their own ▁
  fs::remove_all(dir);
}

TEST(TokenizerSentencePiece, SpmSmallFamilyMatchesTransformers) {
  const auto rows = read_rows(kFamilies + "/vectors.jsonl", "spm-small");
  auto tok = load_tokenizer(kFamilies + "/spm-small", 800);
  EXPECT_EQ(check_rows(*tok, "spm-small", rows), 81);
}

TEST(TokenizerSentencePiece, BosFlagsFromTheConfig) {
  const auto rows = read_rows(kSpmDir + "/vectors.jsonl", "");
  const Row& r = find_row(rows, "Hello world");
  {
    // tokenizer.model alone: LlamaTokenizer's BOS (transformers 4 and Llama 2's config; transformers 5 adds none
    // when the config does not say add_bos_token).
    const fs::path dir = model_dir("spm_alone", "");
    auto tok = load_tokenizer(dir.string());
    EXPECT_TRUE(tok->add_bos());
    EXPECT_FALSE(tok->add_eos());
    EXPECT_EQ(tok->encode(r.text, tok->add_bos(), tok->add_eos()), r.ids);
    EXPECT_EQ(tok->stop_ids(), std::vector<int64_t>{2});
    fs::remove_all(dir);
  }
  {
    const fs::path dir = model_dir(
        "spm_flags", R"({"tokenizer_class": "LlamaTokenizer", "add_bos_token": false, "add_eos_token": true})");
    auto tok = load_tokenizer(dir.string());
    EXPECT_FALSE(tok->add_bos());
    EXPECT_TRUE(tok->add_eos());
    std::vector<int64_t> expected = r.ids_plain;
    expected.push_back(2);
    EXPECT_EQ(tok->encode(r.text, tok->add_bos(), tok->add_eos()), expected);
    fs::remove_all(dir);
  }
  {
    // add_prefix_space false: no ▁ before the text, and decode keeps what the text had.
    const fs::path dir = model_dir("spm_noprefix", R"({"add_prefix_space": false})");
    auto tok = load_tokenizer(dir.string());
    auto with_space = load_tokenizer(kSpmDir);
    EXPECT_EQ(tok->encode(" Hello world", false, false), with_space->encode(" Hello world", false, false));
    EXPECT_NE(tok->encode("Hello world", false, false), with_space->encode("Hello world", false, false));
    EXPECT_EQ(tok->decode(tok->encode(" the cat", false, false)), " the cat");
    fs::remove_all(dir);
  }
}

TEST(TokenizerSentencePiece, SaveHfWritesTokenizerJsonThatLoadsTheSame) {
  const auto rows = read_rows(kSpmDir + "/vectors.jsonl", "");
  auto tok = load_tokenizer(kSpmDir);
  const fs::path dir = temp_dir("spm_saved");
  tok->save_hf(dir.string());
  ASSERT_TRUE(fs::exists(dir / "tokenizer.json"));
  const json j = json::parse(read_file((dir / "tokenizer.json").string()));
  EXPECT_EQ(j["pre_tokenizer"]["type"], "Metaspace");
  EXPECT_EQ(j["model"]["merges"].size(), 290u);
  auto back = load_tokenizer(dir.string());
  EXPECT_EQ(check_rows(*back, "spm_model saved", rows), 65);
  // dir is left for inspection: transformers loads it with the same ids (checked by hand, see the report).
}

TEST(TokenizerSentencePiece, HandMadeModelWithoutByteFallbackUsesUnk) {
  const fs::path dir = temp_dir("spm_tiny");
  const std::string path = (dir / "tokenizer.model").string();
  write_file_atomic(path, tiny_model(field_varint(3, 2)));  // model_type BPE, byte_fallback unset
  auto tok = load_tokenizer(path);
  // Merges by the merged piece's id: a+b (ab, 7), ab+c (abc, 8), ▁+ab (▁ab, 9).
  EXPECT_EQ(tok->encode("abc", false, false), (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(tok->encode("ab", false, false), (std::vector<int64_t>{9}));
  EXPECT_EQ(tok->encode("xyb", false, false), (std::vector<int64_t>{3, 0, 5}));  // fused unknown characters
  EXPECT_EQ(tok->encode("ab", true, false), (std::vector<int64_t>{1, 9}));
  fs::remove_all(dir);
}

TEST(TokenizerSentencePiece, OnlyBpeModelsAreSupported) {
  const fs::path dir = temp_dir("spm_types");
  const std::string path = (dir / "tokenizer.model").string();
  for (const auto& [type, name] : std::vector<std::pair<int, std::string>>{
           {1, "UNIGRAM (1)"}, {3, "WORD (3)"}, {4, "CHAR (4)"}}) {
    write_file_atomic(path, tiny_model(field_varint(3, type)));
    expect_error([&] { load_tokenizer(dir.string()); }, {path, name, "only BPE"});
  }
  write_file_atomic(path, tiny_model(""));  // no model_type: the proto's default, unigram
  expect_error([&] { load_tokenizer(dir.string()); }, {path, "UNIGRAM (1)"});
  fs::remove_all(dir);
}

TEST(TokenizerSentencePiece, MalformedProtobufIsOneError) {
  const fs::path dir = temp_dir("spm_bad");
  const std::string path = (dir / "tokenizer.model").string();
  const std::string good = read_file(kSpmModel);
  auto expect_bad = [&](const std::string& bytes, const std::vector<std::string>& parts) {
    write_file_atomic(path, bytes);
    std::vector<std::string> all = parts;
    all.push_back(path);
    expect_error([&] { load_tokenizer(dir.string()); }, all);
  };
  expect_bad("this is not a protobuf\n", {"not a valid SentencePiece model"});
  expect_bad("", {"no pieces"});
  expect_bad(good.substr(0, good.size() / 2), {"bytes long"});
  expect_bad(good.substr(0, 1), {"truncated varint"});
  expect_bad(field_bytes(1, field_bytes(1, "abc") + "\x13"), {"wire type 3"});             // a group
  expect_bad(field_varint(1, 5), {"pieces (field 1) has wire type 0, expected 2"});       // pieces as a varint
  expect_bad(field_bytes(1, field_varint(3, 9)), {"pieces[0]", "type 9"});                // unknown piece type
  expect_bad(tiny_model(field_varint(3, 2) + field_varint(40, 99)), {"unk_id 99"});      // unk_id past the pieces
  expect_bad(tiny_model(field_varint(3, 2) + field_varint(40, 1)), {"not of type UNKNOWN"});
  expect_bad(tiny_model(field_varint(3, 2) + field_varint(35, 1)), {"<0x00>"});           // byte_fallback, no bytes
  expect_bad(piece("a", 0, 2) + piece("a", 0, 1) + field_bytes(2, field_varint(3, 2)), {"\"a\" appears twice"});
  fs::remove_all(dir);
}

// Seeded byte flips, truncations and insertions of the fixture: each load either works (and encodes) or throws
// reglage::Error naming the file; nothing else escapes, and nothing crashes.
TEST(TokenizerSentencePiece, MutatedModelsLoadOrFailCleanly) {
  const fs::path dir = model_dir("spm_mutations", "");
  const std::string path = (dir / "tokenizer.model").string();
  const std::string good = read_file(kSpmModel);
  std::mt19937 rng(20261204);
  int loaded = 0, refused = 0;
  for (int i = 0; i < 500; ++i) {
    std::string bytes = good;
    const int kind = i % 4;
    const size_t at = rng() % bytes.size();
    if (kind == 0) bytes[at] = static_cast<char>(bytes[at] ^ (1 << (rng() % 8)));
    if (kind == 1) bytes[at] = static_cast<char>(rng());
    if (kind == 2) bytes.resize(at);
    if (kind == 3) bytes.insert(at, 1, static_cast<char>(rng()));
    write_file_atomic(path, bytes);
    try {
      auto tok = load_tokenizer(dir.string());
      tok->decode(tok->encode("Hello world, Führer 😀", true, true));
      ++loaded;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      ++refused;
    }
  }
  EXPECT_EQ(loaded + refused, 500);
  EXPECT_GT(refused, 100);
  fs::remove_all(dir);
}
