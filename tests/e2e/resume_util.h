// Exact resume, checked the same way for every stage: one run of a pipeline whole, the same pipeline in a second
// run directory killed (SIGKILL) right after a checkpoint and run again; the resumed run must end with the same
// final files, bit for bit, and the same metrics log once the keys that measure wall time are dropped.
#pragma once
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "e2e_util.h"
#include "framework/core/file_util.h"
#include "framework/io/safetensors.h"

namespace reglage::test {

struct ResumeCase {
  int ranks = 2;
  std::string whole_yaml, killed_yaml;  // the same pipeline, run directories whole_dir and killed_dir
  std::string whole_dir, killed_dir;
  std::string stage;                    // the stage whose outputs are compared
  int kill_after_checkpoint = 2;        // REGLAGE_KILL_AFTER_CHECKPOINT: the n-th checkpoint of the whole run
  int64_t checkpoint_step = 2;          // the stage's step that checkpoint is (its manifest must exist)
  std::vector<std::string> final_files = {"adapter_model.safetensors"};  // under <stage>/final/
  std::vector<std::string> timing_keys = {"tokens_per_s"};                // metrics keys dropped before comparing
};

// The wall-time keys of the ppo and grpo stages' metrics.
inline const std::vector<std::string> kRlTimingKeys = {"time_generate_s", "time_score_s",         "time_reference_s",
                                                       "time_train_s",    "generate_tokens_per_s", "tokens_per_s"};

// A metrics log with the timing keys dropped, one JSON record per line.
inline std::string metrics_without(const std::string& path, const std::vector<std::string>& keys) {
  std::istringstream in(core::read_file(path));
  std::string line, out;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    for (const auto& k : keys) j.erase(k);
    out += j.dump() + "\n";
  }
  return out;
}

// Runs the case and checks it; `whole_metrics` (optional) receives the whole run's metrics without timing keys
// for further checks by the caller. Call as ASSERT_NO_FATAL_FAILURE(expect_exact_resume(...)).
inline void expect_exact_resume(const ResumeCase& c, std::string* whole_metrics = nullptr) {
  const std::string stage_b = c.killed_dir + "/" + c.stage;
  ASSERT_EQ(run_pipeline(c.ranks, c.whole_yaml), 0) << "the whole run failed: " << c.whole_yaml;
  ASSERT_NE(run_pipeline(c.ranks, c.killed_yaml, "REGLAGE_KILL_AFTER_CHECKPOINT=" + std::to_string(c.kill_after_checkpoint)),
            0)
      << "the kill hook did not fire";
  ASSERT_TRUE(core::file_exists(stage_b + "/checkpoints/step-" + std::to_string(c.checkpoint_step) + "/manifest.json"))
      << "no checkpoint at step " << c.checkpoint_step << " in " << stage_b;
  ASSERT_FALSE(core::file_exists(stage_b + "/final")) << "the killed run finished its stage";
  ASSERT_EQ(run_pipeline(c.ranks, c.killed_yaml), 0) << "the resumed run failed";
  for (const auto& file : c.final_files) {
    auto a = io::read_safetensors(c.whole_dir + "/" + c.stage + "/final/" + file);
    auto b = io::read_safetensors(stage_b + "/final/" + file);
    ASSERT_FALSE(a.empty()) << file;
    ASSERT_EQ(a.size(), b.size()) << file;
    for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << file << " " << name;
  }
  const auto ma = metrics_without(c.whole_dir + "/" + c.stage + "/metrics.jsonl", c.timing_keys);
  EXPECT_EQ(ma, metrics_without(stage_b + "/metrics.jsonl", c.timing_keys));
  if (whole_metrics) *whole_metrics = ma;
}

}  // namespace reglage::test
