// A compiled PCRE2 pattern (UTF + Unicode properties) for the Hugging Face pre-tokenizers and normalizers.
#pragma once
#include <cstddef>
#include <functional>
#include <string>

struct pcre2_real_code_8;

namespace reglage::tokenizer {

class Pcre2Regex {
 public:
  // source names the file (and key) the pattern came from, for the error when it does not compile.
  Pcre2Regex(const std::string& pattern, const std::string& source);
  ~Pcre2Regex();
  Pcre2Regex(const Pcre2Regex&) = delete;
  Pcre2Regex& operator=(const Pcre2Regex&) = delete;

  // Visits the matches and the gaps between them in order, as byte ranges [begin, end) with is_match; empty
  // matches split nothing. visit returns false to stop, and segments then returns false. Invalid UTF-8 never
  // matches (it ends up in the gaps).
  bool segments(const std::string& s, const std::function<bool(size_t, size_t, bool)>& visit) const;
  // Whether the pattern matches starting exactly at byte pos (anchored there).
  bool matches_at(const std::string& s, size_t pos) const;
  // Every match replaced by `with` (taken literally).
  std::string replace_all(const std::string& s, const std::string& with) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
};

// s with every regex metacharacter escaped, so that a Hugging Face "String" pattern can run as a regex.
std::string escape_regex_literal(const std::string& s);

}  // namespace reglage::tokenizer
