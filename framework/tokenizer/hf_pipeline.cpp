#include "framework/tokenizer/hf_pipeline.h"

#include <array>
#include <unordered_map>

#include "framework/core/error.h"
#include "framework/tokenizer/pcre2_regex.h"

namespace reglage::tokenizer {

using json = nlohmann::json;

namespace {

// GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other symbols, each with an optional
// leading space; whitespace runs give their last space to the following word.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Punctuation as Rust's char::is_ascii_punctuation || is_punctuation (Unicode P*): what HF's Punctuation splits.
const char* kPunctuationPattern = R"([\p{P}\x21-\x2F\x3A-\x40\x5B-\x60\x7B-\x7E])";

std::string utf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes take code
// points 256.., so every token is printable text. byte_char[b] is b's UTF-8; char_byte inverts it.
struct ByteMap {
  std::array<std::string, 256> byte_char;
  std::unordered_map<std::string, unsigned char> char_byte;
  ByteMap() {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_char[b] = utf8(printable ? b : next++);
      char_byte[byte_char[b]] = static_cast<unsigned char>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

// Unicode White_Space (Rust's char::is_whitespace) at byte i of s; its length in *len.
bool space_at(const std::string& s, size_t i, size_t* len) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  *len = 1;
  if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return true;
  if (c < 0x80) return false;
  static const Pcre2Regex space(R"(\s)", "whitespace");
  *len = std::min(utf8_len(c), s.size() - i);
  return space.matches_at(s, i);
}

std::string replace_literal(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t at = 0;
  for (size_t hit; (hit = s.find(from, at)) != std::string::npos; at = hit + from.size()) {
    out.append(s, at, hit - at);
    out += to;
  }
  out.append(s, at, std::string::npos);
  return out;
}

// A "pattern" value: {"String": s} (literal) or {"Regex": r}.
std::shared_ptr<Pcre2Regex> parse_pattern(const json& p, const std::string& where) {
  if (p.is_object() && p.contains("String") && p["String"].is_string())
    return std::make_shared<Pcre2Regex>(escape_regex_literal(p["String"].get<std::string>()), where);
  if (p.is_object() && p.contains("Regex") && p["Regex"].is_string())
    return std::make_shared<Pcre2Regex>(p["Regex"].get<std::string>(), where);
  fail(where, ": pattern is neither {\"String\": ...} nor {\"Regex\": ...}");
}

PreTokenizer::Behavior parse_behavior(const json& j, const std::string& where) {
  const std::string b = j.value("behavior", std::string("Isolated"));
  if (b == "Isolated") return PreTokenizer::Behavior::kIsolated;
  if (b == "Removed") return PreTokenizer::Behavior::kRemoved;
  if (b == "MergedWithPrevious") return PreTokenizer::Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return PreTokenizer::Behavior::kMergedWithNext;
  if (b == "Contiguous") return PreTokenizer::Behavior::kContiguous;
  fail(where, ": behavior \"", b, "\" is not one of Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous");
}

using Segment = std::function<bool(size_t, size_t, bool)>;  // [begin, end), is_match

// HF's SplitDelimiterBehavior over the matches and gaps that `segments` produces, streamed: a piece is emitted
// as soon as nothing later can extend it.
bool split_by(PreTokenizer::Behavior behavior, bool invert, const std::function<bool(const Segment&)>& segments,
              const std::function<bool(size_t, size_t)>& emit) {
  using B = PreTokenizer::Behavior;
  bool have = false, prev_match = false;
  size_t pb = 0, pe = 0;  // the pending piece
  auto flush = [&] {
    if (!have) return true;
    have = false;
    return emit(pb, pe);
  };
  auto hold = [&](size_t b, size_t e) {
    const bool ok = flush();
    pb = b, pe = e, have = true;
    return ok;
  };
  const bool ok = segments([&](size_t b, size_t e, bool m) {
    m = m != invert;
    bool r = true;
    switch (behavior) {
      case B::kRemoved: r = m || emit(b, e); break;
      case B::kIsolated: r = emit(b, e); break;
      case B::kContiguous:  // runs of matches become one piece
        if (have && m && prev_match) pe = e; else r = hold(b, e);
        break;
      case B::kMergedWithPrevious:  // a match joins the piece before it
        if (have && m && !prev_match) pe = e; else r = hold(b, e);
        break;
      case B::kMergedWithNext:  // a match joins the gap after it (a match before a match stands alone)
        if (m) r = hold(b, e);
        else if (have) have = false, r = emit(pb, e);
        else r = emit(b, e);
        break;
    }
    prev_match = m;
    return r;
  });
  return ok && flush();
}

}  // namespace

size_t utf8_len(unsigned char c) {
  if (c >= 0xF0 && c < 0xF8) return 4;
  if (c >= 0xE0 && c < 0xF0) return 3;
  if (c >= 0xC0 && c < 0xE0) return 2;
  return 1;
}

const std::string& byte_level_char(unsigned char b) { return byte_map().byte_char[b]; }

std::string byte_level_unmap(const std::string& token) {
  const auto& map = byte_map().char_byte;
  std::string out;
  for (size_t i = 0; i < token.size();) {
    const size_t n = std::min(utf8_len(static_cast<unsigned char>(token[i])), token.size() - i);
    auto it = map.find(token.substr(i, n));
    if (it == map.end()) return token;  // as HF: the whole token stays as it is
    out += static_cast<char>(it->second);
    i += n;
  }
  return out;
}

// ---- normalizers ----------------------------------------------------------------------------------------------

void Normalizer::parse(const json& j, const std::string& where) {
  json_ = j;
  steps_.clear();
  if (!j.is_null()) parse_step(j, where);
}

void Normalizer::parse_step(const json& j, const std::string& where) {
  const std::string type = j.value("type", std::string());
  if (type == "Sequence") {
    for (const json& s : j.at("normalizers")) parse_step(s, where);
  } else if (type == "NFC") {
    // Taken as already satisfied: text reaching a tokenizer is NFC in practice, and NFC of NFC is itself.
  } else if (type == "Prepend") {
    steps_.push_back({Step::kPrepend, j.at("prepend").get<std::string>(), nullptr, false, false});
  } else if (type == "Replace") {
    steps_.push_back({Step::kReplace, j.at("content").get<std::string>(),
                      parse_pattern(j.at("pattern"), where + " Replace"), false, false});
  } else if (type == "Strip") {
    Step s{Step::kStrip, "", nullptr, false, false};
    s.left = j.value("strip_left", true);
    s.right = j.value("strip_right", true);
    steps_.push_back(s);
  } else {
    fail(where, " type \"", type, "\" is not supported (supported: NFC, Prepend, Replace, Strip, Sequence)");
  }
}

std::string Normalizer::apply(const std::string& text) const {
  std::string s = text;
  for (const Step& st : steps_) {
    switch (st.kind) {
      case Step::kPrepend:
        if (!s.empty()) s = st.text + s;
        break;
      case Step::kReplace:
        s = st.regex->replace_all(s, st.text);
        break;
      case Step::kStrip: {
        size_t b = 0, e = s.size(), n = 0;
        if (st.left)
          while (b < e && space_at(s, b, &n)) b += n;
        if (st.right)
          while (e > b) {
            size_t k = e - 1;
            while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
            if (!space_at(s, k, &n)) break;
            e = k;
          }
        s = s.substr(b, e - b);
        break;
      }
    }
  }
  return s;
}

// ---- pre-tokenizers -------------------------------------------------------------------------------------------

void PreTokenizer::parse(const json& j, const std::string& where) {
  json_ = j;
  steps_.clear();
  byte_level_ = add_prefix_space_ = false;
  if (j.is_null()) return;
  if (j.value("type", std::string()) == "Sequence") {
    const json& list = j.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i)
      parse_step(list[i], where + " step " + std::to_string(i), i + 1 == list.size());
  } else {
    parse_step(j, where, true);
  }
}

void PreTokenizer::set_gpt2_byte_level() {
  parse({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}},
        "GPT-2 pre-tokenizer");
}

void PreTokenizer::parse_step(const json& j, const std::string& where, bool last) {
  const std::string type = j.value("type", std::string());
  Step s;
  if (type == "Split") {
    s.regex = parse_pattern(j.at("pattern"), where + " Split");
    s.behavior = parse_behavior(j, where + " Split");
    s.invert = j.value("invert", false);
  } else if (type == "Digits") {  // char::is_numeric: one piece per digit, or per run of digits
    s.regex = std::make_shared<Pcre2Regex>(R"(\p{N})", where);
    s.behavior = j.value("individual_digits", false) ? Behavior::kIsolated : Behavior::kContiguous;
  } else if (type == "Whitespace") {  // keeps \w+ and [^\w\s]+, drops the rest
    s.regex = std::make_shared<Pcre2Regex>(R"(\w+|[^\w\s]+)", where);
    s.behavior = Behavior::kRemoved;
    s.invert = true;
  } else if (type == "WhitespaceSplit") {
    s.regex = std::make_shared<Pcre2Regex>(R"(\s+)", where);
    s.behavior = Behavior::kRemoved;
  } else if (type == "Punctuation") {
    s.regex = std::make_shared<Pcre2Regex>(kPunctuationPattern, where);
    s.behavior = parse_behavior(j, where + " Punctuation");
  } else if (type == "Metaspace") {
    s.kind = Step::kMetaspace;
    s.replacement = j.contains("replacement") ? j["replacement"].get<std::string>() : j.value("str_rep", std::string("\u2581"));
    if (s.replacement.empty()) fail(where, " Metaspace: empty replacement");
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      const std::string p = j["prepend_scheme"].get<std::string>();
      if (p == "always") s.prepend = Step::kAlways;
      else if (p == "first") s.prepend = Step::kFirst;
      else if (p == "never") s.prepend = Step::kNever;
      else fail(where, " Metaspace: prepend_scheme \"", p, "\" is not always, first or never");
    } else {  // older files: add_prefix_space
      s.prepend = j.value("add_prefix_space", true) ? Step::kAlways : Step::kNever;
    }
    s.split = j.value("split", true);
  } else if (type == "ByteLevel") {
    if (!last) fail(where, " ByteLevel: supported only as the last pre-tokenizer step");
    s.kind = Step::kByteLevel;
    s.add_prefix_space = add_prefix_space_ = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) s.regex = std::make_shared<Pcre2Regex>(kGpt2Pattern, where);
    byte_level_ = true;
  } else {
    fail(where, " type \"", type, "\" is not supported (supported: Split, Digits, Whitespace, WhitespaceSplit, ",
         "Punctuation, Metaspace, ByteLevel, Sequence)");
  }
  steps_.push_back(std::move(s));
}

bool PreTokenizer::split(const std::string& text, bool at_start, const PieceVisit& visit) const {
  return split_from(0, text, at_start, visit);
}

// Each step applied to every piece of the one before, depth first, so that the caller can stop early.
bool PreTokenizer::split_from(size_t i, const std::string& text, bool at_start, const PieceVisit& visit) const {
  if (text.empty()) return true;
  if (i == steps_.size()) return visit(text, at_start);
  const Step& st = steps_[i];
  auto next = [&](const std::string& s) {
    return [this, i, at_start, &visit, p = &s](size_t b, size_t e) {
      return split_from(i + 1, p->substr(b, e - b), at_start && b == 0, visit);
    };
  };
  switch (st.kind) {
    case Step::kSplit:
      return split_by(st.behavior, st.invert, [&](const Segment& v) { return st.regex->segments(text, v); },
                      next(text));
    case Step::kMetaspace: {
      std::string t = replace_literal(text, " ", st.replacement);
      const bool prepend = st.prepend == Step::kAlways || (st.prepend == Step::kFirst && at_start);
      if (prepend && t.compare(0, st.replacement.size(), st.replacement) != 0) t = st.replacement + t;
      if (!st.split) return split_from(i + 1, t, at_start, visit);
      const std::string& r = st.replacement;
      auto occurrences = [&](const Segment& v) {  // each replacement character is a match of its own
        size_t at = 0;
        for (size_t hit; (hit = t.find(r, at)) != std::string::npos; at = hit + r.size()) {
          if (hit > at && !v(at, hit, false)) return false;
          if (!v(hit, hit + r.size(), true)) return false;
        }
        return at >= t.size() || v(at, t.size(), false);
      };
      return split_by(Behavior::kMergedWithNext, false, occurrences, next(t));
    }
    case Step::kByteLevel: {
      std::string t = text;
      if (st.add_prefix_space && t[0] != ' ') t.insert(t.begin(), ' ');
      if (!st.regex) return split_from(i + 1, t, at_start, visit);
      return split_by(Behavior::kIsolated, false, [&](const Segment& v) { return st.regex->segments(t, v); },
                      next(t));
    }
  }
  return true;
}

// ---- decoders -------------------------------------------------------------------------------------------------

void Decoder::parse(const json& j, const std::string& where) {
  json_ = j;
  steps_.clear();
  if (!j.is_null()) parse_step(j, where);
}

void Decoder::set_byte_level() {
  parse({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}},
        "GPT-2 decoder");
}

void Decoder::parse_step(const json& j, const std::string& where) {
  const std::string type = j.value("type", std::string());
  Step s;
  if (type == "Sequence") {
    for (const json& d : j.at("decoders")) parse_step(d, where);
    return;
  } else if (type == "ByteLevel") {
  } else if (type == "Replace") {
    s.kind = Step::kReplace;
    s.regex = parse_pattern(j.at("pattern"), where + " Replace");
    s.text = j.at("content").get<std::string>();
  } else if (type == "ByteFallback") {
    s.kind = Step::kByteFallback;
  } else if (type == "Fuse") {
    s.kind = Step::kFuse;
  } else if (type == "Strip") {
    s.kind = Step::kStrip;
    s.text = j.at("content").get<std::string>();
    s.start = j.value("start", size_t(0));
    s.stop = j.value("stop", size_t(0));
  } else if (type == "Metaspace") {
    s.kind = Step::kMetaspace;
    s.text = j.contains("replacement") ? j["replacement"].get<std::string>() : j.value("str_rep", std::string("\u2581"));
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string())
      s.strip_first = j["prepend_scheme"].get<std::string>() != "never";
    else
      s.strip_first = j.value("add_prefix_space", true);
  } else {
    fail(where, " type \"", type, "\" is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, ",
         "Metaspace, Sequence)");
  }
  steps_.push_back(std::move(s));
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
  if (json_.is_null()) {  // no decoder: HF joins the tokens with spaces
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const Step& st : steps_) {
    switch (st.kind) {
      case Step::kByteLevel:
        for (std::string& t : tokens) t = byte_level_unmap(t);
        break;
      case Step::kReplace:
        for (std::string& t : tokens) t = st.regex->replace_all(t, st.text);
        break;
      case Step::kByteFallback:
        for (std::string& t : tokens) {
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(t[3]) &&
              std::isxdigit(t[4]))
            t = std::string(1, static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
        }
        break;
      case Step::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, all);
        break;
      }
      case Step::kStrip:
        for (std::string& t : tokens) {
          size_t b = 0, e = t.size();
          for (size_t k = 0; k < st.start && !st.text.empty() && t.compare(b, st.text.size(), st.text) == 0; ++k)
            b += st.text.size();
          for (size_t k = 0; k < st.stop && !st.text.empty() && e >= b + st.text.size() &&
                             t.compare(e - st.text.size(), st.text.size(), st.text) == 0;
               ++k)
            e -= st.text.size();
          t = t.substr(b, e - b);
        }
        break;
      case Step::kMetaspace:  // the first token loses its replacement characters, the others turn them to spaces
        for (size_t i = 0; i < tokens.size(); ++i)
          tokens[i] = replace_literal(tokens[i], st.text, i == 0 && st.strip_first ? "" : " ");
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace reglage::tokenizer
