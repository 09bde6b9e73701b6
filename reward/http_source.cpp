// The HTTP reward source: chunks the batch, POSTs each chunk as JSON, retries transient failures, and checks
// the answer strictly (one finite number per query).
#include "reward/http_source.h"

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <thread>

#include "framework/core/error.h"
#include "framework/net/http_client.h"

namespace reglage::reward {

namespace {

using nlohmann::json;

// A failure worth another attempt (transport error, 5xx, 429); anything else is thrown at once.
struct Retryable {
  std::string cause;
};

class HttpRewardSource : public RewardSource {
 public:
  explicit HttpRewardSource(HttpRewardConfig config) : config_(std::move(config)) {
    options_.connect_timeout_s = config_.connect_timeout_s;
    options_.timeout_s = config_.timeout_s;
    options_.bearer_token = config_.token;
  }

  std::vector<double> score(const std::vector<RewardInput>& batch) override {
    std::vector<double> rewards;
    rewards.reserve(batch.size());
    for (size_t begin = 0; begin < batch.size(); begin += size_t(config_.batch_size)) {
      const size_t end = std::min(batch.size(), begin + size_t(config_.batch_size));
      const std::vector<double> chunk = score_chunk(batch, begin, end);
      rewards.insert(rewards.end(), chunk.begin(), chunk.end());
    }
    return rewards;
  }

  std::string describe() const override { return "http " + config_.url; }

 private:
  // Scores batch[begin, end) with up to 1 + retries attempts.
  std::vector<double> score_chunk(const std::vector<RewardInput>& batch, size_t begin, size_t end) {
    const std::string body = request_body(batch, begin, end);
    std::string last_cause;
    for (int64_t attempt = 0; attempt <= config_.retries; ++attempt) {
      if (attempt > 0) {
        // Exponential backoff before retry k = attempt - 1: backoff_s * 2^k.
        const double wait_s = config_.backoff_s * std::ldexp(1.0, int(attempt - 1));
        std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
      }
      try {
        return attempt_once(body, end - begin);
      } catch (const Retryable& r) {
        last_cause = r.cause;
      }
    }
    fail("http reward ", config_.url, ": gave up after ", config_.retries + 1, " attempt(s): ", last_cause);
  }

  // One POST; throws Retryable for transient failures, reglage::Error for a bad answer.
  std::vector<double> attempt_once(const std::string& body, size_t expected) {
    net::HttpResponse response;
    try {
      response = net::http_post_json(config_.url, body, options_);
    } catch (const Error& e) {
      throw Retryable{e.what()};  // refused, timed out, closed early: the service may come back
    }
    if (response.status >= 500 || response.status == 429)
      throw Retryable{"HTTP " + std::to_string(response.status) + ": " + excerpt(response.body)};
    if (response.status < 200 || response.status >= 300)
      fail("http reward ", config_.url, ": HTTP ", response.status, ": ", excerpt(response.body));
    return parse_rewards(response.body, expected);
  }

  std::vector<double> parse_rewards(const std::string& text, size_t expected) const {
    const json answer = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (answer.is_discarded()) fail("http reward ", config_.url, ": answer is not JSON: ", excerpt(text));
    if (!answer.is_object() || !answer.contains("rewards") || !answer["rewards"].is_array())
      fail("http reward ", config_.url, ": answer has no \"rewards\" array: ", excerpt(text));
    const json& list = answer["rewards"];
    if (list.size() != expected)
      fail("http reward ", config_.url, ": answered ", list.size(), " rewards for a batch of ", expected);
    std::vector<double> rewards;
    rewards.reserve(expected);
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_number())
        fail("http reward ", config_.url, ": rewards[", i, "] is not a number: ", excerpt(list[i].dump()));
      const double r = list[i].get<double>();
      if (!std::isfinite(r)) fail("http reward ", config_.url, ": rewards[", i, "] is not finite");
      rewards.push_back(r);
    }
    return rewards;
  }

  // {"query": [prompt + response], "prompts": [prompt], "references": [reference] (only when any is set)}
  static std::string request_body(const std::vector<RewardInput>& batch, size_t begin, size_t end) {
    json query = json::array(), prompts = json::array(), references = json::array();
    bool any_reference = false;
    for (size_t i = begin; i < end; ++i) {
      query.push_back(batch[i].prompt + batch[i].response);
      prompts.push_back(batch[i].prompt);
      references.push_back(batch[i].reference);
      any_reference = any_reference || !batch[i].reference.empty();
    }
    json body = {{"query", std::move(query)}, {"prompts", std::move(prompts)}};
    if (any_reference) body["references"] = std::move(references);
    // Replace invalid UTF-8 rather than throwing: generated text may cut a multi-byte character.
    return body.dump(-1, ' ', false, json::error_handler_t::replace);
  }

  // The first 80 characters of a body, for error messages.
  static std::string excerpt(const std::string& text) {
    return text.size() <= 80 ? text : text.substr(0, 80) + "...";
  }

  HttpRewardConfig config_;
  net::HttpOptions options_;
};

}  // namespace

std::unique_ptr<RewardSource> make_http_source(const HttpRewardConfig& config) {
  const std::string where = "http reward " + config.url;
  if (config.url.compare(0, 7, "http://") != 0)
    fail(where, ": url must start with http:// (https is not supported)");
  if (!(config.timeout_s > 0)) fail(where, ": timeout_s = ", config.timeout_s, " (must be > 0)");
  if (!(config.connect_timeout_s > 0))
    fail(where, ": connect_timeout_s = ", config.connect_timeout_s, " (must be > 0)");
  if (config.retries < 0) fail(where, ": retries = ", config.retries, " (must be >= 0)");
  if (!(config.backoff_s >= 0)) fail(where, ": backoff_s = ", config.backoff_s, " (must be >= 0)");
  if (config.batch_size < 1) fail(where, ": batch_size = ", config.batch_size, " (must be >= 1)");
  return std::make_unique<HttpRewardSource>(config);
}

}  // namespace reglage::reward
