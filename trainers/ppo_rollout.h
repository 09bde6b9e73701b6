// The tensors of one PPO (or GRPO) iteration on one rank, and the model passes that fill them: sampling
// responses with the actor, the no-grad pass for old/reference log-probs (and values), the minibatch pass
// with gradients, and greedy evaluation. GRPO has no critic: it uses the *_logprobs / forward_policy parts. Everything is response-aligned: column r is the r-th response token.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "framework/data/prompt_data.h"
#include "framework/model/heads.h"
#include "framework/model/llama.h"
#include "framework/tokenizer/tokenizer.h"
#include "reward/combine.h"
#include "reward/reward_source.h"
#include "trainers/stage.h"

namespace reglage::trainers {

struct RolloutSpec {
  model::AdapterSet actor, critic;  // reference = no adapter
  int64_t max_new_tokens = 64;
  double temperature = 1.0;         // sampling; log-probs are taken under softmax(logits / temperature)
  double top_p = 1.0;
  uint64_t seed = 0;                // this rank's sampling streams for this iteration
  int64_t eos_id = -1;
  int64_t pad_id = 0;
};

struct Rollout {
  torch::Tensor ids;        // (n, L) prompt + response, right-padded with pad_id
  torch::Tensor valid;      // (n, L) bool
  torch::Tensor index;      // (n, R) position whose logits predict response token r (prompt_len - 1 + r)
  torch::Tensor targets;    // (n, R) response tokens (pad_id past the end)
  torch::Tensor mask;       // (n, R) float32, 1 on response tokens
  torch::Tensor old_logp;   // (n, R) actor log-probs at rollout time: the sampler's own (sample_rollout)
  torch::Tensor ref_logp;   // (n, R) reference (no adapter) log-probs
  torch::Tensor values;     // (n, R) critic values at rollout time (ppo only)
  std::vector<reward::RewardInput> reward_inputs;  // (prompt text, response text, reference) per row
  int64_t prompt_tokens = 0;
};

// Samples one response per entry of `rows` (indices into prompts) with the actor, in eval mode. old_logp is
// the log-probability the sampler drew each token with, log softmax(logits / temperature) before top-k/top-p
// filtering: the same quantity a forward pass over the finished rollout gives (up to float rounding between
// the cached decode and the full forward), so no second pass is needed.
Rollout sample_rollout(model::CausalLM& m, const data::PromptDataset& prompts, const std::vector<int64_t>& rows,
                       const RolloutSpec& spec, const tokenizer::Tokenizer& tok);

// Rows per chunk of the no-grad passes and of the minibatch forward: rows sorted by length, each chunk cut
// to its longest row, so short responses (and short prompts) do not pay for the longest one.
constexpr int64_t kPassChunkRows = 8;

struct RowChunk {
  torch::Tensor rows;    // (c) positions within the idx it was cut from
  torch::Tensor source;  // (c) rollout rows (idx[rows])
  torch::Tensor ids;     // (c, len) cut to the chunk's longest row
  torch::Tensor valid;   // (c, len)
  torch::Tensor index;   // (c, R) as the rollout's, clamped to len - 1 (only masked entries move)
  torch::Tensor targets;  // (c, R) the rollout's
  torch::Tensor mask;     // (c, R) the rollout's
};
// The rollout rows idx (b) in chunks of at most chunk_rows, shortest rows first.
std::vector<RowChunk> length_chunks(const Rollout& ro, const torch::Tensor& idx, int64_t chunk_rows);
// Per-chunk results (c, ...) back into idx's order: (b, ...). Differentiable (cat + index_select).
torch::Tensor gather_chunks(const std::vector<RowChunk>& chunks, const std::vector<torch::Tensor>& parts);

// The response tokens where mask > 0, -100 (no log-prob wanted) elsewhere: targets, mask (c, r) -> (c, r).
torch::Tensor masked_targets(const torch::Tensor& targets, const torch::Tensor& mask);

// Fills ref_logp (no adapter), and old_logp (spec.actor) when the rollout has none yet, without gradients
// (eval mode).
void evaluate_logprobs(model::CausalLM& m, Rollout& ro, const RolloutSpec& spec);

// Fills old_logp, ref_logp (evaluate_logprobs) and values without gradients (eval mode).
void evaluate_rollout(model::CausalLM& m, model::ScalarHead& value_head, Rollout& ro, const RolloutSpec& spec);

struct PolicyOutput {
  torch::Tensor logp;     // (b, R) actor log-probs, with grad
  torch::Tensor entropy;  // (b, R) actor entropy, with grad
};
// Log-probs and entropies of response tokens from the states that predict them, the LM head only on the
// positions where mask > 0 (not the padding past a short response's end): states (c, r, D), targets and
// mask (c, r) -> {logp, entropy} (c, r) float32, 0 where mask is 0. With gradients when grad mode is on.
PolicyOutput response_logprobs(model::CausalLM& m, const torch::Tensor& states, const torch::Tensor& targets,
                               const torch::Tensor& mask, double temperature);

// The rows `idx` (b) of the rollout through the actor, with gradients.
PolicyOutput forward_policy(model::CausalLM& m, const Rollout& ro, const torch::Tensor& idx, const RolloutSpec& spec);

struct MinibatchOutput {
  torch::Tensor logp;     // (b, R) actor log-probs, with grad
  torch::Tensor entropy;  // (b, R) actor entropy, with grad
  torch::Tensor values;   // (b, R) critic values, with grad
};
// The rows `idx` (b) of the rollout through the actor (forward_policy) and the critic, with gradients.
MinibatchOutput forward_minibatch(model::CausalLM& m, model::ScalarHead& value_head, const Rollout& ro,
                                  const torch::Tensor& idx, const RolloutSpec& spec);

// Stops the run on a NaN or inf, naming the stage, the iteration and the quantity.
void check_finite(const config::StageConfig& st, int64_t iteration, const std::string& what, double x);

// A rollout's rewards: raw from the stage's reward source, and shaped as the stage's `reward:` says
// (normalised with running statistics merged over all ranks' batches, or clipped).
struct ScoredRollout {
  std::vector<double> raw;     // (n) one per response
  std::vector<double> shaped;  // (n)
  double raw_sum = 0, raw_sq = 0;  // this rank's sums of raw and raw^2
};
// Scores `ro` (every rank calls it: normalisation all-reduces the batch moments). Fails on a wrong count of
// scores or a NaN/inf reward, naming iteration `iteration`.
ScoredRollout score_rollout(StageContext& ctx, reward::RewardSource& reward, reward::RewardNormalizer& normalizer,
                            const Rollout& ro, int64_t iteration);

// Greedy responses of the actor to every prompt (sharded over ranks), scored by `reward`: the global mean.
double evaluate_prompts(StageContext& ctx, model::CausalLM& m, const data::PromptDataset& prompts,
                        const RolloutSpec& spec, const tokenizer::Tokenizer& tok, reward::RewardSource& reward);

// The text of generated tokens (stop tokens dropped), without the leading space a SentencePiece-style
// dummy prefix puts there, so that it reads and re-encodes as the completion did in the training data.
std::string response_text(const tokenizer::Tokenizer& tok, const std::vector<int64_t>& tokens);

}  // namespace reglage::trainers
