#include "framework/core/progress.h"

#include <mutex>
#include <string>

#include "framework/core/fault_points.h"

namespace reglage::core {

namespace {

std::mutex mutex;
Progress state;
std::function<void(bool)> listener;

void notify(bool flush) {
  std::function<void(bool)> l;
  {
    std::lock_guard<std::mutex> lock(mutex);
    l = listener;
  }
  if (l) l(flush);
}

}  // namespace

void progress_stage(const std::string& stage, int64_t total) {
  {
  std::lock_guard<std::mutex> lock(mutex);
  state.stage = stage;
  state.total = total;
  state.step = 0;
  state.op = "setup";
  ++state.counter;
  }
  notify(false);
}

void set_progress_listener(std::function<void(bool flush)> l) {
  std::lock_guard<std::mutex> lock(mutex);
  listener = std::move(l);
}

void progress_step(int64_t step) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    state.step = step;
    state.op = "compute";  // between operations: the step's forward, backward and update
    ++state.counter;
  }
  notify(false);
  if (FaultPoints* faults = fault_points()) faults->step_reported(step);
}

void progress_flush() { notify(true); }

void progress_op(const std::string& op) {
  std::lock_guard<std::mutex> lock(mutex);
  state.op = op;
  ++state.counter;
}

Progress progress_snapshot() {
  std::lock_guard<std::mutex> lock(mutex);
  return state;
}

ProgressOp::ProgressOp(const std::string& op) {
  std::lock_guard<std::mutex> lock(mutex);
  previous_ = state.op;
  state.op = op;
  ++state.counter;
}

ProgressOp::~ProgressOp() {
  std::lock_guard<std::mutex> lock(mutex);
  state.op = previous_;
  ++state.counter;
}

}  // namespace reglage::core
