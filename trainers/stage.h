// What every stage trainer receives. A stage trainer is one function in its own file (sft.cpp,
// reward_model.cpp, ppo.cpp, ...) that runs the stage to completion, resuming from its newest valid
// checkpoint, and leaves its output in run_dir/<stage>/final/ (checkpoint/run_layout.h). The stage types
// and their trainers are listed in stage_traits.h.
#pragma once
#include <functional>
#include <string>

#include "framework/checkpoint/run_layout.h"
#include "framework/config/pipeline_config.h"
#include "framework/dist/communicator.h"
#include "framework/metrics/progress_line.h"

namespace reglage::trainers {

struct StageContext {
  const config::PipelineConfig& pipeline;
  const config::StageConfig& stage;
  dist::Communicator& comm;
  checkpoint::RunLayout layout;  // the run directory's paths
  std::string config_hash;       // identifies the stage's inputs; checkpoints of another hash are refused

  bool is_root() const { return comm.rank() == 0; }
  std::string stage_dir() const { return layout.stage_dir(stage.name); }
  std::string checkpoint_dir() const { return layout.checkpoints(stage.name); }
  std::string final_dir() const { return layout.final_dir(stage.name); }
  std::string metrics_path() const { return layout.metrics(stage.name); }
  // Prints "[stage] message" on rank 0 only, above the progress line when one is drawn.
  void log(const std::string& message) const;
  // Prints "[stage] warning: message" on rank 0 only (stderr).
  void warn(const std::string& message) const;
  // How rank 0 shows the stage's progress line (REGLAGE_PROGRESS, checked on every rank); off elsewhere.
  metrics::ProgressMode progress_mode() const;
};

using StageRunner = std::function<void(StageContext&)>;

void run_sft(StageContext& ctx);
void run_reward_model(StageContext& ctx);
void run_ppo(StageContext& ctx);
void run_dpo(StageContext& ctx);
void run_grpo(StageContext& ctx);

// A ppo stage's critic: a LoRA adapter beside the actor's (which is named after the stage).
inline std::string critic_adapter(const std::string& stage) { return stage + "-critic"; }

}  // namespace reglage::trainers
