// Shared by the SmolLM2 tests: the model file (fetched by scripts/get_model.sh smollm2) and transformers'
// reference prompts (tests/data/smollm2/prompts.json).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "framework/core/file_util.h"
#include "test_util.h"

namespace reglage::test {

inline std::string smollm2_gguf() { return source_path("models/smollm2/SmolLM2-135M-Instruct-Q4_1.gguf"); }
inline std::string quoted(const std::string& s) { return "'" + s + "'"; }
inline nlohmann::json smollm2_prompts() {
  return nlohmann::json::parse(core::read_file(source_path("tests/data/smollm2/prompts.json")));
}

}  // namespace reglage::test
