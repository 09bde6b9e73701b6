// Rule rewards: each check scores a response 0/1 (or a graded length penalty); a rules source sums the
// checks with their weights. Regexes are PCRE2 in UTF mode, compiled once per source.
#include "reward/rules.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "framework/core/error.h"

namespace reglage::reward {
namespace {

// ---- PCRE2 -------------------------------------------------------------------------------------

struct CodeFree {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataFree {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using RegexPtr = std::unique_ptr<pcre2_code, CodeFree>;
using MatchDataPtr = std::unique_ptr<pcre2_match_data, MatchDataFree>;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (n < 0) return "PCRE2 error " + std::to_string(code);
  return std::string(reinterpret_cast<const char*>(buffer), size_t(n));
}

// Compiles `pattern` in UTF mode (Unicode properties for \w, \d..., invalid UTF-8 in subjects tolerated).
// On failure returns null and sets `error` to PCRE2's message and the offset in the pattern.
RegexPtr compile_regex(const std::string& pattern, std::string& error) {
  int code = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &offset, nullptr);
  if (re == nullptr) {
    error = pcre2_message(code) + " at offset " + std::to_string(offset);
    return nullptr;
  }
  return RegexPtr(re);
}

// True when `re` matches anywhere in `text`. A match-time failure (e.g. the match limit) throws.
bool regex_matches(const pcre2_code* re, const std::string& text, const std::string& where) {
  MatchDataPtr data(pcre2_match_data_create_from_pattern(re, nullptr));
  if (!data) fail(where, ": out of memory creating PCRE2 match data");
  const int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, 0, data.get(), nullptr);
  if (rc >= 0) return true;
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  fail(where, ": regex match failed: ", pcre2_message(rc));
}

// ---- words -------------------------------------------------------------------------------------

bool is_ascii_alnum(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

// True when `word` occurs in `text`. case_sensitive false folds ASCII letters only; whole_word requires the
// occurrence to be bounded by string ends or bytes that are not ASCII letters/digits (so UTF-8 multibyte
// characters and punctuation are boundaries).
bool occurs(const std::string& text, const std::string& word, bool case_sensitive, bool whole_word) {
  if (word.empty() || word.size() > text.size()) return false;
  std::string hay = text, needle = word;
  if (!case_sensitive) {
    for (char& c : hay) c = ascii_lower(c);
    for (char& c : needle) c = ascii_lower(c);
  }
  for (size_t pos = hay.find(needle); pos != std::string::npos; pos = hay.find(needle, pos + 1)) {
    if (!whole_word) return true;
    const size_t end = pos + needle.size();
    const bool left_ok = pos == 0 || !is_ascii_alnum(static_cast<unsigned char>(hay[pos - 1]));
    const bool right_ok = end == hay.size() || !is_ascii_alnum(static_cast<unsigned char>(hay[end]));
    if (left_ok && right_ok) return true;
  }
  return false;
}

// UTF-8 code points: every byte that is not a continuation byte (10xxxxxx) starts one.
int64_t count_code_points(const std::string& text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

double length_score(const RuleConfig& rule, const std::string& response) {
  const int64_t n = count_code_points(response);
  int64_t outside = 0;  // characters short of min_chars or past max_chars
  if (rule.min_chars > 0 && n < rule.min_chars) outside += rule.min_chars - n;
  if (rule.max_chars > 0 && n > rule.max_chars) outside += n - rule.max_chars;
  if (rule.penalty_per_char > 0) return 1.0 - rule.penalty_per_char * double(outside);
  return outside == 0 ? 1.0 : 0.0;
}

// ---- one check ---------------------------------------------------------------------------------

std::string rule_name(const RuleConfig& rule, size_t index) {
  std::string name = "rules[" + std::to_string(index) + "]";
  if (!rule.principle.empty()) name += " (" + rule.principle + ")";
  return name;
}

bool is_word_kind(const std::string& kind) { return kind == "contains" || kind == "excludes"; }
bool is_regex_kind(const std::string& kind) { return kind == "regex" || kind == "not_regex"; }

// Scores one check; `re` is the compiled pattern for regex kinds (null otherwise).
double score_one(const RuleConfig& rule, const pcre2_code* re, const RewardInput& input, const std::string& where) {
  const std::string& kind = rule.kind;
  if (kind == "regex") return regex_matches(re, input.response, where) ? 1.0 : 0.0;
  if (kind == "not_regex") return regex_matches(re, input.response, where) ? 0.0 : 1.0;
  if (kind == "contains") {
    for (const std::string& w : rule.words)
      if (!occurs(input.response, w, rule.case_sensitive, rule.whole_word)) return 0.0;
    return 1.0;
  }
  if (kind == "excludes") {
    for (const std::string& w : rule.words)
      if (occurs(input.response, w, rule.case_sensitive, rule.whole_word)) return 0.0;
    return 1.0;
  }
  if (kind == "exact_reference") {
    // An empty reference means the row has none: the check cannot pass.
    if (input.reference.empty()) return 0.0;
    return occurs(input.response, input.reference, rule.case_sensitive, rule.whole_word) ? 1.0 : 0.0;
  }
  if (kind == "length") return length_score(rule, input.response);
  fail(where, ": unknown kind '", kind, "' (expected regex, not_regex, contains, excludes, exact_reference or length)");
}

// Every problem with one rule, as "what (expected)" strings; compiles the regex into `re` when valid.
std::vector<std::string> check_rule(const RuleConfig& rule, RegexPtr& re) {
  std::vector<std::string> problems;
  const std::string& kind = rule.kind;
  const bool known = is_regex_kind(kind) || is_word_kind(kind) || kind == "exact_reference" || kind == "length";
  if (!known)
    problems.push_back("kind = '" + kind +
                       "' (expected regex, not_regex, contains, excludes, exact_reference or length)");
  if (!std::isfinite(rule.weight)) {
    std::ostringstream w;
    w << rule.weight;
    problems.push_back("weight = " + w.str() + " (must be finite)");
  }
  if (is_regex_kind(kind)) {
    if (rule.pattern.empty()) {
      problems.push_back("pattern is empty (a " + kind + " rule needs a PCRE2 pattern)");
    } else {
      std::string error;
      re = compile_regex(rule.pattern, error);
      if (!re) problems.push_back("pattern '" + rule.pattern + "' does not compile: " + error);
    }
  }
  if (is_word_kind(kind)) {
    if (rule.words.empty()) problems.push_back("words is empty (a " + kind + " rule needs at least one word)");
    for (size_t j = 0; j < rule.words.size(); ++j)
      if (rule.words[j].empty()) problems.push_back("words[" + std::to_string(j) + "] is empty");
  }
  if (kind == "length") {
    if (rule.min_chars < 0) problems.push_back("min_chars = " + std::to_string(rule.min_chars) + " (must be >= 0)");
    if (rule.max_chars < 0) problems.push_back("max_chars = " + std::to_string(rule.max_chars) + " (must be >= 0)");
    if (rule.min_chars > 0 && rule.max_chars > 0 && rule.min_chars > rule.max_chars)
      problems.push_back("min_chars = " + std::to_string(rule.min_chars) + " > max_chars = " +
                         std::to_string(rule.max_chars) + " (min must be <= max)");
    if (!std::isfinite(rule.penalty_per_char) || rule.penalty_per_char < 0) {
      std::ostringstream p;
      p << rule.penalty_per_char;
      problems.push_back("penalty_per_char = " + p.str() + " (must be finite and >= 0)");
    }
  }
  return problems;
}

// ---- the source --------------------------------------------------------------------------------

class RulesSource : public RewardSource {
 public:
  struct Compiled {
    RuleConfig rule;
    RegexPtr re;       // regex, not_regex only
    std::string name;  // "rules[i] (principle)", for errors
  };
  explicit RulesSource(std::vector<Compiled> rules) : rules_(std::move(rules)) {}

  std::vector<double> score(const std::vector<RewardInput>& batch) override {
    std::vector<double> out(batch.size(), 0.0);
    for (size_t b = 0; b < batch.size(); ++b)
      for (const Compiled& c : rules_) out[b] += c.rule.weight * score_one(c.rule, c.re.get(), batch[b], c.name);
    return out;
  }
  std::string describe() const override { return "rules (" + std::to_string(rules_.size()) + " checks)"; }

 private:
  std::vector<Compiled> rules_;
};

}  // namespace

double rule_score(const RuleConfig& rule, const RewardInput& input) {
  RegexPtr re;
  if (is_regex_kind(rule.kind)) {
    std::string error;
    re = compile_regex(rule.pattern, error);
    if (!re) fail("rule", rule.principle.empty() ? "" : " (" + rule.principle + ")", ": pattern '", rule.pattern,
                  "' does not compile: ", error);
  }
  const std::string where = rule.principle.empty() ? "rule" : "rule (" + rule.principle + ")";
  return score_one(rule, re.get(), input, where);
}

bool rules_pass(const std::vector<RuleConfig>& rules, const RewardInput& input) {
  for (const auto& rule : rules) {
    const double s = rule_score(rule, input);
    if (rule.weight > 0 && s < 1.0) return false;
    if (rule.weight < 0 && s > 0.0) return false;
  }
  return true;
}

std::unique_ptr<RewardSource> make_rules_source(const std::vector<RuleConfig>& rules) {
  // Validate every rule first and report all problems together.
  std::vector<RulesSource::Compiled> compiled;
  std::string errors;
  for (size_t i = 0; i < rules.size(); ++i) {
    RulesSource::Compiled c{rules[i], nullptr, rule_name(rules[i], i)};
    for (const std::string& p : check_rule(rules[i], c.re)) errors += (errors.empty() ? "" : "; ") + c.name + ": " + p;
    compiled.push_back(std::move(c));
  }
  if (!errors.empty()) fail("rules config error: ", errors);
  return std::make_unique<RulesSource>(std::move(compiled));
}

}  // namespace reglage::reward
