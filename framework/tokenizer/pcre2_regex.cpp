#include "framework/tokenizer/pcre2_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>

#include "framework/core/error.h"

namespace reglage::tokenizer {

// MATCH_INVALID_UTF makes invalid UTF-8 input safe: bad bytes never match and end up in the gaps.
Pcre2Regex::Pcre2Regex(const std::string& pattern, const std::string& source) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset, nullptr);
  if (!code_) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    fail(source, ": regex does not compile at offset ", offset, ": ", reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // a speed-up only; the interpreter runs when JIT is absent
}

Pcre2Regex::~Pcre2Regex() { pcre2_code_free(code_); }

namespace {
using MatchData = std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)>;
MatchData match_data(const pcre2_code* code) {
  return MatchData(pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
}
}  // namespace

bool Pcre2Regex::segments(const std::string& s, const std::function<bool(size_t, size_t, bool)>& visit) const {
  MatchData md = match_data(code_);
  size_t pos = 0, last = 0;
  while (pos < s.size()) {
    const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, 0, md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail("tokenizer regex: match error ", rc, " at byte ", pos);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t begin = ov[0], end = ov[1];
    if (end == begin) {  // empty matches split nothing; step to the next character
      pos = begin + 1;
      while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (begin > last && !visit(last, begin, false)) return false;
    if (!visit(begin, end, true)) return false;
    last = pos = end;
  }
  if (last < s.size()) return visit(last, s.size(), false);
  return true;
}

bool Pcre2Regex::matches_at(const std::string& s, size_t pos) const {
  MatchData md = match_data(code_);
  return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, PCRE2_ANCHORED, md.get(),
                     nullptr) >= 0;
}

std::string Pcre2Regex::replace_all(const std::string& s, const std::string& with) const {
  std::string out;
  segments(s, [&](size_t b, size_t e, bool is_match) {
    out += is_match ? with : s.substr(b, e - b);
    return true;
  });
  return out;
}

std::string escape_regex_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace reglage::tokenizer
