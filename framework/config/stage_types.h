// The stage types a pipeline may name in `type:`. A new trainer adds its name here.
#pragma once
#include <string>
#include <vector>

namespace reglage::config {

inline const std::vector<std::string>& known_stage_types() {
  static const std::vector<std::string> types = {"sft", "reward_model", "ppo", "dpo", "grpo"};
  return types;
}

}  // namespace reglage::config
