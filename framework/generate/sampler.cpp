#include "framework/generate/sampler.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "framework/core/error.h"
#include "framework/kernels/fused_elementwise.h"

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
  // The largest logit (NaN ignored), then the first token that has it.
  float max_logit = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) max_logit = logits[i] > max_logit ? logits[i] : max_logit;
  if (!std::isfinite(max_logit)) fail("sampling: logits hold no finite maximum (NaN or inf from the model)");
  const int64_t argmax = std::find(logits, logits + vocab, max_logit) - logits;
  // Per-thread buffers: rows of a batch are sampled in parallel (generate.cpp), each call reuses its thread's.
  thread_local std::vector<float> prob;
  prob.resize(vocab);
  // Weights e^((logit - max) / T) by the vectorised float32 kernel, in blocks of a fixed size whose sums are
  // added in order: the same result on any number of threads. A lone row's blocks (batch 1) are spread over
  // the intra-op threads; inside the rows' parallel loop this runs on the calling thread.
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (vocab + kBlock - 1) / kBlock;
  std::vector<double> block_sum(size_t(blocks), 0.0);
  float* p = prob.data();  // this thread's buffer: the lambda may run on another thread
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t lo = b * kBlock, n = std::min(vocab, lo + kBlock) - lo;
      block_sum[size_t(b)] = kernels::exp_shifted(logits + lo, max_logit, float(t), n, p + lo);
    }
  });
  double sum = 0;
  for (double s : block_sum) sum += s;
  const double log_sum = std::log(sum);
  auto logprob_of = [&](int64_t i) { return float((double(logits[i]) - max_logit) / t - log_sum); };

  if (params.temperature == 0) return {argmax, logprob_of(argmax)};

  // Inverse CDF over the first `count` candidates (candidate(i) the token id of the i-th) with one uniform draw.
  auto draw = [&](int64_t count, double total, auto candidate) -> Choice {
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * total;
    double cdf = 0;
    for (int64_t i = 0; i < count; ++i) {
      cdf += prob[candidate(i)];
      if (u < cdf) return {candidate(i), logprob_of(candidate(i))};
    }
    return {candidate(count - 1), logprob_of(candidate(count - 1))};  // rounding: u landed on the very end
  };

  int64_t keep = vocab;
  if (params.top_k > 0 && params.top_k < vocab) keep = params.top_k;
  // Every token a candidate, in id order: no index to build or sort.
  if (keep == vocab && params.top_p >= 1.0) return draw(vocab, sum, [](int64_t i) { return i; });

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
  return draw(keep, kept_sum, [&](int64_t i) { return order[i]; });
}

}  // namespace reglage::generate
