// Rule rewards: a weighted list of checks on the response. A list written as principles with weights is how
// users express "constitutional" feedback without a judge model:
//   rules:
//     - {principle: "uses the requested name", kind: exact_reference, weight: 1.0}
//     - {kind: regex, pattern: "^Once upon a time", weight: 0.2}
//     - {kind: excludes, words: [Lily], weight: 0.5}
//     - {kind: length, min_chars: 40, max_chars: 600, weight: 0.3}
// Each check scores 1 when it passes and 0 when it fails; the reward is the weighted sum
// sum_i weight_i * score_i. Per kind:
//   regex / not_regex: the PCRE2 pattern (UTF mode with Unicode properties; invalid UTF-8 in the response is
//     tolerated) matches anywhere in the response / does not match anywhere.
//   contains / excludes: every word occurs / no word occurs in the response. whole_word: an occurrence must
//     be bounded by the string's ends or bytes that are not ASCII letters or digits. case_sensitive false:
//     ASCII letters are folded (other characters compare exactly).
//   exact_reference: input.reference occurs in the response under the same word/case rules; an empty
//     reference (the row has none) scores 0.
//   length: n = the response's UTF-8 code points; outside = (min_chars - n if min_chars > 0 and n < min_chars)
//     + (n - max_chars if max_chars > 0 and n > max_chars); a bound of 0 means none. With
//     penalty_per_char == 0 the score is 1 when outside == 0, else 0. With penalty_per_char > 0 the score is
//     1 - penalty_per_char * outside, NOT clipped: it goes negative once outside > 1 / penalty_per_char
//     (e.g. max_chars 10, penalty 0.25, 16 characters: 1 - 0.25 * 6 = -0.5).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "framework/config/reward_config.h"
#include "reward/reward_source.h"

namespace reglage::reward {

using RuleConfig = config::RuleConfig;  // framework/config/reward_config.h

// Validates every rule (unknown kind, bad regex, empty words, negative bounds...): throws reglage::Error
// naming the rule's index and principle.
// All problems are reported together, each as "rules[i] (principle): what (expected)"; a regex that does
// not compile carries PCRE2's message and offset. Regexes are compiled once here. describe(): "rules (N checks)".
std::unique_ptr<RewardSource> make_rules_source(const std::vector<RuleConfig>& rules);

// One check's score for a response (exposed for tests).
double rule_score(const RuleConfig& rule, const RewardInput& input);

// Whether a response earns everything the rules allow: every check with weight > 0 scores 1 and every
// check with weight < 0 (a penalty) scores 0. `reglage eval`'s pass_rate counts these.
bool rules_pass(const std::vector<RuleConfig>& rules, const RewardInput& input);

}  // namespace reglage::reward
