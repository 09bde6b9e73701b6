// reglage generate --model PATH [--tokenizer PATH] [--adapter DIR]
//                  (--prompt TEXT | --chat TEXT | --prompts FILE.jsonl) [--chat-template SETTING]
//                  [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
//                  [--dtype float32|bfloat16] [--storage auto|bfloat16|int8] [--threads N] [--json]
// --storage keeps the weights in bfloat16 or int8 (one scale per row) and computes in float32
// (framework/kernels/weight_only.h): a decode step reads half or a quarter of the bytes.
// --prompt is raw text (BOS added when the model's tokenizer adds one). --chat TEXT is a one-turn user message
// and --prompts rows may be {"prompt": "..."} or {"messages": [...], "tools": [...]}: conversations are rendered by the chat
// template (--chat-template: auto = the model's own, the default; plain, chatml, llama2 or a .jinja file) with
// the assistant header appended, as apply_chat_template(..., add_generation_prompt=True) does.
// Prints each prompt followed by its continuation (one blank line between prompts of a batch);
// with --json, one JSON object per prompt: prompt, text, ids, logprobs, stopped.
#include <torch/torch.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/data/chat_format.h"
#include "framework/generate/generate.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "framework/model/config.h"
#include "launch/commands.h"

namespace reglage::launch {

namespace {

struct PromptInput {
  std::string text;           // as printed: the prompt, conversations rendered
  std::vector<int64_t> ids;
};

PromptInput raw_prompt(const tokenizer::Tokenizer& tok, const std::string& text) {
  return {text, tok.encode(text, tok.add_bos(), /*add_eos=*/false)};
}

PromptInput chat_prompt(data::LazyChatFormat& chat, const data::Json& messages, const data::Json& tools = {}) {
  data::ChatPrompt p = chat.get().encode_prompt(messages, data::kNoTokenLimit, tools);
  return {std::move(p.text), std::move(p.ids)};
}

// {"prompt": "..."} or {"messages": [...]} per line; blank lines skipped; errors name file:line.
std::vector<PromptInput> read_prompts_jsonl(const std::string& path, const tokenizer::Tokenizer& tok,
                                            data::LazyChatFormat& chat) {
  std::istringstream in(core::read_file(path));
  std::vector<PromptInput> prompts;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    chat.at_line(line_no);
    data::Json j;
    try {
      j = data::Json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", line_no, ": not valid JSON (", e.what(), ")");
    }
    const bool has_prompt = j.is_object() && j.contains("prompt") && j["prompt"].is_string();
    const bool has_messages = j.is_object() && j.contains("messages");
    if (has_prompt == has_messages)
      fail(path, ":", line_no, ": expected an object with a string \"prompt\" or a list of \"messages\"");
    if (has_prompt) {
      prompts.push_back(raw_prompt(tok, j["prompt"].get<std::string>()));
      continue;
    }
    try {
      prompts.push_back(chat_prompt(chat, j["messages"], j.value("tools", data::Json())));
    } catch (const Error& e) {
      fail(path, ":", line_no, ": ", e.what());
    }
  }
  if (prompts.empty()) fail(path, ": no prompts");
  return prompts;
}

}  // namespace

void set_threads(long long threads) {
  // The same bound as the pipeline's `threads:` key: 100000 would hang creating the pool.
  if (threads < 0 || threads > 1024) fail("--threads = ", threads, " (must be in [0, 1024]; 0 = all cores)");
  const int n = threads > 0 ? int(threads) : std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(n);
}

int cmd_generate(Args& args) {
  const std::string model_path = args.required("model");
  const std::string tokenizer_path = args.str("tokenizer");
  const std::string adapter_dir = args.str("adapter");
  const std::string prompt = args.str("prompt");
  const std::string prompts_file = args.str("prompts");
  const std::string chat_text = args.str("chat");
  const std::string chat_template = args.str("chat-template", "auto");
  generate::SamplingParams params;
  params.max_new_tokens = args.integer("max-new-tokens", 64);
  params.temperature = args.number("temperature", 1.0);
  params.top_k = args.integer("top-k", 0);
  params.top_p = args.number("top-p", 1.0);
  params.seed = uint64_t(args.integer("seed", 0));
  const auto dtype = model::parse_dtype(args.str("dtype", "float32"));
  const std::string storage_name = args.str("storage", "auto");
  const long long threads = args.integer("threads", 0);
  const bool as_json = args.flag("json");
  args.finish();
  if (int(args.has("prompt")) + int(args.has("prompts")) + int(args.has("chat")) != 1)
    fail("give exactly one of --prompt TEXT, --chat TEXT or --prompts FILE.jsonl");
  if (!chat::is_chat_template_setting(chat_template))
    fail("--chat-template = '", chat_template, "' (expected ", chat::chat_template_choices(), ")");
  params.validate();
  if (storage_name != "auto" && storage_name != "float32" && storage_name != "bfloat16" && storage_name != "int8")
    fail("--storage = '", storage_name, "' (expected auto, float32, bfloat16 or int8)");
  const auto storage = kernels::parse_storage(storage_name);
  if (storage != kernels::Storage::kNative && dtype != torch::kFloat32)
    fail("--storage ", storage_name, " needs --dtype float32 (the stored-weight kernels compute in float32)");
  set_threads(threads);

  auto m = io::load_model(model_path, dtype);
  auto tok = io::load_model_tokenizer(model_path, tokenizer_path, m->config().vocab_size);
  model::AdapterSet adapters;
  if (!adapter_dir.empty()) {
    lora::load_peft(m, "adapter", adapter_dir);
    adapters.push_back("adapter");
  }
  m->set_storage(storage);
  params.stop_ids = tok->stop_ids();
  for (auto id : m->config().eos_ids)
    if (std::find(params.stop_ids.begin(), params.stop_ids.end(), id) == params.stop_ids.end())
      params.stop_ids.push_back(id);

  data::LazyChatFormat chat(chat_template, *tok, prompts_file.empty() ? "--chat" : prompts_file);
  std::vector<PromptInput> inputs;
  if (args.has("prompt")) inputs.push_back(raw_prompt(*tok, prompt));
  else if (args.has("chat")) inputs.push_back(chat_prompt(chat, data::Json::array({{{"role", "user"}, {"content", chat_text}}})));
  else inputs = read_prompts_jsonl(prompts_file, *tok, chat);
  std::vector<std::vector<int64_t>> prompt_ids;
  for (const auto& p : inputs) {
    if (p.ids.empty()) fail("a prompt has no tokens: \"", p.text.substr(0, 60), "\"");
    prompt_ids.push_back(p.ids);
  }
  const auto results = generate::generate(m, prompt_ids, params, adapters);

  for (size_t i = 0; i < inputs.size(); ++i) {
    // Continuation text: each piece decoded after the token before it (SentencePiece's space rule);
    // the stop token that ended the sequence is not printed.
    std::string text;
    int64_t prev = prompt_ids[i].back();
    for (auto id : results[i].tokens) {
      if (std::find(params.stop_ids.begin(), params.stop_ids.end(), id) != params.stop_ids.end()) break;
      text += tok->decode_piece(prev, id);
      prev = id;
    }
    if (as_json) {
      nlohmann::json j{{"prompt", inputs[i].text},
                       {"text", text},
                       {"ids", results[i].tokens},
                       {"logprobs", results[i].logprobs},
                       {"stopped", results[i].stopped}};
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      if (i > 0) std::cout << "\n";
      std::cout << inputs[i].text << text << "\n";
    }
  }
  std::cout.flush();
  return 0;
}

}  // namespace reglage::launch
