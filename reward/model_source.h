// The learned reward source: a reward_model stage's output (adapter or model directory + reward head +
// lineage), scoring BOS + prompt + response + EOS at the last token, as the stage trained it.
#pragma once
#include <memory>
#include <string>

#include "reward/reward_source.h"

namespace reglage::reward {

// `final_dir`: run_dir/<stage>/final of a reward_model stage. Throws naming the directory and the missing
// part. batch_size: sequences per forward pass.
// base_model: used when final_dir records no lineage (a directory from elsewhere); "" = required in the dir.
std::unique_ptr<RewardSource> make_model_source(const std::string& final_dir, int64_t batch_size = 32,
                                                const std::string& base_model = "");

}  // namespace reglage::reward
