// reglage generate --model PATH [--tokenizer PATH] [--adapter DIR] (--prompt TEXT | --prompts FILE.jsonl)
//                  [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
//                  [--dtype float32|bfloat16] [--threads N] [--json]
// Prints each prompt followed by its continuation (one blank line between prompts of a batch);
// with --json, one JSON object per prompt: prompt, text, ids, logprobs, stopped.
#include <torch/torch.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/generate/generate.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "framework/model/config.h"
#include "launch/commands.h"

namespace reglage::launch {

namespace {

// {"prompt": "..."} per line; blank lines skipped; errors name file:line.
std::vector<std::string> read_prompts_jsonl(const std::string& path) {
  std::istringstream in(core::read_file(path));
  std::vector<std::string> prompts;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", line_no, ": not valid JSON (", e.what(), ")");
    }
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
      fail(path, ":", line_no, ": expected an object with a string \"prompt\"");
    prompts.push_back(j["prompt"].get<std::string>());
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
  generate::SamplingParams params;
  params.max_new_tokens = args.integer("max-new-tokens", 64);
  params.temperature = args.number("temperature", 1.0);
  params.top_k = args.integer("top-k", 0);
  params.top_p = args.number("top-p", 1.0);
  params.seed = uint64_t(args.integer("seed", 0));
  const auto dtype = model::parse_dtype(args.str("dtype", "float32"));
  const long long threads = args.integer("threads", 0);
  const bool as_json = args.flag("json");
  args.finish();
  if (args.has("prompt") == args.has("prompts")) fail("give exactly one of --prompt TEXT or --prompts FILE.jsonl");
  params.validate();
  set_threads(threads);

  auto m = io::load_model(model_path, dtype);
  auto tok = io::load_model_tokenizer(model_path, tokenizer_path, m->config().vocab_size);
  model::AdapterSet adapters;
  if (!adapter_dir.empty()) {
    lora::load_peft(m, "adapter", adapter_dir);
    adapters.push_back("adapter");
  }
  params.stop_ids = tok->stop_ids();
  for (auto id : m->config().eos_ids)
    if (std::find(params.stop_ids.begin(), params.stop_ids.end(), id) == params.stop_ids.end())
      params.stop_ids.push_back(id);

  const std::vector<std::string> texts = args.has("prompt") ? std::vector<std::string>{prompt}
                                                            : read_prompts_jsonl(prompts_file);
  std::vector<std::vector<int64_t>> prompt_ids;
  for (const auto& t : texts) prompt_ids.push_back(tok->encode(t, tok->add_bos(), /*add_eos=*/false));
  const auto results = generate::generate(m, prompt_ids, params, adapters);

  for (size_t i = 0; i < texts.size(); ++i) {
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
      nlohmann::json j{{"prompt", texts[i]},
                       {"text", text},
                       {"ids", results[i].tokens},
                       {"logprobs", results[i].logprobs},
                       {"stopped", results[i].stopped}};
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      if (i > 0) std::cout << "\n";
      std::cout << texts[i] << text << "\n";
    }
  }
  std::cout.flush();
  return 0;
}

}  // namespace reglage::launch
