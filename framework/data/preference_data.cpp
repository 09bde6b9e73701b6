#include "framework/data/preference_data.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::data {

using nlohmann::json;

namespace {

struct BadPair {
  std::string problem;
};

std::string string_field(const json& row, const char* key) {
  if (!row.contains(key)) throw BadPair{std::string("missing \"") + key + "\""};
  if (!row[key].is_string()) throw BadPair{std::string("\"") + key + "\" must be a string"};
  return row[key].get<std::string>();
}

// "chosen"/"rejected" of a chat row: a string or {"role": "assistant", "content": "..."}
std::string response_field(const json& row, const char* key) {
  if (row.contains(key) && row[key].is_object()) {
    const json& m = row[key];
    if (m.value("role", std::string("assistant")) != "assistant")
      throw BadPair{std::string("\"") + key + "\" must be an assistant turn"};
    return string_field(m, "content");
  }
  return string_field(row, key);
}

// (prompt text, chosen text, rejected text) of a row, the chat form rendered with the template.
std::vector<std::pair<std::string, bool>> render_with(const std::string& tpl,
                                                      std::vector<std::pair<std::string, std::string>> messages,
                                                      const std::string& response) {
  messages.emplace_back("assistant", response);
  return render_chat(tpl, messages);
}

// BOS + segments + EOS; encoding stops once the side is longer than max_seq_len (cut set: the ids are then
// an exact prefix of more than max_seq_len tokens, and prompt_tokens is exact or already over max_seq_len).
std::vector<int64_t> encode_side(const tokenizer::Tokenizer& tok, const std::vector<std::pair<std::string, bool>>& segs,
                                 int64_t max_seq_len, int64_t& prompt_tokens, bool& cut) {
  std::vector<int64_t> ids;
  cut = false;
  prompt_tokens = -1;
  if (tok.add_bos()) ids.push_back(tok.bos_id());
  for (size_t i = 0; i < segs.size() && !cut; ++i) {
    if (i + 1 == segs.size()) prompt_tokens = int64_t(ids.size());
    const int64_t room = max_seq_len - int64_t(ids.size());
    auto piece = tok.encode_prefix(segs[i].first, size_t(std::max<int64_t>(room, 0)));
    cut = int64_t(piece.size()) > room;
    ids.insert(ids.end(), piece.begin(), piece.end());
  }
  if (cut) {  // no EOS: the ids are the side's exact first tokens
    if (prompt_tokens < 0) prompt_tokens = int64_t(ids.size());  // stopped inside the prompt
    return ids;
  }
  if (tok.eos_id() >= 0) ids.push_back(tok.eos_id());
  return ids;
}

// *cut: a side is longer than max_seq_len and holds only its first tokens.
PreferencePair parse_pair(const json& row, const tokenizer::Tokenizer& tok, const SftDataOptions& opt, bool* cut) {
  if (!row.is_object()) throw BadPair{"row must be a JSON object"};
  std::vector<std::pair<std::string, bool>> chosen_segs, rejected_segs;
  if (row.contains("messages")) {
    if (!row["messages"].is_array()) throw BadPair{"\"messages\" must be an array"};
    std::vector<std::pair<std::string, std::string>> messages;
    for (const auto& m : row["messages"]) {
      if (!m.is_object()) throw BadPair{"each message must be an object"};
      const std::string role = string_field(m, "role");
      if (role != "system" && role != "user" && role != "assistant")
        throw BadPair{"unknown role \"" + role + "\" (expected system, user or assistant)"};
      messages.emplace_back(role, string_field(m, "content"));
    }
    chosen_segs = render_with(opt.chat_template, messages, response_field(row, "chosen"));
    rejected_segs = render_with(opt.chat_template, messages, response_field(row, "rejected"));
  } else {
    const std::string prompt = string_field(row, "prompt");
    chosen_segs = {{prompt, false}, {string_field(row, "chosen"), true}};
    rejected_segs = {{prompt, false}, {string_field(row, "rejected"), true}};
  }
  PreferencePair p;
  int64_t prompt_tokens_r = 0;
  bool chosen_cut = false, rejected_cut = false;
  p.chosen = encode_side(tok, chosen_segs, opt.max_seq_len, p.prompt_tokens, chosen_cut);
  p.rejected = encode_side(tok, rejected_segs, opt.max_seq_len, prompt_tokens_r, rejected_cut);
  // Two cut sides compare only their prefixes: the same when the texts are; else the cut check decides.
  const bool same = chosen_cut && rejected_cut ? chosen_segs == rejected_segs : p.chosen == p.rejected;
  if (same) throw BadPair{"\"chosen\" and \"rejected\" are the same"};
  *cut = chosen_cut || rejected_cut;
  if (row.contains("margin")) {
    if (!row["margin"].is_number()) throw BadPair{"\"margin\" must be a number"};
    p.margin = row["margin"].get<double>();
    // The loss sees the margin as float32 (collate_pairs): 1e39 is finite as a double but inf there.
    if (!std::isfinite(float(p.margin)))
      throw BadPair{"\"margin\" = " + row["margin"].dump() + " (must be a finite number within float32 range)"};
  }
  return p;
}

}  // namespace

PreferenceDataset load_preference_jsonl(const std::string& path, const tokenizer::Tokenizer& tok,
                                        const SftDataOptions& opt) {
  if (opt.max_seq_len <= 0) fail("preference data ", path, ": max_seq_len = ", opt.max_seq_len, " (must be > 0)");
  if (core::is_directory(path)) fail("preference data ", path, ": is a directory, expected a JSONL file");
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open the preference data file");
  PreferenceDataset data;
  data.path = path;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      json row;
      try {
        row = json::parse(line);
      } catch (const json::exception& e) {
        throw BadPair{std::string("invalid JSON (") + e.what() + ")"};
      }
      bool cut = false;
      PreferencePair p = parse_pair(row, tok, opt, &cut);
      p.line = line_no;
      const int64_t longest = int64_t(std::max(p.chosen.size(), p.rejected.size()));
      if (longest > opt.max_seq_len) {
        if (!opt.truncate)
          fail(path, ":", line_no, ": pair is ", cut ? "at least " : "", longest,
               " tokens, longer than max_seq_len = ", opt.max_seq_len, " (set truncate: true to cut it)");
        if (p.prompt_tokens >= opt.max_seq_len) throw BadPair{"the prompt alone fills max_seq_len"};
        if (int64_t(p.chosen.size()) > opt.max_seq_len) p.chosen.resize(size_t(opt.max_seq_len));
        if (int64_t(p.rejected.size()) > opt.max_seq_len) p.rejected.resize(size_t(opt.max_seq_len));
        if (p.chosen == p.rejected) throw BadPair{"the two sides are the same once cut to max_seq_len"};
        ++data.truncated;
      }
      data.pairs.push_back(std::move(p));
    } catch (const BadPair& b) {
      if (!opt.skip_bad_rows) fail(path, ":", line_no, ": ", b.problem);
      ++data.skipped;
    }
  }
  if (data.pairs.empty()) fail(path, ": no preference pairs (the data set is empty)");
  return data;
}

PreferenceBatch collate_pairs(const PreferenceDataset& data, const std::vector<int64_t>& indices, int64_t pad_id) {
  const int64_t n = int64_t(indices.size());
  int64_t T = 1;
  for (auto i : indices) T = std::max<int64_t>({T, int64_t(data.pairs[i].chosen.size()), int64_t(data.pairs[i].rejected.size())});
  std::vector<int64_t> ids(size_t(2 * n * T), pad_id);
  std::vector<uint8_t> valid(size_t(2 * n * T), 0);
  std::vector<int64_t> targets(size_t(2 * n * T), -100);
  std::vector<float> margin(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    const auto& p = data.pairs[indices[k]];
    for (int side = 0; side < 2; ++side) {
      const auto& seq = side == 0 ? p.chosen : p.rejected;
      const int64_t row = side * n + k;
      for (size_t t = 0; t < seq.size(); ++t) {
        ids[size_t(row * T) + t] = seq[t];
        valid[size_t(row * T) + t] = 1;
        // position t predicts token t + 1; response tokens start at prompt_tokens
        if (t + 1 < seq.size() && int64_t(t + 1) >= p.prompt_tokens) targets[size_t(row * T) + t] = seq[t + 1];
      }
    }
    margin[size_t(k)] = float(p.margin);
  }
  PreferenceBatch b;
  b.ids = torch::from_blob(ids.data(), {2 * n, T}, torch::kLong).clone();
  b.valid = torch::from_blob(valid.data(), {2 * n, T}, torch::kUInt8).clone().to(torch::kBool);
  b.margin = torch::from_blob(margin.data(), {n}, torch::kFloat32).clone();
  b.targets = torch::from_blob(targets.data(), {2 * n, T}, torch::kLong).clone();
  return b;
}

}  // namespace reglage::data
