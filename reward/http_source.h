// A reward source backed by a remote HTTP service (the OpenRLHF remote reward protocol):
//   POST {"query": [prompt + response, ...], "prompts": [prompt, ...], "references": [...]}  (references only
//   when some input has one)
//   answer {"rewards": [float, ...]}, one per query, in order.
// Inputs are sent in chunks of batch_size. Connection errors, timeouts, HTTP 5xx and 429 are retried up to
// `retries` times with exponential backoff (backoff_s * 2^k); other 4xx answers and malformed answers fail at
// once with a reglage::Error naming the URL and the problem.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "reward/reward_source.h"

namespace reglage::reward {

struct HttpRewardConfig {
  std::string url;                // http://host[:port]/path (https is refused)
  double timeout_s = 30;          // one request: write + read of the full answer
  double connect_timeout_s = 5;   // TCP connect
  int64_t retries = 3;            // extra attempts after a retryable failure (0 = try once)
  double backoff_s = 0.5;         // sleep before retry k (k = 0, 1, ...): backoff_s * 2^k
  int64_t batch_size = 64;        // inputs per POST
  std::string token;              // "" = no Authorization header, else "Bearer <token>"
};

// Validates the config (throws reglage::Error) and returns the source; describe() is "http <url>".
std::unique_ptr<RewardSource> make_http_source(const HttpRewardConfig& config);

}  // namespace reglage::reward
