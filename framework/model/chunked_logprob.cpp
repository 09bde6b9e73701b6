// chunked_token_logprobs: a custom autograd function whose forward and backward each walk the rows in chunks.
//   forward:  per chunk, logits = widen(h_c W^T) / t; logp = logits[target] - logsumexp(logits)
//   backward: per chunk, recompute p = softmax(logits); dlogits = g * (onehot(target) - p) / t;
//             dh_c = dlogits W (in the model's dtype), dW += dlogits^T h_c
//   a frozen head: forward also forms (onehot(target) - p) W / t per row and backward only scales it by g;
//   in bfloat16 at t = 1, onehot(target) - p comes from the bfloat16 logits in one fused pass (same bits)
#include "framework/model/chunked_logprob.h"

#include <algorithm>

#include "framework/core/error.h"
#include "framework/kernels/frozen_linear.h"
#include "framework/kernels/fused_elementwise.h"

namespace reglage::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

torch::Tensor widen(const torch::Tensor& x) {
  return x.scalar_type() == torch::kFloat64 ? x : x.to(torch::kFloat32);
}

// One chunk's logits as the full path computes them: (n, D) x (V, D) -> (n, V), widened, / temperature.
torch::Tensor chunk_logits(const torch::Tensor& h, const torch::Tensor& weight, double temperature) {
  auto logits = widen(kernels::matmul_2d(h, weight.t()));
  return temperature == 1.0 ? logits : logits / temperature;
}

class ChunkedLogprob : public torch::autograd::Function<ChunkedLogprob> {
 public:
  // early: the head is frozen and h needs a gradient, so forward also forms each row's d logp / d h
  // = (onehot(target) - p) W / t from the logits it holds (keeping (N, D) instead of h), and backward scales
  // it by the upstream gradient: one (c, D) x (D, V) product and one softmax per chunk less than recomputing.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& weight,
                               const torch::Tensor& targets, double temperature, int64_t chunk_rows, bool early) {
    const int64_t n = h.size(0);
    auto out = torch::empty({n}, h.options().dtype(h.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32));
    torch::Tensor dlogp_dh = early ? torch::empty_like(h) : torch::Tensor();  // (N, D)
    for (int64_t a = 0; a < n; a += chunk_rows) {
      const int64_t b = std::min(n, a + chunk_rows);
      auto target = targets.slice(0, a, b).unsqueeze(1);                          // (c, 1)
      if (early && temperature == 1.0 && h.scalar_type() == torch::kBFloat16 &&
          weight.scalar_type() == torch::kBFloat16 && kernels::fused_elementwise_fits(h)) {
        // bfloat16 logits straight into the fused softmax: the same bits as widening them below, without a
        // float32 copy of the (c, V) block and its rounding back.
        auto logits = kernels::matmul_2d(h.slice(0, a, b), weight.t()).contiguous();  // (c, V) bfloat16
        auto picked = logits.gather(1, target).squeeze(1).to(torch::kFloat32);          // (c)
        auto lse = kernels::onehot_minus_softmax_rows_(logits, target.squeeze(1));     // logits: onehot - p
        out.slice(0, a, b).copy_(picked - lse);
        dlogp_dh.slice(0, a, b).copy_(kernels::matmul_2d(logits, weight));
        continue;
      }
      auto logits = chunk_logits(h.slice(0, a, b), weight, temperature);          // (c, V)
      auto picked = logits.gather(1, target).squeeze(1);                          // (c)
      // float32: one fused pass per row leaves -p in logits; float64: the operators.
      const bool fused = kernels::fused_elementwise_fits(logits) && logits.scalar_type() == torch::kFloat32;
      auto lse = fused ? kernels::neg_softmax_rows_(logits) : logits.logsumexp(1);  // (c)
      out.slice(0, a, b).copy_(picked - lse);
      if (early) {
        auto dlogits = fused ? logits : logits.sub_(lse.unsqueeze(1)).exp_().neg_();  // (c, V): -p
        dlogits.scatter_add_(1, target, torch::ones({b - a, 1}, dlogits.options()));  // onehot - p
        if (temperature != 1.0) dlogits.div_(temperature);
        dlogp_dh.slice(0, a, b).copy_(kernels::matmul_2d(dlogits.to(weight.scalar_type()), weight));
      }
    }
    ctx->save_for_backward({early ? dlogp_dh : h, weight, targets});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk_rows"] = chunk_rows;
    ctx->saved_data["early"] = early;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto g = grad_outputs[0];  // (N)
    if (ctx->saved_data["early"].toBool()) {
      const auto& dlogp_dh = saved[0];  // (N, D)
      return {dlogp_dh * g.unsqueeze(1).to(dlogp_dh.scalar_type()), {}, {}, {}, {}, {}};
    }
    const auto &h = saved[0], &weight = saved[1], &targets = saved[2];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const bool want_h = ctx->needs_input_grad(0), want_w = ctx->needs_input_grad(1);
    torch::Tensor grad_h = want_h ? torch::empty_like(h) : torch::Tensor();
    torch::Tensor grad_w = want_w ? torch::zeros(weight.sizes(), weight.options().dtype(widen(weight).scalar_type()))
                                  : torch::Tensor();
    const int64_t n = h.size(0);
    for (int64_t a = 0; a < n; a += chunk_rows) {
      const int64_t b = std::min(n, a + chunk_rows);
      auto hc = h.slice(0, a, b);
      auto dlogits = chunk_logits(hc, weight, temperature);                              // (c, V)
      if (kernels::fused_elementwise_fits(dlogits) && dlogits.scalar_type() == torch::kFloat32)
        kernels::neg_softmax_rows_(dlogits);                                              // -p, in place
      else
        dlogits = -torch::softmax(dlogits, 1);                                            // -p
      dlogits.scatter_add_(1, targets.slice(0, a, b).unsqueeze(1),
                           torch::ones({b - a, 1}, dlogits.options()));                   // onehot - p
      dlogits.mul_(g.slice(0, a, b).unsqueeze(1).to(dlogits.scalar_type()) / temperature);
      if (want_h) grad_h.slice(0, a, b).copy_(kernels::matmul_2d(dlogits.to(weight.scalar_type()), weight));
      if (want_w) grad_w.add_(kernels::matmul_2d(dlogits.t(), widen(hc)));
    }
    if (want_w) grad_w = grad_w.to(weight.scalar_type());
    return {grad_h, grad_w, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// Log-probs and entropies per chunk. With z = logits / t, l = log_softmax(z), p = exp(l), H = -sum p l:
//   d logp / dz = onehot(target) - p,   dH / dz = -p (l + H),
// so backward recomputes l and p per chunk and needs neither saved; a call that is a single chunk (at most
// logprob_chunk_rows rows, e.g. one length chunk of an RL minibatch) keeps its l instead of recomputing it.
class ChunkedLogprobEntropy : public torch::autograd::Function<ChunkedLogprobEntropy> {
 public:
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& weight,
                               const torch::Tensor& targets, double temperature, int64_t chunk_rows) {
    const int64_t n = h.size(0);
    auto opts = h.options().dtype(h.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
    auto logp = torch::empty({n}, opts), entropy = torch::empty({n}, opts);
    torch::Tensor kept;  // (n, V) the log-softmax, when the whole call is one chunk: backward reuses it
    for (int64_t a = 0; a < n; a += chunk_rows) {
      const int64_t b = std::min(n, a + chunk_rows);
      auto l = torch::log_softmax(chunk_logits(h.slice(0, a, b), weight, temperature), 1);  // (c, V)
      logp.slice(0, a, b).copy_(l.gather(1, targets.slice(0, a, b).unsqueeze(1)).squeeze(1));
      entropy.slice(0, a, b).copy_(-(l.exp() * l).sum(1));
      if (chunk_rows >= n) kept = l;
    }
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined, not zeros
    ctx->save_for_backward({h, weight, targets, entropy.clone(), kept});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk_rows"] = chunk_rows;
    return {logp, entropy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &weight = saved[1], &targets = saved[2], &entropy = saved[3], &kept = saved[4];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const auto &g_logp = grad_outputs[0], &g_ent = grad_outputs[1];  // (N) each, or undefined
    const bool want_h = ctx->needs_input_grad(0), want_w = ctx->needs_input_grad(1);
    torch::Tensor grad_h = want_h ? torch::zeros_like(h) : torch::Tensor();
    torch::Tensor grad_w = want_w ? torch::zeros(weight.sizes(), weight.options().dtype(widen(weight).scalar_type()))
                                  : torch::Tensor();
    if (!g_logp.defined() && !g_ent.defined()) return {grad_h, grad_w, {}, {}, {}};
    const int64_t n = h.size(0);
    for (int64_t a = 0; a < n; a += chunk_rows) {
      const int64_t b = std::min(n, a + chunk_rows);
      auto hc = h.slice(0, a, b);
      auto l = kept.defined() ? kept : torch::log_softmax(chunk_logits(hc, weight, temperature), 1);  // (c, V)
      auto p = l.exp();
      torch::Tensor dz = torch::zeros_like(l);                               // (c, V)
      if (g_logp.defined()) {
        auto gl = g_logp.slice(0, a, b).unsqueeze(1).to(l.scalar_type());  // (c, 1)
        dz.sub_(p * gl).scatter_add_(1, targets.slice(0, a, b).unsqueeze(1), gl);
      }
      if (g_ent.defined()) {
        auto ge = g_ent.slice(0, a, b).unsqueeze(1).to(l.scalar_type());   // (c, 1)
        dz.sub_(p * (l + entropy.slice(0, a, b).unsqueeze(1)) * ge);
      }
      if (temperature != 1.0) dz.div_(temperature);
      if (want_h) grad_h.slice(0, a, b).copy_(kernels::matmul_2d(dz.to(weight.scalar_type()), weight));
      if (want_w) grad_w.add_(kernels::matmul_2d(dz.t(), widen(hc)));
    }
    if (want_w) grad_w = grad_w.to(weight.scalar_type());
    return {grad_h, grad_w, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

void check_logprob_operands(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& targets,
                            double temperature) {
  if (h.dim() != 2 || weight.dim() != 2 || h.size(1) != weight.size(1))
    fail("chunked_token_logprobs: hidden ", h.sizes(), " and head ", weight.sizes(), " do not fit (N, D) x (V, D)");
  if (targets.dim() != 1 || targets.size(0) != h.size(0))
    fail("chunked_token_logprobs: targets ", targets.sizes(), " for ", h.size(0), " rows");
  if (!(temperature > 0)) fail("chunked_token_logprobs: temperature = ", temperature, " (must be > 0)");
}

}  // namespace

int64_t logprob_chunk_rows(int64_t vocab, int64_t budget_bytes) {
  return std::max<int64_t>(1, budget_bytes / (std::max<int64_t>(vocab, 1) * 4));
}

torch::Tensor chunked_token_logprobs(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& targets,
                                     double temperature, int64_t chunk_rows) {
  check_logprob_operands(h, weight, targets, temperature);
  if (chunk_rows <= 0) chunk_rows = logprob_chunk_rows(weight.size(0));
  const bool early = torch::GradMode::is_enabled() && h.requires_grad() && !weight.requires_grad();
  return ChunkedLogprob::apply(h, weight, targets.to(torch::kLong), temperature, chunk_rows, early);
}

std::pair<torch::Tensor, torch::Tensor> chunked_logprobs_and_entropy(const torch::Tensor& h, const torch::Tensor& weight,
                                                                     const torch::Tensor& targets, double temperature,
                                                                     int64_t chunk_rows) {
  check_logprob_operands(h, weight, targets, temperature);
  if (chunk_rows <= 0) chunk_rows = logprob_chunk_rows(weight.size(0));
  auto out = ChunkedLogprobEntropy::apply(h, weight, targets.to(torch::kLong), temperature, chunk_rows);
  return {out[0], out[1]};
}

}  // namespace reglage::model
