// The model a stage starts from: the pipeline's base model, with an earlier stage's output applied when the
// stage says init_from (a LoRA adapter is merged into the base; a full model directory replaces it).
#pragma once
#include <memory>
#include <string>

#include "framework/model/llama.h"
#include "framework/tokenizer/tokenizer.h"
#include "trainers/stage.h"

namespace reglage::trainers {

struct Policy {
  model::CausalLM model{nullptr};
  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::string base_path;  // the model path the output is relative to (PEFT base_model_name_or_path)
};

Policy load_policy(const StageContext& ctx);

// Threads per rank: the config's value, or cores / ranks on this host when it is 0.
int threads_per_rank(int64_t configured);

}  // namespace reglage::trainers
