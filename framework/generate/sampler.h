// Choosing the next token from one row of logits: greedy, temperature, top-k, top-p.
// Each sequence owns its random stream, so a prompt samples the same tokens alone or in any batch.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace reglage::generate {

struct SamplingParams {
  int64_t max_new_tokens = 64;   // tokens generated per prompt at most
  double temperature = 1.0;      // 0 = greedy (first maximum wins, as llama2.c's argmax)
  int64_t top_k = 0;             // keep the k most likely tokens; 0 = all
  double top_p = 1.0;            // keep the smallest set whose probability reaches p; 1 = all
  uint64_t seed = 0;             // with the prompt's index, seeds the prompt's random stream
  std::vector<int64_t> stop_ids; // generation of a sequence ends after it samples one of these
  int64_t pad_id = 0;            // fills left padding; never attended to
  // Throws reglage::Error when a value is out of range (temperature < 0, top_p outside (0, 1], ...).
  void validate() const;
};

struct Choice {
  int64_t token = 0;
  float logprob = 0.0f;  // log-probability of `token` under softmax(logits / T) (T = 1 when greedy),
                         // before top-k/top-p filtering: the policy's own probability, as PPO needs
};

// logits: V float32 values of one position.
Choice sample_token(const float* logits, int64_t vocab, const SamplingParams& params, std::mt19937_64& rng);

// The random stream of prompt `index` under `seed` (splitmix64 of both, so nearby seeds are independent).
std::mt19937_64 sequence_rng(uint64_t seed, uint64_t index);

}  // namespace reglage::generate
