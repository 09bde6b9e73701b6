// Named LoRA adapters on a shared frozen base: add, merge/unmerge with a weight, save and load in PEFT's
// format, and choose which parameters train.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "framework/model/llama.h"

namespace reglage::lora {

struct LoraConfig {
  int64_t rank = 8;       // r
  double alpha = 16.0;    // scale = alpha / r (alpha / sqrt(r) with use_rslora)
  double dropout = 0.0;   // on the adapter input during training
  bool use_rslora = false;
  // Short names of the layers to adapt: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj,
  // or "all-linear" for all seven.
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
};

// Adds adapter `name` to every targeted layer; A drawn from a generator seeded with `seed`, B = 0.
void add_adapter(model::CausalLM& m, const std::string& name, const LoraConfig& cfg, uint64_t seed);
bool has_adapter(model::CausalLM& m, const std::string& name);
void remove_adapter(model::CausalLM& m, const std::string& name);

// W += w * scale * B A on every layer the adapter covers (w in [0, 1]; 1 = full merge, below 1 interpolates
// between the base and the fine-tuned weights). unmerge_adapter restores the base up to rounding.
void merge_adapter(model::CausalLM& m, const std::string& name, double w = 1.0);
void unmerge_adapter(model::CausalLM& m, const std::string& name);
// Merges with weight w and removes the adapter, keeping its change in the base weights.
void bake_adapter(model::CausalLM& m, const std::string& name, double w = 1.0);

// The adapter's tensors under PEFT key names, in layer order:
// "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" -> (r, in), "...lora_B.weight" -> (out, r)
std::vector<std::pair<std::string, torch::Tensor>> adapter_tensors(model::CausalLM& m, const std::string& name);

// PEFT directory: adapter_config.json + adapter_model.safetensors (atomic writes).
void save_peft(model::CausalLM& m, const std::string& name, const std::string& dir,
               const std::string& base_model_path = "");
// Reads a PEFT directory into adapter `name`. Errors name the file and the tensor whose shape does not fit.
LoraConfig load_peft(model::CausalLM& m, const std::string& name, const std::string& dir);

enum class TrainMode { kLora, kFull, kFullFreezeLower };
// Sets requires_grad on the base and on `adapter`'s tensors and returns the trainable tensors:
//   kLora: the adapter only; kFull: every base parameter; kFullFreezeLower: all but the embedding and the
//   first `freeze_layers` layers.
std::vector<torch::Tensor> set_trainable(model::CausalLM& m, TrainMode mode, const std::string& adapter = "",
                                         int64_t freeze_layers = 0);

}  // namespace reglage::lora
