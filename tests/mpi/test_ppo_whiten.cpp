// rl::whiten across ranks equals whitening the concatenation of every rank's batch on one process.
// No gather: every rank rebuilds every other rank's part itself (each part is a deterministic function of
// the rank), whitens the concatenation with comm = nullptr, and compares its own slice.
// Runs with any number of ranks: `mpiexec -n 2 build/tests/reglage_mpi_tests`, or directly as one rank.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <utility>
#include <vector>

#include "framework/dist/communicator.h"
#include "framework/rl/ppo_math.h"

namespace reglage {
namespace {

constexpr int64_t kT = 6;  // response tokens per row

struct Part {
  torch::Tensor x;     // (rows, kT) float32, junk on padding
  torch::Tensor mask;  // (rows, kT) float32, right-padded
};

// Rank r's part: r + 2 rows; row b valid for its first (2b + r) % kT + 1 tokens; values differ in scale and
// offset per rank (so the global mean and variance differ from every local one). With all_padding, the
// part has no valid token at all (the rank still joins the all-reduce).
Part part_of(int r, bool all_padding) {
  const int64_t n_rows = r + 2;
  auto x = torch::empty({n_rows, kT}, torch::kFloat32);
  auto mask = torch::zeros({n_rows, kT}, torch::kFloat32);
  for (int64_t b = 0; b < n_rows; ++b) {
    for (int64_t t = 0; t < kT; ++t) x[b][t] = float(std::sin(1.0 + 7 * r + 3 * b + 0.5 * t) * (r + 1) + r);
    if (!all_padding) mask[b].narrow(0, 0, (2 * b + r) % kT + 1).fill_(1.0f);
  }
  return {x, mask};
}

// Whitens this rank's part across ranks and checks it against the slice of the whole batch whitened alone.
void check_against_whole_batch(bool odd_ranks_empty) {
  auto comm = dist::make_communicator(torch::kCPU);
  const int rank = comm->rank(), world = comm->size();
  auto empty = [&](int r) { return odd_ranks_empty && r % 2 == 1; };
  std::vector<torch::Tensor> xs, masks;
  int64_t offset = 0;  // first row of this rank's part in the concatenation
  for (int r = 0; r < world; ++r) {
    Part p = part_of(r, empty(r));
    if (r < rank) offset += p.x.size(0);
    xs.push_back(p.x);
    masks.push_back(p.mask);
  }
  auto all_x = torch::cat(xs), all_mask = torch::cat(masks);  // (sum rows, kT)
  Part mine = part_of(rank, empty(rank));
  for (bool shift_mean : {true, false}) {
    auto distributed = rl::whiten(mine.x, mine.mask, comm.get(), shift_mean);     // (rows, kT); collective
    auto whole = rl::whiten(all_x, all_mask, nullptr, shift_mean);                // (sum rows, kT)
    auto expected = whole.narrow(0, offset, mine.x.size(0));                      // (rows, kT)
    EXPECT_LT((distributed - expected).abs().max().item<double>(), 1e-6)
        << "rank " << rank << " of " << world << ", shift_mean " << shift_mean;
    EXPECT_EQ((distributed * (1 - mine.mask)).abs().sum().item<double>(), 0.0) << "padding not 0, rank " << rank;
  }
  // The whole batch: valid tokens have mean 0 and unbiased variance 1.
  auto w = rl::whiten(all_x, all_mask, nullptr).to(torch::kFloat64);  // (sum rows, kT)
  auto m = all_mask.to(torch::kFloat64);
  const double n = m.sum().item<double>();
  ASSERT_GT(n, 1.0);
  const double mean = (w * m).sum().item<double>() / n;
  const double var = ((w - mean).pow(2) * m).sum().item<double>() / (n - 1);
  EXPECT_NEAR(mean, 0.0, 1e-6);
  EXPECT_NEAR(var, 1.0, 1e-5);
}

TEST(MpiPpoWhiten, AcrossRanksEqualsWholeBatch) { check_against_whole_batch(/*odd_ranks_empty=*/false); }

// Odd ranks hold only padding: they contribute nothing to the moments and get zeros back.
TEST(MpiPpoWhiten, RanksWithoutValidTokensStillMatch) { check_against_whole_batch(/*odd_ranks_empty=*/true); }

}  // namespace
}  // namespace reglage
