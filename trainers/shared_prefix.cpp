#include "trainers/shared_prefix.h"

#include <algorithm>

#include "framework/generate/prefill.h"

namespace reglage::trainers {

namespace {

// Rows per chunk: whole prompt groups, added until the chunk holds at least this many rows.
constexpr int64_t kSharedChunkRows = 16;

// Whole prompt groups of the rows of idx.
struct SharedChunk {
  generate::PromptGroups prompts;  // the chunk's distinct prompts; source (c): each row's
  std::vector<int64_t> at;         // (c) the rows' positions within idx
};

// The rows idx (b) grouped by their prompt (ids before the first response position), in order of first
// appearance, whole groups per chunk until it holds at least kSharedChunkRows rows (the last may hold
// fewer). Empty when no two rows share a prompt.
std::vector<SharedChunk> shared_chunks(const Rollout& ro, const torch::Tensor& idx) {
  auto ids = ro.ids.accessor<int64_t, 2>();
  auto index = ro.index.accessor<int64_t, 2>();
  auto rows = idx.accessor<int64_t, 1>();
  std::vector<std::vector<int64_t>> prompts;  // (b)
  for (int64_t i = 0; i < idx.size(0); ++i) {
    const int64_t b = rows[i], P = index[b][0] + 1;  // index[b][0] = prompt length - 1
    prompts.emplace_back(ids[b].data(), ids[b].data() + P);
  }
  const auto all = generate::group_prompts(prompts);
  const size_t U = all.distinct.size();
  if (U == prompts.size()) return {};
  std::vector<std::vector<int64_t>> members(U);  // positions within idx of each distinct prompt's rows
  for (size_t i = 0; i < prompts.size(); ++i) members[size_t(all.source[i])].push_back(int64_t(i));
  std::vector<SharedChunk> chunks;
  for (size_t u = 0; u < U;) {
    SharedChunk c;
    for (; u < U && int64_t(c.at.size()) < kSharedChunkRows; ++u) {
      for (int64_t i : members[u]) c.at.push_back(i), c.prompts.source.push_back(int64_t(c.prompts.distinct.size()));
      c.prompts.distinct.push_back(all.distinct[u]);
    }
    chunks.push_back(std::move(c));
  }
  return chunks;
}

// The states that predict each response token of the chunk's rows: (c, Rm, D), Rm the longest response;
// with gradients when grad mode is on. rows: (c) rollout rows.
torch::Tensor predicting_states(model::CausalLM& m, const Rollout& ro, const SharedChunk& chunk,
                                const torch::Tensor& rows, const model::AdapterSet& adapters) {
  const auto lengths = ro.mask.index_select(0, rows).sum(1).to(torch::kLong);  // (c) response lengths
  const int64_t Rm = std::max<int64_t>(1, lengths.max().item<int64_t>());

  // 1. the distinct prompts into a cache with room for the longest response, each row on its prompt's
  //    cache rows; the last prompt position's state predicts each row's first response token.
  auto prefill = generate::prefill_prompts(m, chunk.prompts, Rm, adapters);
  const auto dev = m->device();
  const auto src = torch::tensor(chunk.prompts.source, torch::kLong).to(dev);  // (c) each row's prompt

  // 2. every row's response tokens but its last (nothing after it is predicted) on its prompt's cache:
  //    token r sits at position prompt_len + r and its state predicts token r + 1.
  std::vector<torch::Tensor> states = {prefill.last.index_select(0, src).unsqueeze(1)};  // (c, 1, D)
  if (Rm > 1) {
    auto resp = ro.targets.index_select(0, rows).narrow(1, 0, Rm - 1);                  // (c, Rm-1)
    auto resp_valid = torch::arange(Rm - 1).unsqueeze(0) < (lengths - 1).unsqueeze(1);  // (c, Rm-1)
    auto prompt_len = ro.index.index_select(0, rows).select(1, 0) + 1;                  // (c)
    auto resp_pos = prompt_len.unsqueeze(1) + torch::arange(Rm - 1).unsqueeze(0);      // (c, Rm-1)
    states.push_back(m->hidden({resp.to(dev), resp_pos.to(dev), resp_valid.to(dev), &prefill.cache, adapters}));
  }
  return torch::cat(states, 1);  // (c, Rm, D)
}

bool adapters_drop(model::CausalLM& m, const model::AdapterSet& adapters) {
  for (auto& [path, layer] : m->linear_layers())
    for (const auto& name : adapters)
      if (layer->has_adapter(name) && layer->adapter(name).dropout > 0) return true;
  return false;
}

}  // namespace

torch::Tensor shared_prefix_logprobs(model::CausalLM& m, const Rollout& ro, const model::AdapterSet& adapters,
                                     double temperature) {
  const int64_t n = ro.ids.size(0), R = ro.mask.size(1);
  const auto chunks = shared_chunks(ro, torch::arange(n, torch::kLong));
  if (chunks.empty()) return {};  // every prompt once: nothing to share
  torch::NoGradGuard no_grad;
  auto out = torch::zeros({n, R}, torch::kFloat32);  // (n, R)
  for (const auto& chunk : chunks) {
    const auto rows = torch::tensor(chunk.at, torch::kLong);  // (c): idx is 0..n-1
    const auto mask = ro.mask.index_select(0, rows);          // (c, R)
    auto states = predicting_states(m, ro, chunk, rows, adapters);  // (c, Rm, D)
    const int64_t Rm = states.size(1);
    auto at = masked_targets(ro.targets.index_select(0, rows).narrow(1, 0, Rm), mask.narrow(1, 0, Rm));  // (c, Rm)
    auto logp = m->token_logprobs_from_hidden(states, at.to(m->device()), temperature).to(torch::kCPU);
    auto part = torch::zeros({rows.size(0), R}, torch::kFloat32);
    part.narrow(1, 0, Rm).copy_(logp);
    out.index_copy_(0, rows, part * mask);
  }
  return out;
}

std::optional<PolicyOutput> shared_prefix_policy(model::CausalLM& m, const Rollout& ro, const torch::Tensor& idx,
                                                 const RolloutSpec& spec) {
  if (m->checkpoint_layers || adapters_drop(m, spec.actor)) return std::nullopt;
  const auto chunks = shared_chunks(ro, idx);
  if (chunks.empty()) return std::nullopt;
  const int64_t R = ro.mask.size(1);
  std::vector<RowChunk> placed;  // only .rows: what gather_chunks reorders by
  std::vector<torch::Tensor> logps, entropies;
  for (const auto& chunk : chunks) {
    RowChunk c;
    c.rows = torch::tensor(chunk.at, torch::kLong);  // (c) positions within idx
    const auto rows = idx.index_select(0, c.rows);   // (c) rollout rows
    auto states = predicting_states(m, ro, chunk, rows, spec.actor);  // (c, Rm, D), with grad
    const int64_t Rm = states.size(1);
    auto out = response_logprobs(m, states, ro.targets.index_select(0, rows).narrow(1, 0, Rm),
                                 ro.mask.index_select(0, rows).narrow(1, 0, Rm), spec.temperature);  // (c, Rm)
    logps.push_back(torch::constant_pad_nd(out.logp, {0, R - Rm}));  // (c, R)
    entropies.push_back(torch::constant_pad_nd(out.entropy, {0, R - Rm}));
    placed.push_back(std::move(c));
  }
  return PolicyOutput{gather_chunks(placed, logps), gather_chunks(placed, entropies)};
}

}  // namespace reglage::trainers
