// The framework's own parallel loops (fused decode, weight-only products, sampling) use the intra-op threads.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "framework/core/parallel_check.h"

namespace {

TEST(ParallelLoops, FrameworkParallelForReachesEveryIntraOpThread) {
  const int before = torch::get_num_threads();
  torch::set_num_threads(2);
  // Built without -fopenmp, at::parallel_for would run both items on the calling thread and give 1.
  EXPECT_EQ(reglage::core::parallel_for_threads_reached(), 2);
  torch::set_num_threads(1);
  EXPECT_EQ(reglage::core::parallel_for_threads_reached(), 1);
  torch::set_num_threads(before);
}

}  // namespace
