#include "framework/generate/prefill.h"

#include <algorithm>
#include <map>

namespace reglage::generate {

PromptGroups group_prompts(const std::vector<std::vector<int64_t>>& prompts) {
  PromptGroups g;
  std::map<std::vector<int64_t>, int64_t> seen;
  g.source.reserve(prompts.size());
  for (const auto& p : prompts) {
    auto [it, added] = seen.emplace(p, int64_t(g.distinct.size()));
    if (added) g.distinct.push_back(p);
    g.source.push_back(it->second);
  }
  return g;
}

Prefill prefill_prompts(model::CausalLM& m, const PromptGroups& groups, int64_t room,
                        const model::AdapterSet& adapters, int64_t pad_id) {
  const int64_t U = int64_t(groups.distinct.size()), B = int64_t(groups.source.size());
  int64_t P = 0;  // longest prompt
  for (const auto& p : groups.distinct) P = std::max<int64_t>(P, int64_t(p.size()));

  // Left padding: prompt u occupies the last len slots of the first P; its positions start at 0.
  auto ids = torch::full({U, P}, pad_id, torch::kLong), positions = torch::zeros({U, P}, torch::kLong);  // (U, P)
  auto valid = torch::zeros({U, P}, torch::kBool);                                                        // (U, P)
  auto ids_a = ids.accessor<int64_t, 2>(), positions_a = positions.accessor<int64_t, 2>();
  auto valid_a = valid.accessor<bool, 2>();
  for (int64_t u = 0; u < U; ++u) {
    const auto& prompt = groups.distinct[size_t(u)];
    const int64_t len = int64_t(prompt.size()), pad = P - len;
    for (int64_t i = 0; i < len; ++i) {
      ids_a[u][pad + i] = prompt[size_t(i)];
      positions_a[u][pad + i] = i;
      valid_a[u][pad + i] = true;
    }
  }
  const auto dev = m->device();
  Prefill out{{}, m->new_cache(U, P + room)};
  out.last = m->hidden({ids.to(dev), positions.to(dev), valid.to(dev), &out.cache, adapters}).select(1, P - 1);  // (U, D)
  if (U < B) out.cache.keep_rows(torch::tensor(groups.source, torch::kLong).to(dev));  // (U, ...) -> (B, ...)
  return out;
}

}  // namespace reglage::generate
