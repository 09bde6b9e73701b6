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

#include "framework/config/reward_config.h"
#include "reward/reward_source.h"

namespace reglage::reward {

using HttpRewardConfig = config::HttpRewardConfig;  // framework/config/reward_config.h

// Validates the config (throws reglage::Error) and returns the source; describe() is "http <url>".
std::unique_ptr<RewardSource> make_http_source(const HttpRewardConfig& config);

}  // namespace reglage::reward
