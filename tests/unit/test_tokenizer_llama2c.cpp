// llama2.c tokenizer: exact agreement with run.c (vectors from tests/data/tokenizer/llama2c_ref.c), decode,
// corrupt files, load_tokenizer dispatch and checks, and the Hugging Face export.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
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

// A NUL byte is an ordinary byte (<0x00>, id 3, as SentencePiece's byte fallback has it): the text after it
// is tokenized and everything round-trips (run.c stopped at the NUL, which silently dropped the rest).
TEST(TokenizerLlama2c, NulIsAnOrdinaryByte) {
  Llama2cTokenizer tok(kTok512);
  const std::string text("Once\0 upon a time\0", 18);
  const auto ids = tok.encode(text, true, false);
  EXPECT_EQ(ids, (std::vector<int64_t>{1, 403, 3, 407, 261, 378, 3}));
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.decode(tok.encode(std::string(3, '\0'), true, true)), std::string(3, '\0'));
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

namespace {

// A copy of the shipped file with token `index`'s score or length field replaced (max_token_length stays).
std::string mutated_tok512(size_t index, const float* score, const int32_t* len) {
  std::string b = reglage::core::read_file(kTok512);
  size_t at = 4;
  for (size_t i = 0; i < index; ++i) {
    int32_t n;
    std::memcpy(&n, &b[at + 4], 4);
    at += 8 + size_t(n);
  }
  if (score) std::memcpy(&b[at], score, 4);
  if (len) std::memcpy(&b[at + 4], len, 4);
  return b;
}

// A llama2.c tokenizer file from (piece, score) pairs; max_token_length is the longest piece.
std::string tok_file(const std::vector<std::pair<std::string, float>>& pieces) {
  int32_t max_len = 1;
  for (const auto& p : pieces) max_len = std::max<int32_t>(max_len, int32_t(p.first.size()));
  std::string b(reinterpret_cast<const char*>(&max_len), 4);
  for (const auto& [piece, score] : pieces) {
    const int32_t len = int32_t(piece.size());
    b.append(reinterpret_cast<const char*>(&score), 4);
    b.append(reinterpret_cast<const char*>(&len), 4);
    b += piece;
  }
  return b;
}

// Yesterday's encode, kept as the reference: run.c's loop, every round a scan of all pairs for the best score
// (strict '>' from -1e10: leftmost on ties) and a string lookup of each concatenation. Quadratic, and exact.
std::vector<int64_t> reference_encode(const Llama2cTokenizer& tok, const std::string& text) {
  std::map<std::string, int64_t> ids;  // first id wins, as run.c's sorted lookup finds it
  for (int64_t i = tok.vocab_size() - 1; i >= 0; --i) ids[tok.piece(i)] = i;
  auto lookup = [&](const std::string& s) {
    auto it = ids.find(s);
    return it == ids.end() ? int64_t(-1) : it->second;
  };
  std::vector<int64_t> tokens;
  if (!text.empty()) tokens.push_back(lookup(" "));
  std::string buf;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) buf.clear();
    buf.push_back(static_cast<char>(c));
    const unsigned char next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
    if ((next & 0xC0) == 0x80 && buf.size() < 4) continue;
    const int64_t id = lookup(buf);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      for (unsigned char byte : buf) tokens.push_back(byte + 3);
    }
    buf.clear();
  }
  while (true) {
    float best_score = -1e10f;
    int64_t best_id = -1;
    size_t best_idx = 0;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      const int64_t id = lookup(tok.piece(tokens[i]) + tok.piece(tokens[i + 1]));
      if (id != -1 && tok.score(id) > best_score) {
        best_score = tok.score(id);
        best_id = id;
        best_idx = i;
      }
    }
    if (best_id == -1) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_idx) + 1);
  }
  return tokens;
}

// Random text: ASCII words, spaces and newlines, punctuation, digits, multi-byte UTF-8, invalid bytes, NUL.
std::string random_text(std::mt19937& rng, const std::vector<std::string>& words) {
  static const std::vector<std::string> kBits = {" ",  "  ", "\n", ".",  ",", "!", "'s", "0", "42", "é", "中文",
                                                 "😀", "\xff", "\x80", "\xe4\xb8", "\t", std::string(1, '\0')};
  std::string s;
  const int n = int(rng() % 24);
  for (int i = 0; i < n; ++i) s += rng() % 2 ? words[rng() % words.size()] : kBits[rng() % kBits.size()];
  return s;
}

}  // namespace

TEST(TokenizerLlama2c, BadScoresAndLengthsNameTheToken) {
  const fs::path dir = temp_dir("llama2c_mutated");
  auto write = [&](const std::string& name, const std::string& bytes) {
    const std::string path = (dir / name).string();
    reglage::core::write_file_atomic(path, bytes);
    return path;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float minus_inf = -inf;
  const std::string nan_path = write("nan.bin", mutated_tok512(300, &nan, nullptr));
  expect_error([&] { Llama2cTokenizer t(nan_path); }, {nan_path, "token 300", "score nan", "finite"});
  const std::string inf_path = write("inf.bin", mutated_tok512(7, &inf, nullptr));
  expect_error([&] { Llama2cTokenizer t(inf_path); }, {inf_path, "token 7", "score inf", "finite"});
  const std::string minf_path = write("minus_inf.bin", mutated_tok512(511, &minus_inf, nullptr));
  expect_error([&] { load_tokenizer(minf_path, 512); }, {minf_path, "token 511", "score -inf", "finite"});
  // Longer than the header's max_token_length (7), though the bytes are there: run.c's buffer would overflow.
  std::string longer = mutated_tok512(0, nullptr, nullptr);
  const int32_t eight = 8;
  std::memcpy(&longer[8], &eight, 4);  // token 0, "<unk>" (5 bytes) now claims 8: "<unk>" + next score's bytes
  const std::string long_path = write("long.bin", longer);
  expect_error([&] { Llama2cTokenizer t(long_path); }, {long_path, "token 0", "length 8", "max_token_length 7"});
  const int32_t minus_one = -1;
  const std::string neg_path = write("negative.bin", mutated_tok512(42, nullptr, &minus_one));
  expect_error([&] { Llama2cTokenizer t(neg_path); }, {neg_path, "token 42", "negative length -1"});
  std::string bad_header = reglage::core::read_file(kTok512);
  const int32_t zero = 0;
  std::memcpy(&bad_header[0], &zero, 4);
  const std::string header_path = write("header0.bin", bad_header);
  expect_error([&] { Llama2cTokenizer t(header_path); }, {header_path, "max_token_length is 0", "> 0"});
  // One token more than the model's embedding has rows.
  const std::string extra = write("extra.bin", reglage::core::read_file(kTok512) + tok_file({{"zz", -1.0f}}).substr(4));
  expect_error([&] { load_tokenizer(extra, 512); }, {extra, "has 513 tokens, model expects 512"});
  fs::remove_all(dir);
}

// The heap (and the cuts between segments) against the quadratic reference on random text, on the shipped
// tokenizer and on small vocabularies built to stress ties, spaces inside pieces and pieces that are never cut.
TEST(TokenizerLlama2c, HeapMatchesQuadraticReference) {
  const fs::path dir = temp_dir("llama2c_property");
  auto write_tok = [&](const std::string& name, const std::vector<std::pair<std::string, float>>& pieces) {
    const std::string path = (dir / name).string();
    reglage::core::write_file_atomic(path, tok_file(pieces));
    return path;
  };
  struct Case {
    std::string path;
    std::vector<std::string> words;
  };
  std::vector<Case> cases;
  cases.push_back({kTok512, {"Once", "upon", "a", "time", "the", "little", "dog", "Timmy", "said", "aaaa", "ttt"}});
  // Equal scores everywhere: only the leftmost rule orders merges. Spaces inside and at the end of pieces.
  std::vector<std::pair<std::string, float>> ties = {{"<unk>", 0}, {"<s>", 0}, {"</s>", 0}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    ties.emplace_back(name, 0.0f);
  }
  for (const char* p : {" ", "a", "b", "aa", "ab", "ba", "bb", "aaa", "aab", "a a", "b ", " a", " b", "ab ", "aa a"})
    ties.emplace_back(p, 1.0f);
  ties.emplace_back("bab", -1e10f);  // never merged: at or below run.c's threshold
  cases.push_back({write_tok("ties.bin", ties), {"a", "b", "aa", "ab", "ba", "aab", "bab", "abba"}});
  // Distinct scores, a merge across "\n", and pieces of byte-fallback strings (run.c merges those too).
  std::vector<std::pair<std::string, float>> mixed = ties;
  for (size_t i = 3; i < mixed.size(); ++i) mixed[i].second = -float(i % 7);
  mixed.emplace_back("a\n", 2.0f);
  mixed.emplace_back("<0xFF><0x80>", 3.0f);
  cases.push_back({write_tok("mixed.bin", mixed), {"a", "b", "aa", "ab", "ba", "aab", "bab", "\na"}});
  // An empty piece (a NUL first byte ends it, as in run.c) as z's byte fallback: z then merges into its left
  // neighbour, and no cut is safe any more.
  std::vector<std::pair<std::string, float>> empty = mixed;
  empty[3 + 'z'].first = std::string("\0z", 2);
  cases.push_back({write_tok("empty.bin", empty), {"a", "b", "zaz", "ab", "z", "bab z"}});

  std::mt19937 rng(1234);
  int compared = 0;
  for (const Case& c : cases) {
    Llama2cTokenizer tok(c.path);
    for (int i = 0; i < 1500; ++i) {
      const std::string text = random_text(rng, c.words);
      const auto ids = tok.encode(text, false, false);
      ASSERT_EQ(ids, reference_encode(tok, text)) << c.path << ": input \"" << text << "\"";
      // encode_prefix: the exact first tokens, one more than asked when there are more.
      const size_t k = rng() % (ids.size() + 2);
      auto expected = ids;
      if (expected.size() > k) expected.resize(k + 1);
      ASSERT_EQ(tok.encode_prefix(text, k), expected) << c.path << ": k " << k << " input \"" << text << "\"";
      ++compared;
    }
  }
  EXPECT_EQ(compared, 6000);
  fs::remove_all(dir);
}
