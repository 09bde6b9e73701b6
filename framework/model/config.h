// The shape of a Llama-family decoder, as read from a llama2.c header or a Hugging Face config.json.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace reglage::model {

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // LlamaForCausalLM | MistralForCausalLM | Qwen2ForCausalLM
  int64_t vocab_size = 0;        // V
  int64_t dim = 0;               // D, hidden_size
  int64_t hidden_dim = 0;        // F, intermediate_size of the SwiGLU MLP
  int64_t n_layers = 0;          // L
  int64_t n_heads = 0;           // H, query heads
  int64_t n_kv_heads = 0;        // Hkv, key/value heads (grouped-query attention when < H)
  int64_t head_dim = 0;          // Dh; 0 = dim / n_heads
  int64_t max_seq_len = 2048;    // longest position the rotary table covers
  double rope_theta = 10000.0;   // rotary base
  double norm_eps = 1e-5;        // RMSNorm epsilon
  bool tie_embeddings = true;    // LM head shares the embedding matrix
  bool attention_bias = false;   // q/k/v projections carry a bias (Qwen2)
  int64_t bos_id = 1;            // -1 = none
  std::vector<int64_t> eos_ids = {2};

  int64_t head_size() const { return head_dim > 0 ? head_dim : dim / n_heads; }
  // Throws reglage::Error naming `source` when a field is out of range or inconsistent (dims, heads, token
  // ids < vocab_size), or when the weights would not fit in this machine's memory. Nothing is allocated.
  void validate(const std::string& source) const;

  // Every parameter CausalLM(*this) holds, by its Hugging Face name, with its shape; lets a loader check
  // weight files against the config before allocating the model.
  std::vector<std::pair<std::string, std::vector<int64_t>>> parameter_shapes() const;
  // Number of weights; call after validate (which proves it fits in int64).
  int64_t parameter_count() const;
};

// "float32" | "bfloat16" | "float16" -> dtype; throws naming the value otherwise.
torch::Dtype parse_dtype(const std::string& name);
std::string dtype_name(torch::Dtype dtype);

}  // namespace reglage::model
