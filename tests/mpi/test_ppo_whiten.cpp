// Advantage whitening across ranks equals whitening the concatenated global batch on one process.
// Runs with any number of ranks: ctest runs it with 2 (mpiexec) and with 1 (directly).
#include <gtest/gtest.h>

#include "framework/dist/communicator.h"
#include "framework/rl/ppo_math.h"

namespace dist = reglage::dist;

namespace {

// Rank r's part: (r + 2) rows of 5 tokens, row b valid for its first (b + r) % 5 + 1 tokens, values from a
// generator seeded with r. Every rank can rebuild every other rank's part.
std::pair<torch::Tensor, torch::Tensor> part_of(int r) {
  const int64_t rows = r + 2, T = 5;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + r);
  auto x = torch::randn({rows, T}, gen, torch::kFloat32) * 3 + r;  // different means per rank
  auto mask = torch::zeros({rows, T}, torch::kFloat32);
  for (int64_t b = 0; b < rows; ++b) mask[b].narrow(0, 0, (b + r) % T + 1).fill_(1.0f);
  return {x, mask};
}

}  // namespace

TEST(MpiPpo, WhitenAcrossRanksEqualsWholeBatch) {
  auto comm = dist::make_communicator(torch::kCPU);
  const int rank = comm->rank(), world = comm->size();
  std::vector<torch::Tensor> xs, masks;
  int64_t offset = 0;  // first row of this rank's part in the concatenation
  for (int r = 0; r < world; ++r) {
    auto [x, m] = part_of(r);
    if (r < rank) offset += x.size(0);
    xs.push_back(x);
    masks.push_back(m);
  }
  auto [mine_x, mine_m] = part_of(rank);
  for (bool shift : {true, false}) {
    auto distributed = reglage::rl::whiten(mine_x, mine_m, comm.get(), shift);                 // (rows, T)
    auto whole = reglage::rl::whiten(torch::cat(xs), torch::cat(masks), nullptr, shift);     // (sum rows, T)
    auto expected = whole.narrow(0, offset, mine_x.size(0));
    EXPECT_LT((distributed - expected).abs().max().item<double>(), 1e-6) << "rank " << rank << " shift " << shift;
  }
  // Whitened valid tokens of the global batch have mean 0 and unbiased variance 1.
  auto all = reglage::rl::whiten(torch::cat(xs), torch::cat(masks), nullptr).to(torch::kFloat64);
  auto m = torch::cat(masks).to(torch::kFloat64);
  const double n = m.sum().item<double>();
  const double mean = (all * m).sum().item<double>() / n;
  const double var = ((all - mean).pow(2) * m).sum().item<double>() / (n - 1);
  EXPECT_NEAR(mean, 0.0, 1e-6);
  EXPECT_NEAR(var, 1.0, 1e-5);
  EXPECT_EQ((all * (1 - m)).abs().sum().item<double>(), 0.0);  // padding stays 0
}
