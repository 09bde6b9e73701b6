// GGUF models -> CausalLM, for the architectures llama (Llama, Mistral, SmolLM) and qwen2.
// Tensor names (llama.cpp's) map onto the Hugging Face names the model uses:
//   token_embd.weight (V, D) -> model.embed_tokens.weight     output_norm.weight (D) -> model.norm.weight
//   output.weight (V, D)     -> lm_head.weight (absent: tied) blk.N.attn_norm.weight -> ...input_layernorm.weight
//   blk.N.attn_q/k/v.weight|bias -> ...self_attn.q/k/v_proj  blk.N.attn_output.weight -> ...self_attn.o_proj.weight
//   blk.N.ffn_norm.weight -> ...post_attention_layernorm     blk.N.ffn_gate/up/down.weight -> ...mlp.*_proj.weight
// llama.cpp's convert_hf_to_gguf.py reorders the rows of attn_q / attn_k of llama-architecture models from
// Hugging Face's rotate-half layout to interleaved rotary pairs; the loader reads those rows back in
// Hugging Face order. qwen2 files are not permuted.
#include <algorithm>
#include <cmath>
#include <map>

#include "framework/core/error.h"
#include "framework/io/gguf.h"
#include "framework/io/model_io.h"

namespace reglage::io {

namespace {

struct GgufArch {
  const char* name;          // general.architecture
  const char* hf_name;       // ModelConfig::architecture
  bool permuted_qk;          // attn_q / attn_k rows in interleaved order
  bool qkv_bias;             // attn_q/k/v carry biases
};
const GgufArch kArchs[] = {
    {"llama", "LlamaForCausalLM", true, false},
    {"qwen2", "Qwen2ForCausalLM", false, true},
};

const GgufArch& arch_of(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture", "", /*required=*/true);
  for (const auto& a : kArchs)
    if (arch == a.name) return a;
  fail(f.path(), ": architecture '", arch, "' is not supported (expected llama or qwen2)");
}

model::ModelConfig config_from_gguf(const GgufFile& f) {
  const GgufArch& arch = arch_of(f);
  const std::string p = std::string(arch.name) + ".";
  model::ModelConfig cfg;
  cfg.architecture = arch.hf_name;
  cfg.dim = f.get_int(p + "embedding_length", 0, true);
  cfg.n_layers = f.get_int(p + "block_count", 0, true);
  cfg.hidden_dim = f.get_int(p + "feed_forward_length", 0, true);
  cfg.n_heads = f.get_int(p + "attention.head_count", 0, true);
  cfg.n_kv_heads = f.get_int(p + "attention.head_count_kv", cfg.n_heads);
  cfg.max_seq_len = f.get_int(p + "context_length", 0, true);
  cfg.rope_theta = f.get_double(p + "rope.freq_base", 10000.0);
  cfg.norm_eps = f.get_double(p + "attention.layer_norm_rms_epsilon", 0, true);
  cfg.attention_bias = arch.qkv_bias;
  if (!std::isfinite(cfg.rope_theta) || !std::isfinite(cfg.norm_eps))
    fail(f.path(), ": ", p, "rope.freq_base = ", cfg.rope_theta, ", ", p, "attention.layer_norm_rms_epsilon = ",
         cfg.norm_eps, " (both must be finite)");
  const int64_t key_length = f.get_int(p + "attention.key_length", 0);
  const int64_t value_length = f.get_int(p + "attention.value_length", key_length);
  if (key_length != value_length)
    fail(f.path(), ": ", p, "attention.key_length = ", key_length, " and value_length = ", value_length,
         " differ (not supported)");
  cfg.head_dim = key_length;
  if (cfg.n_heads > 0 && cfg.dim > 0 && cfg.head_dim == cfg.dim / cfg.n_heads) cfg.head_dim = 0;
  const int64_t rotary_dims = f.get_int(p + "rope.dimension_count", cfg.head_size());
  if (rotary_dims != cfg.head_size())
    fail(f.path(), ": ", p, "rope.dimension_count = ", rotary_dims, " but the head size is ", cfg.head_size(),
         " (partial rotary embeddings are not supported)");
  const std::string scaling = f.get_string(p + "rope.scaling.type", "none");
  if (scaling != "none")
    fail(f.path(), ": ", p, "rope.scaling.type = \"", scaling, "\" is not supported (expected none)");
  if (f.find_tensor("rope_freqs.weight"))
    fail(f.path(), ": tensor 'rope_freqs.weight' (rotary frequency scaling) is not supported");

  // Vocabulary size: the embedding's rows; the token list and {arch}.vocab_size must agree when present.
  const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) fail(f.path(), ": no tensor 'token_embd.weight'");
  if (emb->shape.size() != 2) fail(f.path(), ": tensor 'token_embd.weight' has ", emb->shape.size(), " dimensions (expected 2)");
  cfg.vocab_size = emb->shape[0];
  const int64_t declared = f.get_int(p + "vocab_size", cfg.vocab_size);
  if (declared != cfg.vocab_size)
    fail(f.path(), ": ", p, "vocab_size = ", declared, " but token_embd.weight has ", cfg.vocab_size, " rows");
  if (const GgufValue* tokens = f.find("tokenizer.ggml.tokens")) {
    if (tokens->type != GgufValueType::kArray || tokens->elem_type != GgufValueType::kString)
      fail(f.path(), ": metadata key 'tokenizer.ggml.tokens' is not an array of strings");
    if (int64_t(tokens->count) != cfg.vocab_size)
      fail(f.path(), ": tokenizer.ggml.tokens has ", tokens->count, " tokens but token_embd.weight has ",
           cfg.vocab_size, " rows");
  }
  cfg.tie_embeddings = f.find_tensor("output.weight") == nullptr;
  cfg.bos_id = f.get_int("tokenizer.ggml.bos_token_id", -1);
  cfg.eos_ids.clear();
  // End of generation: EOS, and a chat model's end-of-turn token when it is another one.
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    const int64_t id = f.get_int(key, -1);
    if (id >= 0 && std::find(cfg.eos_ids.begin(), cfg.eos_ids.end(), id) == cfg.eos_ids.end())
      cfg.eos_ids.push_back(id);
  }
  cfg.validate(f.path());
  return cfg;
}

struct Expected {
  std::string gguf;             // llama.cpp's name
  std::string hf;               // the model's parameter name
  std::vector<int64_t> shape;   // torch order
  int64_t permute_heads = 0;    // > 0: rows interleaved per head (attn_q / attn_k of llama files)
};

// Every tensor the model needs, with its shape from the config alone (checked before anything is allocated).
std::vector<Expected> expected_tensors(const model::ModelConfig& cfg, const GgufArch& arch) {
  const int64_t D = cfg.dim, F = cfg.hidden_dim, V = cfg.vocab_size, Dh = cfg.head_size();
  const int64_t q_rows = cfg.n_heads * Dh, kv_rows = cfg.n_kv_heads * Dh;
  std::vector<Expected> out = {{"token_embd.weight", "model.embed_tokens.weight", {V, D}},
                               {"output_norm.weight", "model.norm.weight", {D}}};
  if (!cfg.tie_embeddings) out.push_back({"output.weight", "lm_head.weight", {V, D}});
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".", h = "model.layers." + std::to_string(l) + ".";
    out.push_back({g + "attn_norm.weight", h + "input_layernorm.weight", {D}});
    out.push_back({g + "attn_q.weight", h + "self_attn.q_proj.weight", {q_rows, D}, arch.permuted_qk ? cfg.n_heads : 0});
    out.push_back({g + "attn_k.weight", h + "self_attn.k_proj.weight", {kv_rows, D}, arch.permuted_qk ? cfg.n_kv_heads : 0});
    out.push_back({g + "attn_v.weight", h + "self_attn.v_proj.weight", {kv_rows, D}});
    if (arch.qkv_bias) {
      out.push_back({g + "attn_q.bias", h + "self_attn.q_proj.bias", {q_rows}});
      out.push_back({g + "attn_k.bias", h + "self_attn.k_proj.bias", {kv_rows}});
      out.push_back({g + "attn_v.bias", h + "self_attn.v_proj.bias", {kv_rows}});
    }
    out.push_back({g + "attn_output.weight", h + "self_attn.o_proj.weight", {D, q_rows}});
    out.push_back({g + "ffn_norm.weight", h + "post_attention_layernorm.weight", {D}});
    out.push_back({g + "ffn_gate.weight", h + "mlp.gate_proj.weight", {F, D}});
    out.push_back({g + "ffn_up.weight", h + "mlp.up_proj.weight", {F, D}});
    out.push_back({g + "ffn_down.weight", h + "mlp.down_proj.weight", {D, F}});
  }
  return out;
}

// Source row of each Hugging Face row: llama.cpp stores head h's rows as pairs (i, i + Dh/2) interleaved,
// row h*Dh + 2i + j holds Hugging Face row h*Dh + j*Dh/2 + i.
std::vector<int64_t> unpermute_rows(int64_t rows, int64_t heads) {
  const int64_t dh = rows / heads, half = dh / 2;
  std::vector<int64_t> src(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = r / dh, j = (r % dh) / half, i = (r % dh) % half;
    src[size_t(r)] = h * dh + 2 * i + j;
  }
  return src;
}

}  // namespace

model::ModelConfig read_gguf_config(const std::string& path) {
  GgufFile f(path);
  return config_from_gguf(f);
}

model::CausalLM load_gguf(const std::string& path, torch::Dtype dtype) {
  GgufFile f(path);
  const model::ModelConfig cfg = config_from_gguf(f);
  const std::vector<Expected> expected = expected_tensors(cfg, arch_of(f));

  // Names and shapes first: a file that does not match its own config is refused before the model exists.
  std::map<std::string, const Expected*> by_name;
  for (const auto& e : expected) by_name[e.gguf] = &e;
  for (const auto& t : f.tensors()) {
    auto it = by_name.find(t.name);
    if (it == by_name.end())
      fail(path, ": unexpected tensor '", t.name, "' for architecture ", f.get_string("general.architecture", ""));
    if (t.shape != it->second->shape)
      fail(path, ": tensor '", t.name, "' has shape ", c10::IntArrayRef(t.shape), ", the metadata implies ",
           c10::IntArrayRef(it->second->shape));
  }
  for (const auto& e : expected)
    if (!f.find_tensor(e.gguf)) fail(path, ": no tensor '", e.gguf, "'");

  model::CausalLM m(cfg);
  m->to(dtype);
  auto params = m->named_parameters(/*recurse=*/true);
  torch::NoGradGuard no_grad;
  for (const auto& e : expected) {
    torch::Tensor* p = params.find(e.hf);
    if (p == nullptr) fail(path, ": the model has no parameter '", e.hf, "'");  // a mapping bug, not bad input
    const GgufTensorInfo& t = *f.find_tensor(e.gguf);
    // Dequantized straight into the parameter's storage, rows reordered on the way where permuted.
    if (e.permute_heads > 0)
      f.read_rows_into(t, unpermute_rows(e.shape[0], e.permute_heads), *p);
    else
      f.read_into(t, *p);
  }
  return m;
}

}  // namespace reglage::io
