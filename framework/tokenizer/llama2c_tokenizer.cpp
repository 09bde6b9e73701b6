#include "framework/tokenizer/llama2c_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/tokenizer/utf8.h"

namespace reglage::tokenizer {

namespace {

// Little-endian reads from the file image; the caller has checked the bounds.
int32_t read_i32(const std::string& bytes, size_t at) {
  int32_t v;
  std::memcpy(&v, bytes.data() + at, sizeof(v));
  return v;
}
float read_f32(const std::string& bytes, size_t at) {
  float v;
  std::memcpy(&v, bytes.data() + at, sizeof(v));
  return v;
}

// SentencePiece writes a space as U+2581; llama2.c's export turned those into ' ', so we turn them back.
const std::string kSpm = "\xe2\x96\x81";

std::string to_spm(const std::string& piece) {
  std::string out;
  for (char c : piece) {
    if (c == ' ')
      out += kSpm;
    else
      out += c;
  }
  return out;
}

}  // namespace

Llama2cTokenizer::Llama2cTokenizer(const std::string& path) : path_(path) {
  file_bytes_ = core::read_file(path);
  const std::string& b = file_bytes_;
  if (b.size() < 4)
    fail("tokenizer ", path, ": truncated: ", b.size(), " bytes, expected at least the int32 max_token_length");
  // run.c sizes its merge buffer from this header, so a longer piece would overflow it there.
  const int32_t max_len = read_i32(b, 0);
  if (max_len <= 0) fail("tokenizer ", path, ": max_token_length is ", max_len, ", expected > 0");
  size_t at = 4;
  while (at < b.size()) {
    const size_t index = pieces_.size();
    if (b.size() - at < 8)
      fail("tokenizer ", path, ": truncated at token ", index, " (byte ", at,
           "): expected float32 score and int32 length");
    const float score = read_f32(b, at);
    const int32_t len = read_i32(b, at + 4);
    at += 8;
    if (!std::isfinite(score))
      fail("tokenizer ", path, ": token ", index, " has score ", score, ", expected a finite float32");
    if (len < 0) fail("tokenizer ", path, ": token ", index, " has negative length ", len);
    if (static_cast<size_t>(len) > b.size() - at)
      fail("tokenizer ", path, ": token ", index, " has length ", len, " but only ", b.size() - at,
           " bytes remain (truncated or corrupt)");
    if (len > max_len)
      fail("tokenizer ", path, ": token ", index, " has length ", len, ", expected at most max_token_length ",
           max_len, " from the header");
    std::string piece = b.substr(at, static_cast<size_t>(len));
    at += static_cast<size_t>(len);
    // run.c keeps pieces as C strings: anything after a NUL byte is invisible to its lookups and merges.
    piece = piece.substr(0, piece.find('\0'));
    pieces_.push_back(std::move(piece));
    scores_.push_back(score);
  }
  if (pieces_.size() <= static_cast<size_t>(kEosId))
    fail("tokenizer ", path, ": has ", pieces_.size(), " tokens, expected at least <unk>, BOS and EOS");
  // Views into pieces_, which no longer changes.
  for (size_t i = 0; i < pieces_.size(); ++i) piece_to_id_.emplace(pieces_[i], static_cast<int64_t>(i));
  build_merge_tables();
  bos_id_ = kBosId;
  eos_id_ = kEosId;
  add_bos_ = true;  // run.c encodes every prompt with BOS
  stop_ids_ = {kBosId, kEosId};  // run.c's generate loop stops when the model emits BOS
}

int64_t Llama2cTokenizer::lookup(std::string_view s) const {
  auto it = piece_to_id_.find(s);
  return it == piece_to_id_.end() ? -1 : it->second;
}

// run.c merges a pair when the concatenation of the two pieces is a piece. Every such pair is a cut of some
// piece into two pieces, so the pairs are listed once here (keyed by the first id of each half, as lookups
// return) instead of concatenating strings for every pair of the text.
void Llama2cTokenizer::build_merge_tables() {
  const size_t n = pieces_.size();
  first_id_.resize(n);
  std::vector<bool> has_length(1, false);  // lengths some piece has: most cuts are rejected without hashing
  for (size_t i = 0; i < n; ++i) {
    first_id_[i] = lookup(pieces_[i]);
    if (pieces_[i].size() >= has_length.size()) has_length.resize(pieces_[i].size() + 1, false);
    has_length[pieces_[i].size()] = true;
  }
  split_ok_ = !has_length[0];
  for (size_t i = 0; i < n; ++i) {
    if (first_id_[i] != static_cast<int64_t>(i)) continue;  // a duplicate piece is never a lookup's answer
    const std::string_view p = pieces_[i];
    bool merged_into = false;
    for (size_t cut = 0; cut <= p.size(); ++cut) {
      if (!has_length[cut] || !has_length[p.size() - cut]) continue;
      const int64_t left = lookup(p.substr(0, cut)), right = lookup(p.substr(cut));
      if (left < 0 || right < 0) continue;
      pair_merge_.emplace((static_cast<uint64_t>(left) << 32) | static_cast<uint64_t>(right), static_cast<int64_t>(i));
      merged_into = true;
    }
    // Byte pairs inside a piece that merges can build: a boundary between two other bytes is never crossed.
    if (merged_into)
      for (size_t k = 1; k < p.size(); ++k)
        joinable_[static_cast<unsigned char>(p[k - 1]) * 256 + static_cast<unsigned char>(p[k])] = true;
  }
}

int64_t Llama2cTokenizer::merged_id(int64_t left, int64_t right) const {
  auto it = pair_merge_.find((static_cast<uint64_t>(first_id_[left]) << 32) | static_cast<uint64_t>(first_id_[right]));
  return it == pair_merge_.end() ? -1 : it->second;
}

// A token made by merges has as its piece the concatenation of the pieces of the initial symbols it covers.
// If it covered both `left` and `right` (non-empty pieces), its piece would hold left's last byte followed by
// right's first byte; when no merge result holds that byte pair, the two sides merge independently and the
// greedy result is the same as on the whole text. With SentencePiece vocabularies (spaces only at a piece's
// start) this cuts before every space, so long text costs time and memory per word.
bool Llama2cTokenizer::can_split(int64_t left, int64_t right) const {
  if (!split_ok_) return false;
  const unsigned char a = static_cast<unsigned char>(pieces_[left].back());
  const unsigned char b = static_cast<unsigned char>(pieces_[right].front());
  return !joinable_[a * 256 + b];
}

// run.c's merge loop picks, each round, the adjacent pair whose merged piece scores highest (strict '>' from
// -1e10, so the leftmost on ties and never a piece scoring -1e10 or less), merges it, and repeats. Here the
// candidate pairs sit in a heap keyed (score, then leftmost position) over a linked list of symbols, so each
// round is O(log n) instead of O(n). An entry is checked when it is popped: if the pair now at its position
// merges with the same score it stands for a current pair with exactly that key (and is taken); otherwise it
// is stale and skipped. Every current pair has its own entry, so the first valid entry is run.c's choice.
void Llama2cTokenizer::merge_segment(std::vector<int64_t>* ids_ptr, std::vector<int64_t>* out) const {
  constexpr float kNoMerge = -1e10f;  // run.c's initial best_score
  std::vector<int64_t>& ids = *ids_ptr;  // (n) symbol ids; -1 once merged into the symbol on its left
  if (ids.size() > size_t(INT32_MAX))
    fail("tokenizer ", path_, ": ", ids.size(), " symbols without a cut, more than the 2^31 - 1 it handles");
  const int32_t n = static_cast<int32_t>(ids.size());
  std::vector<int32_t> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));  // the list; -1 at the ends
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    float score;
    int32_t left;  // position of the pair's left symbol
  };
  auto below = [](const Candidate& a, const Candidate& b) {  // heap order: higher score, then further left
    return a.score != b.score ? a.score < b.score : a.left > b.left;
  };
  std::vector<Candidate> heap;
  heap.reserve(static_cast<size_t>(n));
  auto score_at = [&](int32_t left, float* score) {  // the merge of the pair starting at left, if any
    if (left < 0 || next[left] < 0) return false;
    const int64_t m = merged_id(ids[left], ids[next[left]]);
    if (m < 0 || !(scores_[m] > kNoMerge)) return false;
    *score = scores_[m];
    return true;
  };
  auto push = [&](int32_t left) {
    float score;
    if (!score_at(left, &score)) return;
    heap.push_back({score, left});
    std::push_heap(heap.begin(), heap.end(), below);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), below);
    const Candidate c = heap.back();
    heap.pop_back();
    float score;
    if (ids[c.left] < 0 || !score_at(c.left, &score) || score != c.score) continue;  // stale
    const int32_t right = next[c.left];
    ids[c.left] = merged_id(ids[c.left], ids[right]);
    ids[right] = -1;
    next[c.left] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.left;
    push(prev[c.left]);
    push(c.left);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out->push_back(ids[i]);  // symbol 0 is never merged away
}

void Llama2cTokenizer::encode_into(const std::string& text, size_t max_tokens, std::vector<int64_t>* out) const {
  if (text.empty()) return;
  // SentencePiece's add_dummy_prefix: a leading space token whenever there is text.
  const int64_t dummy = lookup(" ");
  if (dummy < 0) fail("tokenizer ", path_, ": has no \" \" piece for the dummy prefix");
  std::vector<int64_t> segment{dummy};  // initial symbols since the last safe cut
  // Adds one initial symbol; merges the segment first when a cut before the symbol is safe. False: enough.
  auto add = [&](int64_t id) {
    if (can_split(segment.back(), id)) {
      merge_segment(&segment, out);
      segment.clear();
      if (out->size() > max_tokens) return false;
    }
    segment.push_back(id);
    return true;
  };

  // Split into code points (at most 4 bytes; stray continuation bytes stand alone), each looked up whole,
  // else emitted byte by byte as <0xNN> tokens. Mirrors run.c's loop including its handling of bad UTF-8;
  // a NUL byte is just a byte (run.c would stop there, SentencePiece does not).
  std::string buf;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) buf.clear();
    buf.push_back(static_cast<char>(c));
    const unsigned char next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
    if ((next & 0xC0) == 0x80 && buf.size() < 4) continue;
    const int64_t id = lookup(buf);
    if (id >= 0) {
      if (!add(id)) return;
    } else {
      for (unsigned char byte : buf) {
        const int64_t fallback = byte + kByteOffset;
        if (fallback >= vocab_size())
          fail("tokenizer ", path_, ": byte fallback id ", fallback, " is outside the vocabulary of ", vocab_size());
        if (!add(fallback)) return;
      }
    }
    buf.clear();
  }
  merge_segment(&segment, out);
}

std::vector<int64_t> Llama2cTokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  std::vector<int64_t> tokens;
  if (add_bos) tokens.push_back(kBosId);
  encode_into(text, SIZE_MAX, &tokens);
  if (add_eos) tokens.push_back(kEosId);
  return tokens;
}

std::vector<int64_t> Llama2cTokenizer::encode_prefix(const std::string& text, size_t max_tokens) const {
  std::vector<int64_t> tokens;
  encode_into(text, max_tokens, &tokens);
  if (tokens.size() > max_tokens) tokens.resize(max_tokens + 1);
  return tokens;
}

std::string Llama2cTokenizer::decode_piece(int64_t prev_token, int64_t token) const {
  if (token < 0 || token >= vocab_size())
    fail("tokenizer ", path_, ": token id ", token, " outside [0, ", vocab_size(), ")");
  const char* piece = pieces_[token].c_str();
  if (prev_token == kBosId && piece[0] == ' ') ++piece;  // the dummy prefix's space after BOS
  // run.c's exact test, sscanf quirks included: "<0x" followed by up to two hex digits is a raw byte.
  unsigned char byte_val;
  if (std::sscanf(piece, "<0x%02hhX>", &byte_val) == 1) return std::string(1, static_cast<char>(byte_val));
  return piece;
}

// llama2.c's files hold BOS and EOS as "\n<s>\n" and "\n</s>\n"; their names are "<s>" and "</s>".
std::string Llama2cTokenizer::token_text(int64_t id) const {
  if (id < 0 || id >= vocab_size()) fail("tokenizer ", path_, ": token id ", id, " outside [0, ", vocab_size(), ")");
  std::string piece = pieces_[size_t(id)];
  if (id == kBosId || id == kEosId) {
    const size_t a = piece.find_first_not_of('\n'), b = piece.find_last_not_of('\n');
    piece = a == std::string::npos ? std::string() : piece.substr(a, b - a + 1);
  }
  return piece;
}

std::string Llama2cTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  int64_t prev = -1;
  for (int64_t id : ids) {
    if (id != kBosId && id != kEosId) out += decode_piece(prev, id);
    prev = id;
  }
  return out;
}

// The Hugging Face equivalent, as transformers' LlamaConverter builds it from a SentencePiece model:
// BPE with byte fallback, merges from SentencePieceExtractor, normalizer prepending and replacing "▁".
std::string Llama2cTokenizer::tokenizer_json() const {
  using ojson = nlohmann::ordered_json;
  const int64_t n = vocab_size();
  std::vector<std::string> hf(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) hf[i] = to_spm(pieces_[i]);
  hf[kUnkId] = "<unk>";  // llama2.c's export wrote BOS/EOS as "\n<s>\n" / "\n</s>\n"
  hf[kBosId] = "<s>";
  hf[kEosId] = "</s>";

  // Appended directly (ordered_json's operator[] searches linearly); hf_id has checked the keys are unique.
  ojson vocab = ojson::object();
  std::unordered_map<std::string, int64_t> hf_id;
  for (int64_t i = 0; i < n; ++i) {
    if (!hf_id.emplace(hf[i], i).second)
      fail("tokenizer ", path_, ": piece ", i, " repeats piece ", hf_id[hf[i]],
           "; a Hugging Face vocab needs unique pieces");
    vocab.get_ref<ojson::object_t&>().emplace_back(hf[i], i);
  }

  // SentencePieceExtractor: every split of a piece into two vocab pieces is a merge; splits of one piece
  // ordered by (left id, right id), then all stably sorted by the merged piece's score, highest first.
  struct Merge {
    int64_t left, right;
    float score;
  };
  std::vector<Merge> merges;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<Merge> local;
    for (size_t cut : codepoint_starts(hf[i])) {
      if (cut == 0) continue;
      auto l = hf_id.find(hf[i].substr(0, cut));
      auto r = hf_id.find(hf[i].substr(cut));
      if (l != hf_id.end() && r != hf_id.end()) local.push_back({l->second, r->second, scores_[i]});
    }
    std::sort(local.begin(), local.end(),
              [](const Merge& a, const Merge& b) { return a.left != b.left ? a.left < b.left : a.right < b.right; });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });
  ojson merge_list = ojson::array();
  for (const Merge& m : merges) merge_list.push_back(hf[m.left] + " " + hf[m.right]);

  ojson added = ojson::array();
  for (int64_t id : {kUnkId, kBosId, kEosId})
    added.push_back({{"id", id},
                     {"content", hf[id]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});

  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", kSpm}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpm}}}}};
  j["pre_tokenizer"] = nullptr;
  ojson bos_special = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}};
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {bos_special, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                         {"pair",
                          {bos_special,
                           {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                           {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}},
                           {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {kBosId}}, {"tokens", {"<s>"}}}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", kSpm}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", "<unk>"},
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
    fail("tokenizer ", path_, ": a piece is not valid UTF-8, cannot write tokenizer.json (", e.what(), ")");
  }
}

void Llama2cTokenizer::save_hf(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  core::write_file_atomic(core::path_join(dir, "tokenizer.bin"), file_bytes_);
  core::write_file_atomic(core::path_join(dir, "tokenizer.json"), tokenizer_json());
  nlohmann::ordered_json config = {{"tokenizer_class", "PreTrainedTokenizerFast"},  // uses tokenizer.json as written
                                   {"bos_token", "<s>"},
                                   {"eos_token", "</s>"},
                                   {"unk_token", "<unk>"},
                                   {"pad_token", nullptr},
                                   {"add_bos_token", true},
                                   {"add_eos_token", false},
                                   {"legacy", true},
                                   {"clean_up_tokenization_spaces", false}};
  core::write_file_atomic(core::path_join(dir, "tokenizer_config.json"), config.dump(2) + "\n");
  nlohmann::ordered_json special = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
  core::write_file_atomic(core::path_join(dir, "special_tokens_map.json"), special.dump(2) + "\n");
}

}  // namespace reglage::tokenizer
