#include "trainers/shared_prefix.h"

#include <algorithm>
#include <map>

namespace reglage::trainers {

namespace {

// Rows per chunk: whole prompt groups, added until the chunk holds at least this many rows.
constexpr int64_t kSharedChunkRows = 16;

struct PromptGroup {
  std::vector<int64_t> prompt;  // the shared prompt tokens
  std::vector<int64_t> at;      // positions within idx of the rows that start with it
};

// The rows idx (b) grouped by their prompt (ids before the first response position), in order of first
// appearance.
std::vector<PromptGroup> prompt_groups(const Rollout& ro, const torch::Tensor& idx) {
  auto ids = ro.ids.accessor<int64_t, 2>();
  auto index = ro.index.accessor<int64_t, 2>();
  auto rows = idx.accessor<int64_t, 1>();
  std::map<std::vector<int64_t>, size_t> seen;
  std::vector<PromptGroup> groups;
  for (int64_t i = 0; i < idx.size(0); ++i) {
    const int64_t b = rows[i], P = index[b][0] + 1;  // index[b][0] = prompt length - 1
    std::vector<int64_t> prompt(ids[b].data(), ids[b].data() + P);
    auto [it, added] = seen.emplace(prompt, groups.size());
    if (added) groups.push_back({std::move(prompt), {}});
    groups[it->second].at.push_back(i);
  }
  return groups;
}

// Whole groups, at least kSharedChunkRows rows per chunk (the last may hold fewer).
struct SharedChunk {
  std::vector<const PromptGroup*> groups;
  std::vector<int64_t> at;      // (c) positions within idx
  std::vector<int64_t> source;  // (c) each row's group within the chunk
};
std::vector<SharedChunk> shared_chunks(const std::vector<PromptGroup>& groups) {
  std::vector<SharedChunk> chunks;
  for (size_t g = 0; g < groups.size();) {
    SharedChunk c;
    for (; g < groups.size() && int64_t(c.at.size()) < kSharedChunkRows; ++g) {
      for (int64_t i : groups[g].at) c.at.push_back(i), c.source.push_back(int64_t(c.groups.size()));
      c.groups.push_back(&groups[g]);
    }
    chunks.push_back(std::move(c));
  }
  return chunks;
}

// The states that predict each response token of the chunk's rows: (c, Rm, D), Rm the longest response;
// with gradients when grad mode is on. rows: (c) rollout rows.
torch::Tensor predicting_states(model::CausalLM& m, const Rollout& ro, const SharedChunk& chunk,
                                const torch::Tensor& rows, const model::AdapterSet& adapters) {
  const int64_t U = int64_t(chunk.groups.size());
  const auto lengths = ro.mask.index_select(0, rows).sum(1).to(torch::kLong);  // (c) response lengths
  const int64_t Rm = std::max<int64_t>(1, lengths.max().item<int64_t>());

  // 1. the distinct prompts, left-padded to the longest (positions from 0), into a cache with room for the
  //    longest response; the last prompt position's state predicts each row's first response token.
  int64_t P = 0;
  for (const auto* g : chunk.groups) P = std::max<int64_t>(P, int64_t(g->prompt.size()));
  auto ids = torch::zeros({U, P}, torch::kLong), positions = torch::zeros({U, P}, torch::kLong);
  auto valid = torch::zeros({U, P}, torch::kBool);
  for (int64_t u = 0; u < U; ++u) {
    const auto& prompt = chunk.groups[size_t(u)]->prompt;
    const int64_t len = int64_t(prompt.size()), pad = P - len;
    ids[u].narrow(0, pad, len).copy_(torch::tensor(prompt, torch::kLong));
    positions[u].narrow(0, pad, len).copy_(torch::arange(len, torch::kLong));
    valid[u].narrow(0, pad, len).fill_(true);
  }
  const auto dev = m->device();
  model::KVCache cache = m->new_cache(U, P + Rm);
  auto last = m->hidden({ids.to(dev), positions.to(dev), valid.to(dev), &cache, adapters}).select(1, P - 1);  // (U, D)
  const auto src = torch::tensor(chunk.source, torch::kLong).to(dev);  // (c) each row's prompt
  cache.keep_rows(src);

  // 2. every row's response tokens but its last (nothing after it is predicted) on its prompt's cache:
  //    token r sits at position prompt_len + r and its state predicts token r + 1.
  std::vector<torch::Tensor> states = {last.index_select(0, src).unsqueeze(1)};  // (c, 1, D)
  if (Rm > 1) {
    auto resp = ro.targets.index_select(0, rows).narrow(1, 0, Rm - 1);                  // (c, Rm-1)
    auto resp_valid = torch::arange(Rm - 1).unsqueeze(0) < (lengths - 1).unsqueeze(1);  // (c, Rm-1)
    auto prompt_len = ro.index.index_select(0, rows).select(1, 0) + 1;                  // (c)
    auto resp_pos = prompt_len.unsqueeze(1) + torch::arange(Rm - 1).unsqueeze(0);      // (c, Rm-1)
    states.push_back(m->hidden({resp.to(dev), resp_pos.to(dev), resp_valid.to(dev), &cache, adapters}));
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
  const auto groups = prompt_groups(ro, torch::arange(n, torch::kLong));
  if (int64_t(groups.size()) == n) return {};  // every prompt once: nothing to share
  torch::NoGradGuard no_grad;
  auto out = torch::zeros({n, R}, torch::kFloat32);  // (n, R)
  for (const auto& chunk : shared_chunks(groups)) {
    const auto rows = torch::tensor(chunk.at, torch::kLong);  // (c): idx is 0..n-1
    const auto mask = ro.mask.index_select(0, rows);          // (c, R)
    auto states = predicting_states(m, ro, chunk, rows, adapters);  // (c, Rm, D)
    const int64_t Rm = states.size(1);
    auto targets = ro.targets.index_select(0, rows).narrow(1, 0, Rm);
    auto at = torch::where(mask.narrow(1, 0, Rm) > 0, targets, torch::full_like(targets, -100));  // (c, Rm)
    auto logp = m->token_logprobs_from_hidden(states, at.to(m->device()), temperature).to(torch::kCPU);
    auto part = torch::zeros({rows.size(0), R}, torch::kFloat32);
    part.narrow(1, 0, Rm).copy_(logp);
    out.index_copy_(0, rows, part * mask);
  }
  return out;
}

std::optional<PolicyOutput> shared_prefix_policy(model::CausalLM& m, const Rollout& ro, const torch::Tensor& idx,
                                                 const RolloutSpec& spec) {
  const auto groups = prompt_groups(ro, idx);
  if (int64_t(groups.size()) == idx.size(0) || m->checkpoint_layers || adapters_drop(m, spec.actor)) return std::nullopt;
  const int64_t R = ro.mask.size(1);
  std::vector<RowChunk> placed;  // only .rows: what gather_chunks reorders by
  std::vector<torch::Tensor> logps, entropies;
  for (const auto& chunk : shared_chunks(groups)) {
    RowChunk c;
    c.rows = torch::tensor(chunk.at, torch::kLong);  // (c) positions within idx
    const auto rows = idx.index_select(0, c.rows);   // (c) rollout rows
    auto states = predicting_states(m, ro, chunk, rows, spec.actor);  // (c, Rm, D), with grad
    const int64_t b = states.size(0), Rm = states.size(1), D = states.size(2);
    // The LM head only on the positions of real response tokens: (c*Rm, D) -> (N, D) -> (N) -> (c, R).
    auto mask = ro.mask.index_select(0, rows).narrow(1, 0, Rm);                 // (c, Rm)
    auto picked = mask.reshape({-1}).gt(0).nonzero().squeeze(1);                 // (N)
    auto targets = ro.targets.index_select(0, rows).narrow(1, 0, Rm).reshape({-1}).index_select(0, picked);
    auto [logp, entropy] = m->logprobs_and_entropy(states.reshape({b * Rm, D}).index_select(0, picked),
                                                   targets.to(m->device()), spec.temperature);
    auto place = [&](const torch::Tensor& x) {  // (N) -> (c, R), 0 elsewhere
      auto full = torch::zeros({b * Rm}, x.options()).index_copy(0, picked.to(x.device()), x).view({b, Rm});
      return torch::constant_pad_nd(full, {0, R - Rm}).to(torch::kFloat32);
    };
    logps.push_back(place(logp));
    entropies.push_back(place(entropy));
    placed.push_back(std::move(c));
  }
  return PolicyOutput{gather_chunks(placed, logps), gather_chunks(placed, entropies)};
}

}  // namespace reglage::trainers
