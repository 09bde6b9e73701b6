// llama2.c tokenizer: exact agreement with run.c (vectors from tests/data/tokenizer/llama2c_ref.c), decode,
// corrupt files, load_tokenizer dispatch and checks, and the Hugging Face export.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/tokenizer/llama2c_tokenizer.h"
#include "framework/tokenizer/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using reglage::test::expect_error;
using reglage::test::temp_dir;
using reglage::tokenizer::Llama2cTokenizer;
using reglage::tokenizer::load_tokenizer;

namespace {

const std::string kTok512 = std::string(REGLAGE_SOURCE_DIR) + "/models/stories260K/tok512.bin";
const std::string kVectors = std::string(REGLAGE_SOURCE_DIR) + "/tests/data/tokenizer/tok512_vectors.jsonl";

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}



}  // namespace

TEST(TokenizerLlama2c, LoadsTok512) {
  Llama2cTokenizer tok(kTok512);
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.stop_ids(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(tok.piece(3), "<0x00>");
  EXPECT_EQ(tok.piece(410), " ");
}

TEST(TokenizerLlama2c, OnceUponATime) {
  Llama2cTokenizer tok(kTok512);
  EXPECT_EQ(tok.encode("Once upon a time", true, false), (std::vector<int64_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.encode("Once upon a time", false, true), (std::vector<int64_t>{403, 407, 261, 378, 2}));
  EXPECT_EQ(tok.encode("", true, true), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(tok.encode("", false, false), (std::vector<int64_t>{}));
}

// Every vector from the C transcription of run.c: encode with BOS, and run.c-style decoding of the result.
TEST(TokenizerLlama2c, MatchesRunCVectors) {
  Llama2cTokenizer tok(kTok512);
  std::ifstream in(kVectors);
  ASSERT_TRUE(in) << kVectors;
  std::string line;
  int count = 0;
  while (std::getline(in, line)) {
    const auto v = nlohmann::json::parse(line);
    const std::string text = from_hex(v["hex"].get<std::string>());
    const auto expected = v["ids"].get<std::vector<int64_t>>();
    const auto ids = tok.encode(text, true, false);
    EXPECT_EQ(ids, expected) << "input hex " << v["hex"];
    std::string decoded;
    for (size_t i = 1; i < ids.size(); ++i) decoded += tok.decode_piece(ids[i - 1], ids[i]);
    EXPECT_EQ(decoded, from_hex(v["decoded_hex"].get<std::string>())) << "input hex " << v["hex"];
    // decode skips BOS and drops the dummy prefix's space after it: every input round-trips.
    EXPECT_EQ(tok.decode(ids), text) << "input hex " << v["hex"];
    ++count;
  }
  EXPECT_EQ(count, 82);
}

TEST(TokenizerLlama2c, DecodePieceRules) {
  Llama2cTokenizer tok(kTok512);
  const auto ids = tok.encode("Once", false, false);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(tok.decode_piece(1, ids[0]), "Once");   // leading space dropped after BOS
  EXPECT_EQ(tok.decode_piece(5, ids[0]), " Once");  // kept elsewhere
  EXPECT_EQ(tok.decode_piece(1, 3 + '\n'), "\n");   // <0x0A> is the raw byte
  EXPECT_EQ(tok.decode_piece(1, 3 + 0xFF), "\xff");
  EXPECT_EQ(tok.decode({1, 403, 407, 261, 378, 2}), "Once upon a time");
  EXPECT_THROW(tok.decode_piece(1, 512), reglage::Error);
  EXPECT_THROW(tok.decode_piece(1, -1), reglage::Error);
}

TEST(TokenizerLlama2c, EmbeddedNulEndsTextLikeRunC) {
  Llama2cTokenizer tok(kTok512);
  EXPECT_EQ(tok.encode(std::string("Once\0 upon", 10), true, false), tok.encode("Once", true, false));
}

TEST(TokenizerLlama2c, CorruptFilesThrow) {
  const std::string good = reglage::core::read_file(kTok512);
  const fs::path dir = temp_dir("llama2c_corrupt");
  auto write = [&](const std::string& name, const std::string& bytes) {
    const std::string path = (dir / name).string();
    reglage::core::write_file_atomic(path, bytes);
    return path;
  };
  auto with_len = [&](int32_t len) {  // token 0's length field replaced
    std::string b = good;
    std::memcpy(&b[8], &len, 4);
    return b;
  };
  const std::string empty = write("empty.bin", "");
  expect_error([&] { Llama2cTokenizer t(empty); }, {empty, "truncated"});
  const std::string header_only = write("header.bin", good.substr(0, 4));
  expect_error([&] { Llama2cTokenizer t(header_only); }, {header_only, "0 tokens"});
  // The last token is 8 header bytes + 3 piece bytes: keep only its score.
  const std::string cut_score = write("cut_score.bin", good.substr(0, good.size() - 3 - 4));
  expect_error([&] { Llama2cTokenizer t(cut_score); }, {cut_score, "token 511", "truncated"});
  const std::string cut_bytes = write("cut_bytes.bin", good.substr(0, good.size() - 1));
  expect_error([&] { Llama2cTokenizer t(cut_bytes); }, {cut_bytes, "token 511"});
  const std::string negative = write("negative.bin", with_len(-5));
  expect_error([&] { Llama2cTokenizer t(negative); }, {negative, "token 0", "negative length -5"});
  const std::string huge = write("huge.bin", with_len(0x7fffffff));
  expect_error([&] { Llama2cTokenizer t(huge); }, {huge, "token 0", "length 2147483647"});
  const std::string missing = (dir / "missing.bin").string();
  expect_error([&] { load_tokenizer(missing); }, {missing});
  fs::remove_all(dir);
}

TEST(TokenizerLoad, DispatchAndVocabCheck) {
  auto tok = load_tokenizer(kTok512, 512);
  ASSERT_NE(dynamic_cast<Llama2cTokenizer*>(tok.get()), nullptr);
  EXPECT_EQ(tok->encode("Once upon a time", true, false), (std::vector<int64_t>{1, 403, 407, 261, 378}));
  expect_error([&] { load_tokenizer(kTok512, 500); }, {kTok512, "has 512 tokens, model expects 500"});
  const fs::path dir = temp_dir("load_empty_dir");
  expect_error([&] { load_tokenizer(dir.string()); },
               {dir.string(), "tokenizer.bin", "tokenizer.json", "vocab.json + merges.txt"});
  fs::remove_all(dir);
}

TEST(TokenizerLlama2c, SaveHfWritesFilesAndReloads) {
  Llama2cTokenizer tok(kTok512);
  const fs::path dir = temp_dir("llama2c_save_hf");
  tok.save_hf(dir.string());
  EXPECT_EQ(reglage::core::read_file((dir / "tokenizer.bin").string()), reglage::core::read_file(kTok512));

  const auto j = nlohmann::json::parse(reglage::core::read_file((dir / "tokenizer.json").string()));
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["model"]["byte_fallback"], true);
  EXPECT_EQ(j["model"]["vocab"].size(), 512u);
  EXPECT_EQ(j["model"]["vocab"]["<s>"], 1);
  EXPECT_EQ(j["model"]["vocab"]["<0x0A>"], 13);
  EXPECT_EQ(j["model"]["vocab"]["\xe2\x96\x81t"], 259);  // " t" with the SentencePiece space
  // The first merge builds the best-scoring mergeable piece, "▁t" (score 0, id 259).
  ASSERT_FALSE(j["model"]["merges"].empty());
  EXPECT_EQ(j["model"]["merges"][0], "\xe2\x96\x81 t");
  EXPECT_EQ(j["added_tokens"].size(), 3u);
  const auto config = nlohmann::json::parse(reglage::core::read_file((dir / "tokenizer_config.json").string()));
  EXPECT_EQ(config["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(config["add_bos_token"], true);
  EXPECT_TRUE(fs::exists(dir / "special_tokens_map.json"));

  // The directory loads back through tokenizer.bin (preferred over tokenizer.json).
  auto back = load_tokenizer(dir.string(), 512);
  ASSERT_NE(dynamic_cast<Llama2cTokenizer*>(back.get()), nullptr);
  EXPECT_EQ(back->encode("Hello, World! 中文 😀", true, true), tok.encode("Hello, World! 中文 😀", true, true));
  fs::remove_all(dir);
}
