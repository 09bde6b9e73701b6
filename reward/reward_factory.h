// Builds the RewardSource a stage's `reward:` section describes (config::RewardSpec): model, rules, http or
// a weighted sum of them. Normalisation and clipping (spec.normalize / spec.clip) are left to the caller,
// which keeps the normaliser's state in its checkpoints (reward/combine.h: RewardNormalizer, clip_rewards).
#pragma once
#include <memory>
#include <string>

#include "framework/config/reward_config.h"
#include "framework/io/lineage.h"
#include "framework/model/llama.h"
#include "reward/reward_source.h"

namespace reglage::reward {

struct RewardBuildContext {
  std::string run_dir;                  // a model reward's `stage: NAME` reads run_dir/NAME/final
  std::string base_model;               // for reward-model directories that record no lineage
  model::CausalLM shared{nullptr};      // when set, model rewards on `shared_lineage` reuse this model
  io::Lineage shared_lineage;
  int64_t models_shared = 0;            // out: how many model rewards went onto `shared`
};

// Model rewards that go onto `shared` each add their adapter under a name of their own (model_source.h:
// "reward", or per part of a sum "reward-0", "reward-1", ...), so several fit on one base.
// Throws reglage::Error naming the part (e.g. "reward.parts[1]: ...") when a source cannot be built: a
// missing reward-model directory, a regex that does not compile, an unset token_env variable.
std::unique_ptr<RewardSource> make_reward_source(const config::RewardSpec& spec, RewardBuildContext& ctx,
                                                 const std::string& key = "reward");

}  // namespace reglage::reward
