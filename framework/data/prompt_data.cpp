#include "framework/data/prompt_data.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::data {

namespace {

struct BadPrompt {
  std::string problem;
};

std::string string_field(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) throw BadPrompt{std::string("missing \"") + key + "\""};
  if (!it->is_string()) throw BadPrompt{std::string("\"") + key + "\" must be a string, got " + it->type_name()};
  return it->get<std::string>();
}

// Appends text and its tokens; with max_seq_len > 0 only until the prompt is known to be longer (*cut set),
// since such a prompt is refused anyway.
void append(PromptExample& ex, const tokenizer::Tokenizer& tok, const std::string& text, int64_t max_seq_len,
            bool* cut) {
  ex.text += text;
  if (text.empty() || *cut) return;
  if (max_seq_len <= 0) {
    for (int64_t id : tok.encode(text, /*add_bos=*/false, /*add_eos=*/false)) ex.ids.push_back(id);
    return;
  }
  const int64_t room = max_seq_len - int64_t(ex.ids.size());
  const auto ids = room < 0 ? std::vector<int64_t>{} : tok.encode_prefix(text, size_t(room));
  *cut = room < 0 || int64_t(ids.size()) > room;
  ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
}

PromptExample parse_row(const nlohmann::json& row, const tokenizer::Tokenizer& tok, const SftDataOptions& opt) {
  if (!row.is_object()) throw BadPrompt{std::string("row must be a JSON object, got ") + row.type_name()};
  const bool has_prompt = row.contains("prompt"), has_messages = row.contains("messages");
  if (has_prompt && has_messages) throw BadPrompt{"row has both \"prompt\" and \"messages\" (give one form)"};
  if (!has_prompt && !has_messages) throw BadPrompt{"row has neither \"prompt\" nor \"messages\""};
  PromptExample ex;
  bool cut = false;  // encoding stopped past max_seq_len: the count is a lower bound
  if (row.contains("reference")) ex.reference = string_field(row, "reference");
  if (tok.add_bos()) ex.ids.push_back(tok.bos_id());
  if (has_prompt) {
    append(ex, tok, string_field(row, "prompt"), opt.max_seq_len, &cut);
  } else {
    const auto& msgs = row["messages"];
    if (!msgs.is_array() || msgs.empty())
      throw BadPrompt{std::string("\"messages\" must be a non-empty array, got ") + msgs.type_name()};
    std::vector<std::pair<std::string, std::string>> messages;
    for (size_t i = 0; i < msgs.size(); ++i) {
      const std::string where = "messages[" + std::to_string(i) + "]";
      if (!msgs[i].is_object()) throw BadPrompt{where + " must be an object, got " + msgs[i].type_name()};
      try {
        messages.emplace_back(string_field(msgs[i], "role"), string_field(msgs[i], "content"));
      } catch (const BadPrompt& b) {
        throw BadPrompt{where + ": " + b.problem};
      }
      const std::string& role = messages.back().first;
      if (role != "system" && role != "user" && role != "assistant")
        throw BadPrompt{where + ": unknown role \"" + role + "\" (expected system, user or assistant)"};
    }
    if (messages.back().first == "assistant")
      throw BadPrompt{"\"messages\" ends with an assistant turn (a prompt ends where the assistant is to answer)"};
    // Render with an empty assistant turn appended; the prompt is everything before that turn's content.
    messages.emplace_back("assistant", "");
    const auto segments = render_chat(opt.chat_template, messages);
    size_t last_assistant = segments.size();
    for (size_t i = 0; i < segments.size(); ++i)
      if (segments[i].second) last_assistant = i;
    for (size_t i = 0; i < last_assistant; ++i) {
      append(ex, tok, segments[i].first, opt.max_seq_len, &cut);
      if (segments[i].second && tok.eos_id() >= 0) ex.ids.push_back(tok.eos_id());  // as SFT ends each turn
    }
  }
  if (ex.ids.empty()) throw BadPrompt{"the prompt has no tokens"};
  if (opt.max_seq_len > 0 && int64_t(ex.ids.size()) > opt.max_seq_len)
    throw BadPrompt{"prompt is " + std::string(cut ? "at least " : "") + std::to_string(ex.ids.size()) +
                    " tokens, longer than max_seq_len = " +
                    std::to_string(opt.max_seq_len)};
  return ex;
}

}  // namespace

PromptDataset load_prompt_jsonl(const std::string& path, const tokenizer::Tokenizer& tok, const SftDataOptions& opt) {
  if (core::is_directory(path)) fail("prompt data ", path, ": is a directory, expected a JSONL file");
  std::ifstream in(path);
  if (!in) fail("prompt data ", path, ": cannot open the file");
  PromptDataset data;
  data.path = path;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    try {
      nlohmann::json row;
      try {
        row = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e400
        throw BadPrompt{std::string("invalid JSON (") + e.what() + ")"};
      }
      PromptExample ex = parse_row(row, tok, opt);
      ex.line = line_no;
      data.rows.push_back(std::move(ex));
    } catch (const BadPrompt& b) {
      if (!opt.skip_bad_rows) fail(path, ":", line_no, ": ", b.problem);
      ++data.skipped;
    }
  }
  if (data.rows.empty())
    fail("prompt data ", path, ": no prompts (", line_no, " lines read, ", data.skipped, " bad rows skipped)");
  return data;
}

}  // namespace reglage::data
