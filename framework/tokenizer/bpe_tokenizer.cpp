// BPE model, encoding (added tokens, normalizer, pre-tokenizer, merges), decoding and save_hf.
// The loaders are in tokenizer_json.cpp.
#include "framework/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/tokenizer/pcre2_regex.h"

namespace reglage::tokenizer {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

// The largest vocabulary a model may have (ModelConfig::validate): token ids are below it.
constexpr int64_t kMaxTokenId = int64_t(1) << 24;

// Start of the UTF-8 character that ends just before byte pos (pos > 0).
size_t char_before(const std::string& s, size_t pos) {
  size_t k = pos - 1;
  while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80 && pos - k < 4) --k;
  return k;
}

const Pcre2Regex& word_char() {  // HF's single_word test: \w before or after the match
  static const Pcre2Regex re(R"(\w)", "added-token word test");
  return re;
}
const Pcre2Regex& space_char() {  // lstrip / rstrip: \s
  static const Pcre2Regex re(R"(\s)", "added-token space test");
  return re;
}

}  // namespace

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
  if (mergeable_.size() < id_to_token_.size()) mergeable_.resize(id_to_token_.size(), 0);
  mergeable_[l] = mergeable_[r] = 1;
}

void BpeTokenizer::add_token(const std::string& content, int64_t id, bool special) {
  AddedToken t;
  t.content = content;
  t.id = id;
  t.special = special;
  add_token(std::move(t));
}

void BpeTokenizer::add_token(AddedToken token) {
  const std::string& content = token.content;
  const int64_t id = token.id;
  if (content.empty()) fail(source_, ": added token ", id, " is empty");
  if (id < 0 || id >= kMaxTokenId)
    fail(source_, ": added token \"", content, "\" has id ", id, " outside [0, ", kMaxTokenId, ")");
  for (AddedToken& t : added_) {
    if (t.content == content) {  // listed twice (tokenizer.json and tokenizer_config.json): keep one
      if (t.id != id) fail(source_, ": added token \"", content, "\" has ids ", t.id, " and ", id);
      t.special = t.special || token.special;
      return;
    }
  }
  // Normalized tokens are matched, and decoded, as their normalized content (what `tokenizers` does).
  token.match = token.normalized ? normalizer_.apply(content) : content;
  if (token.match.empty()) fail(source_, ": added token \"", content, "\" normalizes to nothing");
  if (static_cast<size_t>(id) >= id_to_token_.size()) id_to_token_.resize(static_cast<size_t>(id) + 1);
  if (!id_to_token_[id].empty() && id_to_token_[id] != content && id_to_token_[id] != token.match)
    fail(source_, ": added token \"", content, "\" reuses id ", id, " of \"", id_to_token_[id], "\"");
  id_to_token_[id] = token.match;
  added_first_byte_[token.normalized][static_cast<unsigned char>(token.match[0])] = true;
  added_.push_back(std::move(token));
  // Longest first, so that at any position the longest added token wins (leftmost-longest matching).
  std::stable_sort(added_.begin(), added_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.match.size() > b.match.size(); });
}

void BpeTokenizer::finish(const std::string& source) {
  for (int b = 0; b < 256; ++b) {
    auto it = token_to_id_.find(byte_level_char(static_cast<unsigned char>(b)));
    byte_ids_[b] = it == token_to_id_.end() ? -1 : it->second;
    fallback_ids_[b] = -1;
    if (!byte_fallback_) continue;
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    it = token_to_id_.find(name);
    if (it == token_to_id_.end())
      fail(source, ": model.byte_fallback is set but the vocabulary has no token ", name);
    fallback_ids_[b] = it->second;
  }
  mergeable_.resize(id_to_token_.size(), 0);
}

int64_t BpeTokenizer::token_id(const std::string& token) const {
  auto it = token_to_id_.find(token);
  if (it != token_to_id_.end()) return it->second;
  for (const AddedToken& t : added_)
    if (t.content == token) return t.id;
  return -1;
}

bool BpeTokenizer::is_special(int64_t id) const {
  for (const AddedToken& t : added_)
    if (t.id == id) return t.special;
  return false;
}

// A byte-level tokenizer's added token is raw text (matched in the raw input): decoded as its own bytes, as
// llama.cpp does. transformers runs it through the ByteLevel decoder, which is the same for printable ASCII
// but turns DeepSeek's added "ü" into the byte 0xFC, so decode(encode(x)) would not give x back.
bool BpeTokenizer::raw_added(int64_t id) const {
  if (!pre_tokenizer_.byte_level()) return false;
  for (const AddedToken& t : added_)
    if (t.id == id) return !t.special;
  return false;
}

std::string BpeTokenizer::content_of(int64_t id) const {
  for (const AddedToken& t : added_)
    if (t.id == id) return t.content;
  return id_to_token_[id];
}

std::string BpeTokenizer::token_text(int64_t id) const {
  if (id < 0 || id >= vocab_size()) fail(source_, ": token id ", id, " outside [0, ", vocab_size(), ")");
  return content_of(id);
}

// Merges by rank within one run of symbols, as Hugging Face's BPE does: each round merges the adjacent pair with
// the lowest merge rank, the leftmost if it occurs more than once. The candidate pairs sit in a heap keyed
// (rank, position) over a linked list of symbols, so a round costs O(log n) rather than a scan of the run.
// A popped entry is taken if the pair now at its position has that rank (a rank names one pair of ids, so it
// is that very pair); otherwise a merge beside it has made it stale and it is skipped.
void BpeTokenizer::merge_symbols(std::vector<int64_t>* symbols) const {
  std::vector<int64_t>& ids = *symbols;  // (n) symbol ids; -1 once merged into the symbol on its left
  if (ids.size() < 2) return;
  if (ids.size() > size_t(INT32_MAX))
    fail(source_, ": a pre-token of ", ids.size(), " symbols, more than the 2^31 - 1 it handles");
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
  for (int32_t i = 0; i >= 0; i = next[i]) merged.push_back(ids[i]);  // 0 is never merged away
  ids.swap(merged);
}

// A symbol that no merge uses splits a piece into runs that merge independently (no pair spans it), so each
// run's tokens are final once it is merged: pieces without a pre-tokenizer (Phi-3) still stop early.
bool BpeTokenizer::encode_piece(const std::string& piece, size_t max_tokens, std::vector<int64_t>* out) const {
  // Short pieces repeat (words); long ones rarely do and would fill memory.
  constexpr size_t kMaxCachedBytes = 256;
  const bool cacheable = piece.size() <= kMaxCachedBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return out->size() <= max_tokens;
    }
  }
  const bool byte_level = pre_tokenizer_.byte_level();
  std::vector<int64_t> ids;  // (n) the piece's symbols
  if (ignore_merges_) {
    std::string word;
    if (byte_level)
      for (unsigned char b : piece) word += byte_level_char(b);
    auto whole = token_to_id_.find(byte_level ? word : piece);
    if (whole != token_to_id_.end()) ids.push_back(whole->second);
  }
  if (ids.empty() && byte_level) {
    for (unsigned char b : piece) {
      if (byte_ids_[b] < 0) fail(source_, ": byte 0x", std::hex, static_cast<int>(b), " has no token in the vocabulary");
      ids.push_back(byte_ids_[b]);
    }
  } else if (ids.empty()) {  // characters; missing ones become <0xNN> bytes, or the unk token, or nothing (as HF)
    bool unk_before = false;
    for (size_t i = 0; i < piece.size();) {
      const size_t n = std::min(utf8_len(static_cast<unsigned char>(piece[i])), piece.size() - i);
      auto it = token_to_id_.find(piece.substr(i, n));
      if (it != token_to_id_.end()) {
        ids.push_back(it->second);
        unk_before = false;
      } else if (byte_fallback_) {
        for (size_t k = 0; k < n; ++k) ids.push_back(fallback_ids_[static_cast<unsigned char>(piece[i + k])]);
        unk_before = false;
      } else if (unk_id_ >= 0) {
        if (!(fuse_unk_ && unk_before)) ids.push_back(unk_id_);
        unk_before = true;
      }
      i += n;
    }
  }
  std::vector<int64_t> kept;  // the cached result
  std::vector<int64_t>& dest = cacheable ? kept : *out;
  size_t start = 0;
  for (size_t i = 0; i <= ids.size(); ++i) {
    const bool cut = i == ids.size() || static_cast<size_t>(ids[i]) >= mergeable_.size() || !mergeable_[ids[i]];
    if (!cut) continue;
    std::vector<int64_t> run(ids.begin() + static_cast<std::ptrdiff_t>(start), ids.begin() + static_cast<std::ptrdiff_t>(i));
    merge_symbols(&run);
    dest.insert(dest.end(), run.begin(), run.end());
    if (i < ids.size()) dest.push_back(ids[i]);
    start = i + 1;
    if (!cacheable && out->size() > max_tokens) return false;
  }
  if (!cacheable) return out->size() <= max_tokens;
  out->insert(out->end(), kept.begin(), kept.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() > 200000) cache_.clear();  // bounded: long-running servers see unbounded text
  cache_.emplace(piece, std::move(kept));
  return out->size() <= max_tokens;
}

// Pre-tokens never merge with each other, so the tokens so far are final and the text can stop once more
// than max_tokens are out. Returns false when it stopped.
bool BpeTokenizer::encode_text(const std::string& text, bool at_start, size_t max_tokens,
                               std::vector<int64_t>* out) const {
  return pre_tokenizer_.split(text, at_start, [&](const std::string& piece, bool) {
    return encode_piece(piece, max_tokens, out);
  });
}

bool BpeTokenizer::split_added(const std::string& text, bool normalized, bool at_start, bool parse_special,
                               const TextVisit& on_text, const IdVisit& on_token) const {
  const auto& first = added_first_byte_[normalized];
  size_t start = 0;  // start of the text not yet visited
  for (size_t pos = 0; pos < text.size();) {
    if (!first[static_cast<unsigned char>(text[pos])]) {  // most bytes start no added token
      ++pos;
      continue;
    }
    const AddedToken* hit = nullptr;
    for (const AddedToken& t : added_) {
      if (t.special && !parse_special) continue;
      if (t.normalized == normalized && text.compare(pos, t.match.size(), t.match) == 0) {
        hit = &t;
        break;
      }
    }
    if (!hit) {
      ++pos;
      continue;
    }
    size_t b = pos, e = pos + hit->match.size();
    // single_word: a word character touching either end makes it no match (HF then searches on after it).
    if (hit->single_word && ((b > 0 && word_char().matches_at(text, char_before(text, b))) ||
                             (e < text.size() && word_char().matches_at(text, e)))) {
      pos = e;
      continue;
    }
    if (hit->lstrip)  // the whitespace before it, back to the previous match at most
      while (b > start && space_char().matches_at(text, char_before(text, b))) b = char_before(text, b);
    if (hit->rstrip)
      while (e < text.size() && space_char().matches_at(text, e))
        e += std::min(utf8_len(static_cast<unsigned char>(text[e])), text.size() - e);
    if (b > start && !on_text(start, b, at_start && start == 0)) return false;
    if (!on_token(hit->id)) return false;
    start = pos = e;
  }
  if (start < text.size()) return on_text(start, text.size(), at_start && start == 0);
  return true;
}

// Added tokens that are not `normalized` are found in the raw text; the text between them is normalized, the
// `normalized` ones are found in that, and what remains is pre-tokenized and merged.
void BpeTokenizer::encode_into(const std::string& text, size_t max_tokens, std::vector<int64_t>* out,
                               bool parse_special) const {
  const IdVisit push = [&](int64_t id) {
    out->push_back(id);
    return out->size() <= max_tokens;
  };
  split_added(
      text, false, true, parse_special,
      [&](size_t b, size_t e, bool at_start) {
        const std::string norm = normalizer_.apply(text.substr(b, e - b));
        return split_added(
            norm, true, at_start, parse_special,
            [&](size_t b2, size_t e2, bool at_start2) {
              return encode_text(norm.substr(b2, e2 - b2), at_start2, max_tokens, out);
            },
            push);
      },
      push);
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
  if (id_to_token_[token].empty()) fail(source_, ": token id ", token, " is not in the vocabulary");
  if (is_special(token)) return std::string();
  if (raw_added(token)) return content_of(token);
  const std::string& t = id_to_token_[token];
  // After a special token other than BOS the text goes on: its string stands in for what came before.
  const bool first = prev_token < 0 || prev_token >= vocab_size() || prev_token == bos_id_ ||
                     id_to_token_[prev_token].empty();
  if (first) return decoder_.decode({t});
  // What the token adds after the one before (the decoder's start rules then leave it alone).
  const std::string& p = id_to_token_[prev_token];
  const std::string alone = decoder_.decode({p}), both = decoder_.decode({p, t});
  if (both.compare(0, alone.size(), alone) == 0) return both.substr(alone.size());
  return decoder_.decode({t});
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<std::string> tokens;
  std::string text;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) fail(source_, ": token id ", id, " outside [0, ", vocab_size(), ")");
    if (id_to_token_[id].empty()) fail(source_, ": token id ", id, " is not in the vocabulary");
    if (is_special(id)) continue;  // skip_special_tokens=True
    if (raw_added(id)) {  // its own bytes, between decoded runs
      text += decoder_.decode(std::move(tokens));
      tokens.clear();
      text += content_of(id);
      continue;
    }
    tokens.push_back(id_to_token_[id]);
  }
  return text + decoder_.decode(std::move(tokens));
}

void BpeTokenizer::save_hf(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  // The model's vocabulary in id order, merges in rank order.
  std::vector<std::pair<int64_t, std::string>> by_id;
  for (const auto& [token, id] : token_to_id_) by_id.emplace_back(id, token);
  std::sort(by_id.begin(), by_id.end());
  // Appended directly: ordered_json's operator[] searches linearly, quadratic over 150k tokens. Keys are unique.
  ojson vocab = ojson::object();
  auto& entries = vocab.get_ref<ojson::object_t&>();
  for (const auto& [id, token] : by_id) entries.emplace_back(token, id);
  bool spaced = false;  // a token with a space needs [left, right] pairs ("left right" would be ambiguous)
  for (const auto& [l, r] : merge_list_) spaced = spaced || l.find(' ') != std::string::npos || r.find(' ') != std::string::npos;
  std::string merges_txt = "#version: 0.2\n";
  ojson merges = ojson::array();
  for (const auto& [l, r] : merge_list_) {
    merges_txt += l + " " + r + "\n";
    merges.push_back(spaced ? ojson::array({l, r}) : ojson(l + " " + r));
  }

  ojson added = ojson::array();
  std::vector<AddedToken> added_by_id = added_;
  std::sort(added_by_id.begin(), added_by_id.end(),
            [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  ojson decoder_entries = ojson::object();
  for (const AddedToken& t : added_by_id) {
    ojson e = {{"id", t.id},         {"content", t.content},       {"single_word", t.single_word},
               {"lstrip", t.lstrip}, {"rstrip", t.rstrip},         {"normalized", t.normalized},
               {"special", t.special}};
    added.push_back(e);
    e.erase("id");
    decoder_entries[std::to_string(t.id)] = e;
  }

  auto name = [&](int64_t id) { return id < 0 ? ojson(nullptr) : ojson(content_of(id)); };
  // The post-processor says what add_bos() / add_eos() say: [BOS] $A [EOS].
  ojson single = ojson::array(), special_tokens = ojson::object();
  auto special_item = [&](int64_t id) {
    const std::string n = content_of(id);
    special_tokens[n] = {{"id", n}, {"ids", {id}}, {"tokens", {n}}};
    return ojson{{"SpecialToken", {{"id", n}, {"type_id", 0}}}};
  };
  if (add_bos()) single.push_back(special_item(bos_id_));
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (add_eos()) single.push_back(special_item(eos_id_));
  ojson pair = single;
  for (const ojson& item : single)
    pair.push_back(item.contains("Sequence") ? ojson{{"Sequence", {{"id", "B"}, {"type_id", 1}}}} : item);

  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = ojson::parse(normalizer_.as_read().dump());
  j["pre_tokenizer"] = ojson::parse(pre_tokenizer_.as_read().dump());
  j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair},
                         {"special_tokens", special_tokens}};
  j["decoder"] = ojson::parse(decoder_.as_read().dump());
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", unk_id_ < 0 ? ojson(nullptr) : ojson(id_to_token_[unk_id_])},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", fuse_unk_},
                {"byte_fallback", byte_fallback_},
                {"ignore_merges", ignore_merges_},
                {"vocab", vocab},
                {"merges", merges}};

  ojson config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                  {"bos_token", name(bos_id_)},
                  {"eos_token", name(eos_id_)},
                  {"add_bos_token", add_bos_},
                  {"add_eos_token", add_eos_},
                  {"add_prefix_space", pre_tokenizer_.add_prefix_space()},
                  {"clean_up_tokenization_spaces", false},
                  {"added_tokens_decoder", decoder_entries}};
  if (unk_id_ >= 0) config["unk_token"] = id_to_token_[unk_id_];
  if (!chat_template_.empty()) config["chat_template"] = chat_template_;
  ojson special = ojson::object();
  if (bos_id_ >= 0) special["bos_token"] = content_of(bos_id_);
  if (eos_id_ >= 0) special["eos_token"] = content_of(eos_id_);
  if (unk_id_ >= 0) special["unk_token"] = id_to_token_[unk_id_];
  try {
    if (pre_tokenizer_.byte_level()) {  // the GPT-2 file pair, for readers that want it
      core::write_file_atomic(core::path_join(dir, "vocab.json"), vocab.dump() + "\n");
      core::write_file_atomic(core::path_join(dir, "merges.txt"), merges_txt);
    }
    core::write_file_atomic(core::path_join(dir, "tokenizer.json"), j.dump(2) + "\n");
    core::write_file_atomic(core::path_join(dir, "tokenizer_config.json"), config.dump(2) + "\n");
    core::write_file_atomic(core::path_join(dir, "special_tokens_map.json"), special.dump(2) + "\n");
  } catch (const nlohmann::json::exception& e) {
    fail(source_, ": cannot write Hugging Face files to ", dir, " (", e.what(), ")");
  }
}

}  // namespace reglage::tokenizer
