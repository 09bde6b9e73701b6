#include "framework/core/parallel_check.h"

#include <ATen/Parallel.h>

#include <mutex>
#include <set>

namespace reglage::core {

int parallel_for_threads_reached() {
  std::mutex mu;
  std::set<int> seen;
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    seen.insert(at::get_thread_num());
  });
  return int(seen.size());
}

}  // namespace reglage::core
