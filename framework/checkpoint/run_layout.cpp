#include "framework/checkpoint/run_layout.h"

#include <utility>

#include "framework/checkpoint/run_lock.h"

namespace reglage::checkpoint {

RunLayout::RunLayout(std::string run_dir) : run_dir_(std::move(run_dir)) {}

std::string RunLayout::lock_file() const { return in_run(kRunLockFile); }

std::string RunLayout::in_run(const std::string& name) const {
  if (run_dir_.empty()) return name;
  return run_dir_.back() == '/' ? run_dir_ + name : run_dir_ + "/" + name;
}

}  // namespace reglage::checkpoint
