#include "framework/tokenizer/spm_tokenizer.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/tokenizer/utf8.h"

namespace reglage::tokenizer {

namespace {

using ojson = nlohmann::ordered_json;

const std::string kSpace = "\xe2\x96\x81";  // "▁", SentencePiece's space

// Bytes of the UTF-8 character a lead byte announces, by its high nibble (llama.cpp's unicode_len_utf8:
// a stray continuation byte stands alone, the bytes after a lead byte are taken unchecked).
size_t utf8_len(unsigned char c) {
  static const size_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[c >> 4];
}

// Whitespace beside an lstrip/rstrip token, as llama.cpp's isspace sees it (ASCII).
bool is_space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, from.size(), from) == 0) {
      out += to;
      i += from.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

}  // namespace

SpmTokenizer::SpmTokenizer(Parts parts) : p_(std::move(parts)) {
  const size_t n = p_.pieces.size();
  const std::string& src = p_.source;
  if (n == 0) fail(src, ": empty vocabulary");
  if (n > size_t(INT32_MAX)) fail(src, ": ", n, " tokens, more than the 2^31 - 1 it handles");
  if (p_.scores.empty()) p_.scores.assign(n, 0.0f);
  if (p_.types.empty()) p_.types.assign(n, TokenType::kNormal);
  if (p_.lstrip.empty()) p_.lstrip.assign(n, false);
  if (p_.rstrip.empty()) p_.rstrip.assign(n, false);
  if (p_.scores.size() != n || p_.types.size() != n || p_.lstrip.size() != n || p_.rstrip.size() != n)
    fail(src, ": ", n, " tokens but ", p_.scores.size(), " scores and ", p_.types.size(), " token types");
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(p_.scores[i])) fail(src, ": token ", i, " has score ", p_.scores[i], " (expected a finite float)");
    if (p_.pieces[i].empty()) fail(src, ": token ", i, " is empty");
  }
  for (int64_t id : {p_.bos_id, p_.eos_id, p_.unk_id, p_.pad_id})
    if (id < -1 || id >= int64_t(n)) fail(src, ": special token id ", id, " is outside the vocabulary of ", n);
  bos_id_ = p_.bos_id;
  eos_id_ = p_.eos_id;
  add_bos_ = p_.add_bos;
  add_eos_ = p_.add_eos;
  stop_ids_ = p_.stop_ids;
  chat_template_ = p_.chat_template;

  // Views into p_.pieces, which no longer changes.
  for (size_t i = 0; i < n; ++i) {
    if (!piece_to_id_.emplace(p_.pieces[i], int64_t(i)).second)
      fail(src, ": token \"", p_.pieces[i], "\" has ids ", piece_to_id_[p_.pieces[i]], " and ", i);
    const std::string& p = p_.pieces[i];
    for (size_t k = 1; k < p.size(); ++k)
      joinable_[static_cast<unsigned char>(p[k - 1]) * 256 + static_cast<unsigned char>(p[k])] = true;
    if (is_matched(int64_t(i))) {
      matched_.push_back(int64_t(i));
      matched_first_byte_[static_cast<unsigned char>(p[0])] = true;
    }
  }
  // Longest first, so that at any position the longest token wins.
  std::stable_sort(matched_.begin(), matched_.end(), [&](int64_t a, int64_t b) {
    return p_.pieces[a].size() > p_.pieces[b].size();
  });
  // Byte fallback: <0xXX>, else the one-byte piece (llama.cpp's byte_to_token).
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    int64_t id = lookup(hex);
    if (id < 0) id = lookup(std::string(1, static_cast<char>(b)));
    byte_token_[b] = id;
  }
}

bool SpmTokenizer::is_special(int64_t id) const {
  const TokenType t = p_.types[id];
  return t == TokenType::kControl || t == TokenType::kUnknown;
}

bool SpmTokenizer::is_matched(int64_t id) const { return is_special(id) || p_.types[id] == TokenType::kUserDefined; }

int64_t SpmTokenizer::lookup(std::string_view s) const {
  auto it = piece_to_id_.find(s);
  return it == piece_to_id_.end() ? -1 : it->second;
}

// llama.cpp's llm_tokenizer_spm on one segment: symbols are UTF-8 characters; each round merges the adjacent
// pair whose concatenation is a token of the highest score (leftmost on ties). Candidates sit in a heap keyed
// (score, then leftmost); an entry is stale when either symbol has changed since it was pushed (its size no
// longer adds up). Symbols that end up as no token fall back to byte tokens.
void SpmTokenizer::merge_segment(const std::string& seg, std::vector<int64_t>* out) const {
  struct Symbol {
    int32_t prev, next;  // the list; -1 at the ends
    uint32_t start, n;   // bytes of seg; n == 0 once merged into the symbol on its left
  };
  if (seg.size() > size_t(INT32_MAX))
    fail(p_.source, ": ", seg.size(), " bytes without a cut, more than the 2^31 - 1 it handles");
  std::vector<Symbol> sym;
  for (size_t at = 0; at < seg.size();) {
    const size_t len = std::min(utf8_len(static_cast<unsigned char>(seg[at])), seg.size() - at);
    const int32_t i = static_cast<int32_t>(sym.size());
    sym.push_back({i - 1, -1, static_cast<uint32_t>(at), static_cast<uint32_t>(len)});
    if (i > 0) sym[i - 1].next = i;
    at += len;
  }
  struct Bigram {
    float score;
    int32_t left, right;
    uint32_t size;  // bytes of left + right when pushed
  };
  auto below = [](const Bigram& a, const Bigram& b) { return a.score != b.score ? a.score < b.score : a.left > b.left; };
  std::vector<Bigram> heap;
  heap.reserve(sym.size());
  const std::string_view text(seg);
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t size = sym[left].n + sym[right].n;
    const int64_t id = lookup(text.substr(sym[left].start, size));  // adjacent symbols are contiguous bytes
    if (id < 0) return;
    heap.push_back({p_.scores[id], left, right, size});
    std::push_heap(heap.begin(), heap.end(), below);
  };
  for (int32_t i = 1; i < int32_t(sym.size()); ++i) try_add(i - 1, i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), below);
    const Bigram b = heap.back();
    heap.pop_back();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) {  // symbol 0 is never merged away
    const std::string_view s = text.substr(sym[i].start, sym[i].n);
    const int64_t id = lookup(s);
    if (id >= 0) {
      out->push_back(id);
      continue;
    }
    for (unsigned char c : s) {
      if (byte_token_[c] < 0)
        fail(p_.source, ": no token for byte 0x", std::hex, int(c), " (expected a <0xXX> byte token)");
      out->push_back(byte_token_[c]);
    }
  }
}

// A cut between two characters is safe when no piece holds the last byte of the left one followed by the first
// byte of the right one: no merge can then join them, so both sides merge as they would in the whole text.
bool SpmTokenizer::encode_fragment(std::string_view text, bool space_prefix, size_t max_tokens,
                                   std::vector<int64_t>* out) const {
  std::string pending = space_prefix ? kSpace : std::string();  // escaped bytes not yet split into characters
  size_t raw = 0;
  auto fill = [&](size_t need) {  // spaces become "▁" before the text is split, as llama.cpp escapes first
    while (pending.size() < need && raw < text.size()) {
      const char c = text[raw++];
      if (c == ' ')
        pending += kSpace;
      else
        pending += c;
    }
  };
  std::string seg;
  for (;;) {
    fill(1);
    if (pending.empty()) break;
    fill(utf8_len(static_cast<unsigned char>(pending[0])));
    const size_t len = std::min(utf8_len(static_cast<unsigned char>(pending[0])), pending.size());
    if (!seg.empty() && !joinable_[static_cast<unsigned char>(seg.back()) * 256 + static_cast<unsigned char>(pending[0])]) {
      merge_segment(seg, out);
      seg.clear();
      if (out->size() > max_tokens) return false;
    }
    seg.append(pending, 0, len);
    pending.erase(0, len);
  }
  merge_segment(seg, out);
  return out->size() <= max_tokens;
}

// Matched tokens are found leftmost, longest first; the raw text between them is encoded, with the space prefix
// at the start and after every matched token (llama.cpp's is_prev_special), lstrip/rstrip trimming beside them.
void SpmTokenizer::encode_into(const std::string& text, size_t max_tokens, bool parse_special,
                               std::vector<int64_t>* out) const {
  bool after_token = true;
  size_t start = 0;
  auto fragment = [&](size_t begin, size_t end) {
    if (end <= begin) return true;
    const bool ok = encode_fragment(std::string_view(text).substr(begin, end - begin),
                                    p_.add_space_prefix && after_token, max_tokens, out);
    after_token = false;
    return ok;
  };
  for (size_t pos = 0; pos < text.size();) {
    int64_t hit = -1;
    if (matched_first_byte_[static_cast<unsigned char>(text[pos])]) {
      for (int64_t id : matched_) {
        if (!parse_special && is_special(id)) continue;
        if (text.compare(pos, p_.pieces[id].size(), p_.pieces[id]) == 0) {
          hit = id;
          break;
        }
      }
    }
    if (hit < 0) {
      ++pos;
      continue;
    }
    size_t left_end = pos;
    if (p_.lstrip[hit])
      while (left_end > start && is_space_byte(text[left_end - 1])) --left_end;
    if (!fragment(start, left_end)) return;
    out->push_back(hit);
    after_token = true;
    if (out->size() > max_tokens) return;
    pos += p_.pieces[hit].size();
    if (p_.rstrip[hit])
      while (pos < text.size() && is_space_byte(text[pos])) ++pos;
    start = pos;
  }
  fragment(start, text.size());
}

std::vector<int64_t> SpmTokenizer::encode_special(const std::string& text, bool add_bos, bool add_eos,
                                                  bool parse_special) const {
  std::vector<int64_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  encode_into(text, SIZE_MAX, parse_special, &ids);
  if (add_eos && eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

std::vector<int64_t> SpmTokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  return encode_special(text, add_bos, add_eos, true);
}

std::vector<int64_t> SpmTokenizer::encode_prefix(const std::string& text, size_t max_tokens) const {
  std::vector<int64_t> ids;
  encode_into(text, max_tokens, true, &ids);
  if (ids.size() > max_tokens) ids.resize(max_tokens + 1);
  return ids;
}

std::string SpmTokenizer::decode_piece(int64_t prev_token, int64_t token) const {
  if (token < 0 || token >= vocab_size()) fail(p_.source, ": token id ", token, " outside [0, ", vocab_size(), ")");
  const std::string& piece = p_.pieces[token];
  switch (p_.types[token]) {
    case TokenType::kUserDefined:
      return piece;
    case TokenType::kByte: {
      unsigned int byte = 0;
      if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%2X>", &byte) == 1) return std::string(1, char(byte));
      return piece;
    }
    case TokenType::kNormal: {
      std::string s = replace_all(piece, kSpace, " ");
      const bool text_starts = prev_token < 0 || (prev_token < vocab_size() && is_matched(prev_token));
      if (p_.add_space_prefix && text_starts && !s.empty() && s[0] == ' ') s.erase(0, 1);
      return s;
    }
    default:  // control, unknown, unused, undefined: nothing, as llama.cpp renders them without special
      return std::string();
  }
}

std::string SpmTokenizer::token_text(int64_t id) const {
  if (id < 0 || id >= vocab_size()) fail(p_.source, ": token id ", id, " outside [0, ", vocab_size(), ")");
  return p_.pieces[size_t(id)];
}

std::string SpmTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  int64_t prev = -1;
  for (int64_t id : ids) {
    out += decode_piece(prev, id);
    prev = id;
  }
  return out;
}

// Hugging Face's Llama layout, as transformers' LlamaConverter builds it from a SentencePiece model: every
// split of a piece into two pieces is a merge, the splits of one piece ordered by (left id, right id), then
// all stably sorted by the merged piece's score, highest first.
std::string SpmTokenizer::tokenizer_json() const {
  const int64_t n = vocab_size();
  ojson vocab = ojson::object();
  auto& entries = vocab.get_ref<ojson::object_t&>();  // appended directly: ordered_json's [] searches linearly
  for (int64_t i = 0; i < n; ++i) entries.emplace_back(p_.pieces[i], i);
  struct Merge {
    int64_t left, right;
    float score;
  };
  std::vector<Merge> merges;
  for (int64_t i = 0; i < n; ++i) {
    const std::string& p = p_.pieces[i];
    std::vector<Merge> local;
    for (size_t cut : codepoint_starts(p)) {
      if (cut == 0) continue;
      const int64_t l = lookup(std::string_view(p).substr(0, cut)), r = lookup(std::string_view(p).substr(cut));
      if (l >= 0 && r >= 0) local.push_back({l, r, p_.scores[i]});
    }
    std::sort(local.begin(), local.end(),
              [](const Merge& a, const Merge& b) { return a.left != b.left ? a.left < b.left : a.right < b.right; });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });
  ojson merge_list = ojson::array();
  for (const Merge& m : merges) merge_list.push_back(ojson::array({p_.pieces[m.left], p_.pieces[m.right]}));

  ojson added = ojson::array();
  for (int64_t i = 0; i < n; ++i) {
    if (!is_matched(i)) continue;
    added.push_back({{"id", i},
                     {"content", p_.pieces[i]},
                     {"single_word", false},
                     {"lstrip", bool(p_.lstrip[i])},
                     {"rstrip", bool(p_.rstrip[i])},
                     {"normalized", false},
                     {"special", is_special(i)}});
  }

  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  ojson replace_space = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}};
  if (p_.add_space_prefix)
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", {{{"type", "Prepend"}, {"prepend", kSpace}}, replace_space}}};
  else
    j["normalizer"] = replace_space;
  j["pre_tokenizer"] = nullptr;
  // BOS/EOS around a sequence as transformers' LlamaTokenizerFast.update_post_processor writes them.
  if (add_bos() || add_eos()) {
    const std::string bos = add_bos() ? p_.pieces[bos_id_] : "", eos = add_eos() ? p_.pieces[eos_id_] : "";
    auto special = [](const std::string& t, int type_id) { return ojson{{"SpecialToken", {{"id", t}, {"type_id", type_id}}}}; };
    auto seq = [](const char* id, int type_id) { return ojson{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
    ojson single = ojson::array(), pair;
    if (add_bos()) single.push_back(special(bos, 0));
    single.push_back(seq("A", 0));
    if (add_eos()) single.push_back(special(eos, 0));
    pair = single;
    if (add_bos()) pair.push_back(special(bos, 1));
    pair.push_back(seq("B", 1));
    if (add_eos()) pair.push_back(special(eos, 1));
    ojson specials = ojson::object();
    if (add_bos()) specials[bos] = {{"id", bos}, {"ids", {bos_id_}}, {"tokens", {bos}}};
    if (add_eos()) specials[eos] = {{"id", eos}, {"ids", {eos_id_}}, {"tokens", {eos}}};
    j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
  } else {
    j["post_processor"] = nullptr;
  }
  ojson decoders = {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}}};
  if (p_.add_space_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", p_.unk_id >= 0 ? ojson(p_.pieces[p_.unk_id]) : ojson(nullptr)},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merge_list}};
  try {
    return j.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    fail(p_.source, ": a token is not valid UTF-8, cannot write tokenizer.json (", e.what(), ")");
  }
}

void SpmTokenizer::save_hf(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  auto name = [&](int64_t id) { return id < 0 ? ojson(nullptr) : ojson(p_.pieces[id]); };
  ojson decoder_entries = ojson::object();
  for (int64_t i = 0; i < vocab_size(); ++i)
    if (is_matched(i))
      decoder_entries[std::to_string(i)] = {{"content", p_.pieces[i]}, {"single_word", false},
                                            {"lstrip", bool(p_.lstrip[i])}, {"rstrip", bool(p_.rstrip[i])},
                                            {"normalized", false}, {"special", is_special(i)}};
  // PreTrainedTokenizerFast runs tokenizer.json as written (LlamaTokenizerFast would rebuild its parts).
  ojson config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                  {"bos_token", name(bos_id_)},
                  {"eos_token", name(eos_id_)},
                  {"unk_token", name(p_.unk_id)},
                  {"pad_token", name(p_.pad_id)},
                  {"add_bos_token", add_bos()},
                  {"add_eos_token", add_eos()},
                  {"clean_up_tokenization_spaces", false},
                  {"added_tokens_decoder", decoder_entries}};
  if (!chat_template_.empty()) config["chat_template"] = chat_template_;
  ojson special = ojson::object();
  for (const auto& [key, id] : {std::pair<const char*, int64_t>{"bos_token", bos_id_}, {"eos_token", eos_id_},
                                {"unk_token", p_.unk_id}, {"pad_token", p_.pad_id}})
    if (id >= 0) special[key] = p_.pieces[id];
  core::write_file_atomic(core::path_join(dir, "tokenizer.json"), tokenizer_json());
  core::write_file_atomic(core::path_join(dir, "tokenizer_config.json"), config.dump(2) + "\n");
  core::write_file_atomic(core::path_join(dir, "special_tokens_map.json"), special.dump(2) + "\n");
}

}  // namespace reglage::tokenizer
