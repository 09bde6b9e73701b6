#include "trainers/shared_prefix.h"

#include <algorithm>
#include <map>

namespace reglage::trainers {

namespace {

// Rows per chunk: whole prompt groups, added until the chunk holds at least this many rows.
constexpr int64_t kSharedChunkRows = 16;

struct PromptGroup {
  std::vector<int64_t> prompt;  // the shared prompt tokens
  std::vector<int64_t> rows;    // rollout rows that start with it
};

// Rows grouped by their prompt (ids before the first response position), in order of first appearance.
std::vector<PromptGroup> prompt_groups(const Rollout& ro) {
  const int64_t n = ro.ids.size(0);
  auto ids = ro.ids.accessor<int64_t, 2>();
  auto index = ro.index.accessor<int64_t, 2>();
  std::map<std::vector<int64_t>, size_t> seen;
  std::vector<PromptGroup> groups;
  for (int64_t b = 0; b < n; ++b) {
    const int64_t P = index[b][0] + 1;  // index[b][0] = prompt length - 1
    std::vector<int64_t> prompt(P);
    for (int64_t t = 0; t < P; ++t) prompt[size_t(t)] = ids[b][t];
    auto [it, added] = seen.emplace(prompt, groups.size());
    if (added) groups.push_back({std::move(prompt), {}});
    groups[it->second].rows.push_back(b);
  }
  return groups;
}

// One chunk of whole groups: (c, R) log-probs of its rows (in the order of `rows`).
torch::Tensor chunk_logprobs(model::CausalLM& m, const Rollout& ro, const std::vector<const PromptGroup*>& groups,
                             const std::vector<int64_t>& rows, const std::vector<int64_t>& source,
                             const model::AdapterSet& adapters, double temperature) {
  const int64_t U = int64_t(groups.size()), c = int64_t(rows.size()), R = ro.mask.size(1);
  const auto row_idx = torch::tensor(rows, torch::kLong);
  const auto mask = ro.mask.index_select(0, row_idx);        // (c, R)
  const auto targets = ro.targets.index_select(0, row_idx);  // (c, R)
  const auto lengths = mask.sum(1).to(torch::kLong);         // (c) response lengths
  const int64_t Rm = std::max<int64_t>(1, lengths.max().item<int64_t>());

  // 1. the distinct prompts, left-padded to the longest (positions from 0), into a cache with room for the
  //    longest response; the last prompt position's state predicts each row's first response token.
  int64_t P = 0;
  for (const auto* g : groups) P = std::max<int64_t>(P, int64_t(g->prompt.size()));
  auto ids = torch::zeros({U, P}, torch::kLong), positions = torch::zeros({U, P}, torch::kLong);
  auto valid = torch::zeros({U, P}, torch::kBool);
  for (int64_t u = 0; u < U; ++u) {
    const auto& prompt = groups[size_t(u)]->prompt;
    const int64_t len = int64_t(prompt.size()), pad = P - len;
    ids[u].narrow(0, pad, len).copy_(torch::tensor(prompt, torch::kLong));
    positions[u].narrow(0, pad, len).copy_(torch::arange(len, torch::kLong));
    valid[u].narrow(0, pad, len).fill_(true);
  }
  const auto dev = m->device();
  model::KVCache cache = m->new_cache(U, P + Rm);
  auto last = m->hidden({ids.to(dev), positions.to(dev), valid.to(dev), &cache, adapters}).select(1, P - 1);  // (U, D)
  const auto src = torch::tensor(source, torch::kLong).to(dev);  // (c) each row's prompt
  cache.keep_rows(src);

  // 2. every row's response tokens but its last (nothing after it is predicted) on its prompt's cache:
  //    token r sits at position prompt_len + r and its state predicts token r + 1.
  std::vector<torch::Tensor> states = {last.index_select(0, src).unsqueeze(1)};  // (c, 1, D)
  if (Rm > 1) {
    auto resp = targets.narrow(1, 0, Rm - 1);                                       // (c, Rm-1)
    auto resp_valid = torch::arange(Rm - 1).unsqueeze(0) < (lengths - 1).unsqueeze(1);  // (c, Rm-1)
    auto prompt_len = ro.index.index_select(0, row_idx).select(1, 0) + 1;           // (c)
    auto resp_pos = prompt_len.unsqueeze(1) + torch::arange(Rm - 1).unsqueeze(0);  // (c, Rm-1)
    states.push_back(m->hidden({resp.to(dev), resp_pos.to(dev), resp_valid.to(dev), &cache, adapters}));
  }
  auto hidden = torch::cat(states, 1);  // (c, Rm, D): the state predicting response token r
  auto at = torch::where(mask.narrow(1, 0, Rm) > 0, targets.narrow(1, 0, Rm), torch::full_like(targets.narrow(1, 0, Rm), -100));
  auto logp = m->token_logprobs_from_hidden(hidden, at.to(dev), temperature).to(torch::kCPU).to(torch::kFloat32);
  auto out = torch::zeros({c, R}, torch::kFloat32);
  out.narrow(1, 0, Rm).copy_(logp);
  return out * mask;  // (c, R)
}

}  // namespace

torch::Tensor shared_prefix_logprobs(model::CausalLM& m, const Rollout& ro, const model::AdapterSet& adapters,
                                     double temperature) {
  const auto groups = prompt_groups(ro);
  if (groups.size() == size_t(ro.ids.size(0))) return {};  // every prompt once: nothing to share
  torch::NoGradGuard no_grad;
  auto out = torch::zeros(ro.mask.sizes(), torch::kFloat32);  // (n, R)
  for (size_t g = 0; g < groups.size();) {
    std::vector<const PromptGroup*> chunk;
    std::vector<int64_t> rows, source;
    for (; g < groups.size() && int64_t(rows.size()) < kSharedChunkRows; ++g) {
      for (int64_t r : groups[g].rows) rows.push_back(r), source.push_back(int64_t(chunk.size()));
      chunk.push_back(&groups[g]);
    }
    out.index_copy_(0, torch::tensor(rows, torch::kLong), chunk_logprobs(m, ro, chunk, rows, source, adapters, temperature));
  }
  return out;
}

}  // namespace reglage::trainers
