// Builds the demo's preference pairs from the SFT model's own samples, labelled by the task's rule
// (AI/rule feedback, no human labels). Run after the demo's SFT stage:
//   build/reglage_make_demo_pairs [--model models/stories260K/stories260K.bin] [--adapter runs/demo/sft/final]
//                                 [--data data/demo]
// For every distinct prompt of sft_train.jsonl (train names) and sft_eval.jsonl (other names):
//   1. sample 4 stories (temperature 1.0, 80 new tokens, fixed seed, one thread);
//   2. chosen = the first story that uses the requested name (data/demo_task.h's rule); one pair against
//      the first story that does not (when there is one), and two counterfactual pairs against the chosen
//      story with the name swapped for other names of the same pool (isolating what the rule judges).
// Writes data/demo/pref_train.jsonl and pref_eval.jsonl. Deterministic: same files on every run.
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "framework/core/blas_setup.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/data/demo_task.h"
#include "framework/generate/generate.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"

using namespace reglage;

namespace {

struct Prompt {
  std::string text, name;
};

// Distinct prompts of an SFT file, with the name taken from "... named <Name>."
std::vector<Prompt> distinct_prompts(const std::string& path) {
  std::vector<Prompt> out;
  std::set<std::string> seen;
  std::istringstream in(core::read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    const std::string p = j.at("prompt").get<std::string>();
    if (!seen.insert(p).second) continue;
    const auto at = p.rfind(" named ");
    if (at == std::string::npos) fail(path, ": prompt without 'named': ", p);
    std::string name = p.substr(at + 7);
    if (!name.empty() && name.back() == '.') name.pop_back();
    out.push_back({p, name});
  }
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

void make_pairs(model::CausalLM& m, const tokenizer::Tokenizer& tok, const std::vector<Prompt>& prompts,
                const std::string& out_path, uint64_t seed) {
  constexpr int kSamples = 4;
  std::vector<std::vector<int64_t>> ids;
  for (const auto& p : prompts)
    for (int k = 0; k < kSamples; ++k) ids.push_back(tok.encode(p.text, tok.add_bos(), false));
  generate::SamplingParams params;
  params.temperature = 1.0;
  params.max_new_tokens = 80;
  params.seed = seed;
  params.stop_ids = tok.stop_ids();
  std::vector<generate::Generation> gens;
  for (size_t start = 0; start < ids.size(); start += 64) {  // batches of 64 sequences
    std::vector<std::vector<int64_t>> chunk(ids.begin() + start, ids.begin() + std::min(ids.size(), start + 64));
    params.seed = seed + start;
    auto g = generate::generate(m, chunk, params);
    gens.insert(gens.end(), g.begin(), g.end());
  }
  std::mt19937_64 rng(seed);
  std::string out;
  int natural = 0, counterfactual = 0, skipped = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::string chosen, rejected;
    for (int k = 0; k < kSamples; ++k) {
      auto tokens = gens[i * kSamples + k].tokens;
      while (!tokens.empty() && std::find(params.stop_ids.begin(), params.stop_ids.end(), tokens.back()) != params.stop_ids.end())
        tokens.pop_back();
      const std::string story = tok.decode(tokens);
      const bool ok = data::demo_success(story, prompts[i].name);
      if (ok && chosen.empty()) chosen = story;
      if (!ok && rejected.empty()) rejected = story;
    }
    if (chosen.empty()) {
      ++skipped;  // no sample follows the instruction: nothing to prefer
      continue;
    }
    // stories start with a space from the tokenizer's dummy prefix; keep the text as decoded minus that space
    auto strip = [](const std::string& s) { return s.size() && s[0] == ' ' ? s.substr(1) : s; };
    auto emit = [&](const std::string& c, const std::string& r) {
      out += nlohmann::json{{"prompt", prompts[i].text}, {"chosen", strip(c)}, {"rejected", strip(r)}}.dump(
                 -1, ' ', false, nlohmann::json::error_handler_t::replace) +
             "\n";
    };
    if (!rejected.empty()) {
      emit(chosen, rejected);
      ++natural;
    }
    // Counterfactuals: the chosen story with the requested name swapped for two other names of the pool.
    for (int c = 0; c < 2; ++c) {
      const std::string other = prompts[(i + 1 + rng() % (prompts.size() - 1)) % prompts.size()].name;
      if (other == prompts[i].name) continue;
      emit(chosen, replace_all(chosen, prompts[i].name, other));
      ++counterfactual;
    }
  }
  core::write_file_atomic(out_path, out);
  std::cout << out_path << ": " << natural + counterfactual << " pairs (" << natural << " natural, " << counterfactual
            << " counterfactual), " << skipped << " prompts skipped\n";
}

}  // namespace

int main(int argc, char** argv) {
  core::ensure_blas_kernels(argv);
  std::string model_path = "models/stories260K/stories260K.bin", adapter = "runs/demo/sft/final", dir = "data/demo";
  try {
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string flag = argv[i];
      if (flag == "--model") model_path = argv[i + 1];
      else if (flag == "--adapter") adapter = argv[i + 1];
      else if (flag == "--data") dir = argv[i + 1];
      else fail("unknown option ", flag, " (expected --model, --adapter, --data)");
    }
    if (argc % 2 == 0) fail("options are written --name value");
    torch::set_num_threads(1);  // the same numbers on every machine
    auto m = io::load_model(model_path);
    lora::load_peft(m, "sft", adapter);
    lora::bake_adapter(m, "sft", 1.0);
    auto tok = io::load_model_tokenizer(model_path, "", m->config().vocab_size);
    make_pairs(m, *tok, distinct_prompts(dir + "/sft_train.jsonl"), dir + "/pref_train.jsonl", 11);
    make_pairs(m, *tok, distinct_prompts(dir + "/sft_eval.jsonl"), dir + "/pref_eval.jsonl", 12);
  } catch (const std::exception& e) {
    std::cerr << "reglage_make_demo_pairs: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
