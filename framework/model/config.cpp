#include "framework/model/config.h"

#include "framework/core/error.h"

namespace reglage::model {

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](const char* key, int64_t value) {
    if (value <= 0) fail(source, ": ", key, " = ", value, " (must be > 0)");
    // Guards against absurd headers before anything is allocated from them.
    if (value > (int64_t(1) << 24)) fail(source, ": ", key, " = ", value, " (implausibly large)");
  };
  positive("vocab_size", vocab_size);
  positive("dim", dim);
  positive("hidden_dim", hidden_dim);
  positive("n_layers", n_layers);
  positive("n_heads", n_heads);
  positive("n_kv_heads", n_kv_heads);
  positive("max_seq_len", max_seq_len);
  if (n_heads % n_kv_heads != 0)
    fail(source, ": n_heads = ", n_heads, " is not a multiple of n_kv_heads = ", n_kv_heads);
  if (head_dim <= 0 && dim % n_heads != 0)
    fail(source, ": dim = ", dim, " is not a multiple of n_heads = ", n_heads);
  if (head_size() % 2 != 0) fail(source, ": head size ", head_size(), " must be even for rotary embeddings");
  if (!(rope_theta > 0)) fail(source, ": rope_theta = ", rope_theta, " (must be > 0)");
  if (!(norm_eps > 0)) fail(source, ": norm_eps = ", norm_eps, " (must be > 0)");
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
