// The text steps of a Hugging Face tokenizer.json around its BPE model, each read from its JSON and kept as
// read for save_hf: normalizers (text -> text), pre-tokenizers (text -> pieces that never merge with each
// other) and decoders (token strings -> text). Semantics follow the `tokenizers` library (0.20+).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace reglage::tokenizer {

class Pcre2Regex;

// Normalizers: NFC (the input is taken to be NFC already), Prepend, Replace (string or regex), Strip,
// Sequence; anything else is refused when read.
class Normalizer {
 public:
  // j: the "normalizer" value (null for none); where: "FILE: normalizer", for messages.
  void parse(const nlohmann::json& j, const std::string& where);
  std::string apply(const std::string& text) const;
  bool empty() const { return steps_.empty(); }
  const nlohmann::json& as_read() const { return json_; }  // as read (null when none)

 private:
  struct Step {
    enum Kind { kPrepend, kReplace, kStrip } kind;
    std::string text;                   // Prepend's prefix, Replace's content
    std::shared_ptr<Pcre2Regex> regex;  // Replace's pattern
    bool left = false, right = false;   // Strip's sides
  };
  void parse_step(const nlohmann::json& j, const std::string& where);
  std::vector<Step> steps_;
  nlohmann::json json_;
};

// One pre-token and whether it starts at the start of the input text (Metaspace's prepend_scheme "first").
using PieceVisit = std::function<bool(const std::string& piece, bool at_start)>;

// Pre-tokenizers: Split (regex or string; Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous;
// invert), Digits, Whitespace, WhitespaceSplit, Punctuation, Metaspace, ByteLevel (last only), Sequence.
class PreTokenizer {
 public:
  void parse(const nlohmann::json& j, const std::string& where);  // null: the whole text is one piece
  void set_gpt2_byte_level();  // GPT-2's: ByteLevel(add_prefix_space=false, use_regex=true)
  // Visits the pieces of text in order, one at a time; visit returns false to stop (split then returns false).
  bool split(const std::string& text, bool at_start, const PieceVisit& visit) const;
  bool byte_level() const { return byte_level_; }          // ends in ByteLevel: the model sees byte-mapped text
  bool add_prefix_space() const { return add_prefix_space_; }
  const nlohmann::json& as_read() const { return json_; }

  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

 private:
  struct Step {
    enum Kind { kSplit, kMetaspace, kByteLevel } kind = kSplit;
    std::shared_ptr<Pcre2Regex> regex;  // Split's pattern; ByteLevel's GPT-2 regex when use_regex
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
    std::string replacement;          // Metaspace
    enum Prepend { kAlways, kFirst, kNever } prepend = kAlways;
    bool split = true;                // Metaspace's split on the replacement
    bool add_prefix_space = false;    // ByteLevel
  };
  void parse_step(const nlohmann::json& j, const std::string& where, bool last);
  bool split_from(size_t step, const std::string& text, bool at_start, const PieceVisit& visit) const;
  std::vector<Step> steps_;
  bool byte_level_ = false;
  bool add_prefix_space_ = false;
  nlohmann::json json_;
};

// Decoders: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence. Byte tokens (<0xNN>, byte-level
// characters) decode to their raw bytes, so that pieces decoded one at a time concatenate to the whole.
class Decoder {
 public:
  void parse(const nlohmann::json& j, const std::string& where);  // null: tokens joined with spaces
  void set_byte_level();
  // The text of a token sequence (the tokens' strings as the vocabulary holds them).
  std::string decode(std::vector<std::string> tokens) const;
  const nlohmann::json& as_read() const { return json_; }

 private:
  struct Step {
    enum Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace } kind = kByteLevel;
    std::shared_ptr<Pcre2Regex> regex;  // Replace's pattern
    std::string text;                   // Replace's content, Strip's content, Metaspace's replacement
    size_t start = 0, stop = 0;         // Strip
    bool strip_first = true;            // Metaspace: prepend_scheme is not "never"
  };
  void parse_step(const nlohmann::json& j, const std::string& where);
  std::vector<Step> steps_;
  nlohmann::json json_;
};

// The byte-level alphabet (GPT-2's bytes_to_unicode): the UTF-8 of the character standing for byte b.
const std::string& byte_level_char(unsigned char b);
// A byte-level token back to bytes; a token with any character outside the alphabet stays as it is.
std::string byte_level_unmap(const std::string& token);
// Length of the UTF-8 sequence a lead byte announces (1 for stray bytes, which then stand alone).
size_t utf8_len(unsigned char c);

}  // namespace reglage::tokenizer
