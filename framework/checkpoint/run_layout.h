// Every path of a run directory, in one place. A pipeline run writes:
//   <run>/config.yaml                     the resolved config the run was started with
//   <run>/pipeline.json                   each stage's state, config hash and output
//   <run>/.reglage.lock                   one run at a time (run_lock.h)
//   <run>/report.html                     `reglage report`'s default page
//   <run>/<stage>/checkpoints/step-N/     the stage's training state (checkpoint.h)
//   <run>/<stage>/metrics.jsonl           one JSON line per logged step (+ tensorboard/ beside it)
//   <run>/<stage>/final/                  the stage's output, published whole through final.tmp/
// Launchers, trainers, rewards and reports all ask this type instead of spelling the paths out.
#pragma once
#include <string>

namespace reglage::checkpoint {

class RunLayout {
 public:
  explicit RunLayout(std::string run_dir);

  const std::string& run_dir() const { return run_dir_; }
  std::string config_yaml() const { return in_run("config.yaml"); }
  std::string pipeline_json() const { return in_run("pipeline.json"); }
  std::string lock_file() const;
  std::string report_html() const { return in_run("report.html"); }

  std::string stage_dir(const std::string& stage) const { return in_run(stage); }
  std::string checkpoints(const std::string& stage) const { return stage_dir(stage) + "/checkpoints"; }
  std::string metrics(const std::string& stage) const { return stage_dir(stage) + "/metrics.jsonl"; }
  std::string final_dir(const std::string& stage) const { return stage_dir(stage) + "/final"; }
  // Where a stage's output is assembled before it is renamed to final_dir.
  std::string final_tmp(const std::string& stage) const { return final_dir(stage) + ".tmp"; }

 private:
  std::string in_run(const std::string& name) const;  // run_dir/name, with one slash between
  std::string run_dir_;
};

}  // namespace reglage::checkpoint
