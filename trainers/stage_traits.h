// What the pipeline knows about each stage type, in one table: its trainer, whether its output is a policy,
// whether its data rows are prompts, and the pre-run check of its inputs. The pre-run check (pipeline.cpp)
// and the trainers read data through the same stage_data_options, so they keep and drop the same rows.
// Adding a stage type: a trainer file, one row in stage_traits.cpp, and the enum value in config/choices.h.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "framework/config/config_error.h"
#include "framework/data/sft_data.h"
#include "framework/tokenizer/tokenizer.h"
#include "trainers/stage.h"

namespace reglage::trainers {

// How a stage's data files are read.
enum class DataKind {
  kRows,     // sft: {prompt, completion} rows (data/sft_data.h)
  kPairs,    // reward_model, dpo: preference pairs (data/preference_data.h)
  kPrompts,  // ppo, grpo: prompts, with room left for max_new_tokens (data/prompt_data.h)
};

struct StageTraits {
  config::StageType type;
  StageRunner run;       // the trainer
  bool produces_policy;  // final/ holds a policy (what export and eval-stage take); false: a reward model
  DataKind data;
  bool takes_prompts() const { return data == DataKind::kPrompts; }
};

// Every stage type, in the order the docs list them.
const std::vector<StageTraits>& all_stage_traits();
// The row of `type` (every StageType has one).
const StageTraits& stage_traits(config::StageType type);

// A length limit a stage's settings break against the model's context, or nothing. Rows and pairs: max_seq_len
// must not exceed the context. Prompts: min(max_seq_len or the context, the context) - max_new_tokens must
// leave room for a prompt.
struct LimitProblem {
  std::string field;    // "max_seq_len" or "max_new_tokens"
  std::string message;  // "512 exceeds the model's context of 256"
};
std::optional<LimitProblem> data_limit_problem(const config::StageConfig& st, int64_t context);

// The options a stage's rows are read with (chat template, truncate, skip_bad_rows, and the longest row the
// limits above allow). Throws "stage 'NAME': FIELD = ..." on a LimitProblem.
data::SftDataOptions stage_data_options(const config::StageConfig& st, int64_t context);

// The pre-run check of one stage, before any stage trains: the limits above, every row of data and eval_data
// read as the trainer will read it, and (ppo, grpo) the rule lists of the reward compiled. Appends one problem
// per bad key; `key` is the stage's prefix, "stages[2].".
void validate_inputs(const config::StageConfig& st, const std::string& key, int64_t context,
                     const tokenizer::Tokenizer& tok, std::vector<config::ConfigProblem>& problems);

}  // namespace reglage::trainers
