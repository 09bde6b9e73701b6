// Collectives across ranks (suite "Mpi"), checked against sums computed by hand from each rank's values.
// Runs with any number of ranks: ctest runs it with 2 (mpiexec) and with 1 (directly).
#include <gtest/gtest.h>

#include "framework/core/error.h"
#include "framework/dist/communicator.h"

namespace dist = reglage::dist;

namespace {

int rank() { return dist::world_rank(); }
int size() { return dist::world_size(); }

// Sum over ranks r of f(r).
template <typename F>
double sum_over_ranks(F f) {
  double s = 0;
  for (int r = 0; r < size(); ++r) s += f(r);
  return s;
}

std::unique_ptr<dist::Communicator> cpu_comm() { return dist::make_communicator(torch::kCPU); }

}  // namespace

TEST(Mpi, RankAndSize) {
  auto comm = cpu_comm();
  EXPECT_EQ(comm->rank(), rank());
  EXPECT_EQ(comm->size(), size());
  EXPECT_GE(size(), 1);
  EXPECT_LT(rank(), size());
  comm->barrier("test barrier");
}

TEST(Mpi, AllReduceFloatDoubleInt64) {
  auto comm = cpu_comm();
  // Element i on rank r holds (r + 1) * (i + 1): the sum is (i + 1) * size * (size + 1) / 2, exact.
  const double rank_sum = sum_over_ranks([](int r) { return r + 1; });
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kLong}) {
    torch::Tensor t = (torch::arange(1, 8, torch::kLong) * (rank() + 1)).to(dtype);  // (7)
    comm->all_reduce_sum(t, "test allreduce");
    EXPECT_EQ(t.scalar_type(), dtype);
    for (int64_t i = 0; i < 7; ++i) EXPECT_EQ(t[i].item<double>(), double(i + 1) * rank_sum) << c10::toString(dtype);
  }
}

TEST(Mpi, AllReduceBFloat16GoesThroughFloat32) {
  auto comm = cpu_comm();
  // 0.5 * (r + 1) and 3.25 are exact in bf16; so are the sums for a few ranks.
  torch::Tensor t = torch::tensor({0.5f * float(rank() + 1), 3.25f, -1.0f}).to(torch::kBFloat16);  // (3)
  comm->all_reduce_sum(t, "test allreduce bf16");
  EXPECT_EQ(t.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(t[0].item<float>(), float(sum_over_ranks([](int r) { return 0.5 * (r + 1); })));
  EXPECT_EQ(t[1].item<float>(), 3.25f * float(size()));
  EXPECT_EQ(t[2].item<float>(), -1.0f * float(size()));
}

TEST(Mpi, AllReduceNonContiguous) {
  auto comm = cpu_comm();
  torch::Tensor base = torch::arange(6, torch::kDouble).view({2, 3}) + rank();  // (2, 3)
  torch::Tensor t = base.t();                                                  // (3, 2), not contiguous
  ASSERT_FALSE(t.is_contiguous());
  comm->all_reduce_sum(t, "test allreduce transposed");
  const double rank_sum = sum_over_ranks([](int r) { return r; });
  for (int64_t i = 0; i < 6; ++i)
    EXPECT_EQ(base.view(-1)[i].item<double>(), double(i) * size() + rank_sum);  // written through the view
}

TEST(Mpi, AllReduceGradientsInSeveralBuckets) {
  auto comm = cpu_comm();
  // Params of different sizes and dtypes; 64-byte buckets give float {0, 1} {3, 4} and double {2, 5}.
  std::vector<torch::Tensor> params = {
      torch::zeros({3, 5}, torch::requires_grad()),                      // 60 bytes
      torch::zeros({40}, torch::requires_grad()),                        // 160 bytes: closes bucket 1
      torch::zeros({2}, torch::TensorOptions(torch::kDouble).requires_grad(true)),
      torch::zeros({4}, torch::requires_grad()),                         // never gets a grad
      torch::zeros({1}, torch::requires_grad()),
      torch::zeros({7}, torch::TensorOptions(torch::kDouble).requires_grad(true)),
  };
  // Grad element i of param k on rank r: (r + 1) * (k + 1) + i; param 3 has no grad on any rank.
  for (size_t k = 0; k < params.size(); ++k) {
    if (k == 3) continue;
    auto& p = params[k];
    p.mutable_grad() = (torch::arange(p.numel(), p.options().requires_grad(false)) +
                        double((rank() + 1) * (k + 1))).view(p.sizes());
  }
  dist::all_reduce_gradients(*comm, params, 64, "test grads");
  const double rank_sum = sum_over_ranks([](int r) { return r + 1; });
  for (size_t k = 0; k < params.size(); ++k) {
    const auto& g = params[k].grad();
    ASSERT_TRUE(g.defined()) << "param " << k;
    EXPECT_EQ(g.sizes(), params[k].sizes()) << "param " << k;
    EXPECT_EQ(g.scalar_type(), params[k].scalar_type()) << "param " << k;
    torch::Tensor flat = g.reshape(-1).to(torch::kDouble);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double want = k == 3 ? 0.0 : rank_sum * double(k + 1) + double(i) * size();
      EXPECT_EQ(flat[i].item<double>(), want) << "param " << k << " element " << i;
    }
  }
}

TEST(Mpi, AllReduceGradientsWhenOnlyOneRankHasAGrad) {
  auto comm = cpu_comm();
  torch::Tensor p = torch::zeros({3}, torch::requires_grad());  // (3)
  if (rank() == 0) p.mutable_grad() = torch::full({3}, 2.0f);
  dist::all_reduce_gradients(*comm, {p}, 1 << 20, "test one grad");
  ASSERT_TRUE(p.grad().defined());
  EXPECT_TRUE(torch::equal(p.grad(), torch::full({3}, 2.0f)));
}

TEST(Mpi, BroadcastTensorsFromRoot) {
  auto comm = cpu_comm();
  const int root = size() - 1;
  // Rank r holds r + 100 everywhere (and a weight needing grad, as model weights do).
  std::vector<torch::Tensor> tensors = {
      torch::full({2, 3}, 100.0f + rank()).requires_grad_(),
      torch::full({5}, 100.0 + rank(), torch::kDouble),
      torch::full({4}, int64_t(100 + rank()), torch::kLong),
      torch::full({3}, 100.0f + rank()).to(torch::kBFloat16),
  };
  dist::broadcast_tensors(*comm, tensors, root, "test broadcast");
  for (size_t k = 0; k < tensors.size(); ++k)
    EXPECT_TRUE((tensors[k].to(torch::kDouble) == double(100 + root)).all().item<bool>()) << "tensor " << k;
  EXPECT_TRUE(tensors[0].requires_grad());

  torch::Tensor t = torch::full({3}, double(rank()), torch::kDouble);
  comm->broadcast(t, 0, "test broadcast one");
  EXPECT_TRUE((t == 0.0).all().item<bool>());
}

TEST(Mpi, ScalarSumAndMax) {
  auto comm = cpu_comm();
  EXPECT_EQ(dist::all_reduce_sum(*comm, 1.5 * (rank() + 1), "test sum"),
            sum_over_ranks([](int r) { return 1.5 * (r + 1); }));
  EXPECT_EQ(dist::all_reduce_max(*comm, rank() == 0 ? 7.25 : -double(rank()), "test max"), 7.25);
  EXPECT_EQ(dist::all_reduce_max(*comm, double(rank()) - 10.0, "test max last"), double(size() - 1) - 10.0);
}

TEST(Mpi, BroadcastString) {
  auto comm = cpu_comm();
  const std::string mine = rank() == 0 ? "config sha 9f2c" : std::string(size_t(rank()) * 3, 'x');
  EXPECT_EQ(dist::broadcast_string(*comm, mine, 0, "test string"), "config sha 9f2c");
  EXPECT_EQ(dist::broadcast_string(*comm, rank() == 0 ? std::string() : "junk", 0, "test empty"), "");
}

TEST(Mpi, ErrorsNameTheOpAndRank) {
  auto comm = cpu_comm();
  torch::Tensor t = torch::zeros({2}, torch::kBool);
  try {
    comm->all_reduce_sum(t, "test bad dtype");
    ADD_FAILURE() << "expected an error for a bool tensor";
  } catch (const reglage::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("test bad dtype"), std::string::npos) << what;
    EXPECT_NE(what.find("rank " + std::to_string(rank())), std::string::npos) << what;
  }
  try {
    comm->broadcast(t, size(), "test bad root");
    ADD_FAILURE() << "expected an error for root = size";
  } catch (const reglage::Error& e) {
    EXPECT_NE(std::string(e.what()).find("test bad root"), std::string::npos) << e.what();
  }
  // Without a GPU a CUDA communicator cannot exist: a build without NCCL names the option, one with it
  // fails in CUDA; neither may hand back a communicator.
  if (!torch::cuda::is_available()) {
    EXPECT_ANY_THROW(dist::make_communicator(torch::Device(torch::kCUDA, 0)));
  }
}
