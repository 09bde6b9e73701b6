#include "trainers/ppo_rollout.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "framework/core/error.h"
#include "framework/core/progress.h"
#include "framework/data/sft_data.h"
#include "framework/generate/generate.h"
#include "framework/rl/ppo_math.h"
#include "trainers/shared_prefix.h"

namespace reglage::trainers {

namespace F = torch::nn::functional;

namespace {

bool has_dummy_prefix(const tokenizer::Tokenizer& tok) {
  const std::string a = tok.decode(tok.encode("a", false, false));
  return a.size() == 2 && a[0] == ' ';
}

}  // namespace

std::string response_text(const tokenizer::Tokenizer& tok, const std::vector<int64_t>& tokens) {
  const auto stops = tok.stop_ids();
  std::vector<int64_t> kept;
  for (int64_t t : tokens)
    if (std::find(stops.begin(), stops.end(), t) == stops.end()) kept.push_back(t);
  std::string text = tok.decode(kept);
  static thread_local const tokenizer::Tokenizer* cached = nullptr;
  static thread_local bool prefix = false;
  if (cached != &tok) cached = &tok, prefix = has_dummy_prefix(tok);
  if (prefix && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

Rollout sample_rollout(model::CausalLM& m, const data::PromptDataset& prompts, const std::vector<int64_t>& rows,
                       const RolloutSpec& spec, const tokenizer::Tokenizer& tok) {
  torch::NoGradGuard no_grad;
  core::ProgressOp in_op("generate");
  m->eval();
  std::vector<std::vector<int64_t>> ids;
  for (int64_t r : rows) ids.push_back(prompts.rows[size_t(r)].ids);
  generate::SamplingParams params;
  params.max_new_tokens = spec.max_new_tokens;
  params.temperature = spec.temperature;
  params.top_p = spec.top_p;
  params.seed = spec.seed;
  params.stop_ids = tok.stop_ids();
  params.pad_id = spec.pad_id;
  const auto gens = generate::generate(m, ids, params, spec.actor);

  const int64_t n = int64_t(rows.size());
  int64_t L = 1, R = 1;
  for (int64_t b = 0; b < n; ++b) {
    L = std::max<int64_t>(L, int64_t(ids[b].size() + gens[b].tokens.size()));
    R = std::max<int64_t>(R, int64_t(gens[b].tokens.size()));
  }
  Rollout ro;
  ro.ids = torch::full({n, L}, spec.pad_id, torch::kLong);
  ro.valid = torch::zeros({n, L}, torch::kBool);
  ro.index = torch::zeros({n, R}, torch::kLong);
  ro.targets = torch::full({n, R}, spec.pad_id, torch::kLong);
  ro.mask = torch::zeros({n, R}, torch::kFloat32);
  ro.old_logp = torch::zeros({n, R}, torch::kFloat32);
  auto old_a = ro.old_logp.accessor<float, 2>();
  auto ids_a = ro.ids.accessor<int64_t, 2>();
  auto valid_a = ro.valid.accessor<bool, 2>();
  auto index_a = ro.index.accessor<int64_t, 2>();
  auto targets_a = ro.targets.accessor<int64_t, 2>();
  auto mask_a = ro.mask.accessor<float, 2>();
  for (int64_t b = 0; b < n; ++b) {
    const auto& p = ids[b];
    const auto& g = gens[b].tokens;
    const int64_t P = int64_t(p.size()), G = int64_t(g.size());
    for (int64_t t = 0; t < P; ++t) ids_a[b][t] = p[t], valid_a[b][t] = true;
    for (int64_t r = 0; r < G; ++r) {
      ids_a[b][P + r] = g[r];
      valid_a[b][P + r] = true;
      targets_a[b][r] = g[r];
      mask_a[b][r] = 1.0f;
      old_a[b][r] = gens[b].logprobs[size_t(r)];
    }
    for (int64_t r = 0; r < R; ++r) index_a[b][r] = std::min(P - 1 + r, L - 1);
    const auto& row = prompts.rows[size_t(rows[b])];
    ro.reward_inputs.push_back({row.text, response_text(tok, g), row.reference});
    ro.prompt_tokens += P;
  }
  return ro;
}

std::vector<RowChunk> length_chunks(const Rollout& ro, const torch::Tensor& idx, int64_t chunk_rows) {
  if (chunk_rows < 1) fail("length_chunks: chunk_rows = ", chunk_rows, " (must be >= 1)");
  // A row's tokens are one run from column 0 (prompt then response), so its length is its count of valid.
  const auto lengths = ro.valid.index_select(0, idx).sum(1);           // (b)
  const auto order = std::get<1>(lengths.sort(/*stable=*/true, 0, false));  // (b) shortest first
  const int64_t b = idx.size(0);
  std::vector<RowChunk> chunks;
  for (int64_t s = 0; s < b; s += chunk_rows) {
    RowChunk c;
    c.rows = order.narrow(0, s, std::min(chunk_rows, b - s));  // (c) positions within idx
    c.source = idx.index_select(0, c.rows);                    // (c) rollout rows
    const int64_t len = std::max<int64_t>(1, lengths.index_select(0, c.rows).max().item<int64_t>());
    c.ids = ro.ids.index_select(0, c.source).narrow(1, 0, len);      // (c, len)
    c.valid = ro.valid.index_select(0, c.source).narrow(1, 0, len);  // (c, len)
    // Response positions lie below the row's length; the padding entries past a response's end (masked)
    // are clamped into the cut.
    c.index = ro.index.index_select(0, c.source).clamp_max(len - 1);  // (c, R)
    c.targets = ro.targets.index_select(0, c.source);                 // (c, R)
    c.mask = ro.mask.index_select(0, c.source);                       // (c, R)
    chunks.push_back(std::move(c));
  }
  return chunks;
}

torch::Tensor gather_chunks(const std::vector<RowChunk>& chunks, const std::vector<torch::Tensor>& parts) {
  std::vector<torch::Tensor> rows;
  for (const auto& c : chunks) rows.push_back(c.rows);
  const auto order = torch::cat(rows);                                  // (b) position of each sorted row
  const auto inverse = torch::empty_like(order).scatter_(0, order, torch::arange(order.size(0)));  // (b)
  return torch::cat(parts).index_select(0, inverse);                    // (b, ...) in idx order
}

namespace {

// Response-aligned values of the rollout rows idx (b), computed chunk by chunk: f(chunk) -> (c, R); -> (b, R).
torch::Tensor over_rows(const Rollout& ro, const torch::Tensor& idx,
                        const std::function<torch::Tensor(const RowChunk&)>& f) {
  const auto chunks = length_chunks(ro, idx, kPassChunkRows);
  std::vector<torch::Tensor> parts;
  for (const auto& c : chunks) parts.push_back(f(c));
  return gather_chunks(chunks, parts);
}

}  // namespace

torch::Tensor masked_targets(const torch::Tensor& targets, const torch::Tensor& mask) {
  return torch::where(mask > 0, targets, torch::full_like(targets, -100));  // (c, r)
}

void evaluate_logprobs(model::CausalLM& m, Rollout& ro, const RolloutSpec& spec) {
  torch::NoGradGuard no_grad;
  m->eval();
  const auto logp = [&](const model::AdapterSet& adapters) {  // (n, R); the LM head only on response positions
    return over_rows(ro, torch::arange(ro.ids.size(0)), [&](const RowChunk& c) {
      // The response tokens at the positions that predict them, -100 elsewhere: (c, len). Padding entries of
      // index (past a response's end) carry -100 and never share a position with a response token.
      auto at_positions =
          torch::full(c.ids.sizes(), -100, torch::kLong).scatter_(1, c.index, masked_targets(c.targets, c.mask));
      return m->token_logprobs({c.ids, {}, c.valid, nullptr, adapters}, at_positions, spec.temperature)
                 .gather(1, c.index).to(torch::kFloat32) * c.mask;  // (c, R)
    });
  };
  // Rows that share prompts (GRPO) run each prompt once; otherwise row by row.
  auto shared_or_rows = [&](const model::AdapterSet& adapters) {
    auto shared = shared_prefix_logprobs(m, ro, adapters, spec.temperature);
    return shared.defined() ? shared : logp(adapters);
  };
  if (!ro.old_logp.defined()) ro.old_logp = shared_or_rows(spec.actor);
  ro.ref_logp = shared_or_rows({});
}

void evaluate_rollout(model::CausalLM& m, model::ScalarHead& value_head, Rollout& ro, const RolloutSpec& spec) {
  evaluate_logprobs(m, ro, spec);
  torch::NoGradGuard no_grad;
  m->eval();
  ro.values = over_rows(ro, torch::arange(ro.ids.size(0)), [&](const RowChunk& c) {
    auto hidden = m->hidden({c.ids, {}, c.valid, nullptr, spec.critic});  // (c, len, D)
    return value_head(hidden).gather(1, c.index).to(torch::kFloat32) * c.mask;
  });  // (n, R)
}

PolicyOutput response_logprobs(model::CausalLM& m, const torch::Tensor& states, const torch::Tensor& targets,
                               const torch::Tensor& mask, double temperature) {
  const int64_t b = states.size(0), r = states.size(1), D = states.size(2);
  const auto dev = states.device();
  auto picked = mask.reshape({-1}).gt(0).nonzero().squeeze(1).to(dev);  // (N) flat positions b * r + t
  auto [logp, entropy] = m->logprobs_and_entropy(states.reshape({b * r, D}).index_select(0, picked),
                                                 targets.reshape({-1}).to(dev).index_select(0, picked), temperature);
  auto place = [&](const torch::Tensor& x) {  // (N) -> (c, r), 0 elsewhere
    return torch::zeros({b * r}, x.options()).index_copy(0, picked, x).view({b, r}).to(torch::kFloat32);
  };
  return {place(logp), place(entropy)};
}

PolicyOutput forward_policy(model::CausalLM& m, const Rollout& ro, const torch::Tensor& idx, const RolloutSpec& spec) {
  // Rows that share prompts (GRPO) run each prompt once; otherwise row by row.
  if (auto shared = shared_prefix_policy(m, ro, idx, spec)) return *shared;
  // Length-sorted chunks of the rows, each cut to its longest row; one graph over all of them, so the
  // backward is that of the whole minibatch.
  const auto chunks = length_chunks(ro, idx, kPassChunkRows);
  std::vector<torch::Tensor> logps, entropies;
  for (const auto& c : chunks) {
    const int64_t b = c.index.size(0), R = c.index.size(1);
    auto hidden = m->hidden({c.ids, {}, c.valid, nullptr, spec.actor});  // (c, len, D)
    const int64_t D = hidden.size(2);
    auto at = hidden.gather(1, c.index.to(hidden.device()).unsqueeze(-1).expand({b, R, D}));  // (c, R, D)
    auto out = response_logprobs(m, at, c.targets, c.mask, spec.temperature);  // (c, R) each
    logps.push_back(out.logp);
    entropies.push_back(out.entropy);
  }
  return {gather_chunks(chunks, logps), gather_chunks(chunks, entropies)};
}

MinibatchOutput forward_minibatch(model::CausalLM& m, model::ScalarHead& value_head, const Rollout& ro,
                                  const torch::Tensor& idx, const RolloutSpec& spec) {
  auto policy = forward_policy(m, ro, idx, spec);
  MinibatchOutput out;
  out.logp = policy.logp;
  out.entropy = policy.entropy;
  out.values = over_rows(ro, idx, [&](const RowChunk& c) {
    auto hidden = m->hidden({c.ids, {}, c.valid, nullptr, spec.critic});  // (c, len, D)
    return value_head(hidden).gather(1, c.index).to(torch::kFloat32);    // (c, R)
  });  // (b, R)
  return out;
}

void check_finite(const config::StageConfig& st, int64_t iteration, const std::string& what, double x) {
  if (!std::isfinite(x))
    fail("stage '", st.name, "' iteration ", iteration, ": ", what, " = ", x, " (not finite); the run stops here");
}

ScoredRollout score_rollout(StageContext& ctx, reward::RewardSource& reward, reward::RewardNormalizer& normalizer,
                            const Rollout& ro, int64_t iteration) {
  const auto& st = ctx.stage;
  ScoredRollout out;
  out.raw = reward.score(ro.reward_inputs);
  if (out.raw.size() != ro.reward_inputs.size())
    fail("stage '", st.name, "' iteration ", iteration, ": the reward returned ", out.raw.size(), " scores for ",
         ro.reward_inputs.size(), " responses");
  for (double r : out.raw) {
    check_finite(st, iteration, "reward", r);
    out.raw_sum += r, out.raw_sq += r * r;
  }
  if (st.reward.normalize) {
    // Global moments of this batch, merged into the running statistics identically on every rank.
    auto t = torch::tensor({double(out.raw.size()), out.raw_sum, out.raw_sq}, torch::kFloat64);
    ctx.comm.all_reduce_sum(t, "allreduce reward moments");
    const double n = t[0].item<double>(), mean = t[1].item<double>() / n;
    normalizer.merge(int64_t(n), mean, std::max(0.0, t[2].item<double>() - n * mean * mean));
    out.shaped = normalizer.apply(out.raw);
  } else {
    out.shaped = reward::clip_rewards(out.raw, st.reward.clip);
  }
  return out;
}

double evaluate_prompts(StageContext& ctx, model::CausalLM& m, const data::PromptDataset& prompts,
                        const RolloutSpec& spec, const tokenizer::Tokenizer& tok, reward::RewardSource& reward) {
  std::vector<int64_t> all(prompts.rows.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
  const auto mine = data::shard(all, ctx.comm.rank(), ctx.comm.size());
  double sum = 0;
  if (!mine.empty()) {
    torch::NoGradGuard no_grad;
    m->eval();
    std::vector<std::vector<int64_t>> ids;
    for (int64_t r : mine) ids.push_back(prompts.rows[size_t(r)].ids);
    generate::SamplingParams params;
    params.max_new_tokens = spec.max_new_tokens;
    params.temperature = 0;
    params.stop_ids = tok.stop_ids();
    params.pad_id = spec.pad_id;
    const auto gens = generate::generate(m, ids, params, spec.actor);
    std::vector<reward::RewardInput> inputs;
    for (size_t i = 0; i < mine.size(); ++i) {
      const auto& row = prompts.rows[size_t(mine[i])];
      inputs.push_back({row.text, response_text(tok, gens[i].tokens), row.reference});
    }
    for (double r : reward.score(inputs)) sum += r;
  }
  m->train();
  auto t = torch::tensor({sum}, torch::kFloat64);
  ctx.comm.all_reduce_sum(t, "allreduce eval reward");
  return t[0].item<double>() / double(prompts.rows.size());
}

}  // namespace reglage::trainers
