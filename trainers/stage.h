// What every stage trainer receives, and the stage types the pipeline can run.
// A stage trainer is one function in its own file (sft.cpp, later reward_model.cpp, ppo.cpp) that runs the
// stage to completion, resuming from its newest valid checkpoint, and leaves its output in
// run_dir/<stage>/final/.
#pragma once
#include <functional>
#include <map>
#include <string>

#include "framework/config/pipeline_config.h"
#include "framework/dist/communicator.h"
#include "framework/metrics/progress_line.h"

namespace reglage::trainers {

struct StageContext {
  const config::PipelineConfig& pipeline;
  const config::StageConfig& stage;
  dist::Communicator& comm;
  std::string stage_dir;    // run_dir/<stage name>
  std::string config_hash;  // identifies the stage's inputs; checkpoints of another hash are refused

  bool is_root() const { return comm.rank() == 0; }
  std::string checkpoint_dir() const { return stage_dir + "/checkpoints"; }
  std::string final_dir() const { return stage_dir + "/final"; }
  std::string metrics_path() const { return stage_dir + "/metrics.jsonl"; }
  // Prints "[stage] message" on rank 0 only, above the progress line when one is drawn.
  void log(const std::string& message) const;
  // Prints "[stage] warning: message" on rank 0 only (stderr).
  void warn(const std::string& message) const;
  // How rank 0 shows the stage's progress line (REGLAGE_PROGRESS, checked on every rank); off elsewhere.
  metrics::ProgressMode progress_mode() const;
};

using StageRunner = std::function<void(StageContext&)>;

// Stage type -> trainer. Adding a stage type: a trainer file, one entry here, and the name in
// config/choices.h.
const std::map<config::StageType, StageRunner>& stage_runners();

void run_sft(StageContext& ctx);
void run_reward_model(StageContext& ctx);
void run_ppo(StageContext& ctx);
void run_dpo(StageContext& ctx);
void run_grpo(StageContext& ctx);

}  // namespace reglage::trainers
