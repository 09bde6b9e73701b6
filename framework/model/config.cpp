#include "framework/model/config.h"

#include <cmath>

#include "framework/core/error.h"
#include "framework/core/memory.h"

namespace reglage::model {

namespace {

// Each dimension is at most this (16.7M): a header with a larger one is corrupt or absurd, and products of
// two dims stay far from int64 overflow.
constexpr int64_t kMaxDim = int64_t(1) << 24;
constexpr int64_t kMaxLayers = 4096;  // the deepest published decoders have ~128

}  // namespace

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](const char* key, int64_t value) {
    if (value <= 0) fail(source, ": ", key, " = ", value, " (must be > 0)");
    // Guards against absurd headers before anything is allocated from them.
    if (value > kMaxDim) fail(source, ": ", key, " = ", value, " (implausibly large; at most ", kMaxDim, ")");
  };
  positive("vocab_size", vocab_size);
  positive("dim", dim);
  positive("hidden_dim", hidden_dim);
  positive("n_layers", n_layers);
  if (n_layers > kMaxLayers) fail(source, ": n_layers = ", n_layers, " (implausibly large; at most ", kMaxLayers, ")");
  positive("n_heads", n_heads);
  positive("n_kv_heads", n_kv_heads);
  positive("max_seq_len", max_seq_len);
  if (head_dim < 0 || head_dim > kMaxDim)
    fail(source, ": head_dim = ", head_dim, " (must be in [0, ", kMaxDim, "]; 0 = dim / n_heads)");
  if (n_heads % n_kv_heads != 0)
    fail(source, ": n_heads = ", n_heads, " is not a multiple of n_kv_heads = ", n_kv_heads);
  if (head_dim <= 0 && dim % n_heads != 0)
    fail(source, ": dim = ", dim, " is not a multiple of n_heads = ", n_heads);
  if (head_size() % 2 != 0) fail(source, ": head size ", head_size(), " must be even for rotary embeddings");
  if (n_heads * head_size() > kMaxDim)
    fail(source, ": n_heads x head size = ", n_heads * head_size(), " (implausibly large; at most ", kMaxDim, ")");
  if (!(rope_theta > 0) || !std::isfinite(rope_theta))
    fail(source, ": rope_theta = ", rope_theta, " (must be a finite number > 0)");
  if (!(norm_eps > 0) || !(norm_eps < 1)) fail(source, ": norm_eps = ", norm_eps, " (must be in (0, 1))");
  // Token ids index the embedding: one past its end would read (or, in a batch, write) out of bounds.
  if (bos_id < -1 || bos_id >= vocab_size)
    fail(source, ": bos_token_id = ", bos_id, " (must be in [0, ", vocab_size, "), the vocabulary, or absent)");
  for (int64_t eos : eos_ids)
    if (eos < 0 || eos >= vocab_size)
      fail(source, ": eos_token_id = ", eos, " (must be in [0, ", vocab_size, "), the vocabulary)");

  // The weights' size against physical memory, before anything is allocated (in double: no overflow;
  // the same sum parameter_shapes lists).
  const double D = double(dim), F = double(hidden_dim), V = double(vocab_size);
  const double q = double(n_heads * head_size()), kv = double(n_kv_heads * head_size());
  const double per_layer = 2 * q * D + 2 * kv * D + 3 * F * D + 2 * D + (attention_bias ? q + 2 * kv : 0);
  const double count = V * D * (tie_embeddings ? 1 : 2) + double(n_layers) * per_layer + D;
  if (count > 9.0e18) fail(source, ": the model would have ", count, " weights (more than int64 counts)");
  core::check_fits_in_memory(count * 4, std::string(source) + ": loading the model's " + std::to_string(int64_t(count)) +
                                            " float32 weights (" + std::to_string(n_layers) + " layers, dim " +
                                            std::to_string(dim) + ", hidden " + std::to_string(hidden_dim) +
                                            ", vocab " + std::to_string(vocab_size) + ")",
                             "check the model's dimensions");
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ModelConfig::parameter_shapes() const {
  // Mirrors the modules of llama.cpp (CausalLM -> Decoder -> DecoderLayer -> Attention, MLP, RMSNorm);
  // test_hf_io checks the two agree.
  const int64_t D = dim, F = hidden_dim, V = vocab_size, Dh = head_size();
  const int64_t q = n_heads * Dh, kv = n_kv_heads * Dh;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {V, D}});
  for (int64_t l = 0; l < n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "self_attn.q_proj.weight", {q, D}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, D}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, D}});
    if (attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q}});
      out.push_back({p + "self_attn.k_proj.bias", {kv}});
      out.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {D, q}});
    out.push_back({p + "mlp.gate_proj.weight", {F, D}});
    out.push_back({p + "mlp.up_proj.weight", {F, D}});
    out.push_back({p + "mlp.down_proj.weight", {D, F}});
    out.push_back({p + "input_layernorm.weight", {D}});
    out.push_back({p + "post_attention_layernorm.weight", {D}});
  }
  out.push_back({"model.norm.weight", {D}});
  if (!tie_embeddings) out.push_back({"lm_head.weight", {V, D}});
  return out;
}

int64_t ModelConfig::parameter_count() const {
  int64_t count = 0;
  for (const auto& [name, shape] : parameter_shapes()) {
    int64_t n = 1;
    for (int64_t d : shape)
      if (!core::checked_mul(n, d, n)) fail("model: parameter count overflows int64");
    if (__builtin_add_overflow(count, n, &count)) fail("model: parameter count overflows int64");
  }
  return count;
}

torch::Dtype parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16") return torch::kFloat16;
  fail("dtype '", name, "' is not supported (expected float32, bfloat16 or float16)");
}

std::string dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: return std::string(c10::toString(dtype));
  }
}

}  // namespace reglage::model
