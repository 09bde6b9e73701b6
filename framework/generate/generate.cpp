#include "framework/generate/generate.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "framework/core/error.h"
#include "framework/generate/prefill.h"
#include "framework/model/fused_decode.h"

namespace reglage::generate {

namespace {

// A host vector as a tensor of the given shape on `dev` (copied).
template <typename T>
torch::Tensor to_tensor(const std::vector<T>& v, std::vector<int64_t> shape, torch::Device dev) {
  auto dtype = std::is_same<T, int64_t>::value ? torch::kLong : torch::kUInt8;
  return torch::from_blob(const_cast<T*>(v.data()), shape, dtype).clone().to(dev);
}

}  // namespace

std::vector<Generation> generate(model::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                 const SamplingParams& params, const model::AdapterSet& adapters) {
  params.validate();
  const int64_t B = int64_t(prompts.size());
  std::vector<Generation> out(B);
  if (B == 0 || params.max_new_tokens == 0) return out;
  const int64_t V = model->config().vocab_size;

  int64_t P = 0;  // longest prompt
  for (int64_t b = 0; b < B; ++b) {
    if (prompts[b].empty()) fail("prompt ", b, " is empty (it needs at least one token, e.g. BOS)");
    for (auto id : prompts[b])
      if (id < 0 || id >= V) fail("prompt ", b, " holds token id ", id, " outside the vocabulary [0, ", V, ")");
    P = std::max<int64_t>(P, prompts[b].size());
  }
  const int64_t capacity = P + params.max_new_tokens;
  if (capacity > model->config().max_seq_len)
    fail("longest prompt (", P, " tokens) + max_new_tokens (", params.max_new_tokens, ") = ", capacity,
         " exceeds the model's context of ", model->config().max_seq_len);

  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const auto dev = model->device();

  // Equal prompts (GRPO's group_size copies of each) are prefilled once; every sequence gets its prompt's
  // cache rows. The LM head on the last prompt position only: (U, P, V) logits would be P times larger.
  const auto groups = group_prompts(prompts);
  Prefill prefill = prefill_prompts(model, groups, params.max_new_tokens, adapters, params.pad_id);
  model::KVCache& cache = prefill.cache;                                        // B rows
  auto logits = model->lm_logits(prefill.last).contiguous().to(torch::kCPU);  // (U, V)
  if (int64_t(groups.distinct.size()) < B)
    logits = logits.index_select(0, torch::tensor(groups.source, torch::kLong));  // (B, V)
  std::vector<int64_t> next_pos(B);
  for (int64_t b = 0; b < B; ++b) next_pos[b] = int64_t(prompts[b].size());

  std::vector<std::mt19937_64> rngs;
  for (int64_t b = 0; b < B; ++b) rngs.push_back(sequence_rng(params.seed, uint64_t(b)));
  std::vector<bool> done(B, false);

  // Rows of the running batch: live[i] is the sequence in row i. Finished sequences leave the batch once
  // they are an eighth of it (one copy of the cache), so later steps compute only sequences still running.
  std::vector<int64_t> live(B);
  for (int64_t b = 0; b < B; ++b) live[b] = b;
  for (int64_t step = 0; step < params.max_new_tokens; ++step) {
    const int64_t n = int64_t(live.size());
    std::vector<int64_t> next(n, params.pad_id), next_positions(n, 0);  // (n, 1)
    std::vector<uint8_t> next_valid(n, 0);                               // (n, 1)
    const float* rows = logits.data_ptr<float>();                        // (n, V)
    // The rows' draws in parallel: each reads its own logits and advances its own sequence's stream, so
    // the tokens are those of a serial loop. Fewer rows than threads: one row at a time, each draw
    // spreading its vocabulary over the threads instead.
    std::vector<Choice> choices(n);
    const int64_t row_grain = n < at::get_num_threads() ? n : 1;
    at::parallel_for(0, n, row_grain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        if (!done[live[i]]) choices[i] = sample_token(rows + i * V, V, params, rngs[live[i]]);
    });
    for (int64_t i = 0; i < n; ++i) {
      const int64_t b = live[i];
      if (done[b]) continue;
      const Choice& c = choices[i];
      out[b].tokens.push_back(c.token);
      out[b].logprobs.push_back(c.logprob);
      if (std::find(params.stop_ids.begin(), params.stop_ids.end(), c.token) != params.stop_ids.end()) {
        done[b] = true;
        out[b].stopped = true;
        continue;
      }
      next[i] = c.token;
      next_valid[i] = 1;
      next_positions[i] = next_pos[b]++;
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    if (step + 1 == params.max_new_tokens) break;
    std::vector<int64_t> keep;  // rows still running
    for (int64_t i = 0; i < n; ++i)
      if (!done[live[i]]) keep.push_back(i);
    if (8 * (n - int64_t(keep.size())) >= n) {
      cache.keep_rows(torch::tensor(keep, torch::kLong));
      std::vector<int64_t> kept_live, kept_next, kept_positions;
      for (int64_t i : keep) {
        kept_live.push_back(live[i]);
        kept_next.push_back(next[i]);
        kept_positions.push_back(next_positions[i]);
      }
      live = std::move(kept_live), next = std::move(kept_next), next_positions = std::move(kept_positions);
      next_valid.assign(live.size(), 1);
    }
    // Finished sequences still in the batch feed a padding slot that no one attends to.
    const int64_t m = int64_t(live.size());
    model::ForwardInput step_in{to_tensor(next, {m, 1}, dev), to_tensor(next_positions, {m, 1}, dev),
                                to_tensor(next_valid, {m, 1}, dev).to(torch::kBool), &cache, adapters};
    const bool fused = model->fused_decode && model::fused_decode_unsupported(*model, step_in).empty();
    logits = fused ? model::fused_decode_step(*model, step_in)                           // (m, V)
                   : model->forward(step_in).select(1, 0).contiguous().to(torch::kCPU);  // (m, V)
  }
  if (was_training) model->train();
  return out;
}

}  // namespace reglage::generate
