#include "framework/data/preference_data.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/data/chat_format.h"

namespace reglage::data {

using json = Json;  // ordered: a template's tojson sees the row's key order

namespace {

struct BadPair {
  std::string problem;
};

std::string string_field(const json& row, const char* key) {
  if (!row.contains(key)) throw BadPair{std::string("missing \"") + key + "\""};
  if (!row[key].is_string()) throw BadPair{std::string("\"") + key + "\" must be a string"};
  return row[key].get<std::string>();
}

// "chosen"/"rejected" of a chat row as an assistant message: a string, or {"role": "assistant", "content": ...}
// (further fields are the template's business).
json response_message(const json& row, const char* key) {
  if (row.contains(key) && row[key].is_object()) {
    json m = row[key];
    if (m.value("role", std::string("assistant")) != "assistant")
      throw BadPair{std::string("\"") + key + "\" must be an assistant turn"};
    m["role"] = "assistant";
    string_field(m, "content");
    return m;
  }
  return json{{"role", "assistant"}, {"content", string_field(row, key)}};
}

struct Side {
  std::vector<int64_t> ids;
  int64_t prompt_tokens = 0;  // exact, or already over max_seq_len when cut inside the prompt
  bool cut = false;           // longer than max_seq_len: ids is an exact prefix of more than max_seq_len tokens
};

// BOS + prompt + response + EOS; encoding stops once the side is longer than max_seq_len.
Side encode_plain_side(const tokenizer::Tokenizer& tok, const std::string& prompt, const std::string& response,
                       int64_t max_seq_len) {
  Side side;
  if (tok.add_bos()) side.ids.push_back(tok.bos_id());
  for (const std::string* text : {&prompt, &response}) {
    if (text == &response) side.prompt_tokens = int64_t(side.ids.size());
    const int64_t room = max_seq_len - int64_t(side.ids.size());
    auto piece = tok.encode_prefix(*text, size_t(std::max<int64_t>(room, 0)));
    side.cut = int64_t(piece.size()) > room;
    side.ids.insert(side.ids.end(), piece.begin(), piece.end());
    if (side.cut) {
      if (text == &prompt) side.prompt_tokens = int64_t(side.ids.size());  // stopped inside the prompt
      return side;  // no EOS: the ids are the side's exact first tokens
    }
  }
  if (tok.eos_id() >= 0) side.ids.push_back(tok.eos_id());
  return side;
}

// The conversation with its final assistant turn, by the chat format: the response is that turn's tokens
// (its content and end-of-turn marker); what the template writes after it is not part of the side.
Side encode_chat_side(const ChatFormat& format, const json& conversation, const json& tools, int64_t max_seq_len) {
  Side side;
  ChatTokens tokens;
  try {
    tokens = format.encode_conversation(conversation, size_t(max_seq_len), tools);
  } catch (const Error& e) {
    throw BadPair{e.what()};
  }
  size_t assistants = 0;
  for (const auto& m : conversation) assistants += m["role"] == "assistant" ? 1 : 0;
  side.cut = tokens.cut;
  side.ids = std::move(tokens.ids);
  if (tokens.turns.size() < assistants) {  // cut before the response
    side.prompt_tokens = int64_t(side.ids.size());
    return side;
  }
  const ByteSpan& response = tokens.turns.back();
  side.prompt_tokens = int64_t(std::min(response.begin, side.ids.size()));
  if (!side.cut) side.ids.resize(response.end);
  return side;
}

// *cut: a side is longer than max_seq_len and holds only its first tokens.
PreferencePair parse_pair(const json& row, const tokenizer::Tokenizer& tok, const SftDataOptions& opt,
                          LazyChatFormat& chat, bool* cut) {
  if (!row.is_object()) throw BadPair{"row must be a JSON object"};
  Side chosen, rejected;
  bool same_text = false;  // the two responses are the same text
  if (row.contains("messages")) {
    const ChatFormat& format = chat.get();  // a config problem, not the row's: not skipped
    try {
      format.check_messages(row["messages"]);
    } catch (const Error& e) {
      throw BadPair{e.what()};
    }
    json with_chosen = row["messages"], with_rejected = row["messages"];
    with_chosen.push_back(response_message(row, "chosen"));
    with_rejected.push_back(response_message(row, "rejected"));
    same_text = with_chosen == with_rejected;
    const json tools = row.value("tools", json());
    chosen = encode_chat_side(format, with_chosen, tools, opt.max_seq_len);
    rejected = encode_chat_side(format, with_rejected, tools, opt.max_seq_len);
  } else {
    const std::string prompt = string_field(row, "prompt");
    const std::string chosen_text = string_field(row, "chosen"), rejected_text = string_field(row, "rejected");
    same_text = chosen_text == rejected_text;
    chosen = encode_plain_side(tok, prompt, chosen_text, opt.max_seq_len);
    rejected = encode_plain_side(tok, prompt, rejected_text, opt.max_seq_len);
  }
  PreferencePair p;
  p.chosen = std::move(chosen.ids);
  p.rejected = std::move(rejected.ids);
  p.prompt_tokens = chosen.prompt_tokens;
  // Two cut sides compare only their prefixes: the same when the texts are; else the cut check decides.
  const bool same = chosen.cut && rejected.cut ? same_text : p.chosen == p.rejected;
  if (same) throw BadPair{"\"chosen\" and \"rejected\" are the same"};
  *cut = chosen.cut || rejected.cut;
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
  if (!is_chat_template_setting(opt.chat_template))
    fail("preference data ", path, ": chat_template = \"", opt.chat_template, "\" (expected ", chat_template_choices(),
         ")");
  PreferenceDataset data;
  data.path = path;
  LazyChatFormat chat(opt.chat_template, tok, path);
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    chat.at_line(line_no);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      json row;
      try {
        row = json::parse(line);
      } catch (const json::exception& e) {
        throw BadPair{std::string("invalid JSON (") + e.what() + ")"};
      }
      bool cut = false;
      PreferencePair p = parse_pair(row, tok, opt, chat, &cut);
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
