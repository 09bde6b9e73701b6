// The Llama-family decoder every stage shares: embedding, RMSNorm, rotary embeddings (Hugging Face
// rotate-half convention), grouped-query attention with causal mask and KV cache, SwiGLU MLP, tied or
// untied LM head, optional q/k/v bias (Qwen2). Module and parameter names follow Hugging Face's
// LlamaForCausalLM ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight"), so loading and saving
// Hugging Face checkpoints is a name-for-name copy.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "framework/lora/lora_linear.h"
#include "framework/model/config.h"

namespace reglage::model {

using lora::AdapterSet;

// Keys and values of every layer for incremental decoding.
struct KVCache {
  std::vector<torch::Tensor> k;  // per layer (B, Hkv, S_max, Dh)
  std::vector<torch::Tensor> v;  // per layer (B, Hkv, S_max, Dh)
  torch::Tensor key_valid;       // (B, S_max) bool: false for padding slots
  int64_t length = 0;            // slots filled so far
  // Rotary tables (capacity, Dh) float32 of positions 0 .. capacity - 1, built by the fused decode step on
  // its first use of this cache (framework/model/fused_decode.cpp); undefined until then.
  torch::Tensor rotary_cos, rotary_sin;
  int64_t capacity() const { return key_valid.size(1); }
  // The given batch rows, in that order (a row may repeat): rows (B') int64 -> every tensor (B', ...).
  void keep_rows(const torch::Tensor& rows);
};

// One forward call.
struct ForwardInput {
  torch::Tensor ids;        // (B, T) int64
  torch::Tensor positions;  // (B, T) int64 rotary positions; undefined = cache length + 0..T-1
  torch::Tensor valid;      // (B, T) bool, false = padding (never attended to); undefined = all valid
  KVCache* cache = nullptr; // appends this call's keys/values when given
  AdapterSet adapters;      // active LoRA adapters; empty = base model
  // (B, T) int64: packed rows; a query attends only to keys of its own segment (positions restart per
  // segment, given in `positions`). Undefined = one segment per row. Not combined with a cache.
  torch::Tensor segments = {};
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // (..., D) -> (..., D), statistics in float32
  torch::Tensor weight;                           // (D)
  double eps;
};
TORCH_MODULE(RMSNorm);

// Rows without their padding: a call whose rows are partly padding runs the token-wise parts of each layer
// (norms, projections, MLP, residuals) on its N valid positions only, and attention unpacks its queries,
// keys and values into (B, T) slots (zeros at padding, which the mask hides) and packs its output again.
struct TokenLayout {
  torch::Tensor tokens;  // (N) int64: flat positions b * T + t of the valid tokens; undefined = not packed
  int64_t B = 0, T = 0;
  bool packed() const { return tokens.defined(); }
  torch::Tensor pack(const torch::Tensor& x) const;    // (B, T, ...) -> (N, ...)
  torch::Tensor unpack(const torch::Tensor& x) const;  // (N, ...) -> (B, T, ...), zeros at padding
};

// Query rows per causal block of attention for a call of T positions without a cache: T (one block) below 512
// positions, then a quarter of T rounded up to 16 rows, between 128 and 256 rows.
int64_t causal_block_rows(int64_t T);

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& cfg);
  // x: (B, T, D); cos/sin: (B, T, 1, Dh) from rotary_tables; blocked: (B, 1, 1, T, S) bool, true where a
  // query may not see a key -> (B, T, D). With a packed layout x is (N, D), cos/sin (N, 1, Dh), the result
  // (N, D). query_block > 0 (only without a cache): queries in causal blocks of that many rows, each block
  // over the keys up to its end (causal_block_rows).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& blocked, KVCache* cache, int64_t layer, const AdapterSet& adapters,
                        const TokenLayout& layout = {}, int64_t query_block = 0);
  // Queries q (B, H, Tq, Dh) over keys and values k, v (B, Hkv, S, Dh) with blocked (B or 1, 1, 1, Tq, S):
  // scaled scores, masked softmax, probabilities times values -> (B, H, Tq, Dh).
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const torch::Tensor& blocked) const;
  lora::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t n_heads, n_kv_heads, head_dim;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x, const AdapterSet& adapters);  // SwiGLU: down(silu(gate x) * up x)
  lora::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const ModelConfig& cfg);
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const ModelConfig& cfg);
  torch::nn::Embedding embed_tokens{nullptr};
  std::vector<DecoderLayer> layers;
  RMSNorm norm{nullptr};
};
TORCH_MODULE(Decoder);

class CausalLMImpl : public torch::nn::Module {
 public:
  explicit CausalLMImpl(const ModelConfig& cfg);

  // Final hidden state after the last RMSNorm: (B, T, D). The heads (LM, value, reward) read it. Padding
  // positions (valid false) hold zeros when the call skipped them (pack_padding).
  torch::Tensor hidden(const ForwardInput& in);
  // LM head on hidden states: (B, T, D) -> (B, T, V) logits in float32 (float64 for a float64 model).
  torch::Tensor lm_logits(const torch::Tensor& hidden);
  // hidden + LM head: (B, T) ids -> (B, T, V) float32 logits.
  torch::Tensor forward(const ForwardInput& in) { return lm_logits(hidden(in)); }
  // log p(targets[b][t] | ids[b][..t]) / temperature-scaled, without the (B, T, V) logits: only the positions
  // whose target is not -100 go through the LM head, in chunks (chunked_logprob.h). targets: (B, T) int64;
  // returns (B, T) float32 (float64 for a float64 model), 0 where the target is -100. The same numbers as
  // log_softmax(forward(in) / temperature) gathered at targets, up to the rounding of smaller matrix products.
  torch::Tensor token_logprobs(const ForwardInput& in, const torch::Tensor& targets, double temperature = 1.0);
  // The same from hidden states already computed: (B, T, D) -> (B, T).
  torch::Tensor token_logprobs_from_hidden(const torch::Tensor& hidden, const torch::Tensor& targets,
                                           double temperature = 1.0);

  // Rows of hidden states through the LM head: h (N, D), targets (N) -> {log p(target) (N), entropy (N)} of
  // softmax(logits / temperature), both differentiable, in float32 (float64 for a float64 model). The head runs
  // in chunks of rows (chunked_logprobs_and_entropy) unless it carries an adapter or a bias.
  std::pair<torch::Tensor, torch::Tensor> logprobs_and_entropy(const torch::Tensor& h, const torch::Tensor& targets,
                                                               double temperature = 1.0);

  // Frozen base weights stored in bfloat16 or int8 (kernels::Storage): every linear layer, the LM head and the
  // embedding (tied or not); norms stay in the model's dtype. Adapters added before or after are unaffected.
  // The stored weights stop training (the base is frozen: LoRA or no training); the dtype must be float32.
  void set_storage(kernels::Storage s);
  kernels::Storage storage() const { return storage_; }

  // Recompute each decoder layer in backward instead of keeping its activations (training without a cache):
  // memory per layer drops to its input, for one extra forward pass of the layers.
  bool checkpoint_layers = false;

  // Calls of several positions per row whose slots are at least 1/16 padding skip the padding in everything
  // but attention (TokenLayout; not with packed segments, not decode steps); false computes every slot.
  bool pack_padding = true;

  // Calls without a cache take attention's queries in causal blocks where causal_block_rows(T) < T: the key
  // blocks that causality masks whole are skipped. false attends in one block (tests compare the two).
  bool causal_blocks = true;

  // Decode steps of small batches (generate::generate) run the fused step (fused_decode.h) when it supports
  // the call; false keeps them on the operator path (benchmarks compare the two).
  bool fused_decode = true;

  // An empty cache for `batch` sequences of up to `max_len` tokens, on the model's device and dtype.
  KVCache new_cache(int64_t batch, int64_t max_len) const;

  // Every LoRA-capable linear layer with its Hugging Face module path ("model.layers.0.self_attn.q_proj").
  std::vector<std::pair<std::string, lora::Linear>> linear_layers();

  // The compute dtype (the final norm's weight: never moved to a weight-only storage).
  torch::Dtype dtype() const { return model->norm->weight.scalar_type(); }
  torch::Device device() const { return model->norm->weight.device(); }
  const ModelConfig& config() const { return cfg_; }

  Decoder model{nullptr};
  lora::Linear lm_head{nullptr};  // null when tied to the embedding
  torch::Tensor embed_scale;      // (V) float32 for int8 embedding storage (a buffer), else undefined

 private:
  // fn(x) with its activations recomputed in backward; params: the trainable tensors fn uses.
  static torch::Tensor checkpointed(const std::function<torch::Tensor(const torch::Tensor&)>& fn,
                                    const torch::Tensor& x, const std::vector<torch::Tensor>& params);
  static std::vector<torch::Tensor> trainable_tensors(DecoderLayer& layer, const AdapterSet& adapters);
  // The LM head's weight as a float matrix of the compute dtype: the stored one, or widened for this call.
  torch::Tensor head_weight_for_products();
  ModelConfig cfg_;
  kernels::Storage storage_ = kernels::Storage::kNative;
};
TORCH_MODULE(CausalLM);

// Rotary tables for positions (B, T) -> cos, sin each (B, T, 1, Dh) float32, rotate-half layout, with the
// first half of sin negated: x * cos + roll(x, Dh/2) * sin is then Hugging Face's
// x * cos + rotate_half(x) * sin exactly (a sign moved from x to sin rounds the same).
std::pair<torch::Tensor, torch::Tensor> rotary_tables(const torch::Tensor& positions, int64_t head_dim,
                                                      double theta);

}  // namespace reglage::model
