// A model's own chat template (the Jinja `chat_template` of tokenizer_config.json or a GGUF file), rendered
// the way transformers' apply_chat_template renders it: same variables (messages, tools, documents,
// add_generation_prompt, bos_token, eos_token), same globals (raise_exception, strftime_now, namespace,
// dict), same environment (trim_blocks, lstrip_blocks, lenient Undefined), byte for byte.
//
//   ChatTemplate tmpl(text, "models/x/tokenizer_config.json");  // parses and checks once
//   ChatRenderOptions options;
//   options.add_generation_prompt = true;
//   options.bos_token = "<s>";
//   std::string prompt = tmpl.render(messages, options);         // messages: a JSON list of {role, content}
#pragma once
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "framework/chat/jinja_eval.h"
#include "framework/chat/jinja_parser.h"

namespace reglage::chat {

// The clock strftime_now reads; pinned in tests so renderings that show the date are reproducible.
struct ChatDate {
  int year = 2024, month = 1, day = 1;  // month 1..12, day 1..31
  int hour = 0, minute = 0, second = 0;
};

struct ChatRenderOptions {
  bool add_generation_prompt = false;
  std::string bos_token;                 // the tokenizer's special tokens, as apply_chat_template passes them
  std::string eos_token;
  nlohmann::ordered_json tools;          // a list of JSON tool schemas; null: the template sees tools = none
  std::optional<ChatDate> date;          // strftime_now's date and time; the current UTC time when absent
  nlohmann::ordered_json extra;          // further template variables (like apply_chat_template's **kwargs,
                                         // e.g. {"date_string": "26 Jul 2024"}); null or an object
  RenderLimits limits;                   // loop iterations, output size, macro recursion depth
};

class ChatTemplate {
 public:
  // Parses and checks the template (unknown filters and tests, unsupported tags). Throws reglage::Error
  // "<name>:LINE:COL: ..." on a malformed template. `name` labels messages (a file path, or a description).
  ChatTemplate(const std::string& text, const std::string& name = "chat template");

  // Renders a conversation: `messages` is a JSON list of message objects ({"role": ..., "content": ...}).
  // Throws reglage::Error with the template's line:column on a runtime error (including the template's
  // own raise_exception, whose message is kept) or when a limit of options.limits is reached.
  std::string render(const nlohmann::ordered_json& messages, const ChatRenderOptions& options = {}) const;

 private:
  std::string name_;
  Body body_;
};

// One-shot form of ChatTemplate(text, name).render(messages, options).
std::string chat_template_render(const std::string& text, const nlohmann::ordered_json& messages,
                                 const ChatRenderOptions& options = {}, const std::string& name = "chat template");

// strftime with a fixed date, as Python's datetime.strftime formats it (the C library's strftime).
std::string strftime_fixed(const std::string& format, const ChatDate& date);

}  // namespace reglage::chat
