// Reward sources: one interface over learned reward models, rules, remote HTTP services and weighted sums.
// The reinforcement stages score a batch of (prompt, response[, reference]) and get one float each.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace reglage::reward {

struct RewardInput {
  std::string prompt;     // the prompt as the policy saw it (text)
  std::string response;   // the generated continuation (text)
  std::string reference;  // optional reference answer from the prompt row ("" = none)
};

class RewardSource {
 public:
  virtual ~RewardSource() = default;
  // One reward per input, in order. Throws reglage::Error naming the source and the cause on failure.
  virtual std::vector<double> score(const std::vector<RewardInput>& batch) = 0;
  // e.g. "rules (3 checks)", "http http://127.0.0.1:8471/score"
  virtual std::string describe() const = 0;
};

}  // namespace reglage::reward
