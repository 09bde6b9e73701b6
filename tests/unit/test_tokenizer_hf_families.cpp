// Today's open-model tokenizer.json files against transformers: SentencePiece-style BPE with byte fallback
// (llama-spm: Metaspace; phi-3: Prepend + Replace normalizers, added tokens with lstrip/rstrip/single_word/
// normalized), SmolLM2's Digits + ByteLevel, and variants of llama-spm; every vector of
// tests/data/hf-families/vectors.jsonl (made by make_hf_families.py), encoded with and without special tokens,
// decoded whole and piece by piece, through encode_prefix, and again after save_hf. Then bad files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/tokenizer/bpe_tokenizer.h"
#include "framework/tokenizer/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using reglage::core::read_file;
using reglage::core::write_file_atomic;
using reglage::test::expect_error;
using reglage::test::temp_dir;
using reglage::tokenizer::load_tokenizer;
using reglage::tokenizer::Tokenizer;

namespace {

const std::string kFamilies = std::string(REGLAGE_SOURCE_DIR) + "/tests/data/hf-families";

struct Row {
  std::string text;
  std::vector<int64_t> ids, ids_plain;
  std::string decoded;
};

std::map<std::string, std::vector<Row>> read_vectors() {
  std::map<std::string, std::vector<Row>> out;
  std::ifstream in(kFamilies + "/vectors.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const json v = json::parse(line);
    out[v["family"]].push_back({v["text"], v["ids"].get<std::vector<int64_t>>(),
                                v["ids_plain"].get<std::vector<int64_t>>(), v["decoded"]});
  }
  return out;
}

// A family's directory: the shipped one, or a variant rebuilt from its base as make_hf_families.py does.
std::string family_dir(const std::string& family, const fs::path& scratch) {
  const std::string variant = kFamilies + "/variants/" + family + ".json";
  if (!fs::exists(variant)) return kFamilies + "/" + family;
  const json v = json::parse(read_file(variant));
  const fs::path dir = scratch / family;
  fs::create_directories(dir);
  for (const auto& [file, key] : {std::pair<std::string, std::string>{"tokenizer.json", "tokenizer_json"},
                                  {"tokenizer_config.json", "tokenizer_config"}}) {
    json j = json::parse(read_file(kFamilies + "/" + v["base"].get<std::string>() + "/" + file));
    if (v.contains(key)) j.update(v[key]);
    write_file_atomic((dir / file).string(), j.dump());
  }
  return dir.string();
}

// Every check on one family's rows; returns the number of rows checked.
int check_rows(const Tokenizer& tok, const std::string& family, const std::vector<Row>& rows) {
  int n = 0;
  for (const Row& r : rows) {
    EXPECT_EQ(tok.encode(r.text, tok.add_bos(), tok.add_eos()), r.ids) << family << ": \"" << r.text << "\"";
    EXPECT_EQ(tok.encode(r.text, false, false), r.ids_plain) << family << ": \"" << r.text << "\"";
    EXPECT_EQ(tok.decode(r.ids_plain), r.decoded) << family << ": \"" << r.text << "\"";
    // Piece by piece (as generate prints) gives the same text, BOS included. After a special token in the
    // middle, decode_piece cannot know whether text came before it, so those rows are left out here.
    const bool specials_inside = r.text.find("<s>") != std::string::npos || r.text.find("</s>") != std::string::npos ||
                                 r.text.find("<unk>") != std::string::npos || r.text.find("<|") != std::string::npos;
    std::string streamed;
    int64_t prev = -1;
    for (int64_t id : r.ids) {
      streamed += tok.decode_piece(prev, id);
      prev = id;
    }
    if (!specials_inside) EXPECT_EQ(streamed, tok.decode(r.ids)) << family << ": \"" << r.text << "\"";
    for (size_t k : {size_t(0), size_t(1), r.ids_plain.size() / 2, r.ids_plain.size()}) {
      std::vector<int64_t> expected = r.ids_plain;
      if (expected.size() > k) expected.resize(k + 1);
      EXPECT_EQ(tok.encode_prefix(r.text, k), expected) << family << " k=" << k << ": \"" << r.text << "\"";
    }
    ++n;
  }
  return n;
}

}  // namespace

TEST(TokenizerHfFamilies, MatchTransformersAndSurviveSaveHf) {
  const auto vectors = read_vectors();
  const fs::path scratch = temp_dir("hf_families");
  int total = 0;
  for (const auto& [family, rows] : vectors) {
    if (family == "spm-small") continue;  // tokenizer.model only: TokenizerSentencePiece
    SCOPED_TRACE(family);
    auto tok = load_tokenizer(family_dir(family, scratch));
    ASSERT_NE(dynamic_cast<reglage::tokenizer::BpeTokenizer*>(tok.get()), nullptr);
    EXPECT_EQ(check_rows(*tok, family, rows), 81);
    total += 81;
    // save_hf writes the steps it read: the reloaded tokenizer gives the same ids.
    const fs::path saved = scratch / (family + "-saved");
    tok->save_hf(saved.string());
    auto back = load_tokenizer(saved.string());
    EXPECT_EQ(back->add_bos(), tok->add_bos());
    EXPECT_EQ(back->add_eos(), tok->add_eos());
    EXPECT_EQ(back->vocab_size(), tok->vocab_size());
    check_rows(*back, family + " (saved)", rows);
  }
  EXPECT_EQ(total, 6 * 81);
  fs::remove_all(scratch);
}

TEST(TokenizerHfFamilies, FlagsFollowTemplateOrLlamaClass) {
  const fs::path dir = temp_dir("hf_families_flags");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(kFamilies + "/llama-spm/" + f, dir / f);
  auto tok = load_tokenizer(dir.string());
  EXPECT_TRUE(tok->add_bos());  // the template's [<s>, $A]
  EXPECT_FALSE(tok->add_eos());
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->stop_ids(), (std::vector<int64_t>{2}));
  // A Llama class rebuilds the template from add_bos_token / add_eos_token (transformers 4.x
  // LlamaTokenizerFast; a generic PreTrainedTokenizerFast keeps the template, see the llama-spm-bos-eos rows).
  json tc = json::parse(read_file((dir / "tokenizer_config.json").string()));
  tc["tokenizer_class"] = "LlamaTokenizerFast";
  tc["add_eos_token"] = true;
  write_file_atomic((dir / "tokenizer_config.json").string(), tc.dump());
  tok = load_tokenizer(dir.string());
  EXPECT_TRUE(tok->add_bos());
  EXPECT_TRUE(tok->add_eos());
  EXPECT_EQ(tok->encode("Hello", tok->add_bos(), tok->add_eos()), (std::vector<int64_t>{1, 15043, 2}));
  tc["add_bos_token"] = false;
  write_file_atomic((dir / "tokenizer_config.json").string(), tc.dump());
  tok = load_tokenizer(dir.string());
  EXPECT_FALSE(tok->add_bos());
  fs::remove_all(dir);
}

// A long text without newlines' worth of pre-tokenizer (phi-3 has none): encode_prefix stops early and agrees.
TEST(TokenizerHfFamilies, PrefixOfLongTextWithoutPreTokenizer) {
  auto tok = load_tokenizer(kFamilies + "/phi-3");
  std::string text;
  for (int i = 0; i < 300; ++i) text += "Line " + std::to_string(i) + ": the quick brown fox, café 😀\n";
  const auto all = tok->encode(text, false, false);
  for (size_t k : {size_t(5), size_t(100), all.size() - 1, all.size(), all.size() + 10}) {
    std::vector<int64_t> expected = all;
    if (expected.size() > k) expected.resize(k + 1);
    EXPECT_EQ(tok->encode_prefix(text, k), expected) << k;
  }
  EXPECT_EQ(tok->decode(all), text);
}

TEST(TokenizerHfFamilies, BadFilesNameFileStepAndType) {
  const fs::path dir = temp_dir("hf_families_bad");
  const std::string path = (dir / "tokenizer.json").string();
  const json base = json::parse(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
                                    "pre_tokenizer": null})");
  auto expect_bad = [&](const char* key, const json& value, std::vector<std::string> parts) {
    json j = base;
    if (std::string(key).rfind("model.", 0) == 0)
      j["model"][std::string(key).substr(6)] = value;
    else
      j[key] = value;
    write_file_atomic(path, j.dump());
    parts.insert(parts.begin(), path);
    expect_error([&] { load_tokenizer(path); }, parts);
  };
  expect_bad("pre_tokenizer",
             json::parse(R"({"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "UnicodeScripts"}]})"),
             {"pre_tokenizer step 1", "UnicodeScripts", "not supported"});
  expect_bad("pre_tokenizer",
             json::parse(R"({"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, {"type": "Digits"}]})"),
             {"pre_tokenizer step 0", "ByteLevel", "last"});
  expect_bad("pre_tokenizer", json::parse(R"({"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"})"),
             {"pre_tokenizer", "Sideways"});
  expect_bad("normalizer", json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFKC"}]})"),
             {"normalizer", "NFKC", "not supported"});
  expect_bad("normalizer", json::parse(R"({"type": "Replace", "pattern": {"Regex": "(x"}, "content": ""})"),
             {"normalizer", "does not compile"});
  expect_bad("decoder", json::parse(R"({"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "WordPiece"}]})"),
             {"decoder", "WordPiece", "not supported"});
  expect_bad("post_processor", json::parse(R"({"type": "Whatever"})"), {"post_processor", "Whatever"});
  expect_bad("post_processor", json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "a"}}, {"SpecialToken": {"id": "b"}}, {"Sequence": {"id": "A"}}],
      "special_tokens": {"a": {"id": "a", "ids": [0]}, "b": {"id": "b", "ids": [1]}}})"),
             {"post_processor", "2 token(s) before"});
  expect_bad("model.byte_fallback", true, {"byte_fallback", "<0x00>"});
  expect_bad("model.unk_token", "<unk>", {"unk_token", "<unk>"});
  fs::remove_all(dir);
}
