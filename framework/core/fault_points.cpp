#include "framework/core/fault_points.h"

#include <atomic>

namespace reglage::core {

namespace {
std::atomic<FaultPoints*> installed{nullptr};
}  // namespace

void install_fault_points(FaultPoints* points) { installed.store(points); }

FaultPoints* fault_points() { return installed.load(); }

}  // namespace reglage::core
