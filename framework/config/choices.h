// The closed sets of choices a pipeline config names by string (stage type, train mode, schedule, KL
// estimator, DPO loss, reward type), as enums. The YAML text is turned into these once, when the config
// loads (config/); nothing below config/ compares these strings. One table per enum maps name <-> value;
// the reader, the emitter and the error messages ("expected a, b or c") all use it. Dependency-free.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace reglage::config {

enum class StageType { kSft, kRewardModel, kPpo, kDpo, kGrpo };  // a stage's `type:`, one trainer each
enum class TrainMode { kLora, kFull, kFullFreezeLower };         // `train:` what a stage updates
enum class Schedule { kCosine, kLinear, kConstant };             // `schedule:` lr decay after warm-up
enum class KlEstimator { kK1, kK3 };                             // `kl_estimator:` per-token KL estimate
enum class LossType { kSigmoid, kIpo, kCdpo };                   // a dpo stage's `loss:`
enum class RewardType { kModel, kRules, kHttp, kSum };           // a reward spec's `type:`

template <typename E>
struct Choice {
  E value;
  const char* name;  // as written in YAML
};

// The table of each enum, in the order error messages list the names.
template <typename E>
struct ChoiceTable;
template <>
struct ChoiceTable<StageType> {
  static constexpr Choice<StageType> entries[] = {{StageType::kSft, "sft"},
                                                  {StageType::kRewardModel, "reward_model"},
                                                  {StageType::kPpo, "ppo"},
                                                  {StageType::kDpo, "dpo"},
                                                  {StageType::kGrpo, "grpo"}};
};
template <>
struct ChoiceTable<TrainMode> {
  static constexpr Choice<TrainMode> entries[] = {
      {TrainMode::kLora, "lora"}, {TrainMode::kFull, "full"}, {TrainMode::kFullFreezeLower, "full_freeze_lower"}};
};
template <>
struct ChoiceTable<Schedule> {
  static constexpr Choice<Schedule> entries[] = {
      {Schedule::kCosine, "cosine"}, {Schedule::kLinear, "linear"}, {Schedule::kConstant, "constant"}};
};
template <>
struct ChoiceTable<KlEstimator> {
  static constexpr Choice<KlEstimator> entries[] = {{KlEstimator::kK1, "k1"}, {KlEstimator::kK3, "k3"}};
};
template <>
struct ChoiceTable<LossType> {
  static constexpr Choice<LossType> entries[] = {
      {LossType::kSigmoid, "sigmoid"}, {LossType::kIpo, "ipo"}, {LossType::kCdpo, "cdpo"}};
};
template <>
struct ChoiceTable<RewardType> {
  static constexpr Choice<RewardType> entries[] = {
      {RewardType::kModel, "model"}, {RewardType::kRules, "rules"}, {RewardType::kHttp, "http"}, {RewardType::kSum, "sum"}};
};

// The YAML name of a value ("reward_model" for StageType::kRewardModel).
template <typename E, typename = decltype(ChoiceTable<E>::entries)>
const char* to_string(E value) {
  for (const Choice<E>& c : ChoiceTable<E>::entries)
    if (c.value == value) return c.name;
  return "?";  // unreachable: every enumerator has a row
}

// The value named `text`; false (out untouched) when no row has that name.
template <typename E>
bool parse_choice(const std::string& text, E& out) {
  for (const Choice<E>& c : ChoiceTable<E>::entries)
    if (text == c.name) {
      out = c.value;
      return true;
    }
  return false;
}

// Every name, in table order: {"cosine", "linear", "constant"}.
template <typename E>
std::vector<std::string> choice_names() {
  std::vector<std::string> names;
  for (const Choice<E>& c : ChoiceTable<E>::entries) names.push_back(c.name);
  return names;
}

// "cosine, linear or constant": the tail of the message "expected ..." for a value not in the table.
template <typename E>
std::string choice_list() {
  const std::vector<std::string> names = choice_names<E>();
  std::string out;
  for (size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}

}  // namespace reglage::config
