// A test seam: the places where a test build injects faults (a crash, a stopped or hung rank) to exercise
// resume and the launcher's watchdog. Production code calls the points; only a test build installs an
// implementation (tests/support/fault_main.cpp builds `reglage_fault_injecting`); the reglage binary installs
// none, so the calls do nothing there.
#pragma once
#include <cstdint>

namespace reglage::core {

class FaultPoints {
 public:
  virtual ~FaultPoints() = default;
  // progress_step(step) was reported (listeners notified): `step` steps of the current stage are done.
  virtual void step_reported(int64_t step) { (void)step; }
  // Every rank has passed save_checkpoint's barrier: checkpoint `step` is complete on disk.
  virtual void checkpoint_written(int rank, int64_t step) {
    (void)rank;
    (void)step;
  }
};

// Installs `points` (not owned; it must outlive its use) for this process; nullptr removes it.
void install_fault_points(FaultPoints* points);
// The installed points, or nullptr (always, in the reglage binary).
FaultPoints* fault_points();

}  // namespace reglage::core
