// SmolLM2-135M-Instruct's own chat template (the GGUF's tokenizer.chat_template) against transformers
// (tests/data/smollm2/prompts.json: apply_chat_template(messages, add_generation_prompt=True) and its greedy
// continuation):
//   render-chat: the rendering of each conversation, byte for byte;
//   generate:    `--prompts` rows with "messages" and `--chat TEXT` give transformers' prompts and greedy ids;
//   chat SFT:    the loss mask of a two-turn row, token by token, marked by hand; a short LoRA SFT run on
//                "messages" rows (chat_template left at auto) whose held-out loss falls.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "e2e_util.h"
#include "framework/data/chat_format.h"
#include "framework/data/sft_data.h"
#include "framework/tokenizer/tokenizer.h"
#include "smollm2_util.h"
#include "test_util.h"

namespace reglage {
namespace {

using nlohmann::json;
using test::run_reglage;
using test::source_path;

std::string gguf_path() { return test::smollm2_gguf(); }
using test::quoted;
json prompts() { return test::smollm2_prompts(); }

TEST(Smollm2Chat, RenderChatEqualsTransformers) {
  test::TempDir tmp;
  for (const auto& p : prompts()) {
    core::write_file_atomic(tmp.path("messages.json"), p["messages"].dump());
    auto r = run_reglage("render-chat --model " + quoted(gguf_path()) + " --messages " + tmp.path("messages.json") +
                         " --add-generation-prompt");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, p["text"].get<std::string>()) << p["name"];
  }
}

// The six conversations as "messages" rows, rendered by reglage with the model's template (no chat_template
// given: auto): the same prompt text and the same greedy answers as transformers.
TEST(Smollm2Chat, GreedyAnswersToMessagesRowsEqualTransformers) {
  test::TempDir tmp;
  std::string rows;
  for (const auto& p : prompts()) rows += json{{"messages", p["messages"]}}.dump() + "\n";
  core::write_file_atomic(tmp.path("chats.jsonl"), rows);
  auto r = run_reglage("generate --model " + quoted(gguf_path()) + " --prompts " + tmp.path("chats.jsonl") +
                       " --max-new-tokens 32 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  int same = 0;
  for (const auto& p : prompts()) {
    ASSERT_TRUE(std::getline(lines, line)) << "no output line for " << p["name"];
    const json g = json::parse(line);
    EXPECT_EQ(g["prompt"], p["text"]) << p["name"];
    EXPECT_EQ(g["ids"].get<std::vector<int64_t>>(), p["greedy_ids"].get<std::vector<int64_t>>()) << p["name"];
    EXPECT_EQ(g["text"], p["greedy_text"]) << p["name"];
    same += g["ids"] == p["greedy_ids"] ? 1 : 0;
  }
  std::cout << "[ figures  ] " << same << "/" << prompts().size() << " greedy answers equal transformers'\n";
}

TEST(Smollm2Chat, ChatFlagIsAOneTurnUserMessage) {
  const json capital = prompts()[0];
  ASSERT_EQ(capital["messages"].size(), 1u);
  auto r = run_reglage("generate --model " + quoted(gguf_path()) + " --chat " +
                       quoted(capital["messages"][0]["content"].get<std::string>()) +
                       " --max-new-tokens 32 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json g = json::parse(r.out);
  EXPECT_EQ(g["prompt"], capital["text"]);
  EXPECT_EQ(g["ids"], capital["greedy_ids"]);
}

// A two-turn row with SmolLM2's tokenizer: only the assistant tokens carry loss. Marked by hand: each answer's
// tokens and <|im_end|>; not the default system message, the user turns, the "<|im_start|>assistant\n" headers
// or the newline after each <|im_end|>.
TEST(Smollm2Chat, SftMaskOfATwoTurnRowTokenByToken) {
  test::TempDir tmp;
  auto tok = tokenizer::load_tokenizer(gguf_path());
  core::write_file_atomic(tmp.path("row.jsonl"),
                          R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}, )"
                          R"({"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris, of course."}]})"
                          "\n");
  data::SftDataOptions opt;
  opt.max_seq_len = 2048;
  const auto data = data::load_sft_jsonl(tmp.path("row.jsonl"), *tok, opt);
  ASSERT_EQ(data.rows.size(), 1u);
  const auto& row = data.rows[0];
  std::vector<std::string> trained;
  std::string untrained;
  for (size_t t = 0; t < row.ids.size(); ++t) {
    if (row.loss[t]) trained.push_back(tok->token_text(row.ids[t]));
    else untrained += tok->token_text(row.ids[t]) + " ";
  }
  EXPECT_EQ(trained, (std::vector<std::string>{"Hello", "Ġthere", "!", "<|im_end|>",                 // turn 1
                                               "Paris", ",", "Ġof", "Ġcourse", ".", "<|im_end|>"}))  // turn 2
      << "untrained: " << untrained;
  // The ids are the whole rendering's tokens, encoded at once (special-token text read as tokens, nothing
  // added), as apply_chat_template(tokenize=True) gives them.
  const data::ChatFormat format("auto", *tok);
  const auto messages = data::Json::parse(core::read_file(tmp.path("row.jsonl")))["messages"];
  EXPECT_EQ(row.ids, tok->encode(format.render_conversation(messages).text, false, false));
  EXPECT_EQ(tok->token_text(row.ids[0]), "<|im_start|>");
}

// LoRA SFT on "messages" rows, chat_template left at auto: the assistant must answer "CODE-<WORD>-42"; the
// held-out words are never trained on. 10 steps of 4 rows, 1 rank, eval after every step.
// Measured (seeds 1, 2): held-out loss 3.58 -> 0.90, 3.59 -> 0.86; about 15 s.
// Threshold: the first eval (after one step at a warm-up rate) a cross-entropy in [2.5, 5], the last below
// first - 1.5.
TEST(Smollm2Chat, ChatSftEvalLossFalls) {
  test::TempDir tmp;
  const auto rows = [](const std::vector<std::string>& words) {
    std::string out;
    for (const auto& w : words) {
      std::string upper = w;
      for (auto& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
      out += json{{"messages", {{{"role", "user"}, {"content", "Give the code for " + w + "."}},
                                {{"role", "assistant"}, {"content", "CODE-" + upper + "-42"}}}}}.dump() + "\n";
    }
    return out;
  };
  core::write_file_atomic(tmp.path("train.jsonl"),
                          rows({"apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "pear",
                                "plum", "lime", "kiwi", "fig", "date", "olive", "guava"}));
  core::write_file_atomic(tmp.path("eval.jsonl"), rows({"orange", "papaya", "quince", "apricot"}));
  core::write_file_atomic(tmp.path("p.yaml"),
                          "run_dir: " + tmp.path("run") + "\nseed: 1\nthreads: 2\nmodel:\n  path: " + gguf_path() +
                              "\nlora: {rank: 8, alpha: 16, dropout: 0.0, targets: [q_proj, v_proj]}\nstages:\n"
                              "  - {name: sft, type: sft, data: " + tmp.path("train.jsonl") + ", eval_data: " +
                              tmp.path("eval.jsonl") + ", max_steps: 10, batch_size: 4, lr: 3.0e-3, eval_every: 1}\n");
  ASSERT_EQ(test::run_pipeline(1, tmp.path("p.yaml")), 0);
  const auto evals = test::read_metrics(tmp.path("run/sft/metrics.jsonl"), "eval");
  ASSERT_EQ(evals.size(), 10u);
  const double first = evals.front().at("loss").get<double>(), last = evals.back().at("loss").get<double>();
  EXPECT_GT(first, 2.5);
  EXPECT_LT(first, 5.0);
  EXPECT_LT(last, first - 1.5) << "held-out loss " << first << " after step 1, " << last << " after step 10";
  std::cout << "[ figures  ] held-out loss " << first << " after step 1, " << last << " after step 10\n";
}

}  // namespace
}  // namespace reglage
