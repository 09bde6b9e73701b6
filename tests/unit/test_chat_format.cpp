// ChatFormat: the assistant turns a chat template's rendering trains, per real template, marked by hand; the
// loss mask through the SFT, preference and prompt readers; a real SentencePiece tokenizer's mask token by
// token (Phi-3); chat_template: auto / a .jinja file / the built-in names, and their errors.
#include <gtest/gtest.h>

#include <fstream>

#include "byte_tokenizer.h"
#include "framework/data/chat_format.h"
#include "framework/data/preference_data.h"
#include "framework/data/prompt_data.h"
#include "framework/data/sft_data.h"
#include "framework/tokenizer/tokenizer.h"
#include "test_jinja_util.h"
#include "test_util.h"

namespace reglage::data {
namespace {

using test::ByteTokenizer;
using test::expect_error;
using test::TempDir;

const char* kTwoTurns = R"([
  {"role": "user", "content": "Hi there"},
  {"role": "assistant", "content": "Hello! How can I help?"},
  {"role": "user", "content": "Tell me a joke."},
  {"role": "assistant", "content": "Why did the chicken cross the road?"}])";

Json two_turns(bool with_system) {
  Json m = Json::parse(kTwoTurns);
  if (with_system) m.insert(m.begin(), Json{{"role", "system"}, {"content", "Be brief."}});
  return m;
}

struct Case {
  std::string file;      // tests/data/chat/templates/...
  bool with_system;      // Gemma 2 refuses a system message
  std::string end;       // the template's end-of-turn text, by hand
  bool tools = false;    // Hermes 3's tool-use template needs tools
};

// A row's "tools", as TRL's datasets carry them.
const char* kTools = R"([{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])";

const std::vector<Case> kCases = {
    {"HuggingFaceTB-SmolLM2-135M-Instruct.jinja", true, "<|im_end|>"},
    {"Qwen-Qwen2.5-7B-Instruct.jinja", true, "<|im_end|>"},
    {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", true, "<|im_end|>", true},
    {"meta-llama-Llama-3.1-8B-Instruct.jinja", true, "<|eot_id|>"},
    {"meta-llama-Llama-3.2-3B-Instruct.jinja", true, "<|eot_id|>"},
    {"google-gemma-2-2b-it.jinja", false, "<end_of_turn>"},
    {"microsoft-Phi-3.5-mini-instruct.jinja", true, "<|end|>"},
    // Mistral writes the system message into the last user turn: the prefixes render differently, so each
    // turn is looked up in the whole rendering.
    {"mistralai-Mistral-Nemo-Instruct-2407.jinja", true, "</s>"},
    {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", true, "<｜end▁of▁sentence｜>"},
};

std::vector<std::string> turn_texts(const RenderedChat& chat) {
  std::vector<std::string> out;
  for (const auto& t : chat.turns) out.push_back(chat.text.substr(t.begin, t.end - t.begin));
  return out;
}

// The bytes under the loss mask, one string per run of masked tokens.
std::vector<std::string> masked_runs(const std::vector<int64_t>& ids, const std::vector<uint8_t>& loss,
                                     const tokenizer::Tokenizer& tok) {
  std::vector<std::string> runs;
  for (size_t t = 0; t < ids.size(); ++t) {
    if (!loss[t]) continue;
    if (t == 0 || !loss[t - 1]) runs.emplace_back();
    runs.back() += tok.decode_piece(-1, ids[t]);
  }
  return runs;
}

std::string write_file(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.path(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// Each template: the two assistant turns are their content and the template's end-of-turn text, nothing of
// the headers, nothing after; the mask through the SFT reader covers exactly those bytes (no BOS/EOS added).
TEST(ChatFormat, AssistantTurnsOfEachTemplateAreContentAndEndOfTurn) {
  TempDir dir;
  for (const Case& c : kCases) {
    ByteTokenizer tok(true, true, test::jinja_fixture("templates/" + c.file));
    const ChatFormat format("auto", tok);
    const Json messages = two_turns(c.with_system);
    const Json tools = c.tools ? Json::parse(kTools) : Json();
    const RenderedChat chat = format.render_conversation(messages, tools);
    const std::vector<std::string> expected = {"Hello! How can I help?" + c.end,
                                               "Why did the chicken cross the road?" + c.end};
    EXPECT_EQ(turn_texts(chat), expected) << c.file << "\n" << chat.text;

    Json row{{"messages", messages}};
    if (c.tools) row["tools"] = tools;
    const std::string path = write_file(dir, "chat.jsonl", row.dump() + "\n");
    SftDataOptions opt;
    opt.max_seq_len = 4096;
    const auto data = load_sft_jsonl(path, tok, opt);
    ASSERT_EQ(data.rows.size(), 1u) << c.file;
    EXPECT_EQ(tok.decode(data.rows[0].ids), chat.text) << c.file << ": the whole rendering, nothing added";
    EXPECT_EQ(masked_runs(data.rows[0].ids, data.rows[0].loss, tok), expected) << c.file;
  }
}

// A DeepSeek-R1 history turn keeps only what follows </think>: the trained turn is what the template writes.
TEST(ChatFormat, ReasoningStrippedFromHistoryIsNotTrained) {
  ByteTokenizer tok(true, true, test::jinja_fixture("templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"));
  Json messages = two_turns(false);
  messages[1]["content"] = "<think>greet back</think>Hello!";
  const RenderedChat chat = ChatFormat("auto", tok).render_conversation(messages);
  EXPECT_EQ(turn_texts(chat), (std::vector<std::string>{"Hello!<｜end▁of▁sentence｜>",
                                                        "Why did the chicken cross the road?<｜end▁of▁sentence｜>"}));
}

// Three turns, one with trailing spaces and non-ASCII text, one empty, on SmolLM2's template.
TEST(ChatFormat, MultiTurnWithEmptyAndNonAsciiTurns) {
  ByteTokenizer tok(true, true, test::jinja_fixture("templates/HuggingFaceTB-SmolLM2-135M-Instruct.jinja"));
  const Json messages = Json::parse(R"([
    {"role": "user", "content": "a"}, {"role": "assistant", "content": "Grüße, 世界  "},
    {"role": "user", "content": "b"}, {"role": "assistant", "content": ""},
    {"role": "user", "content": "c"}, {"role": "assistant", "content": "ok"}])");
  const RenderedChat chat = ChatFormat("auto", tok).render_conversation(messages);
  EXPECT_EQ(turn_texts(chat),
            (std::vector<std::string>{"Grüße, 世界  <|im_end|>", "<|im_end|>", "ok<|im_end|>"}));
}

// Preference rows: each side is the prompt and the final assistant turn, cut after its end-of-turn text;
// the response starts at prompt_tokens. Prompt rows end with the generation prompt.
TEST(ChatFormat, PreferenceAndPromptRowsUseTheTemplate) {
  TempDir dir;
  ByteTokenizer tok(true, true, test::jinja_fixture("templates/HuggingFaceTB-SmolLM2-135M-Instruct.jinja"));
  const std::string head =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
      "<|im_start|>user\nPick one<|im_end|>\n<|im_start|>assistant\n";
  const std::string pairs = write_file(
      dir, "pairs.jsonl",
      R"({"messages": [{"role": "user", "content": "Pick one"}], "chosen": "A", "rejected": {"role": "assistant", "content": "B!"}})"
      "\n");
  SftDataOptions opt;
  opt.max_seq_len = 4096;
  const auto pref = load_preference_jsonl(pairs, tok, opt);
  ASSERT_EQ(pref.pairs.size(), 1u);
  EXPECT_EQ(tok.decode(pref.pairs[0].chosen), head + "A<|im_end|>");
  EXPECT_EQ(tok.decode(pref.pairs[0].rejected), head + "B!<|im_end|>");
  EXPECT_EQ(pref.pairs[0].prompt_tokens, int64_t(head.size()));

  const std::string prompts = write_file(dir, "prompts.jsonl", R"({"messages": [{"role": "user", "content": "Pick one"}]})" "\n");
  const auto p = load_prompt_jsonl(prompts, tok, opt);
  ASSERT_EQ(p.rows.size(), 1u);
  EXPECT_EQ(p.rows[0].text, head);
  EXPECT_EQ(tok.decode(p.rows[0].ids), head);
  EXPECT_EQ(p.rows[0].ids.size(), head.size()) << "no BOS added: the template writes what the model reads";
}

// A real SentencePiece tokenizer (Phi-3's vocab, with its own template): the masked tokens, token by token.
// "<|assistant|>" strips the whitespace after it (its rstrip attribute) and the text after a special token gets
// SentencePiece's space prefix: the turn is "▁Hello ▁there <|end|>"; "<|end|>" is one token.
TEST(ChatFormat, Phi3MaskTokenByToken) {
  auto tok = tokenizer::load_tokenizer(test::source_path("tests/data/llama.cpp-vocab/ggml-vocab-phi-3.gguf"));
  ASSERT_FALSE(tok->chat_template().empty());
  const Json messages = Json::parse(R"([
    {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
    {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you"}])");
  const ChatTokens tokens = ChatFormat("auto", *tok).encode_conversation(messages);
  ASSERT_EQ(tokens.turns.size(), 2u);
  std::vector<std::vector<std::string>> marked;
  for (const auto& turn : tokens.turns) {
    marked.emplace_back();
    for (size_t t = turn.begin; t < turn.end; ++t) marked.back().push_back(tok->token_text(tokens.ids[t]));
  }
  EXPECT_EQ(marked, (std::vector<std::vector<std::string>>{{"▁Hello", "▁there", "<|end|>"}, {"▁See", "▁you", "<|end|>"}}));
  size_t masked = 0;
  for (auto l : tokens.loss) masked += l;
  EXPECT_EQ(masked, 6u) << "nothing outside the two turns is trained";
  // The ids are the whole rendering's, encoded at once.
  EXPECT_EQ(tokens.ids, tok->encode(ChatFormat("auto", *tok).render_conversation(messages).text, false, false));
}

// Tools reach the template from the row; the built-in formats refuse them.
TEST(ChatFormat, ToolsReachTheTemplate) {
  ByteTokenizer tok(true, true, test::jinja_fixture("templates/NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja"));
  const std::string text = ChatFormat("auto", tok).render_prompt(Json::parse(R"([{"role": "user", "content": "x"}])"),
                                                                   Json::parse(kTools));
  EXPECT_NE(text.find("get_weather"), std::string::npos) << text;
  expect_error([&] { ChatFormat("chatml", tok).render_prompt(two_turns(false), Json::parse(kTools)); },
               {"\"tools\" needs a Jinja chat template"});
}

TEST(ChatFormat, SettingsAndTheirErrors) {
  TempDir dir;
  ByteTokenizer no_template;
  expect_error([&] { ChatFormat("auto", no_template); },
               {"chat_template: auto", "carries no chat template", "plain, chatml, llama2 or a path to a .jinja file"});
  expect_error([&] { ChatFormat("alpaca", no_template); }, {"chat_template = \"alpaca\"", "auto, plain"});
  expect_error([&] { ChatFormat(dir.path("missing.jinja"), no_template); }, {"missing.jinja", "no such file"});
  // A template file: parsed once, errors carry its path and line:column.
  const std::string bad = write_file(dir, "bad.jinja", "{% for m in messages %}{{ m.content | shout }}{% endfor %}");
  expect_error([&] { ChatFormat(bad, no_template); }, {"bad.jinja:1:", "shout"});
  const std::string own = write_file(dir, "own.jinja",
                                     "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}"
                                     "{% if add_generation_prompt %}<assistant>{% endif %}");
  const ChatFormat format(own, no_template);
  EXPECT_TRUE(format.is_jinja());
  EXPECT_EQ(turn_texts(format.render_conversation(two_turns(false))),
            (std::vector<std::string>{"Hello! How can I help?</s>", "Why did the chicken cross the road?</s>"}));
  EXPECT_EQ(format.render_prompt(Json::parse(R"([{"role": "user", "content": "x"}])")), "<user>x</s><assistant>");
  expect_error([&] { format.render_prompt(two_turns(false)); }, {"ends with an assistant turn"});
  EXPECT_FALSE(ChatFormat("chatml", no_template).is_jinja());
}

// chat_template: auto needs a template only when a "messages" row comes: prompt/completion rows load with a
// tokenizer that has none; the first chat row names the file, the line and the choices.
TEST(ChatFormat, AutoWithoutTemplateFailsOnlyOnChatRows) {
  TempDir dir;
  ByteTokenizer no_template;
  SftDataOptions opt;
  opt.max_seq_len = 1024;
  const std::string plain = write_file(dir, "plain.jsonl", R"({"prompt": "a", "completion": "b"})" "\n");
  EXPECT_EQ(load_sft_jsonl(plain, no_template, opt).rows.size(), 1u);
  const std::string chat = write_file(dir, "chat.jsonl",
                                      R"({"prompt": "a", "completion": "b"})" "\n" +
                                          Json{{"messages", two_turns(false)}}.dump() + "\n");
  expect_error([&] { load_sft_jsonl(chat, no_template, opt); },
               {"chat.jsonl:2:", "needs a chat template", "plain, chatml, llama2"});
}

// A row the template refuses (Gemma 2 raises on a system message) is that row's problem: path:line and the
// template's own message, or skipped with skip_bad_rows.
TEST(ChatFormat, TemplateErrorsAreRowProblems) {
  TempDir dir;
  ByteTokenizer tok(true, true, test::jinja_fixture("templates/google-gemma-2-2b-it.jinja"));
  const std::string path = write_file(dir, "rows.jsonl",
                                      Json{{"messages", two_turns(false)}}.dump() + "\n" +
                                          Json{{"messages", two_turns(true)}}.dump() + "\n");
  SftDataOptions opt;
  opt.max_seq_len = 4096;
  expect_error([&] { load_sft_jsonl(path, tok, opt); }, {"rows.jsonl:2:", "System role not supported"});
  opt.skip_bad_rows = true;
  const auto data = load_sft_jsonl(path, tok, opt);
  EXPECT_EQ(data.rows.size(), 1u);
  EXPECT_EQ(data.skipped, 1);
}

// Rows longer than max_seq_len: refused, or cut with the mask kept on what remains.
TEST(ChatFormat, LongChatRowsAreRefusedOrCut) {
  TempDir dir;
  ByteTokenizer tok(true, true, test::jinja_fixture("templates/Qwen-Qwen2.5-7B-Instruct.jinja"));
  const std::string path = write_file(dir, "rows.jsonl", Json{{"messages", two_turns(false)}}.dump() + "\n");
  // Cut 5 bytes into the second assistant turn.
  const RenderedChat chat = ChatFormat("auto", tok).render_conversation(two_turns(false));
  ASSERT_EQ(chat.turns.size(), 2u);
  const int64_t limit = int64_t(chat.turns[1].begin) + 5;
  SftDataOptions opt;
  opt.max_seq_len = limit;
  expect_error([&] { load_sft_jsonl(path, tok, opt); },
               {"rows.jsonl:1:", "longer than max_seq_len = " + std::to_string(limit)});
  opt.truncate = true;
  const auto data = load_sft_jsonl(path, tok, opt);
  ASSERT_EQ(data.rows.size(), 1u);
  EXPECT_EQ(data.truncated, 1);
  EXPECT_EQ(tok.decode(data.rows[0].ids), chat.text.substr(0, size_t(limit)));
  EXPECT_EQ(masked_runs(data.rows[0].ids, data.rows[0].loss, tok),
            (std::vector<std::string>{"Hello! How can I help?<|im_end|>", "Why d"}));
}

}  // namespace
}  // namespace reglage::data
