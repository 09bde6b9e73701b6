#include "framework/lora/lora_linear.h"

#include <cmath>

#include "framework/core/error.h"
#include "framework/lora/lora_fused.h"

namespace reglage::lora {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias) {
  // Initialised like torch.nn.Linear; loaders overwrite the values.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = register_parameter("weight", torch::empty({out_features, in_features}).uniform_(-bound, bound));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x, const AdapterSet& active) {
  // Rows flattened: the base product's output is then a fresh (N, out) matrix that each adapter's second
  // factor accumulates into (a GEMM with beta = 1), instead of an (N, out) delta, its scaled copy and the sum
  // per adapter, each a pass over the output in forward and again in backward.
  const int64_t in = in_features();
  auto x2 = x.reshape({-1, in});  // (N, in)
  auto shape = x.sizes().vec();
  shape.back() = out_features();
  // Adapters without dropout on a frozen base (float32 compute, or bfloat16 on a bfloat16 base): the whole
  // layer as one autograd node (lora_fused.h). Otherwise the operators below.
  std::vector<LoraTerm> terms;
  bool dropout = false;
  for (const auto& name : active) {
    auto it = adapters_.find(name);
    if (it == adapters_.end() || it->second.merged_weight > 0) continue;  // not on this layer, or merged
    terms.push_back({it->second.A, it->second.B, it->second.scale});
    dropout = dropout || (it->second.dropout > 0 && is_training());
  }
  if (!terms.empty() && !dropout && fused_lora_fits(x2, weight, bias, terms))
    return fused_lora_linear(x2, weight, weight_scale, bias, terms).view(shape);  // (..., out)
  auto y = kernels::stored_linear(x2, weight, weight_scale, bias);  // (N, out)
  for (const auto& name : active) {
    auto it = adapters_.find(name);
    if (it == adapters_.end() || it->second.merged_weight > 0) continue;  // not on this layer, or merged
    LoraWeights& a = it->second;
    // A base computing in bfloat16 (dtype: bfloat16): the adapter's products run in that dtype too, as
    // autocast runs them, on casts of its float32 master weights (the casts carry the gradients back to
    // float32). Widening the (N, in) input and forming an (N, out) float32 delta per adapter cost more than
    // the base product itself on SmolLM2's MLP. Otherwise adapters compute in their own precision.
    const bool narrow = y.scalar_type() == x2.scalar_type() && y.scalar_type() != a.B.scalar_type();
    const auto compute = narrow ? y.scalar_type() : a.A.scalar_type();
    auto h = x2.to(compute);
    if (a.dropout > 0 && is_training()) h = torch::dropout(h, a.dropout, /*train=*/true);
    auto t = torch::nn::functional::linear(h, a.A.to(compute));  // (N, r)
    if (y.scalar_type() == compute) {
      // y += scale * t B^T: in place on the base output (nothing saves it), out of place on a view.
      auto b = a.B.to(compute);
      y = y.is_view() ? torch::addmm(y, t, b.t(), /*beta=*/1, /*alpha=*/a.scale)
                      : y.addmm_(t, b.t(), /*beta=*/1, /*alpha=*/a.scale);
    } else {
      y = y + (torch::nn::functional::linear(t, a.B) * a.scale).to(y.scalar_type());
    }
  }
  return y.view(shape);  // (..., out)
}

void LinearImpl::add_adapter(const std::string& name, int64_t rank, double alpha, double dropout,
                             at::Generator gen) {
  if (adapters_.count(name)) fail("adapter '", name, "' already exists on this layer");
  if (rank <= 0) fail("adapter '", name, "': rank = ", rank, " (must be > 0)");
  LoraWeights a;
  // PEFT: kaiming_uniform_(A, a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)); B = 0 so the adapter
  // starts as the identity change.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features()));
  // Master weights in float32 (float64 for a float64 base, used by precision tests).
  const auto dtype = weight.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  auto opts = torch::TensorOptions().dtype(dtype).device(weight.device());
  a.A = torch::empty({rank, in_features()}, torch::TensorOptions().dtype(torch::kFloat32))
            .uniform_(-bound, bound, gen)
            .to(opts);
  a.B = torch::zeros({out_features(), rank}, opts);
  a.A.set_requires_grad(true);
  a.B.set_requires_grad(true);
  a.scale = alpha / static_cast<double>(rank);
  a.dropout = dropout;
  adapters_.emplace(name, std::move(a));
}

void LinearImpl::remove_adapter(const std::string& name) {
  if (adapter(name).merged_weight > 0) unmerge(name);
  adapters_.erase(name);
}

LoraWeights& LinearImpl::adapter(const std::string& name) {
  auto it = adapters_.find(name);
  if (it == adapters_.end()) fail("no adapter named '", name, "' on this layer");
  return it->second;
}

void LinearImpl::set_storage(kernels::Storage s) {
  if (s == storage_) return;
  if (storage_ != kernels::Storage::kNative) fail("weight storage is already ", kernels::storage_name(storage_));
  for (const auto& [name, a] : adapters_)
    if (a.merged_weight > 0) fail("weight storage ", kernels::storage_name(s), ": adapter '", name, "' is merged in");
  if (s == kernels::Storage::kNative) return;
  if (bias.defined()) bias.set_requires_grad(false);  // the bias stays in its dtype, frozen with the weight
  auto scale = kernels::store_weight(weight, s);
  if (scale.defined()) weight_scale = register_buffer("weight_scale", scale);
  storage_ = s;
}

void LinearImpl::merge(const std::string& name, double w) {
  if (storage_ != kernels::Storage::kNative)
    fail("adapter '", name, "' cannot be merged into a base stored as ", kernels::storage_name(storage_),
         " (merging needs the float weights: load the model without weight storage)");
  if (!(w >= 0.0 && w <= 1.0)) fail("merge weight ", w, " for adapter '", name, "' must be in [0, 1]");
  LoraWeights& a = adapter(name);
  if (a.merged_weight > 0) fail("adapter '", name, "' is already merged");
  if (w == 0.0) return;  // interpolating to the base changes nothing
  torch::NoGradGuard no_grad;
  // W + w * scale * B A in float64, rounded once to the base dtype.
  auto delta = torch::matmul(a.B.to(torch::kFloat64), a.A.to(torch::kFloat64)) * (a.scale * w);  // (out, in)
  weight.copy_(weight.to(torch::kFloat64) + delta);
  a.merged_weight = w;
}

void LinearImpl::unmerge(const std::string& name) {
  LoraWeights& a = adapter(name);
  if (a.merged_weight <= 0) return;
  torch::NoGradGuard no_grad;
  auto delta = torch::matmul(a.B.to(torch::kFloat64), a.A.to(torch::kFloat64)) * (a.scale * a.merged_weight);
  weight.copy_(weight.to(torch::kFloat64) - delta);
  a.merged_weight = 0.0;
}

void LinearImpl::bake(const std::string& name, double w) {
  merge(name, w);
  adapters_.erase(name);
}

}  // namespace reglage::lora
