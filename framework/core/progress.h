// Where this process is: the stage, its step and total, and the operation it is in ("allreduce grads",
// "generate", "checkpoint", ...). Trainers and collectives update it; the heartbeat sender reports it to
// `reglage launch`, so a hung or dead rank can be named with what it was doing. Thread-safe.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace reglage::core {

struct Progress {
  std::string stage;     // "" before the first stage
  int64_t step = 0;      // steps (or iterations) done in the stage
  int64_t total = 0;     // steps in the stage; 0 = unknown
  std::string op;        // the operation in progress, e.g. "allreduce grads"; "compute" between operations
  uint64_t counter = 0;  // bumped by every stage, step and operation change on the compute thread: the
                         // launcher calls a rank hung when it stops moving while the heartbeats go on
};

void progress_stage(const std::string& stage, int64_t total);  // a stage starts (step 0, op "setup")
void progress_step(int64_t step);                              // steps done so far
void progress_op(const std::string& op);                       // entering an operation
Progress progress_snapshot();

// Called after every stage or step change (not on operations): flush = false asks for a report soon;
// flush = true (progress_flush) asks for it now, on the calling thread. One listener (the heartbeat sender);
// nullptr removes it.
void set_progress_listener(std::function<void(bool flush)> listener);
// Asks the listener to report now (a test build does this just before it injects a fault: the launcher
// hears where the rank was).
void progress_flush();

// Sets the operation for a scope and puts back the previous one when it ends.
class ProgressOp {
 public:
  explicit ProgressOp(const std::string& op);
  ~ProgressOp();
  ProgressOp(const ProgressOp&) = delete;
  ProgressOp& operator=(const ProgressOp&) = delete;

 private:
  std::string previous_;
};

}  // namespace reglage::core
