// The fused elementwise kernels (framework/kernels/fused_elementwise.h): every instruction-set path this CPU has
// against float64 references, on lengths that leave vector tails, with hand-computed values; the autograd nodes
// against the operator chains they replace, and their errors.
#include <gtest/gtest.h>

#include <cmath>

#include "framework/kernels/elementwise_paths.h"
#include "framework/kernels/fused_elementwise.h"
#include "test_util.h"

namespace reglage::kernels {
namespace {

using Table = detail::ElementwiseKernels;

std::vector<std::pair<std::string, const Table*>> tables_of_this_cpu() {
  std::vector<std::pair<std::string, const Table*>> out = {{"scalar", &detail::elementwise_scalar()}};
#if defined(__x86_64__)  // elsewhere only the scalar path is built (CMakeLists.txt)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    out.push_back({"avx2", &detail::elementwise_avx2()});
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    out.push_back({"avx512", &detail::elementwise_avx512()});
#endif
  return out;
}

template <class T>
T* p(const torch::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

// max |got - want| / (|want| + floor), got widened to float64.
double worst(const torch::Tensor& got, const torch::Tensor& want, double floor) {
  auto g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  return ((g - w).abs() / (w.abs() + floor)).max().item<double>();
}

// Gate values over the whole range SiLU meets, the extremes of exp()'s clamps included.
torch::Tensor gate_values(int64_t n) {
  auto g = torch::randn({n}, torch::kFloat64) * 4;
  auto ends = torch::tensor({-100.0, -88.0, -87.0, -20.0, 0.0, 20.0, 88.0, 100.0}, torch::kFloat64);
  g.slice(0, 0, ends.numel()).copy_(ends);
  return g;
}

TEST(FusedElementwise, SwigluKernelsOfEveryPathMatchFloat64) {
  torch::manual_seed(3);
  const int64_t n = 1000 + 7;  // tails after every vector width
  auto g = gate_values(n), u = torch::randn({n}, torch::kFloat64), dh = torch::randn({n}, torch::kFloat64);
  for (const auto& [name, k] : tables_of_this_cpu()) {
    SCOPED_TRACE(name);
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      SCOPED_TRACE(c10::toString(dtype));
      auto gs = g.to(dtype), us = u.to(dtype), dhs = dh.to(dtype);
      // The reference takes the stored inputs, so only the kernel's own rounding is measured.
      auto gd = gs.to(torch::kFloat64).requires_grad_(true), ud = us.to(torch::kFloat64).requires_grad_(true);
      auto want = torch::silu(gd) * ud;
      want.backward(dhs.to(torch::kFloat64));
      auto h = torch::empty_like(gs), dg = torch::empty_like(gs), du = torch::empty_like(gs);
      if (dtype == torch::kFloat32) {
        k->swiglu_forward_f32(p<float>(gs), p<float>(us), p<float>(h), n);
        k->swiglu_backward_f32(p<float>(gs), p<float>(us), p<float>(dhs), p<float>(dg), p<float>(du), n);
      } else {
        k->swiglu_forward_bf16(p<uint16_t>(gs), p<uint16_t>(us), p<uint16_t>(h), n);
        k->swiglu_backward_bf16(p<uint16_t>(gs), p<uint16_t>(us), p<uint16_t>(dhs), p<uint16_t>(dg), p<uint16_t>(du),
                                n);
      }
      // float32: a few ulp; bfloat16: one rounding of the result (2^-9 relative) and the float32 arithmetic.
      const double tol = dtype == torch::kFloat32 ? 1e-6 : 4.0 / 1024;
      // Relative to each value, but dg passes through zero where silu' does (g near -1.28, where
      // s (1 + g (1 - s)) cancels): there against a floor of 1e-3.
      EXPECT_LT(worst(h, want.detach(), 1e-30), tol);
      EXPECT_LT(worst(dg, gd.grad(), 1e-3), dtype == torch::kFloat32 ? 5e-6 : tol);
      EXPECT_LT(worst(du, ud.grad(), 1e-30), tol);
    }
    // By hand: silu(1) * 2 = 2 / (1 + e^-1); at g = 0, s = 1/2: dg = dh u / 2, du = 0.
    auto g1 = torch::tensor({1.0f, 0.0f}), u1 = torch::tensor({2.0f, 3.0f}), d1 = torch::tensor({1.0f, 5.0f});
    auto h1 = torch::empty_like(g1), dg1 = torch::empty_like(g1), du1 = torch::empty_like(g1);
    k->swiglu_forward_f32(p<float>(g1), p<float>(u1), p<float>(h1), 2);
    k->swiglu_backward_f32(p<float>(g1), p<float>(u1), p<float>(d1), p<float>(dg1), p<float>(du1), 2);
    EXPECT_NEAR(h1[0].item<float>(), 2.0 / (1.0 + std::exp(-1.0)), 1e-6);
    EXPECT_EQ(h1[1].item<float>(), 0.0f);
    EXPECT_NEAR(dg1[1].item<float>(), 7.5, 1e-6);
    EXPECT_EQ(du1[1].item<float>(), 0.0f);
  }
}

TEST(FusedElementwise, RmsNormKernelsOfEveryPathMatchFloat64) {
  torch::manual_seed(4);
  const int64_t rows = 5, D = 96 + 5;
  const float eps = 1e-5f;
  auto x = torch::randn({rows, D}, torch::kFloat64) * 3, w = torch::randn({D}, torch::kFloat64),
       dy = torch::randn({rows, D}, torch::kFloat64);
  x[2].fill_(0.0);  // an all-zero row: 1 / sqrt(eps), a zero output and gradient w / sqrt(eps) dy
  for (const auto& [name, k] : tables_of_this_cpu()) {
    SCOPED_TRACE(name);
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      SCOPED_TRACE(c10::toString(dtype));
      auto xs = x.to(dtype), ws = w.to(dtype), dys = dy.to(dtype);
      auto xd = xs.to(torch::kFloat64).requires_grad_(true), wd = ws.to(torch::kFloat64);
      auto inv_want = torch::rsqrt(xd.pow(2).mean(-1, true) + eps);
      auto want = wd * (xd * inv_want);
      want.backward(dys.to(torch::kFloat64));
      auto y = torch::empty_like(xs), dx = torch::empty_like(xs), inv = torch::empty({rows}, torch::kFloat32);
      if (dtype == torch::kFloat32) {
        k->rms_norm_forward_f32(p<float>(xs), p<float>(ws), eps, D, 0, rows, p<float>(y), p<float>(inv));
        k->rms_norm_backward_f32(p<float>(xs), p<float>(ws), p<float>(inv), p<float>(dys), D, 0, rows, p<float>(dx));
      } else {
        k->rms_norm_forward_bf16(p<uint16_t>(xs), p<uint16_t>(ws), eps, D, 0, rows, p<uint16_t>(y), p<float>(inv));
        k->rms_norm_backward_bf16(p<uint16_t>(xs), p<uint16_t>(ws), p<float>(inv), p<uint16_t>(dys), D, 0, rows,
                                  p<uint16_t>(dx));
      }
      EXPECT_LT(worst(inv, inv_want.detach().squeeze(1), 0.0), 1e-6);
      // bfloat16: the normalised value and the product each rounded once.
      const double tol = dtype == torch::kFloat32 ? 1e-5 : 8.0 / 1024;
      EXPECT_LT(worst(y, want.detach(), 1e-3), tol);
      EXPECT_LT(worst(dx, xd.grad(), 1e-3), tol);
      EXPECT_EQ(y[2].abs().max().item<double>(), 0.0);
    }
  }
}

// Tables as model/llama.cpp builds them: angle p / 10000^(2j/Dh) repeated, rotate_half's sign in sin's first half.
std::pair<torch::Tensor, torch::Tensor> rotary_tables_for(int64_t rows, int64_t Dh) {
  auto pos = torch::arange(rows, torch::kFloat64).unsqueeze(1) * 3 + 1;                         // (rows, 1)
  auto freq = torch::pow(10000.0, -torch::arange(0, Dh, 2, torch::kFloat64) / double(Dh));      // (Dh/2)
  auto emb = torch::cat({pos * freq, pos * freq}, 1);                                            // (rows, Dh)
  auto sin = emb.sin();
  sin.narrow(1, 0, Dh / 2).neg_();
  return {emb.cos(), sin};
}

TEST(FusedElementwise, RotaryKernelsOfEveryPathMatchFloat64) {
  torch::manual_seed(7);
  const int64_t rows = 6, H = 3, Dh = 40;  // Dh / 2 = 20 leaves tails after 8 and 16 lanes
  auto [cos, sin] = rotary_tables_for(rows, Dh);
  auto x = torch::randn({rows, H, Dh}, torch::kFloat64), dy = torch::randn({rows, H, Dh}, torch::kFloat64);
  auto c = cos.to(torch::kFloat32), s = sin.to(torch::kFloat32);
  for (const auto& [name, k] : tables_of_this_cpu()) {
    SCOPED_TRACE(name);
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      SCOPED_TRACE(c10::toString(dtype));
      auto xs = x.to(dtype), dys = dy.to(dtype);
      auto xd = xs.to(torch::kFloat64).requires_grad_(true);
      auto cd = c.to(torch::kFloat64).unsqueeze(1), sd = s.to(torch::kFloat64).unsqueeze(1);
      auto want = xd * cd + torch::cat({xd.narrow(2, Dh / 2, Dh / 2), xd.narrow(2, 0, Dh / 2)}, 2) * sd;
      want.backward(dys.to(torch::kFloat64));
      auto y = torch::empty_like(xs), dx = torch::empty_like(xs);
      if (dtype == torch::kFloat32) {
        k->rotary_forward_f32(p<float>(xs), p<float>(c), p<float>(s), H, Dh, 0, rows, p<float>(y));
        k->rotary_backward_f32(p<float>(dys), p<float>(c), p<float>(s), H, Dh, 0, rows, p<float>(dx));
      } else {
        k->rotary_forward_bf16(p<uint16_t>(xs), p<float>(c), p<float>(s), H, Dh, 0, rows, p<uint16_t>(y));
        k->rotary_backward_bf16(p<uint16_t>(dys), p<float>(c), p<float>(s), H, Dh, 0, rows, p<uint16_t>(dx));
      }
      const double tol = dtype == torch::kFloat32 ? 1e-5 : 4.0 / 1024;
      EXPECT_LT(worst(y, want.detach(), 1e-2), tol);
      EXPECT_LT(worst(dx, xd.grad(), 1e-2), tol);
    }
  }
  // By hand, Dh = 2 at angle a: (x0, x1) -> (x0 cos a - x1 sin a, x1 cos a + x0 sin a).
  const double a = 0.5;
  auto c2 = torch::tensor({std::cos(a), std::cos(a)}, torch::kFloat32);
  auto s2 = torch::tensor({-std::sin(a), std::sin(a)}, torch::kFloat32);
  auto x2 = torch::tensor({1.0f, 2.0f}), y2 = torch::empty_like(x2);
  detail::elementwise_scalar().rotary_forward_f32(p<float>(x2), p<float>(c2), p<float>(s2), 1, 2, 0, 1, p<float>(y2));
  EXPECT_NEAR(y2[0].item<float>(), std::cos(a) - 2 * std::sin(a), 1e-6);
  EXPECT_NEAR(y2[1].item<float>(), 2 * std::cos(a) + std::sin(a), 1e-6);
}

// Attention's masked softmax: batch 2, 3 heads, T = 4 queries over S = 37 keys (vector tails), a causal mask
// shifted by 33 past keys, batch 1 with its first query blocked everywhere (1/S) and a padded key.
TEST(FusedElementwise, MaskedSoftmaxKernelsOfEveryPathMatchFloat64) {
  torch::manual_seed(9);
  const int64_t B = 2, H = 3, T = 4, S = 37;
  auto scores = torch::randn({B, H, T, S}, torch::kFloat64) * 3, dp = torch::randn({B, H, T, S}, torch::kFloat64);
  auto blocked = torch::ones({T, S}, torch::kBool).triu(S - T + 1).unsqueeze(0).repeat({B, 1, 1});  // (B, T, S)
  blocked[1][0].fill_(true);
  blocked[1].select(1, 5).fill_(true);
  for (const auto& [name, k] : tables_of_this_cpu()) {
    SCOPED_TRACE(name);
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      SCOPED_TRACE(c10::toString(dtype));
      auto ss = scores.to(dtype), dps = dp.to(dtype);
      auto sd = ss.to(torch::kFloat64).requires_grad_(true);
      // As the model's operator path: a large negative score added (a fully blocked row: 1/S, and its gradient
      // flows to the scores as for any softmax).
      auto block = torch::zeros({B, 1, T, S}, torch::kFloat64).masked_fill_(blocked.unsqueeze(1), -1e300);
      auto want = torch::softmax(sd + block, -1);
      want.backward(dps.to(torch::kFloat64));
      auto p_ = torch::empty_like(ss), ds = torch::empty_like(ss);
      std::vector<float> scratch(S);
      const auto* mask = static_cast<const uint8_t*>(blocked.data_ptr());
      if (dtype == torch::kFloat32) {
        k->masked_softmax_forward_f32(p<float>(ss), mask, S, T, H, 0, B * H * T, p<float>(p_), scratch.data());
        k->softmax_backward_f32(p<float>(p_), p<float>(dps), S, 0, B * H * T, p<float>(ds));
      } else {
        k->masked_softmax_forward_bf16(p<uint16_t>(ss), mask, S, T, H, 0, B * H * T, p<uint16_t>(p_), scratch.data());
        k->softmax_backward_bf16(p<uint16_t>(p_), p<uint16_t>(dps), S, 0, B * H * T, p<uint16_t>(ds));
      }
      const double tol = dtype == torch::kFloat32 ? 1e-5 : 1.0 / 64;  // bfloat16: the saved p is rounded too
      EXPECT_LT((p_.to(torch::kFloat64) - want.detach()).abs().max().item<double>(), tol);
      EXPECT_LT((ds.to(torch::kFloat64) - sd.grad()).abs().max().item<double>(), tol * 4);
      EXPECT_EQ(p_.masked_select(blocked.unsqueeze(1).expand({B, H, T, S}).logical_and(
                                     blocked.all(-1, true).logical_not().unsqueeze(1)))
                    .abs().max().item<double>(), 0.0);  // blocked entries of rows that see something: exactly 0
    }
  }
}

// A plain causal mask over S = T = 300 keys (18 whole vectors of 16 and a tail of 12): each row's loops stop at
// the first multiple of 16 past its last visible key, at every offset from that boundary. Against float64, and
// the blocked entries exactly 0.
TEST(FusedElementwise, MaskedSoftmaxStopsAfterTheLastVisibleKey) {
  torch::manual_seed(10);
  const int64_t H = 2, T = 300, S = 300;
  auto scores = torch::randn({1, H, T, S}, torch::kFloat64) * 3;
  auto blocked = torch::ones({T, S}, torch::kBool).triu(1).unsqueeze(0);  // (1, T, S): key > query
  for (const auto& [name, k] : tables_of_this_cpu()) {
    SCOPED_TRACE(name);
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      SCOPED_TRACE(c10::toString(dtype));
      auto ss = scores.to(dtype), p_ = torch::full_like(ss, 7.0);
      auto want = torch::softmax(ss.to(torch::kFloat64).masked_fill(blocked.unsqueeze(1), -1e300), -1);
      std::vector<float> scratch(S, 5.0f);
      const auto* mask = static_cast<const uint8_t*>(blocked.data_ptr());
      if (dtype == torch::kFloat32)
        k->masked_softmax_forward_f32(p<float>(ss), mask, S, T, H, 0, H * T, p<float>(p_), scratch.data());
      else
        k->masked_softmax_forward_bf16(p<uint16_t>(ss), mask, S, T, H, 0, H * T, p<uint16_t>(p_), scratch.data());
      const double tol = dtype == torch::kFloat32 ? 1e-6 : 1.0 / 256;
      EXPECT_LT((p_.to(torch::kFloat64) - want).abs().max().item<double>(), tol);
      EXPECT_EQ(p_.masked_select(blocked.unsqueeze(1).expand({1, H, T, S})).abs().max().item<double>(), 0.0);
      // Each row sums to 1 (the probabilities of visible keys all written).
      EXPECT_LT((p_.to(torch::kFloat64).sum(-1) - 1).abs().max().item<double>(), dtype == torch::kFloat32 ? 1e-5 : 0.02);
    }
  }
}

// The same rows at another address give the same bits: a resumed run must equal an uninterrupted one, and a
// reduction that started wherever the data first aligned would round differently (it did: every exact-resume
// e2e test failed).
TEST(FusedElementwise, ResultsDoNotDependOnWhereTheDataSits) {
  torch::manual_seed(11);
  const int64_t rows = 3, n = 133;
  auto base = torch::randn({rows * n + 64});
  auto at = [&](int64_t offset) { return base.narrow(0, offset, rows * n).clone(); };  // fresh, then shifted
  for (const auto& [name, k] : tables_of_this_cpu()) {
    SCOPED_TRACE(name);
    std::vector<torch::Tensor> first;
    for (int64_t shift = 0; shift < 16; ++shift) {
      // A buffer whose data starts `shift` floats past a fresh allocation.
      auto buf = torch::empty({rows * n + 16});
      auto x = buf.narrow(0, shift, rows * n);
      x.copy_(at(0));
      auto w = at(1).narrow(0, 0, n).clone(), y = torch::empty({rows * n}), dx = torch::empty({rows * n});
      auto inv = torch::empty({rows});
      k->rms_norm_forward_f32(p<float>(x), p<float>(w), 1e-5f, n, 0, rows, p<float>(y), p<float>(inv));
      k->rms_norm_backward_f32(p<float>(x), p<float>(w), p<float>(inv), p<float>(x), n, 0, rows, p<float>(dx));
      auto z = torch::empty({rows * n + 16}).narrow(0, shift, rows * n);
      z.copy_(x);
      auto lse = torch::empty({rows});
      k->neg_softmax_rows(p<float>(z), n, 0, rows, p<float>(lse));
      std::vector<torch::Tensor> got = {y, dx, inv, z.clone(), lse};
      if (shift == 0) first = got;
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_TRUE(torch::equal(got[i], first[i])) << "output " << i << " shift " << shift;
    }
  }
}

TEST(FusedElementwise, NegSoftmaxRowsOfEveryPathMatchFloat64) {
  torch::manual_seed(5);
  const int64_t rows = 3, V = 4096 + 9;
  auto z = torch::randn({rows, V}, torch::kFloat64) * 6;
  z[1].slice(0, 0, 100).fill_(-200.0);  // far below the row's max: e^x underflows to exactly 0
  auto lse_want = z.logsumexp(1), p_want = torch::softmax(z, 1);
  for (const auto& [name, k] : tables_of_this_cpu()) {
    SCOPED_TRACE(name);
    auto zs = z.to(torch::kFloat32).contiguous(), lse = torch::empty({rows}, torch::kFloat32);
    k->neg_softmax_rows(p<float>(zs), V, 0, rows, p<float>(lse));
    EXPECT_LT((lse.to(torch::kFloat64) - lse_want).abs().max().item<double>(), 2e-5);
    EXPECT_LT(worst(-zs, p_want, 1e-12), 2e-5);
    EXPECT_EQ(zs[1].slice(0, 0, 100).abs().max().item<float>(), 0.0f);
  }
  // By hand: a row of two equal values is -(1/2, 1/2), logsumexp x + ln 2.
  auto two = torch::tensor({{3.0f, 3.0f}});
  auto lse = neg_softmax_rows_(two);
  EXPECT_NEAR(lse.item<float>(), 3.0 + std::log(2.0), 1e-6);
  EXPECT_TRUE(torch::equal(two, torch::tensor({{-0.5f, -0.5f}})));
}

// The bfloat16 loss gradient in one pass: the same bits as widening the logits, neg_softmax_rows_, adding 1 at
// each target and rounding back, on every path (targets at both ends and inside; a row with values far below its
// max, whose exponentials underflow to 0; a width with a tail after 16 lanes).
TEST(FusedElementwise, OneHotMinusSoftmaxRowsInBFloat16AreTheFloat32PathRounded) {
  torch::manual_seed(6);
  const int64_t rows = 5, V = 4096 + 7;
  auto z = (torch::randn({rows, V}) * 5).to(torch::kBFloat16);
  z[2].slice(0, 0, 64).fill_(-300.0);
  auto targets = torch::tensor({int64_t(0), V - 1, int64_t(17), int64_t(5), int64_t(2048)});
  for (const auto& [name, k] : tables_of_this_cpu()) {
    SCOPED_TRACE(name);
    auto want = z.to(torch::kFloat32).contiguous(), lse_want = torch::empty({rows});  // the path's float32 way
    k->neg_softmax_rows(p<float>(want), V, 0, rows, p<float>(lse_want));
    want.scatter_add_(1, targets.unsqueeze(1), torch::ones({rows, 1}));
    want = want.to(torch::kBFloat16);
    auto got = z.clone();
    auto lse = torch::empty({rows});
    std::vector<float> scratch(V);
    k->onehot_minus_softmax_rows_bf16(p<uint16_t>(got), targets.data_ptr<int64_t>(), V, 0, rows, p<float>(lse),
                                      scratch.data());
    EXPECT_TRUE(torch::equal(got, want));
    EXPECT_TRUE(torch::equal(lse, lse_want));
    // Every path against float64: the target's entry near 1 - p, the others near -p.
    auto zd = z.to(torch::kFloat64);
    auto ref = -torch::softmax(zd, 1);
    ref.scatter_add_(1, targets.unsqueeze(1), torch::ones({rows, 1}, torch::kFloat64));
    EXPECT_LT((got.to(torch::kFloat64) - ref).abs().max().item<double>(), 4e-3);  // bfloat16's half ulp at 1
    EXPECT_LT((lse.to(torch::kFloat64) - zd.logsumexp(1)).abs().max().item<double>(), 2e-5);
  }
  // The public entry (threads, this CPU's path) gives the float32 path's bits.
  auto want = z.to(torch::kFloat32);
  auto lse_want = neg_softmax_rows_(want);
  want.scatter_add_(1, targets.unsqueeze(1), torch::ones({rows, 1}));
  auto got = z.clone();
  EXPECT_TRUE(torch::equal(onehot_minus_softmax_rows_(got, targets), lse_want));
  EXPECT_TRUE(torch::equal(got, want.to(torch::kBFloat16)));
  // By hand: two equal logits, target 1: (-1/2, 1/2), logsumexp x + ln 2.
  auto two = torch::tensor({{2.0f, 2.0f}}).to(torch::kBFloat16);
  auto lse = onehot_minus_softmax_rows_(two, torch::tensor({int64_t(1)}));
  EXPECT_NEAR(lse.item<float>(), 2.0 + std::log(2.0), 1e-6);
  EXPECT_TRUE(torch::equal(two, torch::tensor({{-0.5f, 0.5f}}).to(torch::kBFloat16)));
}

// A sampler's weights e^((z - max) / T) and their sum, against float64, with a temperature and a tail.
TEST(FusedElementwise, ExpShiftedOfEveryPathMatchesFloat64) {
  torch::manual_seed(9);
  const int64_t V = 4096 + 13;
  auto z = torch::randn({V}, torch::kFloat64) * 6;
  z.slice(0, 0, 50).fill_(-500.0);  // e^x underflows to exactly 0
  const double mx = z.max().item<double>(), t = 0.7;
  auto want = ((z - mx) / t).exp();
  for (const auto& [name, k] : tables_of_this_cpu()) {
    SCOPED_TRACE(name);
    auto zs = z.to(torch::kFloat32).contiguous(), out = torch::empty({V}, torch::kFloat32);
    const float sum = k->exp_shifted(p<float>(zs), float(mx), float(t), V, p<float>(out));
    EXPECT_LT(worst(out, want, 1e-12), 2e-5);
    EXPECT_NEAR(sum / want.sum().item<double>(), 1.0, 1e-5);
    EXPECT_EQ(out.slice(0, 0, 50).abs().max().item<float>(), 0.0f);
  }
  // By hand: e^0 = 1 at the maximum, e^(-2 / 2) = 1/e two below it at T = 2.
  const float two[2] = {5.0f, 3.0f};
  float out[2];
  EXPECT_NEAR(exp_shifted(two, 5.0f, 2.0f, 2, out), 1.0 + std::exp(-1.0), 1e-6);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_NEAR(out[1], std::exp(-1.0), 1e-7);
}

// The autograd nodes against the operator chains the model ran before them (float32), on a non-contiguous
// input, with a trained norm weight.
TEST(FusedElementwise, NodesEqualTheOperatorChainsInFloat32) {
  torch::manual_seed(6);
  auto base = torch::randn({7, 2, 24});
  auto g = base.transpose(0, 1).clone().transpose(0, 1).requires_grad_(true);  // (7, 2, 24), not contiguous
  auto u = torch::randn({7, 2, 24}, torch::requires_grad());
  auto dh = torch::randn({7, 2, 24});
  auto h = swiglu(g, u);
  h.backward(dh);
  auto g2 = g.detach().clone().requires_grad_(true), u2 = u.detach().clone().requires_grad_(true);
  (torch::silu(g2) * u2).backward(dh);
  EXPECT_LT(worst(h.detach(), (torch::silu(g2) * u2).detach(), 1e-6), 1e-5);
  EXPECT_LT(worst(g.grad(), g2.grad(), 1e-6), 1e-5);
  EXPECT_LT(worst(u.grad(), u2.grad(), 1e-6), 1e-5);

  auto x = torch::randn({3, 5, 48}, torch::requires_grad()), w = torch::randn({48}, torch::requires_grad());
  auto dy = torch::randn({3, 5, 48});
  auto y = rms_norm(x, w, 1e-6);
  y.backward(dy);
  auto x2 = x.detach().clone().requires_grad_(true), w2 = w.detach().clone().requires_grad_(true);
  auto y2 = w2 * (x2 * torch::rsqrt(x2.pow(2).mean(-1, true) + 1e-6));
  y2.backward(dy);
  EXPECT_LT(worst(y.detach(), y2.detach(), 1e-6), 1e-5);
  // x's gradient k gn - c x cancels where the two terms meet: relative to the largest value.
  EXPECT_LT(((x.grad() - x2.grad()).abs().max() / x2.grad().abs().max()).item<double>(), 1e-5);
  EXPECT_LT(worst(w.grad(), w2.grad(), 1e-6), 1e-5);
}

// The rotary node on the model's two layouts: (B, T, heads, Dh) with (B, T, 1, Dh) tables broadcast over a
// batch of 1, and packed (N, heads, Dh) with (N, 1, Dh).
TEST(FusedElementwise, RotaryNodeEqualsTheOperatorChain) {
  torch::manual_seed(8);
  const int64_t B = 2, T = 5, H = 3, Dh = 8;
  auto [cos64, sin64] = rotary_tables_for(T, Dh);
  auto cos = cos64.to(torch::kFloat32).view({1, T, 1, Dh}), sin = sin64.to(torch::kFloat32).view({1, T, 1, Dh});
  auto chain = [&](const torch::Tensor& x, const torch::Tensor& c, const torch::Tensor& s) {
    return x * c + x.roll(Dh / 2, -1) * s;
  };
  for (bool packed : {false, true}) {
    SCOPED_TRACE(packed ? "packed" : "batched");
    auto shape = packed ? std::vector<int64_t>{T, H, Dh} : std::vector<int64_t>{B, T, H, Dh};
    auto c = packed ? cos.view({T, 1, Dh}) : cos, s = packed ? sin.view({T, 1, Dh}) : sin;
    auto x = torch::randn(shape, torch::requires_grad()), dy = torch::randn(shape);
    auto y = rotary(x, c, s);
    y.backward(dy);
    auto x2 = x.detach().clone().requires_grad_(true);
    auto y2 = chain(x2, c, s);
    y2.backward(dy);
    EXPECT_EQ(y.sizes(), y2.sizes());
    EXPECT_LT(worst(y.detach(), y2.detach(), 1e-3), 1e-5);
    EXPECT_LT(worst(x.grad(), x2.grad(), 1e-3), 1e-5);
  }
  test::expect_error([&] { rotary(torch::ones({2, 5, 3, 7}), torch::ones({1, 5, 1, 7}), torch::ones({1, 5, 1, 7})); },
               {"rotary: x [2, 5, 3, 7] Float", "Dh even"});
}

// The node against the operator path the model ran (a large negative score added, softmax), with the mask
// broadcast over the batch; gradients through autograd.
TEST(FusedElementwise, MaskedSoftmaxNodeEqualsTheOperatorChain) {
  torch::manual_seed(10);
  const int64_t B = 2, H = 2, T = 5, S = 5;
  auto blocked = torch::ones({T, S}, torch::kBool).triu(1).unsqueeze(0);  // (1, T, S): causal
  auto x = torch::randn({B, H, T, S}, torch::requires_grad()), dp = torch::randn({B, H, T, S});
  auto probs = masked_softmax(x, blocked);
  probs.backward(dp);
  auto x2 = x.detach().clone().requires_grad_(true);
  auto block = torch::zeros({1, 1, T, S}).masked_fill_(blocked.unsqueeze(1), -1e30);
  auto want = torch::softmax(x2 + block, -1);
  want.backward(dp);
  EXPECT_LT((probs - want).abs().max().item<double>(), 1e-6);
  EXPECT_LT((x.grad() - x2.grad()).abs().max().item<double>(), 1e-6);
  test::expect_error([&] { masked_softmax(x.detach(), torch::ones({3, T, S}, torch::kBool)); },
                     {"masked_softmax: scores [2, 2, 5, 5] Float and mask [3, 5, 5] Bool"});
}

TEST(FusedElementwise, RejectsWhatItDoesNotCover) {
  EXPECT_TRUE(fused_elementwise_fits(torch::ones({2}, torch::kBFloat16)));
  EXPECT_FALSE(fused_elementwise_fits(torch::ones({2}, torch::kFloat64)));
  test::expect_error([] { rms_norm(torch::ones({2, 4}), torch::ones({4}, torch::kBFloat16), 1e-5); },
               {"rms_norm: x [2, 4] Float and weight [4] BFloat16"});
  test::expect_error([] { swiglu(torch::ones({2, 4}), torch::ones({2, 3})); },
                     {"swiglu: gate [2, 4] Float and up [2, 3]"});
  test::expect_error([] { auto z = torch::ones({2, 4}, torch::kFloat64); neg_softmax_rows_(z); },
                     {"neg_softmax_rows_: z [2, 4] Double"});
  test::expect_error([] { auto z = torch::ones({2, 4}); onehot_minus_softmax_rows_(z, torch::zeros({2}, torch::kLong)); },
                     {"onehot_minus_softmax_rows_: z [2, 4] Float", "expected a contiguous bfloat16"});
  test::expect_error(
      [] {
        auto z = torch::ones({2, 4}, torch::kBFloat16);
        onehot_minus_softmax_rows_(z, torch::tensor({int64_t(0), int64_t(4)}));
      },
      {"a target outside [0, 4)"});
  test::expect_error(
      [] {
        auto z = torch::ones({2, 4}, torch::kBFloat16);
        onehot_minus_softmax_rows_(z, torch::zeros({3}, torch::kLong));
      },
      {"targets [3] Long", "expected (2) int64"});
}

}  // namespace
}  // namespace reglage::kernels
