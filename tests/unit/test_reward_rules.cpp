// Rule rewards, weighted sums of reward sources and the reward normaliser, against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "framework/core/error.h"
#include "reward/combine.h"
#include "reward/rules.h"
#include "test_util.h"

namespace reglage::reward {
namespace {

using test::expect_error;

RewardInput resp(const std::string& response, const std::string& reference = "") {
  return RewardInput{"prompt", response, reference};
}

RuleConfig rule_of(const std::string& kind) {
  RuleConfig r;
  r.kind = kind;
  return r;
}

RuleConfig regex_rule(const std::string& kind, const std::string& pattern) {
  RuleConfig r = rule_of(kind);
  r.pattern = pattern;
  return r;
}

RuleConfig words_rule(const std::string& kind, std::vector<std::string> words, bool case_sensitive = true,
                      bool whole_word = true) {
  RuleConfig r = rule_of(kind);
  r.words = std::move(words);
  r.case_sensitive = case_sensitive;
  r.whole_word = whole_word;
  return r;
}

RuleConfig length_rule(int64_t min_chars, int64_t max_chars, double penalty = 0.0) {
  RuleConfig r = rule_of("length");
  r.min_chars = min_chars;
  r.max_chars = max_chars;
  r.penalty_per_char = penalty;
  return r;
}

// ---- each kind ---------------------------------------------------------------------------------

TEST(RewardRules, RegexMatchesAnywhere) {
  const RuleConfig r = regex_rule("regex", "^Once upon a time");
  EXPECT_EQ(rule_score(r, resp("Once upon a time there was a cat.")), 1.0);
  EXPECT_EQ(rule_score(r, resp("There was once upon a time a cat.")), 0.0);
  EXPECT_EQ(rule_score(regex_rule("regex", "c.t"), resp("the cat sat")), 1.0);  // not anchored
  EXPECT_EQ(rule_score(regex_rule("regex", "dog"), resp("")), 0.0);
}

TEST(RewardRules, RegexIsUnicodeAware) {
  // UTF mode: '.' is one code point; UCP: \w matches letters beyond ASCII.
  EXPECT_EQ(rule_score(regex_rule("regex", "^caf.$"), resp("café")), 1.0);
  EXPECT_EQ(rule_score(regex_rule("regex", "^\\w+$"), resp("Ängström")), 1.0);
  EXPECT_EQ(rule_score(regex_rule("regex", "^\\w+$"), resp("a b")), 0.0);
  // Invalid UTF-8 in the response is tolerated, not an error.
  EXPECT_EQ(rule_score(regex_rule("regex", "ok"), resp(std::string("\xff\xfe ok"))), 1.0);
}

TEST(RewardRules, NotRegexIsTheInverse) {
  const RuleConfig r = regex_rule("not_regex", "[0-9]");
  EXPECT_EQ(rule_score(r, resp("no digits here")), 1.0);
  EXPECT_EQ(rule_score(r, resp("room 101")), 0.0);
}

TEST(RewardRules, ContainsNeedsEveryWord) {
  const RuleConfig r = words_rule("contains", {"Tim", "ball"});
  EXPECT_EQ(rule_score(r, resp("Tim found a ball.")), 1.0);
  EXPECT_EQ(rule_score(r, resp("Tim found a cat.")), 0.0);
  EXPECT_EQ(rule_score(r, resp("")), 0.0);
}

TEST(RewardRules, ContainsWholeWord) {
  const RuleConfig whole = words_rule("contains", {"cat"});
  EXPECT_EQ(rule_score(whole, resp("the cat")), 1.0);
  EXPECT_EQ(rule_score(whole, resp("cat")), 1.0);                 // string ends are boundaries
  EXPECT_EQ(rule_score(whole, resp("(cat), then")), 1.0);         // punctuation is a boundary
  EXPECT_EQ(rule_score(whole, resp("the category")), 0.0);        // inside a word
  EXPECT_EQ(rule_score(whole, resp("bobcat")), 0.0);
  EXPECT_EQ(rule_score(whole, resp("cat2")), 0.0);                // digits are word characters
  EXPECT_EQ(rule_score(whole, resp("concatenate, then cat!")), 1.0);  // a later occurrence counts
  EXPECT_EQ(rule_score(whole, resp("écat")), 1.0);                // non-ASCII bytes are boundaries
  const RuleConfig part = words_rule("contains", {"cat"}, true, /*whole_word=*/false);
  EXPECT_EQ(rule_score(part, resp("the category")), 1.0);
  EXPECT_EQ(rule_score(part, resp("the dog")), 0.0);
}

TEST(RewardRules, ContainsCaseOption) {
  const RuleConfig exact = words_rule("contains", {"Lily"});
  EXPECT_EQ(rule_score(exact, resp("Lily ran.")), 1.0);
  EXPECT_EQ(rule_score(exact, resp("LILY ran.")), 0.0);
  const RuleConfig folded = words_rule("contains", {"Lily"}, /*case_sensitive=*/false);
  EXPECT_EQ(rule_score(folded, resp("LILY ran.")), 1.0);
  EXPECT_EQ(rule_score(folded, resp("lily ran.")), 1.0);
  EXPECT_EQ(rule_score(folded, resp("lilypad")), 0.0);  // still whole-word
}

TEST(RewardRules, ExcludesNeedsNoWord) {
  const RuleConfig r = words_rule("excludes", {"Lily", "Tom"});
  EXPECT_EQ(rule_score(r, resp("Ben and Sue played.")), 1.0);
  EXPECT_EQ(rule_score(r, resp("Ben and Tom played.")), 0.0);
  EXPECT_EQ(rule_score(r, resp("Tommy played.")), 1.0);  // whole word: Tommy is not Tom
  EXPECT_EQ(rule_score(words_rule("excludes", {"Tom"}, true, false), resp("Tommy played.")), 0.0);
  EXPECT_EQ(rule_score(words_rule("excludes", {"tom"}, false), resp("TOM played.")), 0.0);
  EXPECT_EQ(rule_score(words_rule("excludes", {"tom"}, true), resp("TOM played.")), 1.0);
}

TEST(RewardRules, ExactReference) {
  const RuleConfig r = rule_of("exact_reference");
  EXPECT_EQ(rule_score(r, resp("Her name was Mia.", "Mia")), 1.0);
  EXPECT_EQ(rule_score(r, resp("Her name was Miami.", "Mia")), 0.0);   // whole word
  EXPECT_EQ(rule_score(r, resp("Her name was mia.", "Mia")), 0.0);     // case-sensitive
  EXPECT_EQ(rule_score(r, resp("the answer is 42 apples", "42 apples")), 1.0);
  EXPECT_EQ(rule_score(r, resp("anything", "")), 0.0);                 // no reference: 0
  EXPECT_EQ(rule_score(r, resp("", "")), 0.0);
  RuleConfig loose = r;
  loose.case_sensitive = false;
  loose.whole_word = false;
  EXPECT_EQ(rule_score(loose, resp("HER NAME WAS MIAMI", "mia")), 1.0);
}

TEST(RewardRules, LengthPassFail) {
  const RuleConfig r = length_rule(3, 5);
  EXPECT_EQ(rule_score(r, resp("ab")), 0.0);
  EXPECT_EQ(rule_score(r, resp("abc")), 1.0);
  EXPECT_EQ(rule_score(r, resp("abcde")), 1.0);
  EXPECT_EQ(rule_score(r, resp("abcdef")), 0.0);
  EXPECT_EQ(rule_score(length_rule(0, 0), resp("")), 1.0);             // no bounds
  EXPECT_EQ(rule_score(length_rule(2, 0), resp(std::string(1000, 'x'))), 1.0);  // no upper bound
  EXPECT_EQ(rule_score(length_rule(0, 2), resp("")), 1.0);             // no lower bound
}

TEST(RewardRules, LengthCountsCodePoints) {
  // "héllo wörld ☃" is 13 code points but 17 bytes.
  const std::string text = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x98\x83";
  ASSERT_EQ(text.size(), 17u);
  EXPECT_EQ(rule_score(length_rule(13, 13), resp(text)), 1.0);
  EXPECT_EQ(rule_score(length_rule(0, 12), resp(text)), 0.0);
  EXPECT_EQ(rule_score(length_rule(14, 0), resp(text)), 0.0);
  EXPECT_EQ(rule_score(length_rule(0, 3), resp("日本語")), 1.0);  // 3 code points, 9 bytes
}

TEST(RewardRules, LengthGradedPenalty) {
  const RuleConfig r = length_rule(4, 10, 0.25);
  EXPECT_EQ(rule_score(r, resp("abcdef")), 1.0);                 // inside
  EXPECT_EQ(rule_score(r, resp("ab")), 1.0 - 0.25 * 2);          // 2 short: 0.5
  EXPECT_EQ(rule_score(r, resp("abcdefghijkl")), 1.0 - 0.25 * 2);  // 2 over: 0.5
  EXPECT_EQ(rule_score(r, resp(std::string(16, 'x'))), -0.5);    // 6 over: 1 - 1.5, negative
  EXPECT_EQ(rule_score(r, resp("")), 0.0);                       // 4 short: exactly 0
  EXPECT_EQ(rule_score(length_rule(0, 2, 0.1), resp("日本語本")), 1.0 - 0.1 * 2);  // code points, not bytes
}

// ---- the source --------------------------------------------------------------------------------

TEST(RewardRules, WeightedSumByHand) {
  std::vector<RuleConfig> rules;
  rules.push_back(regex_rule("regex", "^Once"));  // weight 1
  RuleConfig c = words_rule("contains", {"cat"});
  c.weight = 0.5;
  rules.push_back(c);
  RuleConfig l = length_rule(0, 10);
  l.weight = -0.25;
  rules.push_back(l);
  auto source = make_rules_source(rules);
  EXPECT_EQ(source->describe(), "rules (3 checks)");
  const std::vector<RewardInput> batch = {
      resp("Once a cat"),                 // 1 + 0.5 + (-0.25) * 1 (10 chars, inside)
      resp("Once upon a time a dog"),     // 1 + 0 + (-0.25) * 0
      resp("A cat"),                      // 0 + 0.5 + (-0.25) * 1
      resp("a dog and a category here"),  // 0 + 0 + 0
  };
  const std::vector<double> got = source->score(batch);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0], 1.25);
  EXPECT_EQ(got[1], 1.0);
  EXPECT_EQ(got[2], 0.25);
  EXPECT_EQ(got[3], 0.0);
  EXPECT_TRUE(source->score({}).empty());
}

TEST(RewardRules, SourceMatchesRuleScore) {
  std::vector<RuleConfig> rules = {regex_rule("not_regex", "\\d"), words_rule("excludes", {"Lily"}, false),
                                   length_rule(5, 0, 0.5)};
  rules[0].weight = 2.0;
  auto source = make_rules_source(rules);
  const std::vector<RewardInput> batch = {resp("lily 1"), resp("abc"), resp("Hello there")};
  const std::vector<double> got = source->score(batch);
  for (size_t b = 0; b < batch.size(); ++b) {
    double expected = 0;
    for (const RuleConfig& r : rules) expected += r.weight * rule_score(r, batch[b]);
    EXPECT_EQ(got[b], expected) << b;
  }
  EXPECT_EQ(got[0], 0.0 + 0.0 + 1.0);
  EXPECT_EQ(got[1], 2.0 + 1.0 + 0.0);  // 2 short of 5: 1 - 0.5 * 2 = 0
  EXPECT_EQ(got[2], 2.0 + 1.0 + 1.0);
}

// ---- validation --------------------------------------------------------------------------------

TEST(RewardRules, RejectsUnknownKind) {
  RuleConfig bad = rule_of("sentiment");
  bad.principle = "be nice";
  expect_error([&] { make_rules_source({length_rule(1, 2), bad}); }, {"rules[1] (be nice)", "sentiment"});
}

TEST(RewardRules, RejectsBadRegexWithOffset) {
  RuleConfig bad = regex_rule("regex", "ab(c");
  bad.principle = "opens well";
  expect_error([&] { make_rules_source({bad}); }, {"rules[0] (opens well)", "ab(c", "missing closing parenthesis",
                                                    "offset 4"});
  expect_error([&] { make_rules_source({length_rule(1, 2), regex_rule("not_regex", "[z-a]")}); },
               {"rules[1]", "offset"});
  expect_error([&] { rule_score(regex_rule("regex", "("), resp("x")); }, {"does not compile"});
}

TEST(RewardRules, RejectsEmptyPatternAndWords) {
  expect_error([&] { make_rules_source({regex_rule("regex", "")}); }, {"rules[0]", "pattern is empty"});
  expect_error([&] { make_rules_source({regex_rule("regex", "a"), words_rule("contains", {})}); },
               {"rules[1]", "words is empty"});
  expect_error([&] { make_rules_source({words_rule("excludes", {"a", ""})}); }, {"rules[0]", "words[1] is empty"});
}

TEST(RewardRules, RejectsBadBounds) {
  expect_error([&] { make_rules_source({length_rule(-1, 0)}); }, {"rules[0]", "min_chars = -1"});
  expect_error([&] { make_rules_source({length_rule(0, 5), length_rule(0, -3)}); }, {"rules[1]", "max_chars = -3"});
  expect_error([&] { make_rules_source({length_rule(10, 5)}); }, {"rules[0]", "min_chars = 10 > max_chars = 5"});
  expect_error([&] { make_rules_source({length_rule(0, 5, -0.1)}); }, {"rules[0]", "penalty_per_char"});
  EXPECT_NO_THROW(make_rules_source({length_rule(10, 0), length_rule(0, 5), length_rule(5, 5)}));
}

TEST(RewardRules, RejectsNonFiniteWeight) {
  RuleConfig r = words_rule("contains", {"a"});
  r.weight = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { make_rules_source({length_rule(0, 1), length_rule(0, 1), r}); }, {"rules[2]", "weight"});
  r.weight = std::numeric_limits<double>::infinity();
  expect_error([&] { make_rules_source({r}); }, {"rules[0]", "weight", "finite"});
}

TEST(RewardRules, ReportsAllProblemsTogether) {
  RuleConfig a = rule_of("nope");
  a.principle = "first";
  expect_error([&] { make_rules_source({a, length_rule(0, 1), regex_rule("regex", "(")}); },
               {"rules[0] (first)", "rules[2]"});
}

// ---- sums --------------------------------------------------------------------------------------

// Returns fixed rewards, whatever the batch (to test counts and weights).
class FixedSource : public RewardSource {
 public:
  FixedSource(std::vector<double> values, std::string name) : values_(std::move(values)), name_(std::move(name)) {}
  std::vector<double> score(const std::vector<RewardInput>&) override { return values_; }
  std::string describe() const override { return name_; }

 private:
  std::vector<double> values_;
  std::string name_;
};

TEST(RewardSum, TwoSourcesByHand) {
  std::vector<std::pair<double, std::unique_ptr<RewardSource>>> parts;
  parts.emplace_back(0.5, make_rules_source({words_rule("contains", {"cat"})}));
  parts.emplace_back(-2.0, std::make_unique<FixedSource>(std::vector<double>{1.0, 0.25}, "fixed"));
  auto sum = make_sum_source(std::move(parts));
  const std::vector<double> got = sum->score({resp("a cat"), resp("a dog")});
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], 0.5 * 1 - 2.0 * 1.0);   // -1.5
  EXPECT_EQ(got[1], 0.5 * 0 - 2.0 * 0.25);  // -0.5
  EXPECT_EQ(sum->describe(), "sum of (0.5 * rules (1 checks), -2 * fixed)");
}

TEST(RewardSum, WrongCountNamesThePart) {
  std::vector<std::pair<double, std::unique_ptr<RewardSource>>> parts;
  parts.emplace_back(1.0, std::make_unique<FixedSource>(std::vector<double>{1.0, 2.0}, "good one"));
  parts.emplace_back(1.0, std::make_unique<FixedSource>(std::vector<double>{1.0}, "short one"));
  auto sum = make_sum_source(std::move(parts));
  expect_error([&] { sum->score({resp("a"), resp("b")}); }, {"short one", "returned 1", "batch of 2"});
}

TEST(RewardSum, RejectsBadParts) {
  expect_error([&] { make_sum_source({}); }, {"no parts"});
  std::vector<std::pair<double, std::unique_ptr<RewardSource>>> parts;
  parts.emplace_back(std::numeric_limits<double>::infinity(),
                     std::make_unique<FixedSource>(std::vector<double>{1.0}, "inf weighted"));
  expect_error([&] { make_sum_source(std::move(parts)); }, {"inf weighted", "finite"});
}

// ---- normaliser --------------------------------------------------------------------------------

TEST(RewardNormalizer, TwoBatchesAgainstHandStats) {
  RewardNormalizer norm;
  // Batch 1 {1, 2, 3}: mean 2, population variance 2/3.
  const std::vector<double> a = norm.normalize({1.0, 2.0, 3.0});
  const double std1 = std::sqrt(2.0 / 3.0);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_NEAR(a[0], -1.0 / (std1 + 1e-8), 1e-12);
  EXPECT_NEAR(a[1], 0.0, 1e-12);
  EXPECT_NEAR(a[2], 1.0 / (std1 + 1e-8), 1e-12);
  EXPECT_EQ(norm.state().count, 3);
  EXPECT_NEAR(norm.state().mean, 2.0, 1e-12);
  EXPECT_NEAR(norm.state().m2, 2.0, 1e-12);
  // Batch 2 {6, 0}: all five seen {1, 2, 3, 6, 0}: mean 2.4, squared deviations sum 21.2, variance 4.24.
  const std::vector<double> b = norm.normalize({6.0, 0.0});
  const double std2 = std::sqrt(21.2 / 5.0);
  EXPECT_NEAR(b[0], (6.0 - 2.4) / (std2 + 1e-8), 1e-12);
  EXPECT_NEAR(b[1], (0.0 - 2.4) / (std2 + 1e-8), 1e-12);
  EXPECT_EQ(norm.state().count, 5);
  EXPECT_NEAR(norm.state().mean, 2.4, 1e-12);
  EXPECT_NEAR(norm.state().m2, 21.2, 1e-12);
}

TEST(RewardNormalizer, SingleRewardIsZero) {
  RewardNormalizer norm;
  const std::vector<double> out = norm.normalize({5.0});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], 0.0);
  EXPECT_TRUE(norm.normalize({}).empty());
  EXPECT_EQ(norm.state().count, 1);
}

TEST(RewardNormalizer, Clips) {
  // {0, 0, 0, 10}: mean 2.5, variance (3 * 6.25 + 56.25) / 4 = 18.75, std 4.330...; 10 -> 1.732 -> clip 1.5.
  RewardNormalizer norm(1.5);
  const std::vector<double> out = norm.normalize({0.0, 0.0, 0.0, 10.0});
  const double std = std::sqrt(18.75);
  EXPECT_NEAR(out[0], -2.5 / (std + 1e-8), 1e-12);  // -0.577, inside
  EXPECT_EQ(out[3], 1.5);
  RewardNormalizer low(0.5);
  const std::vector<double> out2 = low.normalize({0.0, 0.0, 0.0, 10.0});
  EXPECT_EQ(out2[0], -0.5);
  EXPECT_EQ(out2[3], 0.5);
  RewardNormalizer off;  // clip 0: no clipping
  EXPECT_NEAR(off.normalize({0.0, 0.0, 0.0, 10.0})[3], 7.5 / (std + 1e-8), 1e-12);
}

TEST(RewardNormalizer, RestoreContinuesIdentically) {
  RewardNormalizer a(3.0);
  a.normalize({1.0, 4.0, -2.0});
  a.normalize({0.5});
  RewardNormalizer b(3.0);
  b.restore(a.state());
  const std::vector<double> next = {2.0, 7.0, -1.0};
  const std::vector<double> ra = a.normalize(next);
  const std::vector<double> rb = b.normalize(next);
  EXPECT_EQ(ra, rb);  // bit-identical
  EXPECT_EQ(a.state().count, b.state().count);
  EXPECT_EQ(a.state().mean, b.state().mean);
  EXPECT_EQ(a.state().m2, b.state().m2);
}

TEST(RewardNormalizer, RejectsNonFinite) {
  RewardNormalizer norm;
  expect_error([&] { norm.normalize({1.0, std::nan("")}); }, {"reward[1]", "finite"});
  EXPECT_EQ(norm.state().count, 0);  // nothing was added
}

}  // namespace
}  // namespace reglage::reward
