// reglage eval --model PATH [--adapter DIR] [--tokenizer PATH] --prompts FILE.jsonl [--max-new-tokens N]
//              [--merge-weight W] [--threads N] [--show K]
// Held-out success of the demo task: each row {"prompt": "...", "name": "..."} is answered greedily and
// counts as a success when the story uses the requested name (data/demo_task.h). Prints one JSON line:
// {"prompts": N, "successes": S, "success_rate": S/N}.
#include <iostream>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/data/demo_task.h"
#include "framework/generate/generate.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "launch/commands.h"

namespace reglage::launch {

void set_threads(long long threads);

int cmd_eval(Args& args) {
  if (args.has("config")) return cmd_eval_stage(args);  // the policy of a pipeline stage (cmd_eval_stage.cpp)
  const std::string model_path = args.required("model");
  const std::string adapter_dir = args.str("adapter");
  const std::string tokenizer_path = args.str("tokenizer");
  const std::string prompts_path = args.required("prompts");
  const long long max_new = args.integer("max-new-tokens", 120);
  const double merge_weight = args.number("merge-weight", 1.0);
  const long long show = args.integer("show", 0);
  const long long threads = args.integer("threads", 0);
  args.finish();
  if (!(merge_weight >= 0 && merge_weight <= 1)) fail("--merge-weight = ", merge_weight, " (must be in [0, 1])");
  set_threads(threads);

  // rows: {"prompt", "name"}; errors name path:line
  std::vector<std::string> prompts, names;
  for (const auto& row : data::load_demo_prompts(prompts_path)) {
    prompts.push_back(row.prompt);
    names.push_back(row.name);
  }

  auto m = io::load_model(model_path);
  auto tok = io::load_model_tokenizer(model_path, tokenizer_path, m->config().vocab_size);
  if (!adapter_dir.empty()) {
    lora::load_peft(m, "adapter", adapter_dir);
    lora::merge_adapter(m, "adapter", merge_weight);  // W interpolates between base (0) and fine-tuned (1)
  }
  generate::SamplingParams params;
  params.temperature = 0;
  params.max_new_tokens = max_new;
  params.stop_ids = tok->stop_ids();
  std::vector<std::vector<int64_t>> ids;
  for (const auto& p : prompts) ids.push_back(tok->encode(p, tok->add_bos(), false));
  const auto out = generate::generate(m, ids, params);

  int64_t successes = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> story;
    for (auto t : out[i].tokens)
      if (std::find(params.stop_ids.begin(), params.stop_ids.end(), t) == params.stop_ids.end()) story.push_back(t);
    const std::string text = tok->decode(story);
    const bool ok = data::demo_success(text, names[i]);
    successes += ok ? 1 : 0;
    if (int64_t(i) < show) std::cerr << (ok ? "[ok]   " : "[miss] ") << prompts[i] << " ->" << text << "\n";
  }
  nlohmann::json result{{"prompts", prompts.size()},
                        {"successes", successes},
                        {"success_rate", double(successes) / double(prompts.size())}};
  std::cout << result.dump() << std::endl;
  return 0;
}

}  // namespace reglage::launch
