#include "framework/model/fused_decode.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "framework/core/error.h"

namespace reglage::model {

namespace {

using kernels::KernelMatrix;

// Rows of a product handed to a thread at a time: the kernels' register block.
constexpr int64_t kBlock = 4;

// One active LoRA adapter of a projection: y += scale * (x A^T) B^T.
struct LoraTerm {
  KernelMatrix A;       // (r, K)
  KernelMatrix B;       // (N, r)
  float scale = 1.0f;
  float* t = nullptr;      // (M, r): x A^T, filled before the projection's rows run
  float* delta = nullptr;  // (M, N): t B^T, each thread writing only its rows
};

// A linear layer of the step: y (M, N) = x W^T + bias + its adapters' terms.
struct Projection {
  KernelMatrix w;
  const float* bias = nullptr;  // (N) or null
  std::vector<LoraTerm> loras;
  float* y = nullptr;           // (M, N)
};

// Buffers of one step, sized once and reused by every layer.
struct Workspace {
  std::vector<std::vector<float>> slots;
  size_t next = 0;
  float* take(int64_t n) {  // a buffer of n floats, valid until reset()
    if (next == slots.size()) slots.emplace_back();
    auto& s = slots[next++];
    if (int64_t(s.size()) < n) s.resize(n);
    return s.data();
  }
  void reset() { next = 0; }
};

bool adapter_usable(const lora::LoraWeights& a) {
  for (const auto* t : {&a.A, &a.B})
    if (t->scalar_type() != torch::kFloat32 || !t->is_contiguous() || !t->device().is_cpu()) return false;
  return true;
}

// Active, unmerged adapters of one layer, or "" when every one can run in the fused step.
std::string adapters_unsupported(lora::LinearImpl& lin, const AdapterSet& active, const std::string& where) {
  for (const auto& name : active) {
    auto it = lin.adapters().find(name);
    if (it == lin.adapters().end() || it->second.merged_weight > 0) continue;
    if (!adapter_usable(it->second)) return "adapter '" + name + "' of " + where + " is not contiguous float32";
  }
  return "";
}

Projection projection_of(lora::LinearImpl& lin, const AdapterSet& active, int64_t M, Workspace& ws) {
  Projection p;
  p.w = kernels::kernel_matrix(lin.weight, lin.weight_scale);
  if (lin.bias.defined()) p.bias = lin.bias.data_ptr<float>();
  for (const auto& name : active) {
    auto it = lin.adapters().find(name);
    if (it == lin.adapters().end() || it->second.merged_weight > 0) continue;
    const auto& a = it->second;
    LoraTerm term;
    term.A = kernels::kernel_matrix(a.A);
    term.B = kernels::kernel_matrix(a.B);
    term.scale = float(a.scale);
    term.t = ws.take(M * term.A.rows);
    term.delta = ws.take(M * p.w.rows);
    p.loras.push_back(term);
  }
  p.y = ws.take(M * p.w.rows);
  return p;
}

// Work split over threads as blocks of rows of several products at once: job j owns blocks
// [start[j], start[j + 1]) and runs rows [4 * local block, ...) of its own product.
struct RowJob {
  int64_t rows = 0;
  std::function<void(int64_t, int64_t)> run;  // rows [n0, n1)
};

void parallel_rows(const std::vector<RowJob>& jobs, int64_t M) {
  std::vector<int64_t> start = {0};
  for (const auto& j : jobs) start.push_back(start.back() + (j.rows + kBlock - 1) / kBlock);
  // About 40k multiply-adds of a 576-wide product per grain: small groups stay on the calling thread.
  const int64_t grain = std::max<int64_t>(1, 16 / std::max<int64_t>(1, M));
  at::parallel_for(0, start.back(), grain, [&](int64_t b0, int64_t b1) {
    for (size_t j = 0; j < jobs.size(); ++j) {
      const int64_t lo = std::max(b0, start[j]), hi = std::min(b1, start[j + 1]);
      if (lo >= hi) continue;
      jobs[j].run((lo - start[j]) * kBlock, std::min(jobs[j].rows, (hi - start[j]) * kBlock));
    }
  });
}

// Rows [n0, n1) of p.y = x W^T + bias + sum scale * t B^T (the adapters' t already computed).
void projection_rows(const Projection& p, const float* x, int64_t M, int64_t n0, int64_t n1) {
  const int64_t N = p.w.rows;
  kernels::kernel_rows(p.w, x, M, p.y, n0, n1);
  for (int64_t m = 0; m < M; ++m) {
    float* y = p.y + m * N;
    if (p.bias)
      for (int64_t n = n0; n < n1; ++n) y[n] += p.bias[n];
  }
  for (const auto& l : p.loras) {
    kernels::kernel_rows(l.B, l.t, M, l.delta, n0, n1);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = n0; n < n1; ++n) p.y[m * N + n] += l.delta[m * N + n] * l.scale;
  }
}

// The adapters' first factors t = x A^T of projections that share the input x, in one region.
void lora_inputs(const std::vector<Projection*>& ps, const float* x, int64_t M) {
  std::vector<RowJob> jobs;
  for (auto* p : ps)
    for (auto& l : p->loras)
      jobs.push_back({l.A.rows, [&l, x, M](int64_t n0, int64_t n1) { kernels::kernel_rows(l.A, x, M, l.t, n0, n1); }});
  if (!jobs.empty()) parallel_rows(jobs, M);
}

// Projections reading the same x (M, K), their rows split over the threads together.
void run_projections(const std::vector<Projection*>& ps, const float* x, int64_t M) {
  lora_inputs(ps, x, M);
  std::vector<RowJob> jobs;
  for (auto* p : ps)
    jobs.push_back({p->w.rows, [p, x, M](int64_t n0, int64_t n1) { projection_rows(*p, x, M, n0, n1); }});
  parallel_rows(jobs, M);
}

// out (M, D) = w * (x * rsqrt(mean(x^2) + eps)), the statistic in double.
void rms_norm(const float* x, const float* w, double eps, int64_t M, int64_t D, float* out) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * D;
    double ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += double(xm[d]) * xm[d];
    const float r = 1.0f / std::sqrt(float(ss / double(D)) + float(eps));
    for (int64_t d = 0; d < D; ++d) out[m * D + d] = w[d] * (xm[d] * r);
  }
}

// x (heads, Dh) of one sequence rotated in place: x * cos + roll(x, Dh/2) * sin, with rotary_tables' sin
// (first half negated).
void rotate(float* x, int64_t heads, int64_t Dh, const float* cos, const float* sin) {
  const int64_t half = Dh / 2;
  std::vector<float> tmp(Dh);
  for (int64_t h = 0; h < heads; ++h) {
    float* xh = x + h * Dh;
    for (int64_t d = 0; d < Dh; ++d) tmp[d] = xh[d] * cos[d] + xh[(d + half) % Dh] * sin[d];
    std::copy(tmp.begin(), tmp.end(), xh);
  }
}

struct AttentionShape {
  int64_t B, H, Hkv, Dh, capacity, S;  // S: slots filled, this step's included
};

// out (B, H * Dh): each query head attends over the valid slots of its kv head's cache. The `group` query
// heads of one kv head go through the kernel together as the rows of one product with the cached keys.
void attend(const float* q, const float* kc, const float* vc, const bool* key_valid, const AttentionShape& a,
            float* out) {
  const int64_t group = a.H / a.Hkv;
  const float root = std::sqrt(float(a.Dh));
  at::parallel_for(0, a.B * a.Hkv, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(group * a.S);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / a.Hkv, kvh = i % a.Hkv;
      const float* qg = q + (b * a.H + kvh * group) * a.Dh;  // (group, Dh)
      const float* kb = kc + (b * a.Hkv + kvh) * a.capacity * a.Dh;  // (S, Dh) of (capacity, Dh)
      const float* vb = vc + (b * a.Hkv + kvh) * a.capacity * a.Dh;
      const bool* valid = key_valid + b * a.capacity;
      const auto keys = KernelMatrix::float32(kb, a.S, a.Dh);
      kernels::kernel_rows(keys, qg, group, scores.data(), 0, a.S);  // (group, S)
      for (int64_t g = 0; g < group; ++g) {
        float* p = scores.data() + g * a.S;
        float mx = std::numeric_limits<float>::lowest();
        bool any = false;
        for (int64_t s = 0; s < a.S; ++s)
          if (valid[s]) p[s] /= root, mx = std::max(mx, p[s]), any = true;
        float sum = 0;
        for (int64_t s = 0; s < a.S; ++s) {
          // No valid key at all (a padding row): equal weights, as a softmax over equal masked scores gives.
          p[s] = !any ? 1.0f : valid[s] ? std::exp(p[s] - mx) : 0.0f;
          sum += p[s];
        }
        float* o = out + (b * a.H + kvh * group + g) * a.Dh;
        std::fill(o, o + a.Dh, 0.0f);
        for (int64_t s = 0; s < a.S; ++s) {
          const float w = p[s] / sum;
          if (w == 0.0f) continue;
          const float* v = vb + s * a.Dh;
          for (int64_t d = 0; d < a.Dh; ++d) o[d] += w * v[d];
        }
      }
    }
  });
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace

std::string fused_decode_unsupported(CausalLMImpl& m, const ForwardInput& in) {
  if (in.cache == nullptr) return "no KV cache";
  if (in.ids.dim() != 2 || in.ids.size(1) != 1) return "more than one new token per sequence";
  if (in.ids.size(0) > kFusedDecodeMaxBatch) return "batch above " + std::to_string(kFusedDecodeMaxBatch);
  if (in.segments.defined()) return "packed segments";
  if (!m.device().is_cpu() || m.dtype() != torch::kFloat32) return "not a CPU float32 model";
  if (torch::GradMode::is_enabled() || m.is_training()) return "gradients or training mode";
  if (in.cache->k.empty() || in.cache->k[0].size(0) != in.ids.size(0) || !in.cache->k[0].is_contiguous())
    return "a cache of another batch";
  for (auto& [path, lin] : m.linear_layers()) {
    auto why = adapters_unsupported(*lin, in.adapters, path);
    if (!why.empty()) return why;
    if (!lin->weight.is_contiguous() || (lin->bias.defined() && lin->bias.scalar_type() != torch::kFloat32))
      return path + " is not contiguous float32";
  }
  if (m.lm_head) {
    for (const auto& name : in.adapters) {
      auto it = m.lm_head->adapters().find(name);
      if (it != m.lm_head->adapters().end() && it->second.merged_weight <= 0) return "an adapter on the LM head";
    }
    if (m.lm_head->bias.defined()) return "a bias on the LM head";
  }
  return "";
}

torch::Tensor fused_decode_step(CausalLMImpl& m, const ForwardInput& in) {
  const auto why = fused_decode_unsupported(m, in);
  if (!why.empty()) fail("fused decode step: ", why);
  torch::NoGradGuard no_grad;
  const ModelConfig& cfg = m.config();
  KVCache& cache = *in.cache;
  const int64_t B = in.ids.size(0), D = cfg.dim, F = cfg.hidden_dim, H = cfg.n_heads, Hkv = cfg.n_kv_heads;
  const int64_t Dh = cfg.head_size(), past = cache.length, capacity = cache.capacity();
  if (past + 1 > capacity) fail("KV cache holds ", capacity, " tokens; ", past + 1, " requested");

  const auto long_opts = torch::TensorOptions().dtype(torch::kLong);
  auto positions = in.positions.defined() ? in.positions.to(torch::kLong).contiguous()
                                          : torch::full({B, 1}, past, long_opts);  // (B, 1)
  const int64_t max_pos = positions.max().item<int64_t>();
  if (max_pos >= cfg.max_seq_len)
    fail("position ", max_pos, " is beyond the model's context of ", cfg.max_seq_len, " tokens");
  auto valid = in.valid.defined() ? in.valid.to(torch::kBool).reshape({B}) : torch::ones({B}, torch::kBool);
  cache.key_valid.select(1, past).copy_(valid);
  auto key_valid = cache.key_valid.contiguous();  // (B, capacity)

  auto [cos_t, sin_t] = rotary_tables(positions, Dh, cfg.rope_theta);  // (B, 1, 1, Dh)
  cos_t = cos_t.contiguous(), sin_t = sin_t.contiguous();
  const float* cosp = cos_t.data_ptr<float>();
  const float* sinp = sin_t.data_ptr<float>();

  auto ids = in.ids.reshape({B});
  auto& emb = m.model->embed_tokens->weight;
  auto h_t = (m.storage() == kernels::Storage::kNative ? emb.index_select(0, ids)
                                                         : kernels::stored_embedding(ids, emb, m.embed_scale, torch::kFloat32))
                 .contiguous()
                 .clone();  // (B, D), the residual stream, updated in place
  float* h = h_t.data_ptr<float>();

  Workspace ws;
  const AttentionShape shape{B, H, Hkv, Dh, capacity, past + 1};
  for (size_t l = 0; l < m.model->layers.size(); ++l) {
    auto& layer = m.model->layers[l];
    auto& attn = layer->self_attn;
    ws.reset();
    float* xn = ws.take(B * D);
    float* att = ws.take(B * H * Dh);

    // Attention block: q, k, v from the normed input, rotated, appended to the cache.
    rms_norm(h, layer->input_layernorm->weight.data_ptr<float>(), layer->input_layernorm->eps, B, D, xn);
    auto q = projection_of(*attn->q_proj, in.adapters, B, ws);  // (B, H * Dh)
    auto k = projection_of(*attn->k_proj, in.adapters, B, ws);  // (B, Hkv * Dh)
    auto v = projection_of(*attn->v_proj, in.adapters, B, ws);  // (B, Hkv * Dh)
    run_projections({&q, &k, &v}, xn, B);
    float* kc = cache.k[l].data_ptr<float>();  // (B, Hkv, capacity, Dh)
    float* vc = cache.v[l].data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      rotate(q.y + b * H * Dh, H, Dh, cosp + b * Dh, sinp + b * Dh);
      rotate(k.y + b * Hkv * Dh, Hkv, Dh, cosp + b * Dh, sinp + b * Dh);
      for (int64_t j = 0; j < Hkv; ++j) {
        const int64_t slot = ((b * Hkv + j) * capacity + past) * Dh;
        std::copy(k.y + (b * Hkv + j) * Dh, k.y + (b * Hkv + j + 1) * Dh, kc + slot);
        std::copy(v.y + (b * Hkv + j) * Dh, v.y + (b * Hkv + j + 1) * Dh, vc + slot);
      }
    }
    attend(q.y, kc, vc, key_valid.data_ptr<bool>(), shape, att);
    auto o = projection_of(*attn->o_proj, in.adapters, B, ws);  // (B, D)
    run_projections({&o}, att, B);
    for (int64_t i = 0; i < B * D; ++i) h[i] += o.y[i];

    // MLP block: down(silu(gate x) * up x), gate and up rows computed together and combined at once.
    auto& mlp = layer->mlp;
    rms_norm(h, layer->post_attention_layernorm->weight.data_ptr<float>(), layer->post_attention_layernorm->eps, B,
             D, xn);
    auto gate = projection_of(*mlp->gate_proj, in.adapters, B, ws);  // (B, F)
    auto up = projection_of(*mlp->up_proj, in.adapters, B, ws);      // (B, F)
    float* act = ws.take(B * F);                                      // (B, F)
    lora_inputs({&gate, &up}, xn, B);
    parallel_rows({{F, [&](int64_t n0, int64_t n1) {
                     projection_rows(gate, xn, B, n0, n1);
                     projection_rows(up, xn, B, n0, n1);
                     for (int64_t b = 0; b < B; ++b)
                       for (int64_t n = n0; n < n1; ++n) act[b * F + n] = silu(gate.y[b * F + n]) * up.y[b * F + n];
                   }}},
                  B);
    auto down = projection_of(*mlp->down_proj, in.adapters, B, ws);  // (B, D)
    run_projections({&down}, act, B);
    for (int64_t i = 0; i < B * D; ++i) h[i] += down.y[i];
  }
  cache.length = past + 1;

  // Final norm and the LM head (the embedding when tied): (B, D) -> (B, V).
  ws.reset();
  float* hn = ws.take(B * D);
  rms_norm(h, m.model->norm->weight.data_ptr<float>(), m.model->norm->eps, B, D, hn);
  auto logits = torch::empty({B, cfg.vocab_size}, torch::kFloat32);
  Projection head;
  head.w = m.lm_head ? kernels::kernel_matrix(m.lm_head->weight, m.lm_head->weight_scale)
                     : kernels::kernel_matrix(emb, m.embed_scale);
  head.y = logits.data_ptr<float>();
  run_projections({&head}, hn, B);
  return logits;
}

}  // namespace reglage::model
