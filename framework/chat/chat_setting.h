// The values a stage's `chat_template` key takes (for rows with "messages"); data/chat_format.h resolves them.
#pragma once
#include <string>

namespace reglage::chat {

inline const char* chat_template_choices() { return "auto, plain, chatml, llama2 or a path to a .jinja file"; }

inline bool is_builtin_chat_format(const std::string& s) { return s == "plain" || s == "chatml" || s == "llama2"; }

inline bool is_jinja_path(const std::string& s) {
  return s.size() > 6 && s.compare(s.size() - 6, 6, ".jinja") == 0;
}

// True for auto, plain, chatml, llama2 and any path ending in ".jinja" (whether that file exists is checked apart).
inline bool is_chat_template_setting(const std::string& s) {
  return s == "auto" || is_builtin_chat_format(s) || is_jinja_path(s);
}

}  // namespace reglage::chat
