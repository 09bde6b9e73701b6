// Tokenizers in the data readers: a NUL in a JSONL row is an ordinary byte, and rows longer than max_seq_len
// are encoded only as far as max_seq_len needs (the text past that point is never looked at: here it holds a
// byte the small tokenizers cannot encode, which would throw if it were reached).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/core/file_util.h"
#include "framework/data/preference_data.h"
#include "framework/data/prompt_data.h"
#include "framework/data/sft_data.h"
#include "framework/tokenizer/llama2c_tokenizer.h"
#include "framework/tokenizer/tokenizer.h"
#include "test_util.h"

namespace {

using reglage::test::expect_error;
using reglage::test::TempDir;
using namespace reglage;

std::string write_file(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.path(name);
  core::write_file_atomic(path, text);
  return path;
}

std::string row(const nlohmann::json& j) { return j.dump() + "\n"; }

data::SftDataOptions options(int64_t max_seq_len, bool truncate) {
  data::SftDataOptions opt;
  opt.max_seq_len = max_seq_len;
  opt.truncate = truncate;
  return opt;
}

// A llama2.c tokenizer whose byte fallback stops at 0x7F: bytes 0x80.. cannot be encoded (an error).
std::string ascii_llama2c(const TempDir& dir) {
  std::vector<std::pair<std::string, float>> pieces = {{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  for (int b = 0; b < 128; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.emplace_back(name, 0.0f);
  }
  for (const char* p : {" ", "w", "o", "r", "d", " w", " wo", "rd", " word"}) pieces.emplace_back(p, -1.0f);
  int32_t max_len = 6;
  std::string b(reinterpret_cast<const char*>(&max_len), 4);
  for (const auto& [piece, score] : pieces) {
    const int32_t len = int32_t(piece.size());
    b.append(reinterpret_cast<const char*>(&score), 4);
    b.append(reinterpret_cast<const char*>(&len), 4);
    b += piece;
  }
  return write_file(dir, "ascii.bin", b);
}

// A byte-level BPE tokenizer that knows only "a", " " and " a": other bytes cannot be encoded.
std::string tiny_bpe(const TempDir& dir) {
  const nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"\xc4\xa0", 1}, {"\xc4\xa0" "a", 2}}},
                 {"merges", {"\xc4\xa0 a"}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}};
  return write_file(dir, "tokenizer.json", j.dump());
}

// 100,000 words, then a character the tokenizer has no token for.
std::string long_text(const std::string& word) {
  std::string s;
  for (int i = 0; i < 100000; ++i) s += (i ? " " : "") + word;
  return s + " \xc3\xa9";  // "é": its bytes have no token in either small tokenizer
}

}  // namespace

// "\u0000" in a prompt or completion: the text after it is kept and the row decodes back to the text.
TEST(TokenizerData, NulInJsonlIsAnOrdinaryByte) {
  TempDir dir;
  tokenizer::Llama2cTokenizer tok(test::tok_512());
  const std::string prompt("Once\0 upon", 10), completion("a\0time", 6);
  const auto path = write_file(dir, "nul.jsonl", row({{"prompt", prompt}, {"completion", completion}}));
  ASSERT_NE(core::read_file(path).find("\\u0000"), std::string::npos);
  const auto data = data::load_sft_jsonl(path, tok, options(64, false));
  ASSERT_EQ(data.rows.size(), 1u);
  const auto& ids = data.rows[0].ids;
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 3), 2);  // <0x00> twice
  // BOS, prompt (no loss), completion + EOS (loss): each part decodes back to its text.
  const auto prompt_ids = tok.encode(prompt, false, false);
  ASSERT_EQ(ids.size(), 1 + prompt_ids.size() + tok.encode(completion, false, false).size() + 1);
  EXPECT_EQ(tok.decode(std::vector<int64_t>(ids.begin(), ids.begin() + 1 + long(prompt_ids.size()))), prompt);
  EXPECT_EQ(tok.decode({ids.begin() + 1 + long(prompt_ids.size()), ids.end()}), " " + completion);
}

TEST(TokenizerData, EncodePrefixStopsEarly) {
  TempDir dir;
  for (const auto& tok : {tokenizer::load_tokenizer(ascii_llama2c(dir)), tokenizer::load_tokenizer(tiny_bpe(dir))}) {
    const std::string word = tok->vocab_size() > 100 ? "word" : "a";
    const std::string text = long_text(word);
    EXPECT_THROW(tok->encode(text, false, false), Error);  // the last byte has no token
    const auto ids = tok->encode_prefix(text, 10);
    ASSERT_EQ(ids.size(), 11u);  // one more than asked: the text is longer
    EXPECT_EQ(ids, tok->encode_prefix(text.substr(0, 200), 10));
    EXPECT_EQ(tok->encode_prefix(word, 10), tok->encode(word, false, false));  // fits: all of it
  }
}

// A row longer than max_seq_len: with truncate the first max_seq_len tokens, exactly; without, the usual
// error naming the line and the limit. Neither reaches the end of the text.
TEST(TokenizerData, LongRowsStopAtMaxSeqLen) {
  TempDir dir;
  for (const auto& tok : {tokenizer::load_tokenizer(ascii_llama2c(dir)), tokenizer::load_tokenizer(tiny_bpe(dir))}) {
    const std::string word = tok->vocab_size() > 100 ? "word" : "a";
    const std::string text = long_text(word);
    const std::string head = text.substr(0, 400);  // more than 16 tokens' worth
    const auto sft = write_file(dir, "sft.jsonl", row({{"prompt", word}, {"completion", text}}));
    auto cut = data::load_sft_jsonl(sft, *tok, options(16, true));
    ASSERT_EQ(cut.rows.size(), 1u);
    EXPECT_EQ(cut.truncated, 1);
    std::vector<int64_t> expected = tok->encode(word, false, false);
    const auto rest = tok->encode(head, false, false);
    expected.insert(expected.end(), rest.begin(), rest.end());
    if (tok->bos_id() >= 0) expected.insert(expected.begin(), tok->bos_id());
    expected.resize(16);
    EXPECT_EQ(cut.rows[0].ids, expected);
    expect_error([&] { data::load_sft_jsonl(sft, *tok, options(16, false)); },
                 {sft + ":1: ", "row is at least 17 tokens, longer than max_seq_len = 16"});

    const auto prompts = write_file(dir, "prompts.jsonl", row({{"prompt", text}}));
    expect_error([&] { data::load_prompt_jsonl(prompts, *tok, options(16, false)); },
                 {prompts + ":1: ", "prompt is at least 17 tokens, longer than max_seq_len = 16"});

    const auto pairs = write_file(dir, "pairs.jsonl",
                                  row({{"prompt", word}, {"chosen", text}, {"rejected", text.substr(0, 10)}}));
    const auto kept = data::load_preference_jsonl(pairs, *tok, options(16, true));
    ASSERT_EQ(kept.pairs.size(), 1u);
    EXPECT_EQ(kept.truncated, 1);
    EXPECT_EQ(kept.pairs[0].chosen, expected);
    expect_error([&] { data::load_preference_jsonl(pairs, *tok, options(16, false)); },
                 {pairs + ":1: ", "pair is at least 17 tokens, longer than max_seq_len = 16"});
    // Both sides cut, the same text: still "the same", as when they were encoded whole.
    const auto same = write_file(dir, "same.jsonl", row({{"prompt", word}, {"chosen", text}, {"rejected", text}}));
    expect_error([&] { data::load_preference_jsonl(same, *tok, options(16, true)); }, {same + ":1: ", "\"chosen\" and \"rejected\" are the same"});
  }
}
