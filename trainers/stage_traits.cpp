#include "trainers/stage_traits.h"

#include <algorithm>

#include "framework/core/error.h"
#include "framework/data/preference_data.h"
#include "framework/data/prompt_data.h"
#include "reward/rules.h"

namespace reglage::trainers {

const std::vector<StageTraits>& all_stage_traits() {
  using config::StageType;
  static const std::vector<StageTraits> table = {
      // type                   trainer           policy  data
      {StageType::kSft,         run_sft,          true,   DataKind::kRows},
      {StageType::kRewardModel, run_reward_model, false,  DataKind::kPairs},
      {StageType::kPpo,         run_ppo,          true,   DataKind::kPrompts},
      {StageType::kDpo,         run_dpo,          true,   DataKind::kPairs},
      {StageType::kGrpo,        run_grpo,         true,   DataKind::kPrompts},
  };
  return table;
}

const StageTraits& stage_traits(config::StageType type) {
  for (const auto& t : all_stage_traits())
    if (t.type == type) return t;
  fail("stage type '", config::to_string(type), "' has no row in the stage table");  // a row missing above
}

std::optional<LimitProblem> data_limit_problem(const config::StageConfig& st, int64_t context) {
  if (stage_traits(st.type).takes_prompts()) {
    const int64_t room = (st.max_seq_len > 0 ? std::min(st.max_seq_len, context) : context) - st.ppo.max_new_tokens;
    if (room <= 0)
      return LimitProblem{"max_new_tokens", std::to_string(st.ppo.max_new_tokens) +
                                                " leaves no room for a prompt in the model's context of " +
                                                std::to_string(context) + " tokens"};
  } else if (st.max_seq_len > context) {
    return LimitProblem{"max_seq_len",
                        std::to_string(st.max_seq_len) + " exceeds the model's context of " + std::to_string(context)};
  }
  return std::nullopt;
}

data::SftDataOptions stage_data_options(const config::StageConfig& st, int64_t context) {
  if (auto problem = data_limit_problem(st, context))
    fail("stage '", st.name, "': ", problem->field, " = ", problem->message);
  data::SftDataOptions opt;
  opt.chat_template = st.chat_template;
  opt.skip_bad_rows = st.skip_bad_rows;
  const int64_t longest = st.max_seq_len > 0 ? std::min(st.max_seq_len, context) : context;
  if (stage_traits(st.type).takes_prompts()) {
    opt.max_seq_len = longest - st.ppo.max_new_tokens;  // the response must fit after the prompt
  } else {
    opt.max_seq_len = longest;
    opt.truncate = st.truncate;
  }
  return opt;
}

namespace {

// Rule lists compile (regexes), in sum parts too.
void validate_rules(const config::RewardSpec& spec, const std::string& key,
                    std::vector<config::ConfigProblem>& problems) {
  if (spec.type == config::RewardType::kRules) {
    try {
      reward::make_rules_source(spec.rules);
    } catch (const Error& e) {
      problems.push_back({0, 0, key, e.what()});
    }
  }
  for (size_t i = 0; i < spec.parts.size(); ++i)
    validate_rules(spec.parts[i], key + ".parts[" + std::to_string(i) + "]", problems);
}

}  // namespace

void validate_inputs(const config::StageConfig& st, const std::string& key, int64_t context,
                     const tokenizer::Tokenizer& tok, std::vector<config::ConfigProblem>& problems) {
  const StageTraits& traits = stage_traits(st.type);
  if (traits.takes_prompts()) validate_rules(st.reward, key + "reward", problems);
  if (auto problem = data_limit_problem(st, context)) {
    problems.push_back({0, 0, key + problem->field, problem->message});
    return;  // the rows would be judged against a limit that is itself wrong
  }
  const auto opt = stage_data_options(st, context);
  for (const auto& [field, file] : {std::make_pair("data", st.data), std::make_pair("eval_data", st.eval_data)}) {
    if (file.empty()) continue;
    try {
      switch (traits.data) {
        case DataKind::kRows: data::load_sft_jsonl(file, tok, opt); break;
        case DataKind::kPairs: data::load_preference_jsonl(file, tok, opt); break;
        case DataKind::kPrompts: data::load_prompt_jsonl(file, tok, opt); break;
      }
    } catch (const Error& e) {
      problems.push_back({0, 0, key + field, e.what()});
    }
  }
}

}  // namespace reglage::trainers
