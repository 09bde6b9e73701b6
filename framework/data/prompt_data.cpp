#include "framework/data/prompt_data.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/data/chat_format.h"

namespace reglage::data {

namespace {

struct BadPrompt {
  std::string problem;
};

std::string string_field(const Json& obj, const char* key) {
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

PromptExample parse_row(const Json& row, const tokenizer::Tokenizer& tok, const SftDataOptions& opt,
                        LazyChatFormat& chat) {
  if (!row.is_object()) throw BadPrompt{std::string("row must be a JSON object, got ") + row.type_name()};
  const bool has_prompt = row.contains("prompt"), has_messages = row.contains("messages");
  if (has_prompt && has_messages) throw BadPrompt{"row has both \"prompt\" and \"messages\" (give one form)"};
  if (!has_prompt && !has_messages) throw BadPrompt{"row has neither \"prompt\" nor \"messages\""};
  PromptExample ex;
  bool cut = false;  // encoding stopped past max_seq_len: the count is a lower bound
  if (row.contains("reference")) ex.reference = string_field(row, "reference");
  if (has_prompt) {
    if (tok.add_bos()) ex.ids.push_back(tok.bos_id());
    append(ex, tok, string_field(row, "prompt"), opt.max_seq_len, &cut);
  } else {
    const Json& messages = row["messages"];
    if (!messages.is_array() || messages.empty())
      throw BadPrompt{std::string("\"messages\" must be a non-empty array, got ") + messages.type_name()};
    const ChatFormat& format = chat.get();  // a config problem, not the row's: not skipped
    ChatPrompt prompt;
    try {
      prompt = format.encode_prompt(messages, opt.max_seq_len > 0 ? size_t(opt.max_seq_len) : kNoTokenLimit,
                                    row.value("tools", Json()));
    } catch (const Error& e) {
      throw BadPrompt{e.what()};
    }
    ex.text = std::move(prompt.text);
    ex.ids = std::move(prompt.ids);
    cut = prompt.cut;
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
  if (!is_chat_template_setting(opt.chat_template))
    fail("prompt data ", path, ": chat_template = \"", opt.chat_template, "\" (expected ", chat_template_choices(), ")");
  PromptDataset data;
  data.path = path;
  LazyChatFormat chat(opt.chat_template, tok, path);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    chat.at_line(line_no);
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    try {
      Json row;
      try {
        row = Json::parse(line);
      } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e400
        throw BadPrompt{std::string("invalid JSON (") + e.what() + ")"};
      }
      PromptExample ex = parse_row(row, tok, opt, chat);
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
