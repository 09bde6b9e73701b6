// run_dir/<stage>/metrics.jsonl: one JSON object per logged step ({"step": N, "split": "train"|"eval", ...}).
// Written by rank 0 only. On resume, lines past the checkpoint's step are dropped first, so a resumed run's
// file equals an uninterrupted run's (timing fields aside).
// Beside it, run_dir/<stage>/tensorboard/ gets TensorBoard event files with the same numbers, for
// `tensorboard --logdir RUN_DIR`. Each MetricsLog starts a new events file (event files cannot be cut back
// like metrics.jsonl); on resume that file opens with a SessionLog START at keep_up_to_step + 1, so
// TensorBoard drops the earlier files' points past the checkpoint and reads all files as one curve.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "framework/metrics/tensorboard.h"

namespace reglage::metrics {

class MetricsLog {
 public:
  MetricsLog() = default;  // writes nothing (ranks other than 0); move-assign an opened one over it
  // Opens path for appending after removing lines whose "step" is greater than keep_up_to_step, and opens
  // a new TensorBoard events file in <dir of path>/tensorboard/.
  MetricsLog(const std::string& path, int64_t keep_up_to_step);
  // One line, flushed. When the record has an integer "step", each other numeric field (booleans and
  // strings skipped) also goes to TensorBoard as scalar "<split>/<field>" at that step ("train" when the
  // record has no "split" string), flushed.
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // null when default-constructed
};

// The last record of each split in a metrics.jsonl (for `reglage status`); empty objects when none.
std::map<std::string, nlohmann::json> last_records(const std::string& path);

}  // namespace reglage::metrics
