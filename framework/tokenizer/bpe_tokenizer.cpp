#include "framework/tokenizer/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <climits>
#include <functional>
#include <queue>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::tokenizer {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

// GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other symbols, each with an optional
// leading space; whitespace runs give their last space to the following word.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

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

// Length of the UTF-8 sequence a lead byte announces (1 for stray bytes, which then stand alone).
size_t utf8_len(unsigned char c) {
  if (c >= 0xF0 && c < 0xF8) return 4;
  if (c >= 0xE0 && c < 0xF0) return 3;
  if (c >= 0xC0 && c < 0xE0) return 2;
  return 1;
}

// A token string (byte-mapped) back to raw bytes; characters outside the map pass through unchanged.
std::string unmap_bytes(const std::string& token) {
  const auto& map = byte_map().char_byte;
  std::string out;
  for (size_t i = 0; i < token.size();) {
    const size_t n = std::min(utf8_len(static_cast<unsigned char>(token[i])), token.size() - i);
    const std::string ch = token.substr(i, n);
    auto it = map.find(ch);
    if (it != map.end())
      out += static_cast<char>(it->second);
    else
      out += ch;
    i += n;
  }
  return out;
}

std::string escape_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

// A token name in a config: a plain string, {"content": ...}, or null (none).
bool token_name(const json& v, std::string* name) {
  if (v.is_string()) {
    *name = v.get<std::string>();
    return true;
  }
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    *name = v["content"].get<std::string>();
    return true;
  }
  return false;
}

json parse_json_file(const std::string& path) {
  try {
    return json::parse(core::read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": invalid JSON (", e.what(), ")");
  }
}

}  // namespace

// A compiled PCRE2 pattern in UTF + Unicode-property mode. MATCH_INVALID_UTF makes invalid UTF-8 input
// safe: bad bytes never match and end up in the gaps, which byte-level BPE still encodes.
class Pcre2Regex {
 public:
  Pcre2Regex(const std::string& pattern, const std::string& source) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      fail(source, ": pre-tokenizer regex does not compile at offset ", offset, ": ", reinterpret_cast<char*>(msg));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // a speed-up only; the interpreter runs when JIT is absent
  }
  ~Pcre2Regex() { pcre2_code_free(code_); }
  Pcre2Regex(const Pcre2Regex&) = delete;
  Pcre2Regex& operator=(const Pcre2Regex&) = delete;

  // Visits the matches and the gaps between them, in order (Hugging Face Split, behavior "Isolated"), one
  // at a time so that the caller can stop early: visit returns false to stop, and split then returns false.
  bool split(const std::string& s, const std::function<bool(const std::string&)>& visit) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    size_t pos = 0, last = 0;
    while (pos < s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, 0, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) fail("pre-tokenizer regex: match error ", rc, " at byte ", pos);
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const size_t begin = ov[0], end = ov[1];
      if (end == begin) {  // empty matches split nothing; step to the next character
        pos = begin + 1;
        while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
        continue;
      }
      if (begin > last && !visit(s.substr(last, begin - last))) return false;
      if (!visit(s.substr(begin, end - begin))) return false;
      last = pos = end;
    }
    if (last < s.size()) return visit(s.substr(last));
    return true;
  }

 private:
  pcre2_code* code_ = nullptr;
};

// The largest vocabulary a model may have (ModelConfig::validate): token ids are below it.
constexpr int64_t kMaxTokenId = int64_t(1) << 24;

BpeTokenizer::BpeTokenizer() = default;
BpeTokenizer::~BpeTokenizer() = default;

void BpeTokenizer::set_vocab(const std::string& source, std::vector<std::pair<std::string, int64_t>> vocab) {
  source_ = source;
  for (auto& [token, id] : vocab) {
    // id_to_token_ grows to the largest id: 2^31-1 once asked for a 64 GB vector. Models index their
    // embedding with these ids and ModelConfig bounds vocab_size by 2^24, so no usable id is larger.
    if (id < 0 || id >= kMaxTokenId)
      fail(source, ": token \"", token, "\" has id ", id, " outside [0, ", kMaxTokenId, ")");
    if (!token_to_id_.emplace(token, id).second) fail(source, ": token \"", token, "\" appears twice");
    if (static_cast<size_t>(id) >= id_to_token_.size()) id_to_token_.resize(static_cast<size_t>(id) + 1);
    if (!id_to_token_[id].empty())
      fail(source, ": id ", id, " is used by \"", id_to_token_[id], "\" and \"", token, "\"");
    id_to_token_[id] = token;
  }
  if (token_to_id_.empty()) fail(source, ": empty vocabulary");
  default_specials();
}

// GPT2Tokenizer's defaults: <|endoftext|> is BOS, EOS, the stop token and a special token matched whole in
// the text, unless a config says otherwise.
void BpeTokenizer::default_specials() {
  const int64_t eot = token_id("<|endoftext|>");
  if (eot < 0) return;
  bos_id_ = eos_id_ = eot;
  stop_ids_ = {eot};
  add_token("<|endoftext|>", eot, true);
}

void BpeTokenizer::add_merge(const std::string& source, const std::string& left, const std::string& right) {
  const int64_t l = token_id(left), r = token_id(right), m = token_id(left + right);
  if (l < 0 || r < 0 || m < 0)
    fail(source, ": merge \"", left, " ", right, "\" (rank ", merge_list_.size(),
         ") uses a token missing from the vocabulary");
  const uint64_t key = (static_cast<uint64_t>(l) << 32) | static_cast<uint64_t>(r);
  // A repeated merge keeps its first (best) rank, as Hugging Face's loader does.
  merges_.emplace(key, Merge{static_cast<int32_t>(merge_list_.size()), m});
  merge_list_.emplace_back(left, right);
}

void BpeTokenizer::add_token(const std::string& content, int64_t id, bool special) {
  if (content.empty()) fail(source_, ": added token ", id, " is empty");
  if (id < 0 || id >= kMaxTokenId)
    fail(source_, ": added token \"", content, "\" has id ", id, " outside [0, ", kMaxTokenId, ")");
  for (AddedToken& t : added_) {
    if (t.content == content) {  // listed twice (tokenizer.json and tokenizer_config.json): keep one
      if (t.id != id) fail(source_, ": added token \"", content, "\" has ids ", t.id, " and ", id);
      t.special = t.special || special;
      return;
    }
  }
  if (static_cast<size_t>(id) >= id_to_token_.size()) id_to_token_.resize(static_cast<size_t>(id) + 1);
  if (!id_to_token_[id].empty() && id_to_token_[id] != content)
    fail(source_, ": added token \"", content, "\" reuses id ", id, " of \"", id_to_token_[id], "\"");
  id_to_token_[id] = content;
  added_.push_back({content, id, special});
  added_first_byte_[static_cast<unsigned char>(content[0])] = true;
  // Longest first, so that at any position the longest added token wins (leftmost-longest matching).
  std::stable_sort(added_.begin(), added_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
}

int64_t BpeTokenizer::token_id(const std::string& token) const {
  auto it = token_to_id_.find(token);
  if (it != token_to_id_.end()) return it->second;
  for (const AddedToken& t : added_)
    if (t.content == token) return t.id;
  return -1;
}

// The loaders below are function-try-blocks: a JSON value of the wrong type (nlohmann's type_error,
// out_of_range) becomes a reglage::Error naming the file, like every other problem.
std::unique_ptr<BpeTokenizer> BpeTokenizer::from_vocab_merges(const std::string& vocab_path,
                                                              const std::string& merges_path) try {
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  const json vocab = parse_json_file(vocab_path);
  if (!vocab.is_object()) fail(vocab_path, ": expected a JSON object mapping token -> id");
  std::vector<std::pair<std::string, int64_t>> entries;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) fail(vocab_path, ": token \"", it.key(), "\" has a non-integer id");
    entries.emplace_back(it.key(), it.value().get<int64_t>());
  }
  tok->set_vocab(vocab_path, std::move(entries));

  const std::string text = core::read_file(merges_path);
  size_t line_no = 0;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      fail(merges_path, ":", line_no, ": expected \"left right\", got \"", line, "\"");
    tok->add_merge(merges_path, line.substr(0, space), line.substr(space + 1));
  }
  tok->splitters_.push_back(std::make_unique<Pcre2Regex>(kGpt2Pattern, merges_path));
  tok->byte_level_regex_ = true;
  return tok;
} catch (const json::exception& e) {
  fail(vocab_path, ": unexpected content (", e.what(), ")");
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_parts(const Parts& parts) {
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  tok->set_vocab(parts.source, parts.vocab);
  tok->added_.clear();  // set_vocab's <|endoftext|> default: the parts say which tokens are added
  tok->added_first_byte_ = {};
  for (const auto& [left, right] : parts.merges) tok->add_merge(parts.source, left, right);
  for (const Parts::Added& a : parts.added) tok->add_token(a.content, a.id, a.special);
  for (const std::string& r : parts.split_regexes) {
    tok->split_patterns_.push_back(ojson{{"Regex", r}}.dump());
    tok->splitters_.push_back(std::make_unique<Pcre2Regex>(r, parts.source));
  }
  tok->byte_level_regex_ = false;
  tok->ignore_merges_ = parts.ignore_merges;
  for (int64_t id : {parts.bos_id, parts.eos_id})
    if (id >= tok->vocab_size()) fail(parts.source, ": special token id ", id, " is outside the vocabulary of ", tok->vocab_size());
  tok->bos_id_ = parts.bos_id;
  tok->eos_id_ = parts.eos_id;
  tok->add_bos_ = parts.add_bos;
  tok->add_eos_ = parts.add_eos;
  tok->stop_ids_ = parts.stop_ids;
  tok->chat_template_ = parts.chat_template;
  return tok;
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_tokenizer_json(const std::string& path) try {
  const json j = parse_json_file(path);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail(path, ": no \"model\" object");
  const json& model = j["model"];
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") fail(path, ": model.type \"", type, "\" is not supported (only byte-level BPE)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty())
      fail(path, ": model.", key, " is set; byte-level BPE expects none");
  if (model.value("byte_fallback", false))
    fail(path, ": model.byte_fallback is set; this loader reads byte-level BPE only");
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0)
    fail(path, ": model.dropout is set; inference tokenizers must be deterministic");

  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail(path, ": model.vocab is missing or not an object");
  std::vector<std::pair<std::string, int64_t>> entries;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer()) fail(path, ": model.vocab[\"", it.key(), "\"] is not an integer");
    entries.emplace_back(it.key(), it.value().get<int64_t>());
  }
  tok->set_vocab(path, std::move(entries));
  tok->ignore_merges_ = model.value("ignore_merges", false);

  // Merges are "left right" strings (older files) or [left, right] pairs (tokenizers >= 0.20).
  if (model.contains("merges")) {
    if (!model["merges"].is_array()) fail(path, ": model.merges is not an array");
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          fail(path, ": merge ", tok->merge_list_.size(), " \"", s, "\" is not \"left right\"");
        tok->add_merge(path, s.substr(0, space), s.substr(space + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        tok->add_merge(path, m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        fail(path, ": merge ", tok->merge_list_.size(), " is neither \"left right\" nor [left, right]");
      }
    }
  }

  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const json& t : j["added_tokens"]) {
      if (!t.contains("id") || !t.contains("content")) fail(path, ": an added_tokens entry lacks id or content");
      tok->add_token(t["content"].get<std::string>(), t["id"].get<int64_t>(), t.value("special", false));
    }
  }
  // Re-apply the <|endoftext|> default now that added tokens are known (Qwen2 lists it only there).
  tok->default_specials();

  // Normalizer: none, or NFC (Qwen2), which we take the input to satisfy already.
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const std::string n = j["normalizer"].value("type", std::string());
    if (n != "NFC") fail(path, ": normalizer \"", n, "\" is not supported (only none or NFC)");
    tok->nfc_normalizer_ = true;
  }

  // Pre-tokenizer: ByteLevel, or a Sequence of Split regexes ending in ByteLevel.
  if (!j.contains("pre_tokenizer") || !j["pre_tokenizer"].is_object())
    fail(path, ": no pre_tokenizer; byte-level BPE needs ByteLevel");
  std::vector<json> steps;
  if (j["pre_tokenizer"].value("type", std::string()) == "Sequence") {
    for (const json& s : j.at("pre_tokenizer").at("pretokenizers")) steps.push_back(s);
  } else {
    steps.push_back(j["pre_tokenizer"]);
  }
  bool byte_level = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    const json& s = steps[i];
    const std::string t = s.value("type", std::string());
    if (t == "Split" && !byte_level) {
      if (s.value("behavior", std::string("Isolated")) != "Isolated" || s.value("invert", false))
        fail(path, ": pre_tokenizer Split ", i, ": only behavior Isolated without invert is supported");
      const json& p = s.at("pattern");
      std::string pattern;
      if (p.contains("Regex"))
        pattern = p["Regex"].get<std::string>();
      else if (p.contains("String"))
        pattern = escape_literal(p["String"].get<std::string>());
      else
        fail(path, ": pre_tokenizer Split ", i, ": pattern is neither Regex nor String");
      tok->split_patterns_.push_back(p.dump());
      tok->splitters_.push_back(std::make_unique<Pcre2Regex>(pattern, path));
    } else if (t == "ByteLevel" && i + 1 == steps.size()) {
      byte_level = true;
      tok->add_prefix_space_ = s.value("add_prefix_space", false);
      tok->byte_level_regex_ = s.value("use_regex", true);
      if (tok->byte_level_regex_) tok->splitters_.push_back(std::make_unique<Pcre2Regex>(kGpt2Pattern, path));
    } else {
      fail(path, ": pre_tokenizer step ", i, " \"", t, "\" is not supported (expected Split... then ByteLevel)");
    }
  }
  if (!byte_level) fail(path, ": pre_tokenizer has no ByteLevel step; only byte-level BPE is supported");
  return tok;
} catch (const json::exception& e) {
  fail(path, ": unexpected content (", e.what(), ")");
}

void BpeTokenizer::load_special_ids(const std::string& dir) try {
  const std::string tc_path = core::path_join(dir, "tokenizer_config.json");
  const std::string cfg_path = core::path_join(dir, "config.json");
  const std::string gen_path = core::path_join(dir, "generation_config.json");
  bool have_bos = false, have_eos = false;
  std::vector<int64_t> stops;
  auto resolve = [&](const std::string& file, const std::string& name) {
    const int64_t id = token_id(name);
    if (id < 0) fail(file, ": token \"", name, "\" is not in the vocabulary");
    return id;
  };

  if (core::file_exists(tc_path)) {
    const json tc = parse_json_file(tc_path);
    // Added tokens declared only here (vocab.json + merges.txt dirs such as Qwen2's).
    if (tc.contains("added_tokens_decoder") && tc["added_tokens_decoder"].is_object()) {
      for (auto it = tc["added_tokens_decoder"].begin(); it != tc["added_tokens_decoder"].end(); ++it) {
        int64_t id = 0;
        try {
          id = std::stoll(it.key());
        } catch (const std::exception&) {
          fail(tc_path, ": added_tokens_decoder key \"", it.key(), "\" is not an id");
        }
        std::string content;
        if (!token_name(it.value(), &content)) fail(tc_path, ": added_tokens_decoder[", it.key(), "] has no content");
        if (token_to_id_.count(content) == 0) add_token(content, id, it.value().value("special", false));
      }
    }
    // Whether encoding adds BOS / EOS (Llama-style configs say so; GPT-2 / Qwen2 / SmolLM add nothing).
    if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) add_bos_ = tc["add_bos_token"].get<bool>();
    if (tc.contains("add_eos_token") && tc["add_eos_token"].is_boolean()) add_eos_ = tc["add_eos_token"].get<bool>();
    // The chat template: a string, or a list of {name, template} where "default" is the one transformers uses.
    if (tc.contains("chat_template")) {
      const json& ct = tc["chat_template"];
      if (ct.is_string()) {
        chat_template_ = ct.get<std::string>();
      } else if (ct.is_array()) {
        for (const json& t : ct)
          if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
            chat_template_ = t["template"].get<std::string>();
      } else if (!ct.is_null()) {
        fail(tc_path, ": \"chat_template\" must be a string or a list of {name, template}, got ", ct.type_name());
      }
    }
    // Named special tokens are matched whole in the text, as transformers registers them.
    std::string name;
    if (tc.contains("bos_token")) {
      have_bos = true;
      bos_id_ = token_name(tc["bos_token"], &name) ? resolve(tc_path, name) : -1;
      if (bos_id_ >= 0) add_token(name, bos_id_, true);
    }
    if (tc.contains("eos_token")) {
      have_eos = true;
      eos_id_ = token_name(tc["eos_token"], &name) ? resolve(tc_path, name) : -1;
      if (eos_id_ >= 0) add_token(name, eos_id_, true);
      if (eos_id_ >= 0) stops.push_back(eos_id_);
    }
  }
  // config.json and generation_config.json: ids; an eos_token_id list means several stop tokens.
  for (const std::string& file : {cfg_path, gen_path}) {
    if (!core::file_exists(file)) continue;
    const json c = parse_json_file(file);
    if (!have_bos && c.contains("bos_token_id") && c["bos_token_id"].is_number_integer()) {
      have_bos = true;
      bos_id_ = c["bos_token_id"].get<int64_t>();
    }
    if (c.contains("eos_token_id")) {
      std::vector<int64_t> ids;
      if (c["eos_token_id"].is_number_integer())
        ids.push_back(c["eos_token_id"].get<int64_t>());
      else if (c["eos_token_id"].is_array())
        for (const json& v : c["eos_token_id"])
          if (v.is_number_integer()) ids.push_back(v.get<int64_t>());
      if (!have_eos && !ids.empty()) {
        have_eos = true;
        eos_id_ = ids[0];
      }
      stops.insert(stops.end(), ids.begin(), ids.end());
    }
  }
  for (int64_t id : {bos_id_, eos_id_})
    if (id >= vocab_size()) fail(dir, ": special token id ", id, " is outside the vocabulary of ", vocab_size());
  if (have_eos || !stops.empty()) {
    stop_ids_.clear();
    if (eos_id_ >= 0) stop_ids_.push_back(eos_id_);
    for (int64_t id : stops) {
      if (id < 0 || id >= vocab_size())
        fail(dir, ": stop token id ", id, " is outside the vocabulary of ", vocab_size());
      if (std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end()) stop_ids_.push_back(id);
    }
  }
} catch (const json::exception& e) {
  fail(dir, ": unexpected content in tokenizer_config.json / config.json / generation_config.json (", e.what(), ")");
}

// Merges by rank within one pre-token, as Hugging Face's BPE does: each round merges the adjacent pair with
// the lowest merge rank, the leftmost if it occurs more than once. The candidate pairs sit in a heap keyed
// (rank, position) over a linked list of symbols, so a round costs O(log n) rather than a scan of the piece.
// A popped entry is taken if the pair now at its position has that rank (a rank names one pair of ids, so it
// is that very pair); otherwise a merge beside it has made it stale and it is skipped.
void BpeTokenizer::encode_piece(const std::string& piece, std::vector<int64_t>* out) const {
  // Short pieces repeat (words); long ones rarely do and would fill memory.
  constexpr size_t kMaxCachedBytes = 256;
  const bool cacheable = piece.size() <= kMaxCachedBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const ByteMap& map = byte_map();
  std::vector<int64_t> ids;  // (n) symbol ids; -1 once merged into the symbol on its left
  if (ignore_merges_) {
    std::string mapped;
    for (unsigned char b : piece) mapped += map.byte_char[b];
    auto whole = token_to_id_.find(mapped);
    if (whole != token_to_id_.end()) ids.push_back(whole->second);
  }
  if (ids.empty()) {
    for (unsigned char b : piece) {
      auto it = token_to_id_.find(map.byte_char[b]);
      if (it == token_to_id_.end())
        fail(source_, ": byte 0x", std::hex, static_cast<int>(b), " has no token in the vocabulary");
      ids.push_back(it->second);
    }
    if (ids.size() > size_t(INT32_MAX))
      fail(source_, ": a pre-token of ", ids.size(), " bytes, more than the 2^31 - 1 it handles");
    const int32_t n = static_cast<int32_t>(ids.size());
    std::vector<int32_t> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));  // the list; -1 at the ends
    for (int32_t i = 0; i < n; ++i) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    auto merge_at = [&](int32_t left) -> const Merge* {  // the merge of the pair starting at left, if any
      if (left < 0 || ids[left] < 0 || next[left] < 0) return nullptr;
      auto it = merges_.find((static_cast<uint64_t>(ids[left]) << 32) | static_cast<uint64_t>(ids[next[left]]));
      return it == merges_.end() ? nullptr : &it->second;
    };
    struct Candidate {
      int32_t rank;
      int32_t left;  // position of the pair's left symbol
    };
    auto after = [](const Candidate& a, const Candidate& b) {  // heap order: lowest rank, then leftmost
      return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
    };
    std::vector<Candidate> heap;
    heap.reserve(static_cast<size_t>(n));
    auto push = [&](int32_t left) {
      if (const Merge* m = merge_at(left)) {
        heap.push_back({m->rank, left});
        std::push_heap(heap.begin(), heap.end(), after);
      }
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), after);
      const Candidate c = heap.back();
      heap.pop_back();
      const Merge* m = merge_at(c.left);
      if (m == nullptr || m->rank != c.rank) continue;  // stale
      const int32_t right = next[c.left];
      ids[c.left] = m->merged_id;
      ids[right] = -1;
      next[c.left] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.left;
      push(prev[c.left]);
      push(c.left);
    }
    std::vector<int64_t> merged;
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = next[i]) merged.push_back(ids[i]);  // 0 is never merged away
    ids.swap(merged);
  }
  out->insert(out->end(), ids.begin(), ids.end());
  if (!cacheable) return;
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() > 200000) cache_.clear();  // bounded: long-running servers see unbounded text
  cache_.emplace(piece, std::move(ids));
}

// Pre-tokens never merge with each other, so the tokens so far are final and the text can stop once more
// than max_tokens are out. Returns false when it stopped.
bool BpeTokenizer::encode_text(const std::string& text, size_t max_tokens, std::vector<int64_t>* out) const {
  if (text.empty()) return true;
  const std::function<bool(const std::string&)> encode_one = [&](const std::string& p) {
    encode_piece(p, out);
    return out->size() <= max_tokens;
  };
  // ByteLevel: optional prefix space per piece, then (use_regex) the GPT-2 split.
  const std::function<bool(const std::string&)> byte_level = [&](const std::string& piece) {
    std::string p = piece;
    if (add_prefix_space_ && p[0] != ' ') p.insert(p.begin(), ' ');
    return byte_level_regex_ ? splitters_.back()->split(p, encode_one) : encode_one(p);
  };
  // The Split steps in order, each applied to every piece of the one before, depth first so it can stop.
  const size_t n_split = split_patterns_.size();
  std::function<bool(size_t, const std::string&)> split_from = [&](size_t step, const std::string& piece) {
    if (step == n_split) return byte_level(piece);
    return splitters_[step]->split(piece, [&](const std::string& p) { return split_from(step + 1, p); });
  };
  return split_from(0, text);
}

// Added tokens are matched whole first (leftmost, longest), the text between them is BPE-encoded.
void BpeTokenizer::encode_into(const std::string& text, size_t max_tokens, std::vector<int64_t>* out,
                               bool parse_special) const {
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const AddedToken* hit = nullptr;
    if (!added_first_byte_[static_cast<unsigned char>(text[pos])]) {  // most bytes start no added token
      ++pos;
      continue;
    }
    for (const AddedToken& t : added_) {
      if (t.special && !parse_special) continue;
      if (text.compare(pos, t.content.size(), t.content) == 0) {
        hit = &t;
        break;
      }
    }
    if (!hit) {
      ++pos;
      continue;
    }
    if (!encode_text(text.substr(start, pos - start), max_tokens, out)) return;
    out->push_back(hit->id);
    if (out->size() > max_tokens) return;
    pos += hit->content.size();
    start = pos;
  }
  encode_text(text.substr(start), max_tokens, out);
}

std::vector<int64_t> BpeTokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  std::vector<int64_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  encode_into(text, SIZE_MAX, &ids);
  if (add_eos && eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

std::vector<int64_t> BpeTokenizer::encode_special(const std::string& text, bool add_bos, bool add_eos,
                                                  bool parse_special) const {
  std::vector<int64_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  encode_into(text, SIZE_MAX, &ids, parse_special);
  if (add_eos && eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

std::vector<int64_t> BpeTokenizer::encode_prefix(const std::string& text, size_t max_tokens) const {
  std::vector<int64_t> ids;
  encode_into(text, max_tokens, &ids);
  if (ids.size() > max_tokens) ids.resize(max_tokens + 1);
  return ids;
}

std::string BpeTokenizer::decode_piece(int64_t prev_token, int64_t token) const {
  if (token < 0 || token >= vocab_size()) fail(source_, ": token id ", token, " outside [0, ", vocab_size(), ")");
  for (const AddedToken& t : added_)
    if (t.id == token) return t.special ? std::string() : t.content;
  if (id_to_token_[token].empty()) fail(source_, ": token id ", token, " is not in the vocabulary");
  return unmap_bytes(id_to_token_[token]);
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  int64_t prev = -1;
  for (int64_t id : ids) {
    out += decode_piece(prev, id);
    prev = id;
  }
  return out;
}

void BpeTokenizer::save_hf(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  // vocab.json in id order, merges.txt in rank order: the GPT-2 file pair.
  std::vector<std::pair<int64_t, std::string>> by_id;
  for (const auto& [token, id] : token_to_id_) by_id.emplace_back(id, token);
  std::sort(by_id.begin(), by_id.end());
  // Appended directly: ordered_json's operator[] searches linearly, quadratic over 150k tokens. Keys are unique.
  ojson vocab = ojson::object();
  auto& entries = vocab.get_ref<ojson::object_t&>();
  for (const auto& [id, token] : by_id) entries.emplace_back(token, id);
  std::string merges_txt = "#version: 0.2\n";
  ojson merges = ojson::array();
  for (const auto& [l, r] : merge_list_) {
    merges_txt += l + " " + r + "\n";
    merges.push_back(l + " " + r);
  }

  ojson added = ojson::array();
  std::vector<AddedToken> added_by_id = added_;
  std::sort(added_by_id.begin(), added_by_id.end(),
            [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  ojson decoder_entries = ojson::object();
  for (const AddedToken& t : added_by_id) {
    ojson e = {{"id", t.id},      {"content", t.content}, {"single_word", false}, {"lstrip", false},
               {"rstrip", false}, {"normalized", false},  {"special", t.special}};
    added.push_back(e);
    e.erase("id");
    decoder_entries[std::to_string(t.id)] = e;
  }

  ojson byte_level = {{"type", "ByteLevel"},
                      {"add_prefix_space", add_prefix_space_},
                      {"trim_offsets", true},
                      {"use_regex", byte_level_regex_}};
  ojson pre = byte_level;
  if (!split_patterns_.empty()) {
    ojson steps = ojson::array();
    for (const std::string& p : split_patterns_)
      steps.push_back({{"type", "Split"}, {"pattern", ojson::parse(p)}, {"behavior", "Isolated"}, {"invert", false}});
    steps.push_back(byte_level);
    pre = {{"type", "Sequence"}, {"pretokenizers", steps}};
  }
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nfc_normalizer_ ? ojson{{"type", "NFC"}} : ojson(nullptr);
  j["pre_tokenizer"] = pre;
  j["post_processor"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  // A tokenizer that adds BOS/EOS (GGUF add_bos_token, Llama 3, DeepSeek) says so the way transformers reads it:
  // a TemplateProcessing post-processor (add_special_tokens=True runs it).
  if (add_bos() || add_eos()) {
    auto special = [](const std::string& t, int type_id) { return ojson{{"SpecialToken", {{"id", t}, {"type_id", type_id}}}}; };
    auto seq = [](const char* id, int type_id) { return ojson{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
    const std::string bos = add_bos() ? id_to_token_[bos_id_] : "", eos = add_eos() ? id_to_token_[eos_id_] : "";
    ojson single = ojson::array();
    if (add_bos()) single.push_back(special(bos, 0));
    single.push_back(seq("A", 0));
    if (add_eos()) single.push_back(special(eos, 0));
    ojson pair = single;
    if (add_bos()) pair.push_back(special(bos, 1));
    pair.push_back(seq("B", 1));
    if (add_eos()) pair.push_back(special(eos, 1));
    ojson specials = ojson::object();
    if (add_bos()) specials[bos] = {{"id", bos}, {"ids", {bos_id_}}, {"tokens", {bos}}};
    if (add_eos()) specials[eos] = {{"id", eos}, {"ids", {eos_id_}}, {"tokens", {eos}}};
    j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
  }
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", ignore_merges_},
                {"vocab", vocab},
                {"merges", merges}};

  auto name = [&](int64_t id) { return id < 0 ? ojson(nullptr) : ojson(id_to_token_[id]); };
  ojson config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                  {"bos_token", name(bos_id_)},
                  {"eos_token", name(eos_id_)},
                  {"add_bos_token", add_bos_},
                  {"add_eos_token", add_eos_},
                  {"add_prefix_space", add_prefix_space_},
                  {"added_tokens_decoder", decoder_entries}};
  if (!chat_template_.empty()) config["chat_template"] = chat_template_;
  ojson special = ojson::object();
  if (bos_id_ >= 0) special["bos_token"] = id_to_token_[bos_id_];
  if (eos_id_ >= 0) special["eos_token"] = id_to_token_[eos_id_];
  try {
    core::write_file_atomic(core::path_join(dir, "vocab.json"), vocab.dump() + "\n");
    core::write_file_atomic(core::path_join(dir, "merges.txt"), merges_txt);
    core::write_file_atomic(core::path_join(dir, "tokenizer.json"), j.dump(2) + "\n");
    core::write_file_atomic(core::path_join(dir, "tokenizer_config.json"), config.dump(2) + "\n");
    core::write_file_atomic(core::path_join(dir, "special_tokens_map.json"), special.dump(2) + "\n");
  } catch (const nlohmann::json::exception& e) {
    fail(source_, ": cannot write Hugging Face files to ", dir, " (", e.what(), ")");
  }
}

}  // namespace reglage::tokenizer
