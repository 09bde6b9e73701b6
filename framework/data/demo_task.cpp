// The demo task's success rule and its prompt file.
#include "framework/data/demo_task.h"

#include <nlohmann/json.hpp>

#include <fstream>

#include "framework/core/error.h"

namespace reglage::data {
namespace {

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

}  // namespace

bool demo_success(const std::string& story, const std::string& name) {
  if (name.empty()) return false;
  for (size_t pos = story.find(name); pos != std::string::npos; pos = story.find(name, pos + 1)) {
    const bool starts = pos == 0 || !is_word_char(story[pos - 1]);
    const size_t end = pos + name.size();
    const bool ends = end == story.size() || !is_word_char(story[end]);
    if (starts && ends) return true;
  }
  return false;
}

double demo_success_rate(const std::vector<std::pair<std::string, std::string>>& stories_and_names) {
  if (stories_and_names.empty()) fail("demo_success_rate: no stories");
  int64_t ok = 0;
  for (const auto& [story, name] : stories_and_names) ok += demo_success(story, name) ? 1 : 0;
  return double(ok) / double(stories_and_names.size());
}

std::vector<DemoPrompt> load_demo_prompts(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("demo prompts ", path, ": cannot open the file");
  std::vector<DemoPrompt> prompts;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail(path, ":", line_no, ": invalid JSON (", e.what(), ")");
    }
    DemoPrompt p;
    p.line = line_no;
    for (const char* key : {"prompt", "name"}) {
      if (!j.is_object() || !j.contains(key) || !j[key].is_string())
        fail(path, ":", line_no, ": needs a string \"", key, "\"");
    }
    p.prompt = j["prompt"].get<std::string>();
    p.name = j["name"].get<std::string>();
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) fail("demo prompts ", path, ": no prompts");
  return prompts;
}

}  // namespace reglage::data
