// Helpers for the Jinja renderer tests: read shipped fixtures, render a template with fixed tokens and date.
#pragma once
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "framework/chat/chat_template_render.h"
#include "framework/core/error.h"

namespace reglage::test {

inline std::string jinja_fixture(const std::string& rel) {
  std::string path = std::string(REGLAGE_SOURCE_DIR) + "/tests/data/chat/" + rel;
  std::ifstream in(path, std::ios::binary);
  if (!in) ADD_FAILURE() << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Renders `text` with `vars` (a JSON object of template variables; "messages" defaults to []).
inline std::string jinja(const std::string& text, const std::string& vars_json = "{}") {
  auto vars = nlohmann::ordered_json::parse(vars_json);
  chat::ChatRenderOptions options;
  options.bos_token = "<s>";
  options.eos_token = "</s>";
  options.date = chat::ChatDate{2026, 12, 4, 9, 30, 0};
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (vars.contains("messages")) {
    messages = vars["messages"];
    vars.erase("messages");
  }
  options.extra = vars;
  return chat::chat_template_render(text, messages, options, "t.jinja");
}

// The message of the reglage::Error that rendering throws, or "" (and a test failure) when none.
inline std::string jinja_error(const std::string& text, const std::string& vars_json = "{}") {
  try {
    std::string out = jinja(text, vars_json);
    ADD_FAILURE() << "expected an error, got output: " << out;
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace reglage::test
