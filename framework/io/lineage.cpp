#include "framework/io/lineage.h"

#include <nlohmann/json.hpp>

#include "framework/checkpoint/manifest.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"

namespace reglage::io {

using nlohmann::json;

Lineage read_lineage(const std::string& final_dir) {
  Lineage l;
  const std::string path = final_dir + "/reglage_lineage.json";
  if (!core::file_exists(path)) return l;
  try {
    const json j = json::parse(core::read_file(path));
    l.base_model = j.at("base_model").get<std::string>();
    l.adapters = j.at("adapters").get<std::vector<std::string>>();
  } catch (const std::exception& e) {
    fail(path, ": unreadable lineage (", e.what(), ")");
  }
  return l;
}

void write_lineage(const std::string& dir, const Lineage& lineage) {
  json j{{"base_model", lineage.base_model}, {"adapters", lineage.adapters}};
  core::write_file_atomic(dir + "/reglage_lineage.json", j.dump(2) + "\n");
}

model::CausalLM load_lineage(const Lineage& lineage, torch::Dtype dtype) {
  // Every stage output in the lineage is checked against its manifest before a byte of it is used; the base
  // only when it is one (an earlier fully trained stage), not a model from elsewhere.
  if (checkpoint::is_stage_output(lineage.base_model)) checkpoint::verify_output(lineage.base_model);
  for (const auto& dir : lineage.adapters) checkpoint::verify_output(dir);
  auto m = load_model(lineage.base_model, dtype);
  for (size_t i = 0; i < lineage.adapters.size(); ++i) {
    const std::string name = "lineage_" + std::to_string(i);
    lora::load_peft(m, name, lineage.adapters[i]);
    lora::bake_adapter(m, name, 1.0);
  }
  return m;
}

}  // namespace reglage::io
