// The demo task: "Write a story about a {animal} named {name}." succeeds when the story uses the name.
// Data files (data/demo/, made by tools/make_demo_data.cpp):
//   sft_train.jsonl       {"prompt", "completion"} rows with train names
//   sft_eval.jsonl        the same with eval names (never in training)
//   heldout_prompts.jsonl {"prompt", "name", "animal"} with held-out names (never in training or eval)
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace reglage::data {

// True when `name` occurs in `story` as a whole word, case-sensitive: the characters either side are not
// ASCII letters or digits ("Dalu's" and "Dalu." count, "Dalus" and "dalu" do not).
bool demo_success(const std::string& story, const std::string& name);

// Fraction of (story, name) pairs that succeed; throws when there are none.
double demo_success_rate(const std::vector<std::pair<std::string, std::string>>& stories_and_names);

struct DemoPrompt {
  std::string prompt;  // "Write a story about a cat named Dalu."
  std::string name;    // "Dalu"
  int64_t line = 0;    // 1-based line in the file
};

// Reads heldout_prompts.jsonl (each row needs string "prompt" and "name"); errors name path:line.
std::vector<DemoPrompt> load_demo_prompts(const std::string& path);

}  // namespace reglage::data
