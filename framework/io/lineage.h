// What a stage output sits on: a base model and the LoRA adapters merged into it first, in order, recorded as
// reglage_lineage.json in every run_dir/<stage>/final/ so the output can be loaded alone.
#pragma once
#include <string>
#include <vector>

#include "framework/model/llama.h"

namespace reglage::io {

struct Lineage {
  std::string base_model;             // llama2.c file or Hugging Face directory
  std::vector<std::string> adapters;  // PEFT directories baked in order
};

// {} (empty base_model) when the directory has no reglage_lineage.json; throws on an unreadable one.
Lineage read_lineage(const std::string& final_dir);
void write_lineage(const std::string& dir, const Lineage& lineage);
// The base with every lineage adapter merged (w = 1); throws naming the missing part, or the file of a
// stage output (an adapter, or a base that is an earlier stage's final/) that does not match its manifest.
model::CausalLM load_lineage(const Lineage& lineage, torch::Dtype dtype);

}  // namespace reglage::io
