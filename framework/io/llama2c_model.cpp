// llama2.c checkpoints (Karpathy's run.c / export.py layouts).
//   legacy:    int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (< 0: untied classifier),
//              seq_len; float32 token_embedding (V, D), rms_att (L, D), wq (L, H*Dh, D), wk (L, Hkv*Dh, D),
//              wv (L, Hkv*Dh, D), wo (L, D, H*Dh), rms_ffn (L, D), w1 (L, F, D), w2 (L, D, F), w3 (L, F, D),
//              rms_final (D), freq_cis_real/imag (seq_len, Dh/2) each (unused), [wcls (V, D) when untied]
//   version 1: u32 magic "ak42", int32 version, the 7 ints, u8 shared_classifier, zero padding to 256 bytes;
//              float32 rms_att (L, D), rms_ffn (L, D), rms_final (D), token_embedding, wq, wk, wv, wo, w1,
//              w2, w3, [wcls when not shared]
#include <cstdint>
#include <cstring>
#include <fstream>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/gguf.h"
#include "framework/io/model_io.h"

namespace reglage::io {

namespace {

constexpr uint32_t kMagicV1 = 0x616b3432;  // "ak42"

// Reads consecutive float32 blocks out of the file's bytes, checking bounds each time.
struct FloatReader {
  const std::string& bytes;
  const std::string& path;
  size_t offset;
  torch::Tensor take(std::vector<int64_t> shape, const char* what) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    const size_t len = size_t(n) * sizeof(float);
    if (offset + len > bytes.size())
      fail(path, ": truncated: ", what, " needs bytes ", offset, "..", offset + len, " but the file has ",
           bytes.size());
    auto t = torch::empty(shape, torch::kFloat32);
    std::memcpy(t.data_ptr<float>(), bytes.data() + offset, len);
    offset += len;
    return t;
  }
};

// llama2.c rotates adjacent pairs (2j, 2j+1) of each head; Hugging Face pairs (j, j + Dh/2). Permuting
// the rows of wq/wk maps one convention onto the other (as convert_llama_weights_to_hf.py does).
torch::Tensor permute_rotary(const torch::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1);
  return w.view({heads, rows / heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols}).contiguous();
}

// The header's model shape; `v1` and `data_at` say where the weights start.
model::ModelConfig parse_llama2c_header(const std::string& bytes, const std::string& path, bool& v1, size_t& data_at) {
  if (bytes.size() < 28) fail(path, ": ", bytes.size(), " bytes is too short for a llama2.c checkpoint header");
  uint32_t magic = 0;
  std::memcpy(&magic, bytes.data(), 4);
  v1 = magic == kMagicV1;
  size_t header_at = 0;
  data_at = 28;
  if (v1) {
    int32_t version = 0;
    std::memcpy(&version, bytes.data() + 4, 4);
    if (version != 1)
      fail(path, ": llama2.c checkpoint version ", version, " is not supported (expected legacy or version 1)");
    if (bytes.size() < 256) fail(path, ": truncated: version 1 header needs 256 bytes, file has ", bytes.size());
    header_at = 8;
    data_at = 256;
  }
  int32_t h[7];
  std::memcpy(h, bytes.data() + header_at, sizeof(h));
  model::ModelConfig cfg;
  cfg.architecture = "LlamaForCausalLM";
  cfg.dim = h[0];
  cfg.hidden_dim = h[1];
  cfg.n_layers = h[2];
  cfg.n_heads = h[3];
  cfg.n_kv_heads = h[4];
  cfg.vocab_size = h[5] < 0 ? -int64_t(h[5]) : h[5];
  cfg.max_seq_len = h[6];
  cfg.tie_embeddings = v1 ? bytes[header_at + 28] != 0 : h[5] > 0;
  cfg.rope_theta = 10000.0;
  cfg.norm_eps = 1e-5;
  cfg.bos_id = 1;
  cfg.eos_ids = {2};
  cfg.validate(path);
  return cfg;
}

}  // namespace

model::ModelConfig read_model_config(const std::string& path) {
  if (!core::file_exists(path)) fail(path, ": no such file or directory (expected a llama2.c checkpoint or a Hugging Face model directory)");
  if (core::is_directory(path)) return read_hf_config(core::path_join(path, "config.json"));
  if (is_gguf_path(path)) return read_gguf_config(path);
  std::ifstream in(path, std::ios::binary);
  std::string head(256, '\0');
  in.read(&head[0], 256);
  head.resize(size_t(in.gcount()));
  bool v1 = false;
  size_t data_at = 0;
  return parse_llama2c_header(head, path, v1, data_at);
}

model::CausalLM load_llama2c(const std::string& path, torch::Dtype dtype) {
  const std::string bytes = core::read_file(path);
  bool v1 = false;
  size_t data_at = 0;
  model::ModelConfig cfg = parse_llama2c_header(bytes, path, v1, data_at);

  const int64_t D = cfg.dim, F = cfg.hidden_dim, L = cfg.n_layers, V = cfg.vocab_size;
  const int64_t Dh = cfg.head_size(), q_rows = cfg.n_heads * Dh, kv_rows = cfg.n_kv_heads * Dh;
  // Exact file size first: a truncated or padded file is rejected before any weight is read.
  // In 128 bits: validate bounds each dim by 2^24, so no product of three overflows.
  using Wide = __int128;
  Wide floats = Wide(V) * D + Wide(2) * L * D + D +
                Wide(L) * (Wide(q_rows) * D + Wide(2) * kv_rows * D + Wide(D) * q_rows + Wide(3) * F * D);
  if (!v1) floats += Wide(cfg.max_seq_len) * Dh;  // freq_cis_real + freq_cis_imag
  if (!cfg.tie_embeddings) floats += Wide(V) * D;
  const Wide expected_wide = Wide(data_at) + floats * 4;
  const int64_t expected = expected_wide > Wide(INT64_MAX) ? INT64_MAX : int64_t(expected_wide);
  if (Wide(bytes.size()) != expected_wide)
    fail(path, ": ", bytes.size(), " bytes, but the header (dim ", D, ", hidden ", F, ", layers ", L, ", heads ",
         cfg.n_heads, "/", cfg.n_kv_heads, ", vocab ", V, ", seq_len ", cfg.max_seq_len, ") implies ", expected,
         bytes.size() < size_t(expected) ? " (file truncated)" : " (trailing bytes)");

  FloatReader r{bytes, path, data_at};
  torch::Tensor emb, rms_att, rms_ffn, rms_final, wq, wk, wv, wo, w1, w2, w3, wcls;
  if (v1) {
    rms_att = r.take({L, D}, "rms_att");
    rms_ffn = r.take({L, D}, "rms_ffn");
    rms_final = r.take({D}, "rms_final");
    emb = r.take({V, D}, "token_embedding");
  } else {
    emb = r.take({V, D}, "token_embedding");
    rms_att = r.take({L, D}, "rms_att");
  }
  wq = r.take({L, q_rows, D}, "wq");
  wk = r.take({L, kv_rows, D}, "wk");
  wv = r.take({L, kv_rows, D}, "wv");
  wo = r.take({L, D, q_rows}, "wo");
  if (!v1) rms_ffn = r.take({L, D}, "rms_ffn");
  w1 = r.take({L, F, D}, "w1");
  w2 = r.take({L, D, F}, "w2");
  w3 = r.take({L, F, D}, "w3");
  if (!v1) {
    rms_final = r.take({D}, "rms_final");
    r.take({cfg.max_seq_len, Dh}, "freq_cis");  // precomputed rotary tables, unused
  }
  if (!cfg.tie_embeddings) wcls = r.take({V, D}, "wcls");

  model::CausalLM m(cfg);
  torch::NoGradGuard no_grad;
  m->model->embed_tokens->weight.copy_(emb);
  m->model->norm->weight.copy_(rms_final);
  for (int64_t l = 0; l < L; ++l) {
    auto& layer = m->model->layers[l];
    layer->input_layernorm->weight.copy_(rms_att[l]);
    layer->post_attention_layernorm->weight.copy_(rms_ffn[l]);
    layer->self_attn->q_proj->weight.copy_(permute_rotary(wq[l], cfg.n_heads));
    layer->self_attn->k_proj->weight.copy_(permute_rotary(wk[l], cfg.n_kv_heads));
    layer->self_attn->v_proj->weight.copy_(wv[l]);
    layer->self_attn->o_proj->weight.copy_(wo[l]);
    layer->mlp->gate_proj->weight.copy_(w1[l]);
    layer->mlp->down_proj->weight.copy_(w2[l]);
    layer->mlp->up_proj->weight.copy_(w3[l]);
  }
  if (!cfg.tie_embeddings) m->lm_head->weight.copy_(wcls);
  m->to(dtype);
  return m;
}

}  // namespace reglage::io
