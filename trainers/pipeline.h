// Runs a pipeline's stages in order, as MPI ranks, recording progress in run_dir/pipeline.json:
// done stages are skipped, an interrupted stage resumes from its checkpoint, and a finished stage whose
// configuration changed is refused unless restart_from names it (or an earlier stage).
#pragma once
#include <string>
#include <vector>

#include "framework/dist/communicator.h"

namespace reglage::trainers {

struct RunOptions {
  std::string config_path;              // the pipeline YAML
  std::vector<std::string> overrides;   // --set key=value
  std::string restart_from;             // --restart-from STAGE: that stage and later ones start over
};

// Collective over comm. Holds run_dir's lock (checkpoint/run_lock.h) on rank 0 while it runs. Throws
// reglage::Error; config::ConfigError for config problems and checkpoint::RunRefused when another run holds
// run_dir, both on every rank alike.
void run_pipeline(const RunOptions& opt, dist::Communicator& comm);

// Prints the state of every stage of run_dir (for `reglage status`).
void print_status(const std::string& run_dir);

}  // namespace reglage::trainers
