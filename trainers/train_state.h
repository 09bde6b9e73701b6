// Saving and restoring the full training state of a stage: trainable tensors, optimizer state, data
// position, step and every rank's RNG state, in run_dir/<stage>/checkpoints/step-N/.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "framework/data/sft_data.h"
#include "framework/train/adamw.h"
#include "trainers/stage.h"

namespace reglage::trainers {

struct TrainState {
  std::vector<torch::Tensor>& params;     // trainable tensors, saved under `names`
  std::vector<std::string>& names;
  train::AdamW& optimizer;
  data::DataSampler& sampler;
  train::AdamW* second_optimizer = nullptr;  // ppo: the critic's optimizer
  nlohmann::json* extra = nullptr;           // stage-specific state (ppo: KL coefficient, reward normaliser),
                                             // saved from and restored into *extra
};

// Collective: every rank contributes its RNG state; rank 0 writes the checkpoint and prunes old ones.
void save_checkpoint(StageContext& ctx, TrainState& state, int64_t step);

// Restores the newest valid checkpoint (broken newer ones are reported and skipped) and returns its step,
// or nothing when there is none. Refuses a checkpoint written under another config hash.
std::optional<int64_t> load_latest_checkpoint(StageContext& ctx, TrainState& state);

}  // namespace reglage::trainers
