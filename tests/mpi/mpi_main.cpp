// main for the multi-rank tests: every rank runs every test, then the failure counts are summed so that
// each rank (and so mpiexec) exits non-zero when any rank failed.
//   mpiexec -n 2 build/tests/reglage_mpi_tests   (or directly: one rank)
// Rank 0 prints the usual gtest report; the other ranks print only their failures, prefixed "[rank R]".
#include <gtest/gtest.h>

#include <cstdio>
#include <exception>

#include "framework/dist/communicator.h"

namespace {

class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, result.file_name() ? result.file_name() : "?",
                 result.line_number(), result.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  try {
    reglage::dist::init(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  const int rank = reglage::dist::world_rank();
  if (rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const int result = RUN_ALL_TESTS();
  double failed = 0;  // number of ranks with a failing test
  try {
    auto comm = reglage::dist::make_communicator(torch::kCPU);
    failed = reglage::dist::all_reduce_sum(*comm, result != 0 ? 1.0 : 0.0, "sum test failures");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    reglage::dist::abort_all(2);
  }
  if (rank == 0 && failed > 0)
    std::fprintf(stderr, "%d of %d ranks had failing tests\n", int(failed), reglage::dist::world_size());
  reglage::dist::finalize();
  return failed > 0 ? 1 : 0;
}
