#include "framework/tokenizer/llama2c_tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

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

// Byte offsets where a UTF-8 code point starts (continuation bytes excluded), as Python's str indexing sees it.
std::vector<size_t> codepoint_starts(const std::string& s) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) starts.push_back(i);
  return starts;
}

}  // namespace

Llama2cTokenizer::Llama2cTokenizer(const std::string& path) : path_(path) {
  file_bytes_ = core::read_file(path);
  const std::string& b = file_bytes_;
  if (b.size() < 4)
    fail("tokenizer ", path, ": truncated: ", b.size(), " bytes, expected at least the int32 max_token_length");
  size_t at = 4;
  while (at < b.size()) {
    const size_t index = pieces_.size();
    if (b.size() - at < 8)
      fail("tokenizer ", path, ": truncated at token ", index, " (byte ", at,
           "): expected float32 score and int32 length");
    const float score = read_f32(b, at);
    const int32_t len = read_i32(b, at + 4);
    at += 8;
    if (len < 0) fail("tokenizer ", path, ": token ", index, " has negative length ", len);
    if (static_cast<size_t>(len) > b.size() - at)
      fail("tokenizer ", path, ": token ", index, " has length ", len, " but only ", b.size() - at,
           " bytes remain (truncated or corrupt)");
    std::string piece = b.substr(at, static_cast<size_t>(len));
    at += static_cast<size_t>(len);
    // run.c keeps pieces as C strings: anything after a NUL byte is invisible to its lookups and merges.
    piece = piece.substr(0, piece.find('\0'));
    piece_to_id_.emplace(piece, static_cast<int64_t>(index));
    pieces_.push_back(std::move(piece));
    scores_.push_back(score);
  }
  if (pieces_.size() <= static_cast<size_t>(kEosId))
    fail("tokenizer ", path, ": has ", pieces_.size(), " tokens, expected at least <unk>, BOS and EOS");
  bos_id_ = kBosId;
  eos_id_ = kEosId;
  stop_ids_ = {kBosId, kEosId};  // run.c's generate loop stops when the model emits BOS
}

int64_t Llama2cTokenizer::lookup(const std::string& s) const {
  auto it = piece_to_id_.find(s);
  return it == piece_to_id_.end() ? -1 : it->second;
}

std::vector<int64_t> Llama2cTokenizer::encode(const std::string& input, bool add_bos, bool add_eos) const {
  // run.c sees a C string: the text ends at its first NUL byte.
  const std::string text = input.substr(0, input.find('\0'));
  std::vector<int64_t> tokens;
  if (add_bos) tokens.push_back(kBosId);
  // SentencePiece's add_dummy_prefix: a leading space token whenever there is text.
  if (!text.empty()) {
    const int64_t dummy = lookup(" ");
    if (dummy < 0) fail("tokenizer ", path_, ": has no \" \" piece for the dummy prefix");
    tokens.push_back(dummy);
  }

  // Split into code points (at most 4 bytes; stray continuation bytes stand alone), each looked up whole,
  // else emitted byte by byte as <0xNN> tokens. Mirrors run.c's loop including its handling of bad UTF-8.
  std::string buf;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) buf.clear();
    buf.push_back(static_cast<char>(c));
    const unsigned char next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
    if ((next & 0xC0) == 0x80 && buf.size() < 4) continue;
    const int64_t id = lookup(buf);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      for (unsigned char byte : buf) {
        const int64_t fallback = byte + kByteOffset;
        if (fallback >= vocab_size())
          fail("tokenizer ", path_, ": byte fallback id ", fallback, " is outside the vocabulary of ", vocab_size());
        tokens.push_back(fallback);
      }
    }
    buf.clear();
  }

  // Greedy merges: each round merges the adjacent pair whose concatenation is the highest-scoring piece;
  // strict '>' keeps the leftmost pair on ties, and the float threshold is run.c's. run.c looks every pair up
  // again each round; we keep each pair's merged id and only redo the two pairs beside a merge (same result,
  // without a string lookup per pair per round).
  auto pair_id = [&](size_t i) { return lookup(pieces_[tokens[i]] + pieces_[tokens[i + 1]]); };
  std::vector<int64_t> merged;  // merged[i]: id of tokens[i] + tokens[i + 1], or -1
  for (size_t i = 0; i + 1 < tokens.size(); ++i) merged.push_back(pair_id(i));
  while (true) {
    float best_score = -1e10f;
    int64_t best_id = -1;
    size_t best_idx = 0;
    for (size_t i = 0; i < merged.size(); ++i) {
      if (merged[i] != -1 && scores_[merged[i]] > best_score) {
        best_score = scores_[merged[i]];
        best_id = merged[i];
        best_idx = i;
      }
    }
    if (best_id == -1) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_idx) + 1);
    merged.erase(merged.begin() + static_cast<std::ptrdiff_t>(best_idx));
    if (best_idx > 0) merged[best_idx - 1] = pair_id(best_idx - 1);
    if (best_idx < merged.size()) merged[best_idx] = pair_id(best_idx);
  }
  if (add_eos) tokens.push_back(kEosId);
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
