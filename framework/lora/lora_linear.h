// A linear layer over a frozen base weight that can carry several named LoRA adapters at once.
// The forward call names which adapters are active; none active is exactly the base layer.
//   y = x W^T + b + sum_{a active, not merged} scale_a * dropout_a(x) A_a^T B_a^T
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "framework/kernels/weight_only.h"

namespace reglage::lora {

// Names of the adapters active for one forward call; empty = the base model.
using AdapterSet = std::vector<std::string>;

struct LoraWeights {
  torch::Tensor A;              // (r, in), float32 master weights, Kaiming-uniform as PEFT
  torch::Tensor B;              // (out, r), float32, zeros at creation
  double scale = 1.0;           // alpha / r
  double dropout = 0.0;         // on the adapter's input, training mode only
  double merged_weight = 0.0;   // w > 0 while merged into the base weight as W += w * scale * B A
};

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool with_bias);

  // x: (..., in) -> (..., out)
  torch::Tensor forward(const torch::Tensor& x, const AdapterSet& active = {});

  // Adds adapter `name` (rank r): A ~ U(-1/sqrt(in), 1/sqrt(in)) drawn from `gen`, B = 0.
  void add_adapter(const std::string& name, int64_t rank, double alpha, double dropout, at::Generator gen);
  void remove_adapter(const std::string& name);
  bool has_adapter(const std::string& name) const { return adapters_.count(name) > 0; }
  LoraWeights& adapter(const std::string& name);

  // W += w * scale * B A (w in [0, 1]); unmerge subtracts it again. A merged adapter is part of the base
  // weight for every forward call until unmerged, and is skipped in the adapter path.
  void merge(const std::string& name, double w);
  void unmerge(const std::string& name);
  // Merges with weight w and forgets the adapter: the change becomes part of the base for good.
  void bake(const std::string& name, double w);

  const std::map<std::string, LoraWeights>& adapters() const { return adapters_; }

  // Stores the frozen base weight in bfloat16 or int8 (one scale per output row) in place of its float32
  // values; forward then runs the weight-only product (framework/kernels/weight_only.h) and adapters are
  // unaffected. The weight (and bias) no longer train. kNative keeps the weight as it is. Fails on an adapter
  // merged in.
  void set_storage(kernels::Storage s);
  kernels::Storage storage() const { return storage_; }

  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }

  torch::Tensor weight;        // (out, in): the model's dtype, or bfloat16 / int8 under set_storage
  torch::Tensor weight_scale;  // (out) float32 for int8 storage (a buffer), else undefined
  torch::Tensor bias;          // (out) or undefined

 private:
  std::map<std::string, LoraWeights> adapters_;
  kernels::Storage storage_ = kernels::Storage::kNative;
};
TORCH_MODULE(Linear);

}  // namespace reglage::lora
