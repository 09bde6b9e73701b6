#include "framework/generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "framework/core/error.h"

namespace reglage::generate {

void SamplingParams::validate() const {
  if (max_new_tokens < 0) fail("max_new_tokens = ", max_new_tokens, " (must be >= 0)");
  if (!(temperature >= 0) || !std::isfinite(temperature)) fail("temperature = ", temperature, " (must be >= 0)");
  if (top_k < 0) fail("top_k = ", top_k, " (must be >= 0; 0 = off)");
  if (!(top_p > 0 && top_p <= 1)) fail("top_p = ", top_p, " (must be in (0, 1])");
}

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::mt19937_64 sequence_rng(uint64_t seed, uint64_t index) {
  return std::mt19937_64(splitmix64(splitmix64(seed) ^ index));
}

Choice sample_token(const float* logits, int64_t vocab, const SamplingParams& params, std::mt19937_64& rng) {
  const double t = params.temperature > 0 ? params.temperature : 1.0;
  // log-softmax of logits / T in double, for the log-probability and the sampling weights
  double max_logit = -INFINITY;
  int64_t argmax = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (logits[i] > max_logit) {
      max_logit = logits[i];
      argmax = i;
    }
  }
  if (!std::isfinite(max_logit)) fail("sampling: logits hold no finite maximum (NaN or inf from the model)");
  // Per-thread buffers: rows of a batch are sampled in parallel (generate.cpp), each call reuses its thread's.
  thread_local std::vector<double> prob;
  prob.resize(vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += prob[i] = std::exp((logits[i] - max_logit) / t);
  const double log_sum = std::log(sum);
  auto logprob_of = [&](int64_t i) { return float((logits[i] - max_logit) / t - log_sum); };

  if (params.temperature == 0) return {argmax, logprob_of(argmax)};

  int64_t keep = vocab;
  if (params.top_k > 0 && params.top_k < vocab) keep = params.top_k;
  const bool need_sort = keep < vocab || params.top_p < 1.0;
  if (!need_sort) {
    // Every token a candidate, in id order: inverse CDF over all of them with one uniform draw.
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * sum;
    double cdf = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      cdf += prob[i];
      if (u < cdf) return {i, logprob_of(i)};
    }
    return {vocab - 1, logprob_of(vocab - 1)};  // rounding: u landed on the very end
  }

  // Candidates ordered by probability (ties by id), cut by top-k then top-p.
  thread_local std::vector<int64_t> order;
  order.resize(vocab);
  std::iota(order.begin(), order.end(), 0);
  auto by_prob = [&](int64_t a, int64_t b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); };
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_prob);
  if (params.top_p < 1.0) {
    double cum = 0;
    for (int64_t i = 0; i < keep; ++i) {
      cum += prob[order[i]] / sum;
      if (cum >= params.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept_sum = 0;
  for (int64_t i = 0; i < keep; ++i) kept_sum += prob[order[i]];
  // Inverse CDF over the kept candidates with one uniform draw.
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * kept_sum;
  double cdf = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cdf += prob[order[i]];
    if (u < cdf) return {order[i], logprob_of(order[i])};
  }
  return {order[keep - 1], logprob_of(order[keep - 1])};  // rounding: u landed on the very end
}

}  // namespace reglage::generate
