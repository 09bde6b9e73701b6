// run_dir/<stage>/metrics.jsonl: one JSON object per logged step ({"step": N, "split": "train"|"eval", ...}).
// Written by rank 0 only. On resume, lines past the checkpoint's step are dropped first, so a resumed run's
// file equals an uninterrupted run's (timing fields aside).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace reglage::metrics {

class MetricsLog {
 public:
  MetricsLog() = default;
  // Opens path for appending after removing lines whose "step" is greater than keep_up_to_step.
  MetricsLog(const std::string& path, int64_t keep_up_to_step);
  void write(const nlohmann::json& record);  // one line, flushed
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The last record of each split in a metrics.jsonl (for `reglage status`); empty objects when none.
std::map<std::string, nlohmann::json> last_records(const std::string& path);

}  // namespace reglage::metrics
