#include "framework/model/llama.h"
#include "framework/model/chunked_logprob.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>
#include <mutex>

#include "framework/core/error.h"
#include "framework/kernels/batched_matmul.h"
#include "framework/kernels/fused_elementwise.h"
#include "framework/kernels/huge_pages.h"

namespace reglage::model {

namespace F = torch::nn::functional;

// Normalisation, rotary and softmax run in at least float32 (float64 stays float64).
static torch::ScalarType wide(const torch::Tensor& x) {
  return x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// ---- RMSNorm ------------------------------------------------------------------------------------

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  // As Hugging Face: statistics in float32, the normalised value cast back before the weight multiplies it.
  // float32 and bfloat16 take the fused kernel (one node, one pass each way); float64 the operators.
  if (kernels::fused_elementwise_fits(x) && weight.scalar_type() == x.scalar_type())
    return kernels::rms_norm(x, weight, eps);
  auto xf = x.to(wide(x));
  auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

// ---- rotary embeddings --------------------------------------------------------------------------

std::pair<torch::Tensor, torch::Tensor> rotary_tables(const torch::Tensor& positions, int64_t head_dim,
                                                      double theta) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(positions.device());
  // inv_freq[j] = theta^(-2j/Dh), j < Dh/2, computed in float32 as Hugging Face does.
  auto exponents = torch::arange(0, head_dim, 2, opts) / static_cast<double>(head_dim);
  auto inv_freq = 1.0 / torch::pow(torch::full({}, theta, opts), exponents);   // (Dh/2)
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq;         // (B, T, Dh/2)
  auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(2);                      // (B, T, 1, Dh)
  auto sin = emb.sin();
  sin.narrow(-1, 0, head_dim / 2).neg_();  // rotate_half's minus sign, once per call instead of per layer
  return {emb.cos(), sin};
}

// x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1) written as roll(x) = cat(x2, x1) and
// the sign carried by the first half of `sin` (rotary_tables).
static torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  if (kernels::fused_elementwise_fits(x) && cos.scalar_type() == torch::kFloat32)
    return kernels::rotary(x, cos, sin);  // one node, float32 arithmetic
  auto xf = x.to(wide(x));  // (B, T, heads, Dh)
  return (xf * cos + xf.roll(x.size(-1) / 2, -1) * sin).to(x.scalar_type());
}

// Attention's softmax by operators (float64, or with the fused kernels off): scores (B, Hkv, g, T, S) widened,
// blocked (B or 1, 1, 1, T, S); probabilities in `out`'s dtype. Blocked entries get a large negative score
// added (one fresh tensor; an in-place fill of the scores' view would cost a copy of them in backward): exp() of
// it is exactly 0 against any real score, and a padding query with nothing to attend to gets equal scores
// (finite, ignored values) instead of the NaN of -inf.
static torch::Tensor masked_softmax_operators(const torch::Tensor& scores_in, const torch::Tensor& blocked,
                                              torch::ScalarType out) {
  auto scores = scores_in.to(wide(scores_in));
  const double kBlockedScore = scores.scalar_type() == torch::kFloat64 ? -1e300 : -1e30;
  auto block = torch::zeros(blocked.sizes(), scores.options()).masked_fill_(blocked, kBlockedScore);  // (B, 1, 1, T, S)
  return torch::softmax(scores + block, -1).to(out);
}

// ---- attention ----

// Elements of the broadcast product below which attention multiplies-and-sums instead of calling matmul.
constexpr int64_t kBroadcastAttentionLimit = int64_t(1) << 20;

// Query rows per causal block (AttentionImpl::forward), or T for one block: from T = 512, a quarter of the
// sequence rounded up to 16 rows, 128 to 256 rows (four blocks up to T = 1024, 37.5% of the scores skipped;
// more blocks beyond). Each block adds operators (its own slices of the keys, values and mask, and their
// gradients summed in backward), which cost more than the skipped products save on short sequences and narrow
// heads. Alternating LoRA SFT steps on SmolLM2 (2,048 tokens a step, 2 threads, AVX-512 VM): 4 x 512 5% faster
// (float32), 2 x 1024 13-15% (float32) and 12% (bfloat16); 8 x 256 in blocks of 64 only 1.8% (float32) and
// 0.5% (bfloat16), and the stories15M shape (48-wide heads) at 256 up to 7% slower, hence the threshold.
int64_t causal_block_rows(int64_t T) {
  if (T < 512) return T;
  const int64_t quarter = ((T + 3) / 4 + 15) / 16 * 16;
  return std::min<int64_t>(256, std::max<int64_t>(128, quarter));
}

// ------------------------------------------------------------------------------------------------

AttentionImpl::AttentionImpl(const ModelConfig& cfg)
    : n_heads(cfg.n_heads), n_kv_heads(cfg.n_kv_heads), head_dim(cfg.head_size()) {
  q_proj = register_module("q_proj", lora::Linear(cfg.dim, n_heads * head_dim, cfg.attention_bias));
  k_proj = register_module("k_proj", lora::Linear(cfg.dim, n_kv_heads * head_dim, cfg.attention_bias));
  v_proj = register_module("v_proj", lora::Linear(cfg.dim, n_kv_heads * head_dim, cfg.attention_bias));
  o_proj = register_module("o_proj", lora::Linear(n_heads * head_dim, cfg.dim, false));
}

torch::Tensor TokenLayout::pack(const torch::Tensor& x) const {
  auto shape = x.sizes().vec();  // (B, T, ...) -> (N, ...)
  shape.erase(shape.begin());
  shape[0] = tokens.size(0);
  auto flat = x.sizes().vec();
  flat.erase(flat.begin());
  flat[0] = B * T;
  return x.reshape(flat).index_select(0, tokens).view(shape);
}

torch::Tensor TokenLayout::unpack(const torch::Tensor& x) const {
  auto flat = x.sizes().vec();  // (N, ...) -> (B*T, ...) -> (B, T, ...)
  flat[0] = B * T;
  auto shape = flat;
  shape[0] = T;
  shape.insert(shape.begin(), B);
  return torch::zeros(flat, x.options()).index_copy(0, tokens, x).view(shape);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                     const torch::Tensor& blocked, KVCache* cache, int64_t layer,
                                     const AdapterSet& adapters, const TokenLayout& layout, int64_t query_block) {
  const int64_t B = layout.packed() ? layout.B : x.size(0), T = layout.packed() ? layout.T : x.size(1);
  // (B, T) rows, or the N valid tokens of a packed layout: the projections and rotary run on those only.
  auto rows = layout.packed() ? std::vector<int64_t>{x.size(0)} : std::vector<int64_t>{B, T};
  auto heads_of = [&](const torch::Tensor& y, int64_t heads) {  // (..., heads * Dh) -> (..., heads, Dh)
    auto shape = rows;
    shape.push_back(heads);
    shape.push_back(head_dim);
    return y.view(shape);
  };
  auto q = apply_rotary(heads_of(q_proj(x, adapters), n_heads), cos, sin);
  auto k = apply_rotary(heads_of(k_proj(x, adapters), n_kv_heads), cos, sin);
  auto v = heads_of(v_proj(x, adapters), n_kv_heads);
  if (layout.packed()) q = layout.unpack(q), k = layout.unpack(k), v = layout.unpack(v);  // (B, T, heads, Dh)
  q = q.transpose(1, 2);  // (B, H, T, Dh)
  k = k.transpose(1, 2);  // (B, Hkv, T, Dh)
  v = v.transpose(1, 2);  // (B, Hkv, T, Dh)

  if (cache != nullptr) {
    // Append to the pre-allocated cache, then attend over everything filled so far.
    const int64_t start = cache->length;
    cache->k[layer].narrow(2, start, T).copy_(k);
    cache->v[layer].narrow(2, start, T).copy_(v);
    k = cache->k[layer].narrow(2, 0, start + T);  // (B, Hkv, S, Dh)
    v = cache->v[layer].narrow(2, 0, start + T);
  }
  const int64_t S = k.size(2);

  // Without a cache every query t sees keys 0..t at most: long sequences take their queries in blocks, block
  // [a, e) over keys [0, e) only. The products and the softmax skip the key blocks that causality masks whole
  // (3/8 of them with 4 blocks, towards half for many); every score computed is the one the whole product
  // computes, and the skipped ones would have been masked. Backward sums each key's and value's gradient over
  // the blocks that read it: float32 gradients move by rounding (6.5e-7 relative on SmolLM2's LoRA).
  const int64_t block = cache == nullptr && S == T && query_block > 0 ? query_block : T;
  torch::Tensor out;  // (B, T, H, Dh)
  if (block >= T) {
    out = attend(q, k, v, blocked).transpose(1, 2);
  } else {
    std::vector<torch::Tensor> parts;
    for (int64_t a = 0; a < T; a += block) {
      const int64_t e = std::min(T, a + block);
      auto mask = blocked.narrow(3, a, e - a).narrow(4, 0, e);  // (B or 1, 1, 1, e - a, e)
      parts.push_back(attend(q.narrow(2, a, e - a), k.narrow(2, 0, e), v.narrow(2, 0, e), mask).transpose(1, 2));
    }
    out = torch::cat(parts, 1);  // (B, T, H, Dh)
  }
  out = out.reshape({B, T, n_heads * head_dim});
  if (layout.packed()) out = layout.pack(out);  // (N, H*Dh)
  return o_proj(out, adapters);                 // (B, T, D) or (N, D)
}

torch::Tensor AttentionImpl::attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    const torch::Tensor& blocked) const {
  const int64_t B = q.size(0), T = q.size(2), S = k.size(2);
  const int64_t group = n_heads / n_kv_heads;
  // Grouped-query attention without repeating K/V: query head h uses kv head h / group, so the queries of
  // one kv head are stacked along the row axis of a single matmul.
  auto qg = q.reshape({B, n_kv_heads, group * T, head_dim});  // (B, Hkv, g*T, Dh)
  // Decoding small models: B * Hkv matrix products of a few rows each cost more in per-call overhead than
  // the arithmetic, so multiply-and-sum by broadcasting instead while the product tensor stays small.
  const bool broadcast = B * n_kv_heads * group * T * S * head_dim <= kBroadcastAttentionLimit;
  torch::Tensor scores;  // (B, Hkv, g*T, S), scaled by 1/sqrt(Dh)
  if (broadcast) {
    scores = (qg.unsqueeze(3) * k.unsqueeze(2)).sum(-1).div_(std::sqrt(double(head_dim)));  // (B, Hkv, g*T, 1, Dh) * (B, Hkv, 1, S, Dh)
  } else {
    scores = kernels::batched_matmul(qg.reshape({B * n_kv_heads, group * T, head_dim}),
                                     k.reshape({B * n_kv_heads, S, head_dim}).transpose(1, 2),
                                     1.0 / std::sqrt(double(head_dim)))
                 .view({B, n_kv_heads, group * T, S});
  }
  torch::Tensor probs;  // (B, Hkv, g*T, S)
  if (kernels::fused_elementwise_fits(scores) && scores.scalar_type() == v.scalar_type()) {
    // One node: the mask applied while the softmax reads each row, float32 arithmetic, the scores' dtype out.
    // Rows of (B, Hkv, g*T, S) are (batch, query head, t) in order, the mask (B or 1, T, S).
    probs = kernels::masked_softmax(scores.view({B, n_heads, T, S}), blocked.reshape({blocked.size(0), T, S}))
                .view({B, n_kv_heads, group * T, S});
  } else {
    probs = masked_softmax_operators(scores.view({B, n_kv_heads, group, T, S}), blocked, v.scalar_type())
                .view({B, n_kv_heads, group * T, S});
  }
  auto out = broadcast ? (probs.unsqueeze(-1) * v.unsqueeze(2)).sum(3)  // (B, Hkv, g*T, S, 1) * (B, Hkv, 1, S, Dh)
                       : kernels::batched_matmul(probs.reshape({B * n_kv_heads, group * T, S}),
                                                 v.reshape({B * n_kv_heads, S, head_dim}));  // (B*Hkv, g*T, Dh)
  return out.view({B, n_heads, T, head_dim});
}

// ---- MLP, layer, decoder ------------------------------------------------------------------------

MLPImpl::MLPImpl(const ModelConfig& cfg) {
  gate_proj = register_module("gate_proj", lora::Linear(cfg.dim, cfg.hidden_dim, false));
  up_proj = register_module("up_proj", lora::Linear(cfg.dim, cfg.hidden_dim, false));
  down_proj = register_module("down_proj", lora::Linear(cfg.hidden_dim, cfg.dim, false));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x, const AdapterSet& adapters) {
  auto gate = gate_proj(x, adapters), up = up_proj(x, adapters);  // (..., F) each
  auto act = kernels::fused_elementwise_fits(gate) && gate.scalar_type() == up.scalar_type()
                 ? kernels::swiglu(gate, up)  // one node: silu(gate) * up
                 : F::silu(gate) * up;
  return down_proj(act, adapters);
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& cfg) {
  self_attn = register_module("self_attn", Attention(cfg));
  mlp = register_module("mlp", MLP(cfg));
  input_layernorm = register_module("input_layernorm", RMSNorm(cfg.dim, cfg.norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(cfg.dim, cfg.norm_eps));
}

DecoderImpl::DecoderImpl(const ModelConfig& cfg) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(cfg.vocab_size, cfg.dim));
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    layers.push_back(DecoderLayer(cfg));
    list->push_back(layers.back());
  }
  register_module("layers", list);
  norm = register_module("norm", RMSNorm(cfg.dim, cfg.norm_eps));
}

// ---- activation checkpointing -------------------------------------------------------------------

namespace {

using LayerFn = std::function<torch::Tensor(const torch::Tensor&)>;

// Forward without keeping the layer's activations; backward runs it again with gradients, under the random
// state the forward saw (so LoRA dropout draws the same masks), and differentiates the recomputed layer with
// respect to its input and its trainable tensors, which are this function's inputs so that the engine
// accumulates their gradients as usual.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, at::TensorList params,
                               LayerFn fn) {
    auto gen = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      ctx->saved_data["rng"] = gen.get_state();
    }
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<LayerHolder>(std::move(fn)));
    ctx->save_for_backward({x});
    std::vector<torch::Tensor> kept(params.begin(), params.end());
    ctx->saved_data["params"] = kept;
    return fn_of(ctx)(x);  // grad mode is off inside a custom function's forward
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    auto params = ctx->saved_data["params"].toTensorVector();
    auto gen = at::detail::getDefaultCPUGenerator();
    torch::Tensor now;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      now = gen.get_state();
      gen.set_state(ctx->saved_data["rng"].toTensor());
    }
    torch::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = fn_of(ctx)(x);
    }
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(now);
    }
    std::vector<torch::Tensor> inputs = {x};
    inputs.insert(inputs.end(), params.begin(), params.end());
    auto g = torch::autograd::grad({y}, inputs, {grads[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/true);
    g.push_back(torch::Tensor());  // fn
    return g;
  }

  struct LayerHolder : torch::CustomClassHolder {
    explicit LayerHolder(LayerFn f) : fn(std::move(f)) {}
    LayerFn fn;
  };
  static const LayerFn& fn_of(torch::autograd::AutogradContext* ctx) {
    return static_cast<const LayerHolder*>(ctx->saved_data["fn"].toCapsule().get())->fn;
  }
};

}  // namespace

torch::Tensor CausalLMImpl::checkpointed(const std::function<torch::Tensor(const torch::Tensor&)>& fn,
                                         const torch::Tensor& x, const std::vector<torch::Tensor>& params) {
  return CheckpointedLayer::apply(x, at::TensorList(params), LayerFn(fn));
}

std::vector<torch::Tensor> CausalLMImpl::trainable_tensors(DecoderLayer& layer, const AdapterSet& adapters) {
  std::vector<torch::Tensor> out;
  for (const auto& p : layer->parameters())
    if (p.requires_grad()) out.push_back(p);
  auto add_adapters = [&](lora::Linear& lin) {
    for (const auto& name : adapters) {
      if (!lin->has_adapter(name)) continue;
      auto& a = lin->adapter(name);
      if (a.A.requires_grad()) out.push_back(a.A);
      if (a.B.requires_grad()) out.push_back(a.B);
    }
  };
  for (auto* lin : {&layer->self_attn->q_proj, &layer->self_attn->k_proj, &layer->self_attn->v_proj,
                    &layer->self_attn->o_proj, &layer->mlp->gate_proj, &layer->mlp->up_proj, &layer->mlp->down_proj})
    add_adapters(*lin);
  return out;
}

// ---- causal LM ----------------------------------------------------------------------------------

CausalLMImpl::CausalLMImpl(const ModelConfig& cfg) : cfg_(cfg) {
  cfg_.validate("model config");
  model = register_module("model", Decoder(cfg_));
  if (!cfg_.tie_embeddings) lm_head = register_module("lm_head", lora::Linear(cfg_.dim, cfg_.vocab_size, false));
}

torch::Tensor CausalLMImpl::hidden(const ForwardInput& in) {
  TORCH_CHECK(in.ids.dim() == 2, "ids must be (B, T), got ", in.ids.sizes());
  const int64_t B = in.ids.size(0), T = in.ids.size(1);
  const int64_t past = in.cache ? in.cache->length : 0;
  const auto dev = in.ids.device();

  auto positions = in.positions.defined()
                       ? in.positions
                       : (torch::arange(past, past + T, torch::TensorOptions().dtype(torch::kLong).device(dev)))
                             .unsqueeze(0)
                             .expand({B, T});
  auto valid = in.valid.defined() ? in.valid.to(torch::kBool)
                                  : torch::ones({B, T}, torch::TensorOptions().dtype(torch::kBool).device(dev));
  // One host read (a sync point on a GPU) for the largest position and the count of valid slots.
  const auto counts = positions.numel() ? torch::stack({positions.max(), valid.sum()}).to(torch::kCPU)
                                        : torch::zeros({2}, torch::kLong);
  const int64_t max_pos = counts[0].item<int64_t>(), n_valid = counts[1].item<int64_t>();
  if (max_pos >= cfg_.max_seq_len)
    fail("position ", max_pos, " is beyond the model's context of ", cfg_.max_seq_len, " tokens");

  // Keys this call can see: the cache's filled slots plus this call's tokens.
  torch::Tensor key_valid;  // (B, S)
  if (in.cache) {
    if (past + T > in.cache->capacity())
      fail("KV cache holds ", in.cache->capacity(), " tokens; ", past + T, " requested");
    in.cache->key_valid.narrow(1, past, T).copy_(valid);
    key_valid = in.cache->key_valid.narrow(1, 0, past + T);
  } else {
    key_valid = valid;
  }
  const int64_t S = key_valid.size(1);
  // Causal: query i (slot past + i) sees key slots j <= past + i.
  auto q_slot = torch::arange(past, past + T, torch::TensorOptions().dtype(torch::kLong).device(dev));
  auto k_slot = torch::arange(0, S, torch::TensorOptions().dtype(torch::kLong).device(dev));
  auto causal = k_slot.unsqueeze(0) <= q_slot.unsqueeze(1);                     // (T, S)
  auto allowed = causal.unsqueeze(0) & key_valid.unsqueeze(1);                  // (B, T, S)
  if (in.segments.defined()) {  // packed rows: attention stays inside each segment
    if (in.cache) fail("packed segments cannot be combined with a KV cache");
    allowed = allowed & (in.segments.unsqueeze(2) == in.segments.unsqueeze(1));  // (B, T, T)
  }
  auto blocked = allowed.logical_not().view({B, 1, 1, T, S});

  auto [cos, sin] = rotary_tables(positions, cfg_.head_size(), cfg_.rope_theta);  // (B, T, 1, Dh)
  if (dtype() == torch::kFloat64) cos = cos.to(torch::kFloat64), sin = sin.to(torch::kFloat64);

  // Padding skipped outside attention: every row-wise result of a valid token is the one the padded call
  // computes (rows of a matrix product do not depend on the other rows).
  TokenLayout layout;
  auto ids = in.ids;
  if (pack_padding && T > 1 && !in.segments.defined()) {  // not decode steps: the fused step's layout
    if (n_valid > 0 && 16 * (B * T - n_valid) >= B * T) {
      layout = {valid.reshape({-1}).nonzero().squeeze(1), B, T};  // (N)
      ids = layout.pack(in.ids).unsqueeze(0);                      // (1, N)
      cos = layout.pack(cos), sin = layout.pack(sin);              // (N, 1, Dh)
    }
  }
  auto h = storage_ == kernels::Storage::kNative
               ? model->embed_tokens(ids)
               : kernels::stored_embedding(ids, model->embed_tokens->weight, embed_scale, dtype());  // (B, T, D)
  if (layout.packed()) h = h.squeeze(0);  // (N, D)
  const bool checkpoint = checkpoint_layers && in.cache == nullptr && torch::GradMode::is_enabled();
  const int64_t query_block = causal_blocks && in.cache == nullptr ? causal_block_rows(T) : 0;  // (AttentionImpl)
  for (size_t l = 0; l < model->layers.size(); ++l) {
    auto& layer = model->layers[l];
    // By value: a checkpointed layer runs again in backward, after hidden() has returned.
    auto run_layer = [layer, cos, sin, blocked, cache = in.cache, adapters = in.adapters, l, layout,
                      query_block](const torch::Tensor& x) mutable {
      auto y = x + layer->self_attn(layer->input_layernorm(x), cos, sin, blocked, cache, int64_t(l), adapters, layout,
                                    query_block);
      return y + layer->mlp(layer->post_attention_layernorm(y), adapters);  // (B, T, D) or (N, D)
    };
    h = checkpoint ? checkpointed(run_layer, h, trainable_tensors(layer, in.adapters)) : run_layer(h);
  }
  if (in.cache) in.cache->length = past + T;
  h = model->norm(h);
  return layout.packed() ? layout.unpack(h) : h;  // (B, T, D), zeros at skipped padding
}

torch::Tensor CausalLMImpl::lm_logits(const torch::Tensor& hidden) {
  auto logits = lm_head ? lm_head(hidden)
                        : kernels::stored_linear(hidden, model->embed_tokens->weight, embed_scale);  // (B, T, V)
  return logits.to(wide(logits));
}

torch::Tensor CausalLMImpl::head_weight_for_products() {
  if (lm_head) return kernels::stored_linear_weight(lm_head->weight, lm_head->weight_scale, dtype());
  return kernels::stored_linear_weight(model->embed_tokens->weight, embed_scale, dtype());
}

torch::Tensor CausalLMImpl::token_logprobs(const ForwardInput& in, const torch::Tensor& targets, double temperature) {
  return token_logprobs_from_hidden(hidden(in), targets, temperature);
}

torch::Tensor CausalLMImpl::token_logprobs_from_hidden(const torch::Tensor& hidden, const torch::Tensor& targets,
                                                       double temperature) {
  const int64_t B = hidden.size(0), T = hidden.size(1), D = hidden.size(2);
  auto flat_targets = targets.reshape({-1});                             // (B*T)
  auto rows = flat_targets.ne(-100).nonzero().squeeze(1);                // (N)
  auto h = hidden.reshape({B * T, D}).index_select(0, rows);             // (N, D)
  auto picked = flat_targets.index_select(0, rows);                      // (N)
  torch::Tensor logp;                                                    // (N)
  if (!lm_head || (lm_head->adapters().empty() && !lm_head->bias.defined())) {
    logp = chunked_token_logprobs(h, head_weight_for_products(), picked, temperature);
  } else {  // an adapted head: the plain path
    logp = torch::log_softmax(lm_logits(h) / temperature, -1).gather(-1, picked.unsqueeze(-1)).squeeze(-1);
  }
  auto out = torch::zeros({B * T}, logp.options());
  return out.index_copy(0, rows, logp).view({B, T});
}

std::pair<torch::Tensor, torch::Tensor> CausalLMImpl::logprobs_and_entropy(const torch::Tensor& h,
                                                                           const torch::Tensor& targets,
                                                                           double temperature) {
  if (!lm_head || (lm_head->adapters().empty() && !lm_head->bias.defined()))
    return chunked_logprobs_and_entropy(h, head_weight_for_products(), targets, temperature);
  auto l = torch::log_softmax(lm_logits(h) / temperature, -1);  // (N, V): an adapted head, the plain path
  return {l.gather(-1, targets.unsqueeze(-1)).squeeze(-1), -(l.exp() * l).sum(-1)};
}

void CausalLMImpl::set_storage(kernels::Storage s) {
  if (s == storage_) return;
  if (storage_ != kernels::Storage::kNative) fail("weight storage is already ", kernels::storage_name(storage_));
  if (dtype() != torch::kFloat32)
    fail("weight storage ", kernels::storage_name(s), " needs model dtype float32 (the model is ", dtype(), ")");
  for (auto& [path, layer] : linear_layers()) layer->set_storage(s);
  if (lm_head) lm_head->set_storage(s);
  auto& emb = model->embed_tokens->weight;
  auto scale = kernels::store_weight(emb, s);
  if (scale.defined()) embed_scale = register_buffer("embed_scale", scale);
  // The stored weights, which nothing trains or resizes, in one block on 2 MiB pages: decode streams them.
  std::vector<torch::Tensor*> stored = {&emb};
  for (auto& [path, layer] : linear_layers()) stored.push_back(&layer->weight);
  if (lm_head) stored.push_back(&lm_head->weight);
  kernels::gather_on_huge_pages(stored);
  storage_ = s;
}

void KVCache::keep_rows(const torch::Tensor& rows) {
  const auto idx = rows.to(key_valid.device());
  for (auto& t : k) t = t.index_select(0, idx);
  for (auto& t : v) t = t.index_select(0, idx);
  key_valid = key_valid.index_select(0, idx);
}

KVCache CausalLMImpl::new_cache(int64_t batch, int64_t max_len) const {
  KVCache cache;
  auto opts = torch::TensorOptions().dtype(dtype()).device(device());
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    cache.k.push_back(torch::zeros({batch, cfg_.n_kv_heads, max_len, cfg_.head_size()}, opts));
    cache.v.push_back(torch::zeros({batch, cfg_.n_kv_heads, max_len, cfg_.head_size()}, opts));
  }
  cache.key_valid = torch::zeros({batch, max_len}, torch::TensorOptions().dtype(torch::kBool).device(device()));
  return cache;
}

std::vector<std::pair<std::string, lora::Linear>> CausalLMImpl::linear_layers() {
  std::vector<std::pair<std::string, lora::Linear>> out;
  for (size_t l = 0; l < model->layers.size(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto& layer = model->layers[l];
    out.emplace_back(p + "self_attn.q_proj", layer->self_attn->q_proj);
    out.emplace_back(p + "self_attn.k_proj", layer->self_attn->k_proj);
    out.emplace_back(p + "self_attn.v_proj", layer->self_attn->v_proj);
    out.emplace_back(p + "self_attn.o_proj", layer->self_attn->o_proj);
    out.emplace_back(p + "mlp.gate_proj", layer->mlp->gate_proj);
    out.emplace_back(p + "mlp.up_proj", layer->mlp->up_proj);
    out.emplace_back(p + "mlp.down_proj", layer->mlp->down_proj);
  }
  return out;
}

}  // namespace reglage::model
