// The chat-template API: what transformers' render_jinja_template hands to the template, rebuilt in C++.
#include "framework/chat/chat_template_render.h"

#include <ctime>

#include "framework/core/error.h"

namespace reglage::chat {
namespace {

// transformers' _alias_reasoning_fields: {"thinking": r, **message, "reasoning_content": r} when a message
// carries reasoning under any of its names.
Value alias_reasoning(const Value& message) {
  if (!message.is_dict()) return message;
  static const char* kFields[] = {"reasoning_content", "thinking", "reasoning"};
  const Value* reasoning = nullptr;
  for (const char* f : kFields) {
    const Value* v = message.find(f);
    if (v && !v->is_none()) { reasoning = v; break; }
  }
  if (!reasoning) return message;
  Value r = *reasoning;
  ValueDict out = {{Value::string("thinking"), r}};
  auto put = [&out](const Value& key, const Value& val) {
    for (auto& kv : out)
      if (values_equal(kv.first, key)) { kv.second = val; return; }
    out.emplace_back(key, val);
  };
  for (const auto& [key, val] : *message.dict) put(key, val);
  put(Value::string("reasoning_content"), r);
  return Value::make_dict(std::move(out));
}

ChatDate utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec};
}

}  // namespace

std::string strftime_fixed(const std::string& format, const ChatDate& date) {
  std::tm tm{};
  tm.tm_year = date.year - 1900;
  tm.tm_mon = date.month - 1;
  tm.tm_mday = date.day;
  tm.tm_hour = date.hour;
  tm.tm_min = date.minute;
  tm.tm_sec = date.second;
  std::time_t t = timegm(&tm);  // normalizes and fills tm_wday / tm_yday
  gmtime_r(&t, &tm);
  if (format.empty()) return "";
  std::string buf(format.size() * 8 + 64, '\0');
  size_t n = std::strftime(&buf[0], buf.size(), format.c_str(), &tm);
  if (n == 0) jinja_raise("strftime_now: the format \"" + format + "\" gives an empty or too long result");
  buf.resize(n);
  return buf;
}

ChatTemplate::ChatTemplate(const std::string& text, const std::string& name) : name_(name) {
  body_ = jinja_parse(jinja_tokenize(text, name), name);
  jinja_check_names(body_, name);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, const ChatRenderOptions& options) const {
  if (!messages.is_array()) fail(name_, ": messages must be a JSON list of message objects, got ", messages.type_name());
  ValueList converted;
  for (const auto& m : messages) {
    if (!m.is_object()) fail(name_, ": each message must be a JSON object, got ", m.dump());
    converted.push_back(alias_reasoning(value_from_json(m)));
  }
  if (!options.tools.is_null() && !options.tools.is_array())
    fail(name_, ": tools must be a JSON list of tool schemas, got ", options.tools.type_name());
  if (!options.extra.is_null() && !options.extra.is_object())
    fail(name_, ": extra template variables must be a JSON object, got ", options.extra.type_name());

  ChatDate date = options.date ? *options.date : utc_now();
  std::vector<std::pair<std::string, Value>> globals = {
      {"raise_exception", Value::callable([](const CallArgs& a) -> Value {
         jinja_raise("raise_exception: " + arg_or(a, 0, "message", Value::string("")).str());
       })},
      {"strftime_now", Value::callable([date](const CallArgs& a) {
         Value format = arg_or(a, 0, "format", Value::undefined());
         if (!format.is_string()) jinja_raise("strftime_now() takes a format string");
         return Value::string(strftime_fixed(format.s, date));
       })},
      {"messages", Value::make_list(std::move(converted))},
      {"tools", options.tools.is_null() ? Value::none() : value_from_json(options.tools)},
      {"documents", Value::none()},
      {"add_generation_prompt", Value::boolean(options.add_generation_prompt)},
      {"bos_token", Value::string(options.bos_token)},
      {"eos_token", Value::string(options.eos_token)},
  };
  if (options.extra.is_object())
    for (auto it = options.extra.begin(); it != options.extra.end(); ++it)
      globals.emplace_back(it.key(), value_from_json(it.value()));  // later entries win, like **kwargs
  return jinja_render(body_, globals, name_, options.limits);
}

std::string chat_template_render(const std::string& text, const nlohmann::ordered_json& messages,
                                 const ChatRenderOptions& options, const std::string& name) {
  return ChatTemplate(text, name).render(messages, options);
}

}  // namespace reglage::chat
