#include "framework/model/fused_decode.h"

#include <ATen/Parallel.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <cstring>
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

// Buffers of one step. Every layer's products are described before the step runs, and the layers share
// buffers (rewind to the first buffer they share); a buffer a later layer outgrows is kept, not freed, so every
// pointer handed out stays valid for the whole step.
struct Workspace {
  std::vector<std::vector<float>> slots, outgrown;
  size_t next = 0;
  float* take(int64_t n) {  // a buffer of n floats
    if (next == slots.size()) slots.emplace_back();
    auto& s = slots[next++];
    if (int64_t(s.size()) < n) {
      if (!s.empty()) outgrown.push_back(std::move(s));
      s = std::vector<float>(size_t(n));
    }
    return s.data();
  }
  void rewind(size_t to) { next = to; }
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

// A barrier for the step's threads that spins instead of sleeping: each part of a step takes tens of
// microseconds. Against OpenMP's barrier (libgomp), alternating runs of SmolLM2's int8 decode at batch 1 took
// 0.25 ms less per token (17 of 20 runs faster), and with two such processes sharing the 2-core machine 28
// against 163 ms per token. After about 0.1 ms of spinning a waiting thread yields its core, so threads that
// share cores still progress.
class SpinBarrier {
 public:
  explicit SpinBarrier(int count) : count_(count) {}
  void wait() {
    const int gen = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == count_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(gen + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == gen; ++spins) {
      if (spins < kSpins) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static constexpr int kSpins = 4096;  // pauses (about 0.1 ms) before yielding
  const int count_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
};

// The threads of the step's one parallel region: thread `id` of `count`.
struct Team {
  int id = 0, count = 1;
  SpinBarrier* barrier = nullptr;  // null: OpenMP's (a team smaller than planned)
  // Waits until every thread of the team has arrived: what any thread wrote before is then visible to all.
  void sync() {
    if (barrier != nullptr) {
      barrier->wait();
    } else {
#pragma omp barrier
    }
  }
  // This thread's share [b0, b1) of `total` items: equal contiguous parts, the same on every step.
  std::pair<int64_t, int64_t> share(int64_t total) const {
    return {total * id / count, total * (id + 1) / count};
  }
};

// Rows of several products split over the team as one list of 4-row blocks: job j owns blocks
// [start[j], start[j + 1]) and runs rows [4 * local block, ...) of its own product. Static: each thread
// takes the same rows every step, so its next rows are the ones the prefetcher already follows.
struct RowJob {
  int64_t rows = 0;
  std::function<void(int64_t, int64_t)> run;  // rows [n0, n1)
};

void team_rows(Team& team, const std::vector<RowJob>& jobs) {
  std::vector<int64_t> start = {0};
  for (const auto& j : jobs) start.push_back(start.back() + (j.rows + kBlock - 1) / kBlock);
  const auto [b0, b1] = team.share(start.back());
  for (size_t j = 0; j < jobs.size(); ++j) {
    const int64_t lo = std::max(b0, start[j]), hi = std::min(b1, start[j + 1]);
    if (lo >= hi) continue;
    jobs[j].run((lo - start[j]) * kBlock, std::min(jobs[j].rows, (hi - start[j]) * kBlock));
  }
}

// Rows [n0, n1) of p.y = x W^T + bias + sum scale * t B^T (the adapters' t already computed), added into
// `residual` (M, N) too when it is given.
void projection_rows(const Projection& p, const float* x, int64_t M, int64_t n0, int64_t n1,
                     float* residual = nullptr) {
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
  if (residual != nullptr)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = n0; n < n1; ++n) residual[m * N + n] += p.y[m * N + n];
}

// The adapters' first factors t = x A^T of projections that share the input x, split over the team, then a
// barrier (the projections need all of t). Nothing, and no barrier, without adapters.
void lora_inputs(Team& team, const std::vector<Projection*>& ps, const float* x, int64_t M) {
  std::vector<RowJob> jobs;
  for (auto* p : ps)
    for (auto& l : p->loras)
      jobs.push_back({l.A.rows, [&l, x, M](int64_t n0, int64_t n1) { kernels::kernel_rows(l.A, x, M, l.t, n0, n1); }});
  if (jobs.empty()) return;
  team_rows(team, jobs);
  team.sync();
}

// Projections reading the same x (M, K), their rows split over the team together; `residual` as in
// projection_rows (one projection only). No barrier at the end.
void run_projections(Team& team, const std::vector<Projection*>& ps, const float* x, int64_t M,
                     float* residual = nullptr) {
  lora_inputs(team, ps, x, M);
  std::vector<RowJob> jobs;
  for (auto* p : ps)
    jobs.push_back({p->w.rows, [p, x, M, residual](int64_t n0, int64_t n1) {
                      projection_rows(*p, x, M, n0, n1, residual);
                    }});
  team_rows(team, jobs);
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
// (first half negated). tmp: Dh floats of scratch. The two halves in two loops, with no index taken modulo Dh.
void rotate(float* x, int64_t heads, int64_t Dh, const float* cos, const float* sin, float* tmp) {
  const int64_t half = Dh / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* xh = x + h * Dh;
    for (int64_t d = 0; d < half; ++d) tmp[d] = xh[d] * cos[d] + xh[d + half] * sin[d];
    for (int64_t d = half; d < Dh; ++d) tmp[d] = xh[d] * cos[d] + xh[d - half] * sin[d];
    std::copy(tmp, tmp + Dh, xh);
  }
}

struct AttentionShape {
  int64_t B, H, Hkv, Dh, capacity, past;  // past: slots filled before this step
};

// Per-thread scratch of the attention items: one query head's scores, the rotated key, a head of scratch.
struct AttentionScratch {
  std::vector<float> scores, key, tmp;
};

// This thread's share of the (sequence, query head) items. Each rotates its query head and its kv head's new
// key by the sequence's position and attends over the valid slots of the kv head's cache: out (B, H * Dh). The
// item of a kv head's first query head also appends the key and value to the cache at slot `past`; the other
// items of that kv head read the new key and value from k and v instead, so no item reads a slot another
// thread may be writing. q (B, H * Dh), k and v (B, Hkv * Dh); kc, vc (B, Hkv, capacity, Dh); cos, sin (B, Dh).
void attend(const Team& team, float* q, const float* k, const float* v, float* kc, float* vc,
            const bool* key_valid, const float* cos, const float* sin, const AttentionShape& a,
            AttentionScratch& scratch, float* out) {
  const int64_t group = a.H / a.Hkv, S = a.past + 1, Dh = a.Dh;
  const float root = std::sqrt(float(Dh));
  scratch.scores.resize(size_t(S));
  scratch.key.resize(size_t(Dh));
  scratch.tmp.resize(size_t(Dh));
  float* p = scratch.scores.data();
  float* key = scratch.key.data();
  const auto [i0, i1] = team.share(a.B * a.H);
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t b = i / a.H, hq = i % a.H, kvh = hq / group;
    float* qh = q + (b * a.H + hq) * Dh;  // (Dh)
    const float* kh = k + (b * a.Hkv + kvh) * Dh;
    const float* vh = v + (b * a.Hkv + kvh) * Dh;
    std::copy(kh, kh + Dh, key);
    rotate(qh, 1, Dh, cos + b * Dh, sin + b * Dh, scratch.tmp.data());
    rotate(key, 1, Dh, cos + b * Dh, sin + b * Dh, scratch.tmp.data());
    float* kb = kc + (b * a.Hkv + kvh) * a.capacity * Dh;  // (capacity, Dh)
    float* vb = vc + (b * a.Hkv + kvh) * a.capacity * Dh;
    if (hq % group == 0) {
      std::copy(key, key + Dh, kb + a.past * Dh);
      std::copy(vh, vh + Dh, vb + a.past * Dh);
    }
    // Scores of the cached slots and of the new key, each a row of the kernel's product (the same sums).
    kernels::kernel_rows(KernelMatrix::float32(kb, a.past, Dh), qh, 1, p, 0, a.past);  // (past)
    kernels::kernel_rows(KernelMatrix::float32(key, 1, Dh), qh, 1, p + a.past, 0, 1);  // (1)
    const bool* valid = key_valid + b * a.capacity;
    float mx = std::numeric_limits<float>::lowest();
    bool any = false;
    for (int64_t s = 0; s < S; ++s)
      if (valid[s]) p[s] /= root, mx = std::max(mx, p[s]), any = true;
    float sum = 0;
    for (int64_t s = 0; s < S; ++s) {
      // No valid key at all (a padding row): equal weights, as a softmax over equal masked scores gives.
      p[s] = !any ? 1.0f : valid[s] ? std::exp(p[s] - mx) : 0.0f;
      sum += p[s];
    }
    float* o = out + (b * a.H + hq) * Dh;
    std::fill(o, o + Dh, 0.0f);
    for (int64_t s = 0; s < S; ++s) {
      const float w = p[s] / sum;
      if (w == 0.0f) continue;
      const float* vs = s < a.past ? vb + s * Dh : vh;
      for (int64_t d = 0; d < Dh; ++d) o[d] += w * vs[d];
    }
  }
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

// Rows of the embedding table (V, D) in its storage, widened to float32 as stored_embedding() does: ids (B)
// -> out (B, D).
void embedding_rows(const KernelMatrix& table, const int64_t* ids, int64_t B, float* out) {
  const int64_t D = table.cols;
  for (int64_t b = 0; b < B; ++b) {
    float* o = out + b * D;
    const int64_t row = ids[b] * D;
    switch (table.format) {
      case KernelMatrix::kBFloat16: {
        const auto* w = static_cast<const uint16_t*>(table.data) + row;
        for (int64_t d = 0; d < D; ++d) {
          const uint32_t bits = uint32_t(w[d]) << 16;
          std::memcpy(o + d, &bits, sizeof(float));
        }
        break;
      }
      case KernelMatrix::kInt8: {
        const auto* w = static_cast<const int8_t*>(table.data) + row;
        const float scale = table.scale[ids[b]];
        for (int64_t d = 0; d < D; ++d) o[d] = float(w[d]) * scale;
        break;
      }
      default: std::copy_n(static_cast<const float*>(table.data) + row, D, o);
    }
  }
}

// Positions of rotary tables computed per call of rotary_tables() when the cache first builds them: a few
// thousand elements, so LibTorch neither splits them over threads nor leaves a tail to its scalar loop.
constexpr int64_t kRotaryChunk = 256;

// cos and sin (B, Dh) of the positions pos (B), as rotary_tables() gives them: from tables of every slot of
// the cache (positions 0 .. capacity - 1) that the cache keeps after the first step, or computed for the step
// where a position lies outside them.
void rotary_rows(KVCache& cache, const std::vector<int64_t>& pos, int64_t Dh, double theta, float* cos,
                 float* sin) {
  const int64_t capacity = cache.capacity(), B = int64_t(pos.size());
  if (!cache.rotary_cos.defined() || cache.rotary_cos.size(0) != capacity || cache.rotary_cos.size(1) != Dh) {
    std::vector<torch::Tensor> c, s;
    for (int64_t p0 = 0; p0 < capacity; p0 += kRotaryChunk) {
      const int64_t n = std::min(kRotaryChunk, capacity - p0);
      auto [ct, st] = rotary_tables(torch::arange(p0, p0 + n, torch::kLong).view({n, 1}), Dh, theta);  // (n, 1, 1, Dh)
      c.push_back(ct.reshape({n, Dh}));
      s.push_back(st.reshape({n, Dh}));
    }
    cache.rotary_cos = torch::cat(c).contiguous();  // (capacity, Dh)
    cache.rotary_sin = torch::cat(s).contiguous();
  }
  const bool inside = std::all_of(pos.begin(), pos.end(), [&](int64_t p) { return p >= 0 && p < capacity; });
  if (!inside) {
    auto [ct, st] = rotary_tables(torch::tensor(pos, torch::kLong).view({B, 1}), Dh, theta);  // (B, 1, 1, Dh)
    std::copy_n(ct.contiguous().data_ptr<float>(), B * Dh, cos);
    std::copy_n(st.contiguous().data_ptr<float>(), B * Dh, sin);
    return;
  }
  for (int64_t b = 0; b < B; ++b) {
    std::copy_n(cache.rotary_cos.data_ptr<float>() + pos[size_t(b)] * Dh, Dh, cos + b * Dh);
    std::copy_n(cache.rotary_sin.data_ptr<float>() + pos[size_t(b)] * Dh, Dh, sin + b * Dh);
  }
}

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
  // Every step asks this: the layers are walked without building their names (linear_layers() does), a name
  // is made only for the message.
  for (size_t l = 0; l < m.model->layers.size(); ++l) {
    auto& attn = m.model->layers[l]->self_attn;
    auto& mlp = m.model->layers[l]->mlp;
    const std::pair<const char*, lora::LinearImpl*> projections[] = {
        {"self_attn.q_proj", attn->q_proj.get()}, {"self_attn.k_proj", attn->k_proj.get()},
        {"self_attn.v_proj", attn->v_proj.get()}, {"self_attn.o_proj", attn->o_proj.get()},
        {"mlp.gate_proj", mlp->gate_proj.get()},  {"mlp.up_proj", mlp->up_proj.get()},
        {"mlp.down_proj", mlp->down_proj.get()}};
    for (const auto& [name, lin] : projections) {
      const bool adapters_ok = in.adapters.empty() || adapters_unsupported(*lin, in.adapters, "").empty();
      const bool weight_ok =
          lin->weight.is_contiguous() && (!lin->bias.defined() || lin->bias.scalar_type() == torch::kFloat32);
      if (adapters_ok && weight_ok) continue;
      const std::string path = "model.layers." + std::to_string(l) + "." + name;
      return !adapters_ok ? adapters_unsupported(*lin, in.adapters, path) : path + " is not contiguous float32";
    }
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

  // Positions, ids and validity of the step's tokens read directly: LibTorch operators here cost more than
  // a layer's arithmetic, once the weights streamed by the previous step have evicted their code and data.
  const auto positions = in.positions.defined() ? in.positions.to(torch::kLong).contiguous() : torch::Tensor();
  const auto ids = in.ids.to(torch::kLong).contiguous();
  const auto valid = in.valid.defined() ? in.valid.to(torch::kBool).contiguous() : torch::Tensor();
  std::vector<int64_t> pos(size_t(B), past);  // (B)
  for (int64_t b = 0; b < B; ++b) {
    if (positions.defined()) pos[size_t(b)] = positions.data_ptr<int64_t>()[b];
    if (pos[size_t(b)] >= cfg.max_seq_len)
      fail("position ", pos[size_t(b)], " is beyond the model's context of ", cfg.max_seq_len, " tokens");
    const int64_t id = ids.data_ptr<int64_t>()[b];
    if (id < 0 || id >= cfg.vocab_size) fail("token id ", id, " is outside the vocabulary of ", cfg.vocab_size);
  }
  if (valid.defined() && cache.key_valid.is_contiguous())
    for (int64_t b = 0; b < B; ++b) cache.key_valid.data_ptr<bool>()[b * capacity + past] = valid.data_ptr<bool>()[b];
  else
    cache.key_valid.select(1, past).copy_(valid.defined() ? valid.reshape({B}) : torch::ones({B}, torch::kBool));
  auto key_valid = cache.key_valid.contiguous();  // (B, capacity)

  // Rotary rows of the step's positions, (B, Dh) each.
  std::vector<float> cos_rows(size_t(B * Dh)), sin_rows(size_t(B * Dh));
  rotary_rows(cache, pos, Dh, cfg.rope_theta, cos_rows.data(), sin_rows.data());
  const float* cosp = cos_rows.data();
  const float* sinp = sin_rows.data();

  // The residual stream (B, D), updated in place: the tokens' embedding rows, widened from their storage.
  auto& emb = m.model->embed_tokens->weight;
  std::vector<float> h_rows(size_t(B * D));
  float* h = h_rows.data();
  embedding_rows(kernels::kernel_matrix(emb, m.embed_scale), ids.data_ptr<int64_t>(), B, h);

  // The products of every layer, described once; layers run one after another, so they share buffers.
  struct LayerPlan {
    Projection q, k, v, o, gate, up, down;
    const float *in_norm, *post_norm;
    double in_eps, post_eps;
  };
  Workspace ws;
  float* att = ws.take(B * H * Dh);  // (B, H * Dh)
  float* act = ws.take(B * F);       // (B, F)
  std::vector<LayerPlan> plans;
  const size_t shared_slots = ws.next;
  for (auto& layer : m.model->layers) {
    auto& attn = layer->self_attn;
    auto& mlp = layer->mlp;
    ws.rewind(shared_slots);
    LayerPlan p;
    p.q = projection_of(*attn->q_proj, in.adapters, B, ws);  // (B, H * Dh)
    p.k = projection_of(*attn->k_proj, in.adapters, B, ws);  // (B, Hkv * Dh)
    p.v = projection_of(*attn->v_proj, in.adapters, B, ws);  // (B, Hkv * Dh)
    p.o = projection_of(*attn->o_proj, in.adapters, B, ws);  // (B, D)
    p.gate = projection_of(*mlp->gate_proj, in.adapters, B, ws);  // (B, F)
    p.up = projection_of(*mlp->up_proj, in.adapters, B, ws);      // (B, F)
    p.down = projection_of(*mlp->down_proj, in.adapters, B, ws);  // (B, D)
    p.in_norm = layer->input_layernorm->weight.data_ptr<float>();
    p.in_eps = layer->input_layernorm->eps;
    p.post_norm = layer->post_attention_layernorm->weight.data_ptr<float>();
    p.post_eps = layer->post_attention_layernorm->eps;
    plans.push_back(std::move(p));
  }
  // The final norm and the LM head (the embedding when tied): (B, D) -> (B, V).
  auto logits = torch::empty({B, cfg.vocab_size}, torch::kFloat32);
  Projection head;
  head.w = m.lm_head ? kernels::kernel_matrix(m.lm_head->weight, m.lm_head->weight_scale)
                     : kernels::kernel_matrix(emb, m.embed_scale);
  head.y = logits.data_ptr<float>();
  const float* final_norm = m.model->norm->weight.data_ptr<float>();
  const double final_eps = m.model->norm->eps;

  std::vector<float*> kc, vc;  // (B, Hkv, capacity, Dh) per layer
  for (size_t l = 0; l < plans.size(); ++l) {
    kc.push_back(cache.k[l].data_ptr<float>());
    vc.push_back(cache.v[l].data_ptr<float>());
  }
  const bool* valid_p = key_valid.data_ptr<bool>();
  const AttentionShape shape{B, H, Hkv, Dh, capacity, past};
  kernels::cpu_path();  // the kernel path resolved (and a bad REGLAGE_KERNELS reported) outside the region
  const int threads = std::max(1, at::get_num_threads());
  std::vector<std::vector<float>> normed(size_t(threads), std::vector<float>(size_t(B * D)));  // (B, D) each
  std::vector<AttentionScratch> scratch(static_cast<size_t>(threads));
  // Spinning threads need a core each: with more threads than the machine has CPUs, OpenMP's barrier.
  SpinBarrier barrier(threads);
  static const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const bool spin = threads <= cpus;

  // The whole step in one parallel region: every thread runs every layer on its share of each product's rows,
  // with a barrier where the next part reads what all threads wrote. Each thread norms the residual stream
  // into its own buffer, so the norms need no barrier. One region instead of five per layer: joining and
  // restarting the threads 150 times a step cost more than the arithmetic between the products.
#pragma omp parallel num_threads(threads)
  {
    Team team{omp_get_thread_num(), omp_get_num_threads()};
    if (team.count == threads && spin) team.barrier = &barrier;
    float* xn = normed[size_t(team.id)].data();
    AttentionScratch& mine = scratch[size_t(team.id)];
    for (size_t l = 0; l < plans.size(); ++l) {
      LayerPlan& p = plans[l];
      // Attention block: q, k, v from the normed input; rotated and appended to the cache by attend().
      rms_norm(h, p.in_norm, p.in_eps, B, D, xn);
      run_projections(team, {&p.q, &p.k, &p.v}, xn, B);
      team.sync();
      attend(team, p.q.y, p.k.y, p.v.y, kc[l], vc[l], valid_p, cosp, sinp, shape, mine, att);
      team.sync();
      run_projections(team, {&p.o}, att, B, h);  // h += o
      team.sync();

      // MLP block: down(silu(gate x) * up x), gate and up rows computed together and combined at once.
      rms_norm(h, p.post_norm, p.post_eps, B, D, xn);
      lora_inputs(team, {&p.gate, &p.up}, xn, B);
      team_rows(team, {{F, [&](int64_t n0, int64_t n1) {
                          projection_rows(p.gate, xn, B, n0, n1);
                          projection_rows(p.up, xn, B, n0, n1);
                          for (int64_t b = 0; b < B; ++b)
                            for (int64_t n = n0; n < n1; ++n)
                              act[b * F + n] = silu(p.gate.y[b * F + n]) * p.up.y[b * F + n];
                        }}});
      team.sync();
      run_projections(team, {&p.down}, act, B, h);  // h += down
      team.sync();
    }
    rms_norm(h, final_norm, final_eps, B, D, xn);
    run_projections(team, {&head}, xn, B);
  }
  cache.length = past + 1;
  return logits;
}

}  // namespace reglage::model
