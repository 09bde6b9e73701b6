// reglage_fault_injecting: the reglage command line with fault points installed (core/fault_points.h), for
// the resume and launcher tests. Only this test build reads the fault variables; the reglage binary has no
// fault injection at all.
//   REGLAGE_FAULT="RANK:STEP:kill|stop|hang"   rank RANK, when it reports step STEP, sends itself SIGKILL (a
//       crash), SIGSTOP (the whole process hangs) or blocks its compute thread forever while the heartbeat
//       thread goes on beating (a deadlock); on the job's first attempt only (REGLAGE_ATTEMPT unset or 0).
//   REGLAGE_KILL_AFTER_CHECKPOINT=N   rank 0 sends itself SIGKILL right after checkpoint N is on disk, as a
//       crash or an OOM kill would.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <string>

#include "framework/core/fault_points.h"
#include "framework/core/progress.h"
#include "launch/commands.h"

namespace {

// Open MPI tells every rank its rank in the environment; 0 when run alone.
int world_rank() {
  const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
  return r ? std::atoi(r) : 0;
}

class EnvironmentFaults : public reglage::core::FaultPoints {
 public:
  void step_reported(int64_t step) override {
    const char* fault = std::getenv("REGLAGE_FAULT");
    if (fault == nullptr) return;
    const char* attempt = std::getenv("REGLAGE_ATTEMPT");
    if (attempt != nullptr && std::atoi(attempt) != 0) return;
    const std::string f = fault;  // RANK:STEP:kill|stop|hang
    const size_t a = f.find(':'), b = f.find(':', a == std::string::npos ? a : a + 1);
    if (a == std::string::npos || b == std::string::npos) return;
    if (std::atoi(f.substr(0, a).c_str()) != world_rank() || std::atoll(f.substr(a + 1, b - a - 1).c_str()) != step)
      return;
    const std::string what = f.substr(b + 1);
    reglage::core::progress_flush();  // the launcher hears where we were before the fault
    if (what == "kill") std::raise(SIGKILL);
    if (what == "stop") std::raise(SIGSTOP);
    if (what == "hang")  // the compute thread waits for nothing; the heartbeat thread keeps beating
      for (;;) ::pause();
  }

  void checkpoint_written(int rank, int64_t step) override {
    const char* kill_at = std::getenv("REGLAGE_KILL_AFTER_CHECKPOINT");
    if (kill_at != nullptr && rank == 0 && std::atoll(kill_at) == step) std::raise(SIGKILL);
  }
};

}  // namespace

int main(int argc, char** argv) {
  static EnvironmentFaults faults;
  reglage::core::install_fault_points(&faults);
  return reglage::launch::cli_main(argc, argv);
}
