#include "framework/core/progress.h"

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <mutex>
#include <string>

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

int my_rank() {
  // Open MPI tells every rank its rank in the environment; 0 when run alone.
  const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
  return r ? std::atoi(r) : 0;
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
  maybe_inject_fault(my_rank(), step);
}

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

void maybe_inject_fault(int rank, int64_t step) {
  const char* fault = std::getenv("REGLAGE_FAULT");
  if (fault == nullptr) return;
  const char* attempt = std::getenv("REGLAGE_ATTEMPT");
  if (attempt != nullptr && std::atoi(attempt) != 0) return;
  const std::string f = fault;  // RANK:STEP:kill|stop|hang
  const size_t a = f.find(':'), b = f.find(':', a == std::string::npos ? a : a + 1);
  if (a == std::string::npos || b == std::string::npos) return;
  if (std::atoi(f.substr(0, a).c_str()) != rank || std::atoll(f.substr(a + 1, b - a - 1).c_str()) != step) return;
  const std::string what = f.substr(b + 1);
  notify(true);  // the launcher hears where we were before the fault
  if (what == "kill") std::raise(SIGKILL);
  if (what == "stop") std::raise(SIGSTOP);
  if (what == "hang")  // the compute thread waits for nothing; the heartbeat thread keeps beating
    for (;;) ::pause();
}

}  // namespace reglage::core
