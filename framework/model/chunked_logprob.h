// Log-probabilities of target tokens straight from hidden states, never holding the (N, V) logits of all
// positions at once: the LM head and log-softmax run over chunks of rows, and backward recomputes each chunk's
// logits instead of keeping them. With a 49k-152k vocabulary the full logits, their log-softmax and their
// gradient are what dominates a step's memory (16 x 512 positions x 49,152 x 4 bytes = 1.6 GB each).
//
//   h: (N, D) hidden states of the positions that predict a token, weight: (V, D) the LM head (frozen or
//   trainable), targets: (N) token ids. Returns (N) log p(target) in float32 (float64 for a float64 model),
//   computed as the full path computes it: logits = h W^T in the model's dtype, widened, divided by temperature,
//   log_softmax, gathered.
// Gradients flow to h and, when it requires grad, to weight.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <utility>

namespace reglage::model {

// Rows per chunk so that one chunk's logits stay near `budget_bytes` (at least one row).
int64_t logprob_chunk_rows(int64_t vocab, int64_t budget_bytes = int64_t(64) << 20);

torch::Tensor chunked_token_logprobs(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& targets,
                                     double temperature = 1.0, int64_t chunk_rows = 0);

// The same log-probabilities and, from the same chunks of logits, each row's entropy
// -sum_v p_v log p_v of softmax(logits / temperature): {logp (N), entropy (N)}, both differentiable (to h and,
// when it requires grad, weight). What PPO/GRPO updates need, without the (N, V) logits, their log-softmax,
// probabilities and gradients held at once. A call of one chunk (N <= chunk_rows) keeps that chunk's
// log-softmax for backward instead of recomputing it: at most the chunk budget per call.
std::pair<torch::Tensor, torch::Tensor> chunked_logprobs_and_entropy(const torch::Tensor& h, const torch::Tensor& weight,
                                                                     const torch::Tensor& targets,
                                                                     double temperature = 1.0, int64_t chunk_rows = 0);

}  // namespace reglage::model
