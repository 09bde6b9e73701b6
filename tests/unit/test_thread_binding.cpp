// Threads per rank against the CPUs the rank may run on: a rank bound to one core (what Open MPI does by
// default with 2 ranks or fewer) gets one thread when `threads` is 0, and a warning naming the fix when the
// config asks for more threads than it has CPUs.
#include <gtest/gtest.h>
#include <sched.h>

#include "trainers/policy_setup.h"

namespace reglage::trainers {
namespace {

// Restricts this process to its first allowed CPU for the scope, as `mpirun --bind-to core` does.
class BoundToOneCpu {
 public:
  BoundToOneCpu() {
    CPU_ZERO(&saved_);
    ok_ = sched_getaffinity(0, sizeof saved_, &saved_) == 0;
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &saved_)) {
        CPU_SET(c, &one);
        break;
      }
    ok_ = ok_ && sched_setaffinity(0, sizeof one, &one) == 0;
  }
  ~BoundToOneCpu() { sched_setaffinity(0, sizeof saved_, &saved_); }
  bool ok() const { return ok_; }

 private:
  cpu_set_t saved_;
  bool ok_ = false;
};

TEST(ThreadBinding, ThreadsFitTheRanksCpus) {
  const int cpus = allowed_cpus();
  EXPECT_GE(cpus, 1);
  EXPECT_EQ(thread_binding_warning(cpus, 0), "");
  EXPECT_EQ(threads_per_rank(3), 3);  // an explicit value is kept
  {
    BoundToOneCpu bound;
    ASSERT_TRUE(bound.ok());
    EXPECT_EQ(allowed_cpus(), 1);
    EXPECT_EQ(threads_per_rank(0), 1);  // never more threads than CPUs by default
    EXPECT_EQ(thread_binding_warning(1, 0), "");
    const auto w = thread_binding_warning(2, 3);
    EXPECT_NE(w.find("rank 3 runs 2 threads but may use only 1 CPU "), std::string::npos) << w;
    EXPECT_NE(w.find("--bind-to none"), std::string::npos) << w;
    EXPECT_NE(w.find("threads: 1"), std::string::npos) << w;
  }
  EXPECT_EQ(allowed_cpus(), cpus);  // the mask is restored
}

}  // namespace
}  // namespace reglage::trainers
