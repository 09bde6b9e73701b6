// Python str methods on UTF-8 text, by code point: what templates call as `.strip()`, `.split()` ... and what
// the filters build on. Case mapping covers ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic.
#pragma once
#include <string>
#include <vector>

namespace reglage::chat {

enum class StripSide { Both, Left, Right };
// str.strip(chars): chars_given=false strips Python whitespace.
std::string py_strip(const std::string& s, StripSide side, bool chars_given = false, const std::string& chars = "");
// str.split(sep, maxsplit): sep_given=false splits on runs of whitespace. Throws JinjaError on an empty sep.
std::vector<std::string> py_split(const std::string& s, bool sep_given, const std::string& sep, long maxsplit = -1);
std::vector<std::string> py_rsplit(const std::string& s, bool sep_given, const std::string& sep, long maxsplit);
std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, long count = -1);
std::vector<std::string> py_splitlines(const std::string& s, bool keepends = false);
std::string py_upper(const std::string& s);
std::string py_lower(const std::string& s);
std::string py_title(const std::string& s);       // str.title()
std::string py_capitalize(const std::string& s);  // str.capitalize()
std::string jinja_title(const std::string& s);    // jinja2's |title filter (words split at -, space, ( { [ <)
size_t py_len(const std::string& s);              // length in code points

}  // namespace reglage::chat
