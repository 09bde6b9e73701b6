// SFT data: tokenization and loss masks (prompt/completion and each chat template), errors naming
// path:line, skipping and truncation, the sampler's determinism, sharding, padding; the demo task's rule.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <set>

#include "framework/data/demo_task.h"
#include "framework/data/preference_data.h"
#include "framework/data/prompt_data.h"
#include "framework/data/sft_data.h"
#include "byte_tokenizer.h"
#include "test_util.h"

namespace reglage::data {
namespace {

using test::expect_error;
using test::TempDir;

using test::ByteTokenizer;

std::string write_jsonl(const TempDir& dir, const std::string& text) {
  const std::string path = dir.path("data.jsonl");
  std::ofstream(path) << text;
  return path;
}

SftDataOptions options(int64_t max_seq_len = 1024, const std::string& chat_template = "plain") {
  SftDataOptions opt;
  opt.max_seq_len = max_seq_len;
  opt.chat_template = chat_template;
  return opt;
}

// ids/loss of text pieces the way the loader builds them: BOS, each piece encoded alone, EOS after loss pieces.
void append(const tokenizer::Tokenizer& tok, std::vector<int64_t>& ids, std::vector<uint8_t>& loss,
            const std::string& text, bool is_loss) {
  for (auto id : tok.encode(text, false, false)) {
    ids.push_back(id);
    loss.push_back(is_loss);
  }
  if (is_loss) {
    ids.push_back(tok.eos_id());
    loss.push_back(1);
  }
}

// ---- numbers in rows (issue 14, item 14) ------------------------------------------------------------

// 1e400 overflows a double: nlohmann throws out_of_range, not parse_error, and that once escaped without
// path:line and past skip_bad_rows. Every loader now treats it as a bad row.
TEST(DataNumbers, OverflowingNumberIsABadRowInEveryLoader) {
  TempDir dir;
  ByteTokenizer tok;
  const std::string sft_good = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
  const auto sft = write_jsonl(dir, sft_good + "{\"prompt\": \"a\", \"completion\": \"b\", \"w\": 1e400}\n");
  expect_error([&] { load_sft_jsonl(sft, tok, options()); }, {sft + ":2: ", "invalid JSON", "1e400"});
  auto skip = options();
  skip.skip_bad_rows = true;
  const auto sft_data = load_sft_jsonl(sft, tok, skip);
  EXPECT_EQ(sft_data.rows.size(), 1u);
  EXPECT_EQ(sft_data.skipped, 1);

  const std::string prompts_path = dir.path("prompts.jsonl");
  std::ofstream(prompts_path) << "{\"prompt\": \"a\", \"n\": -1e400}\n{\"prompt\": \"b\"}\n";
  expect_error([&] { load_prompt_jsonl(prompts_path, tok, options()); }, {prompts_path + ":1: ", "invalid JSON"});
  const auto prompts = load_prompt_jsonl(prompts_path, tok, skip);
  EXPECT_EQ(prompts.rows.size(), 1u);
  EXPECT_EQ(prompts.skipped, 1);
}

// margin: 1e39 is a finite double but inf as the float32 the loss uses; it stopped the stage at step 1.
TEST(DataNumbers, PreferenceMarginMustBeFiniteAsFloat32) {
  TempDir dir;
  ByteTokenizer tok;
  const std::string good = "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\", \"margin\": 3e38}\n";
  for (const std::string margin : {"1e39", "-1e39", "1e400"}) {
    const std::string path = dir.path("pairs.jsonl");
    std::ofstream(path) << good << "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\", \"margin\": " << margin
                        << "}\n";
    expect_error([&] { load_preference_jsonl(path, tok, options()); },
                 {path + ":2: ", margin == "1e400" ? "1e400" : "finite number within float32 range"});
    auto skip = options();
    skip.skip_bad_rows = true;
    const auto data = load_preference_jsonl(path, tok, skip);
    ASSERT_EQ(data.pairs.size(), 1u) << margin;
    EXPECT_EQ(data.skipped, 1) << margin;
    EXPECT_TRUE(std::isfinite(collate_pairs(data, {0}, 0).margin[0].item<float>()));
  }
}

// A directory given as data once read as an empty file ("no rows"); now it is named as a directory.
TEST(DataNumbers, DirectoryAsDataIsNamed) {
  TempDir dir;
  ByteTokenizer tok;
  expect_error([&] { load_sft_jsonl(dir.path(), tok, options()); }, {dir.path(), "is a directory"});
  expect_error([&] { load_prompt_jsonl(dir.path(), tok, options()); }, {dir.path(), "is a directory"});
  expect_error([&] { load_preference_jsonl(dir.path(), tok, options()); }, {dir.path(), "is a directory"});
}

// ---- tokenization and loss masks ----------------------------------------------------------------

TEST(DataSft, PromptCompletionByBytes) {
  TempDir dir;
  ByteTokenizer tok;
  const auto path = write_jsonl(dir, "{\"prompt\": \"Hi\", \"completion\": \"yo\"}\n\n");
  const auto data = load_sft_jsonl(path, tok, options());
  ASSERT_EQ(data.rows.size(), 1u);
  EXPECT_EQ(data.rows[0].ids, (std::vector<int64_t>{1, 'H' + 3, 'i' + 3, 'y' + 3, 'o' + 3, 2}));
  EXPECT_EQ(data.rows[0].loss, (std::vector<uint8_t>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(data.rows[0].line, 1);
  EXPECT_EQ(data.skipped, 0);
  EXPECT_EQ(data.truncated, 0);
}

// A tokenizer that has a BOS token but does not add it (GPT-2, Qwen2, SmolLM): rows start with the text.
TEST(DataSft, NoBosWhenTheTokenizerAddsNone) {
  TempDir dir;
  ByteTokenizer tok(/*with_eos=*/true, /*adds_bos=*/false);
  const auto path = write_jsonl(dir, "{\"prompt\": \"Hi\", \"completion\": \"yo\"}\n");
  const auto data = load_sft_jsonl(path, tok, options());
  ASSERT_EQ(data.rows.size(), 1u);
  EXPECT_EQ(data.rows[0].ids, (std::vector<int64_t>{'H' + 3, 'i' + 3, 'y' + 3, 'o' + 3, 2}));
  EXPECT_EQ(data.rows[0].loss, (std::vector<uint8_t>{0, 0, 1, 1, 1}));
}

TEST(DataSft, PromptCompletionTok512) {
  TempDir dir;
  auto tok = tokenizer::load_tokenizer(test::tok_512());
  const auto path = write_jsonl(dir,
                                "\n{\"prompt\": \"Write a story about a cat named Dalu.\", "
                                "\"completion\": \"Once upon a time, there was a cat named Dalu.\"}\n");
  const auto data = load_sft_jsonl(path, *tok, options());
  ASSERT_EQ(data.rows.size(), 1u);
  std::vector<int64_t> ids{tok->bos_id()};
  std::vector<uint8_t> loss{0};
  append(*tok, ids, loss, "Write a story about a cat named Dalu.", false);
  append(*tok, ids, loss, "Once upon a time, there was a cat named Dalu.", true);
  EXPECT_EQ(data.rows[0].ids, ids);
  EXPECT_EQ(data.rows[0].loss, loss);
  EXPECT_EQ(data.rows[0].line, 2);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(ids.back(), 2);  // EOS
  // The dummy prefix gives the completion its leading space: prompt and completion read as one text.
  EXPECT_EQ(tok->decode(ids), "Write a story about a cat named Dalu. Once upon a time, there was a cat named Dalu.");
}

const std::vector<std::pair<std::string, std::string>> kChat = {
    {"system", "Be kind."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}, {"assistant", "Ciao"}};
const char* kChatJson =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be kind.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, "
    "{\"role\": \"assistant\", \"content\": \"Hello\"}, {\"role\": \"user\", \"content\": \"Bye\"}, "
    "{\"role\": \"assistant\", \"content\": \"Ciao\"}]}\n";

using SegmentList = std::vector<std::pair<std::string, bool>>;

TEST(DataChat, RenderPlain) {
  EXPECT_EQ(render_chat("plain", kChat), (SegmentList{{"System: Be kind.\nUser: Hi\nAssistant:", false},
                                                      {" Hello", true},
                                                      {"User: Bye\nAssistant:", false},
                                                      {" Ciao", true}}));
}

TEST(DataChat, RenderChatml) {
  EXPECT_EQ(render_chat("chatml", kChat),
            (SegmentList{{"<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                          "<|im_start|>assistant\n",
                          false},
                         {"Hello<|im_end|>", true},
                         {"\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n", false},
                         {"Ciao<|im_end|>", true},
                         {"\n", false}}));
}

TEST(DataChat, RenderLlama2) {
  EXPECT_EQ(render_chat("llama2", kChat), (SegmentList{{"[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST]", false},
                                                       {" Hello ", true},
                                                       {"[INST] Bye [/INST]", false},
                                                       {" Ciao ", true}}));
}

TEST(DataChat, UnknownTemplateAndRole) {
  expect_error([] { render_chat("alpaca", kChat); }, {"unknown chat template", "alpaca"});
  expect_error([] { render_chat("plain", {{"tool", "x"}}); }, {"unknown role", "tool"});
}

// Each template through the loader: segments encoded one by one, EOS after each assistant segment.
TEST(DataChat, LoaderMasksEachTemplate) {
  TempDir dir;
  auto tok = tokenizer::load_tokenizer(test::tok_512());
  const auto path = write_jsonl(dir, kChatJson);
  for (const std::string tmpl : {"plain", "chatml", "llama2"}) {
    const auto data = load_sft_jsonl(path, *tok, options(1024, tmpl));
    ASSERT_EQ(data.rows.size(), 1u) << tmpl;
    std::vector<int64_t> ids{tok->bos_id()};
    std::vector<uint8_t> loss{0};
    for (const auto& [text, is_assistant] : render_chat(tmpl, kChat)) append(*tok, ids, loss, text, is_assistant);
    EXPECT_EQ(data.rows[0].ids, ids) << tmpl;
    EXPECT_EQ(data.rows[0].loss, loss) << tmpl;
  }
  // By bytes, the plain template's mask by hand: loss on " Hello" + EOS and " Ciao" + EOS only.
  ByteTokenizer bytes;
  const auto data = load_sft_jsonl(path, bytes, options());
  std::string masked;
  for (size_t t = 0; t < data.rows[0].ids.size(); ++t)
    if (data.rows[0].loss[t]) masked += data.rows[0].ids[t] == 2 ? '|' : char(data.rows[0].ids[t] - 3);
  EXPECT_EQ(masked, " Hello| Ciao|");
}

// ---- errors ---------------------------------------------------------------------------------------

TEST(DataSftErrors, EachProblemNamesPathAndLine) {
  TempDir dir;
  ByteTokenizer tok;
  const std::string good = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"prompt\": \"a\", ", "invalid JSON"},
      {"[1, 2]", "must be a JSON object"},
      {"{\"prompt\": \"a\"}", "missing \"completion\""},
      {"{\"completion\": \"a\"}", "missing \"prompt\""},
      {"{\"prompt\": 3, \"completion\": \"b\"}", "\"prompt\" must be a string"},
      {"{\"prompt\": \"a\", \"completion\": \"b\", \"messages\": []}", "both"},
      {"{\"text\": \"a\"}", "neither"},
      {"{\"messages\": {}}", "must be an array"},
      {"{\"messages\": [\"hi\"]}", "messages[0] must be an object"},
      {"{\"messages\": [{\"role\": \"user\"}]}", "messages[0]: missing \"content\""},
      {"{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}", "unknown role \"bot\""},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "no assistant turn"},
  };
  for (const auto& [row, problem] : cases) {
    const auto path = write_jsonl(dir, good + "\n" + row + "\n" + good);
    expect_error([&] { load_sft_jsonl(path, tok, options()); }, {path + ":3: ", problem});
  }
  // No loss tokens: an empty completion with a tokenizer that has no EOS.
  ByteTokenizer no_eos(false);
  const auto path = write_jsonl(dir, good + "{\"prompt\": \"a\", \"completion\": \"\"}\n");
  expect_error([&] { load_sft_jsonl(path, no_eos, options()); }, {path + ":2: ", "no completion tokens"});
}

TEST(DataSftErrors, TooLongStatesLengthAndLimit) {
  TempDir dir;
  ByteTokenizer tok;
  const auto path = write_jsonl(dir, "{\"prompt\": \"abc\", \"completion\": \"defg\"}\n");  // 9 tokens
  expect_error([&] { load_sft_jsonl(path, tok, options(8)); }, {path + ":1: ", "9 tokens", "max_seq_len = 8"});
  auto opt = options(8);
  opt.skip_bad_rows = true;  // too long is not malformed: still an error without truncate
  expect_error([&] { load_sft_jsonl(path, tok, opt); }, {path + ":1: ", "9 tokens"});
  EXPECT_EQ(load_sft_jsonl(path, tok, options(9)).rows[0].ids.size(), 9u);
}

TEST(DataSftErrors, FileAndOptions) {
  TempDir dir;
  ByteTokenizer tok;
  expect_error([&] { load_sft_jsonl(dir.path("missing.jsonl"), tok, options()); }, {dir.path("missing.jsonl")});
  const auto empty = write_jsonl(dir, "\n  \n");
  expect_error([&] { load_sft_jsonl(empty, tok, options()); }, {empty, "no rows"});
  expect_error([&] { load_sft_jsonl(empty, tok, options(0)); }, {"max_seq_len = 0"});
  expect_error([&] { load_sft_jsonl(empty, tok, options(16, "vicuna")); }, {"vicuna"});
}

TEST(DataSft, SkipBadRowsCounts) {
  TempDir dir;
  ByteTokenizer tok;
  const auto path = write_jsonl(dir,
                                "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
                                "not json\n"
                                "{\"prompt\": \"a\"}\n"
                                "\n"
                                "{\"prompt\": \"c\", \"completion\": \"d\"}\n");
  auto opt = options();
  opt.skip_bad_rows = true;
  const auto data = load_sft_jsonl(path, tok, opt);
  EXPECT_EQ(data.skipped, 2);
  ASSERT_EQ(data.rows.size(), 2u);
  EXPECT_EQ(data.rows[0].line, 1);
  EXPECT_EQ(data.rows[1].line, 5);
  const auto bad_only = write_jsonl(dir, "nope\n");
  expect_error([&] { load_sft_jsonl(bad_only, tok, opt); }, {bad_only, "no rows", "1 bad rows skipped"});
}

TEST(DataSft, Truncation) {
  TempDir dir;
  ByteTokenizer tok;
  const auto path = write_jsonl(dir,
                                "{\"prompt\": \"ab\", \"completion\": \"cdef\"}\n"      // 8 tokens: cut to 5
                                "{\"prompt\": \"a\", \"completion\": \"b\"}\n"          // 4 tokens: kept
                                "{\"prompt\": \"abcdefg\", \"completion\": \"h\"}\n");  // cut keeps no loss
  auto opt = options(5);
  opt.truncate = true;
  expect_error([&] { load_sft_jsonl(path, tok, opt); }, {path + ":3: ", "no completion tokens"});
  opt.skip_bad_rows = true;
  const auto data = load_sft_jsonl(path, tok, opt);
  EXPECT_EQ(data.truncated, 1);
  EXPECT_EQ(data.skipped, 1);
  ASSERT_EQ(data.rows.size(), 2u);
  EXPECT_EQ(data.rows[0].ids, (std::vector<int64_t>{1, 'a' + 3, 'b' + 3, 'c' + 3, 'd' + 3}));
  EXPECT_EQ(data.rows[0].loss, (std::vector<uint8_t>{0, 0, 0, 1, 1}));
}

// ---- sampler and shards ---------------------------------------------------------------------------

TEST(DataSampler, DeterministicPermutationsPerEpoch) {
  DataSampler a(10, 7), b(10, 7), c(10, 8);
  const auto ea0 = a.next_global_batch(10), ea1 = a.next_global_batch(10);
  EXPECT_EQ(ea0, b.next_global_batch(10));
  EXPECT_EQ(ea1, b.next_global_batch(10));
  EXPECT_NE(ea0, c.next_global_batch(10));
  EXPECT_NE(ea0, ea1);  // each epoch its own order
  for (const auto& e : {ea0, ea1}) {
    auto sorted = e;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(sorted[size_t(i)], i);
  }
  EXPECT_EQ(a.state().epoch, 1);
  EXPECT_EQ(a.state().offset, 10);
}

TEST(DataSampler, BatchesCrossEpochs) {
  DataSampler whole(5, 3), pieces(5, 3);
  std::vector<int64_t> expected = whole.next_global_batch(5), second = whole.next_global_batch(5);
  expected.insert(expected.end(), second.begin(), second.end());
  std::vector<int64_t> got = pieces.next_global_batch(3), more = pieces.next_global_batch(4);  // crosses at 5
  got.insert(got.end(), more.begin(), more.end());
  more = pieces.next_global_batch(3);
  got.insert(got.end(), more.begin(), more.end());
  EXPECT_EQ(got, expected);
  EXPECT_EQ(pieces.state().epoch, 1);
  EXPECT_EQ(pieces.state().offset, 5);
  // A batch larger than the data set spans several epochs.
  DataSampler big(2, 1);
  EXPECT_EQ(big.next_global_batch(5).size(), 5u);
  EXPECT_EQ(big.state().epoch, 2);
  EXPECT_EQ(big.state().offset, 1);
}

TEST(DataSampler, RestoreReproducesTheFuture) {
  DataSampler a(7, 42);
  a.next_global_batch(4);
  a.next_global_batch(5);  // into epoch 1
  const auto saved = a.state();
  std::vector<std::vector<int64_t>> future;
  for (int i = 0; i < 5; ++i) future.push_back(a.next_global_batch(3));
  DataSampler b(7, 42);
  b.restore(saved);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.next_global_batch(3), future[size_t(i)]) << i;
  expect_error([&] { b.restore({0, 8}); }, {"offset 8"});
  expect_error([] { DataSampler(0, 1); }, {"0 rows"});
}

TEST(DataSampler, ShardsCoverWithoutOverlap) {
  const std::vector<int64_t> batch{9, 4, 7, 1, 0, 3, 8};
  for (int world = 1; world <= 3; ++world) {
    std::vector<int64_t> joined;
    for (int r = 0; r < world; ++r) {
      const auto part = shard(batch, r, world);
      EXPECT_GE(int64_t(part.size()), int64_t(batch.size()) / world);
      EXPECT_LE(int64_t(part.size()), int64_t(batch.size()) / world + 1);
      joined.insert(joined.end(), part.begin(), part.end());
    }
    EXPECT_EQ(joined, batch) << "world " << world;  // contiguous slices in rank order: no overlap, no gap
  }
  EXPECT_EQ(shard(batch, 1, 3), (std::vector<int64_t>{7, 1}));  // [7/3, 14/3) = [2, 4)
  expect_error([&] { shard(batch, 2, 2); }, {"rank 2"});
}

// ---- collate ----------------------------------------------------------------------------------------

TEST(DataCollate, TargetsByHand) {
  SftDataset data;
  data.path = "mem";
  data.rows.push_back({{1, 10, 11, 12, 2}, {0, 0, 1, 1, 1}, 1});
  data.rows.push_back({{1, 20, 21}, {0, 0, 1}, 2});
  const auto batch = collate(data, {1, 0}, /*pad_id=*/0);
  const auto ids = torch::tensor({1, 20, 21, 0, 0, 1, 10, 11, 12, 2}, torch::kInt64).view({2, 5});
  const auto targets = torch::tensor({-100, 21, -100, -100, -100, -100, 11, 12, 2, -100}, torch::kInt64).view({2, 5});
  const auto valid = torch::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, torch::kInt64).view({2, 5}).to(torch::kBool);
  EXPECT_TRUE(torch::equal(batch.ids, ids)) << batch.ids;
  EXPECT_TRUE(torch::equal(batch.targets, targets)) << batch.targets;
  EXPECT_TRUE(torch::equal(batch.valid, valid)) << batch.valid;
  EXPECT_EQ(batch.target_tokens, 4);
  EXPECT_EQ(count_target_tokens(data, {1, 0}), 4);
  EXPECT_EQ(count_target_tokens(data, {0, 0}), 6);
  // Position 0 is never a target, even when flagged.
  data.rows.push_back({{5, 6}, {1, 1}, 3});
  EXPECT_EQ(count_target_tokens(data, {2}), 1);
  EXPECT_EQ(collate(data, {2}, 0).target_tokens, 1);
  expect_error([&] { collate(data, {3}, 0); }, {"row index 3"});
}

// ---- the demo task -------------------------------------------------------------------------------------

TEST(DataDemo, SuccessIsAWholeWordCaseSensitive) {
  EXPECT_TRUE(demo_success("Dalu was a cat.", "Dalu"));
  EXPECT_TRUE(demo_success("The cat, Dalu.", "Dalu"));
  EXPECT_TRUE(demo_success("It was Dalu's ball", "Dalu"));
  EXPECT_TRUE(demo_success("\"Dalu!\"", "Dalu"));
  EXPECT_TRUE(demo_success("Dalus and Dalu", "Dalu"));  // a later occurrence counts
  EXPECT_FALSE(demo_success("Dalus ran.", "Dalu"));
  EXPECT_FALSE(demo_success("MeDalu ran.", "Dalu"));
  EXPECT_FALSE(demo_success("dalu ran.", "Dalu"));
  EXPECT_FALSE(demo_success("Lily ran.", "Dalu"));
  EXPECT_FALSE(demo_success("", "Dalu"));
  EXPECT_FALSE(demo_success("anything", ""));
  EXPECT_DOUBLE_EQ(demo_success_rate({{"Dalu ran", "Dalu"}, {"Lily ran", "Koti"}, {"Koti!", "Koti"},
                                      {"koti", "Koti"}}),
                   0.5);
  expect_error([] { demo_success_rate({}); }, {"no stories"});
}

TEST(DataDemo, LoadPrompts) {
  TempDir dir;
  const auto path = write_jsonl(dir, "{\"prompt\": \"Write a story about a cat named Dalu.\", \"name\": \"Dalu\"}\n\n"
                                     "{\"prompt\": \"x\", \"name\": 3}\n");
  expect_error([&] { load_demo_prompts(path); }, {path + ":3: ", "\"name\""});
  const auto ok = write_jsonl(dir, "{\"prompt\": \"Write a story about a cat named Dalu.\", \"name\": \"Dalu\"}\n");
  const auto prompts = load_demo_prompts(ok);
  ASSERT_EQ(prompts.size(), 1u);
  EXPECT_EQ(prompts[0].name, "Dalu");
}

// The shipped demo files: train names never appear in eval or held-out rows; every row loads.
TEST(DataDemo, ShippedFilesAreDisjointAndLoad) {
  auto tok = tokenizer::load_tokenizer(test::tok_512());
  const auto train = load_sft_jsonl(test::source_path("data/demo/sft_train.jsonl"), *tok, options(512));
  const auto eval = load_sft_jsonl(test::source_path("data/demo/sft_eval.jsonl"), *tok, options(512));
  EXPECT_GE(train.rows.size(), 500u);
  EXPECT_GE(eval.rows.size(), 50u);
  auto names_of = [](const std::string& path) {
    std::set<std::string> names;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line);
      const std::string prompt = j["prompt"];
      names.insert(prompt.substr(prompt.rfind(' ') + 1, prompt.size() - prompt.rfind(' ') - 2));  // "... named X."
    }
    return names;
  };
  const auto train_names = names_of(test::source_path("data/demo/sft_train.jsonl"));
  const auto eval_names = names_of(test::source_path("data/demo/sft_eval.jsonl"));
  const auto heldout = load_demo_prompts(test::source_path("data/demo/heldout_prompts.jsonl"));
  EXPECT_GE(train_names.size(), 200u);
  for (const auto& n : eval_names) EXPECT_EQ(train_names.count(n), 0u) << n;
  for (const auto& p : heldout) {
    EXPECT_EQ(train_names.count(p.name), 0u) << p.name;
    EXPECT_EQ(eval_names.count(p.name), 0u) << p.name;
    EXPECT_TRUE(demo_success(p.prompt, p.name)) << p.prompt;
  }
}

}  // namespace
}  // namespace reglage::data
