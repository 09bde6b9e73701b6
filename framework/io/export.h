// Exporting a stage's policy, shared by `reglage export` and `reglage eval --merge-weight`:
//   hf:   theta = theta0 + W (theta_ft - theta0) per tensor, theta0 the lineage's base before any adapter and
//         theta_ft the fine-tuned weights (base + lineage adapters + the stage's adapter, or the fully trained
//         model), written as a Hugging Face model directory;
//   peft: the stage's adapter with lora_B scaled by W, written as a PEFT adapter directory.
// W = 1 is the fine-tuned policy exactly, W = 0 the original base exactly.
#pragma once
#include <torch/torch.h>

#include <string>

#include "framework/io/lineage.h"
#include "framework/model/llama.h"
#include "framework/tokenizer/tokenizer.h"

namespace reglage::io {

// Throws "<flag> = <w> (must be in [0, 1])" unless 0 <= w <= 1 (NaN included).
void check_merge_weight(double w, const std::string& flag = "--merge-weight");
// Throws unless `dir` is absent or an empty directory: an export never writes over other files. `label`
// ("--out ") starts the message.
void check_export_dir(const std::string& dir, const std::string& label = "");

// What a stage's final directory holds.
struct StageOutput {
  std::string dir;        // run_dir/<stage>/final
  bool is_adapter = false;  // true: a PEFT adapter (adapter_config.json); false: a model dir (config.json)
  Lineage lineage;        // what the output sits on; an empty base in the file is filled with the default
};

// Reads `final_dir` and its reglage_lineage.json; `default_base` (the pipeline's model.path) stands in for an
// empty base. Throws naming the directory when it holds neither an adapter nor a model, or naming the file
// that does not match its reglage_manifest.json.
StageOutput read_stage_output(const std::string& final_dir, const std::string& default_base);

// theta_ft in `dtype`: the lineage with the stage's adapter baked on top (w = 1), or the model directory.
model::CausalLM load_finetuned(const StageOutput& out, torch::Dtype dtype);

// In place, for every parameter p of `ft` and the same-named p0 of `base` (same shapes, checked):
//   p <- (1 - w) p0 + w p, in float64, rounded once to `dtype` (p takes that dtype).
// Written as a lerp with both ends weighted so w = 1 gives p and w = 0 gives p0, each rounded to `dtype` only.
void interpolate_weights(model::CausalLM& ft, model::CausalLM& base, double w, torch::Dtype dtype);

// theta_ft interpolated toward the lineage's base by w, in `dtype`: both ends loaded in float32 (adapters
// merged in float64, rounded to float32), interpolated in float64, rounded once to `dtype`. w = 1 loads no
// second model.
model::CausalLM load_interpolated(const StageOutput& out, double w, torch::Dtype dtype);

// lora_B <- w * lora_B on every layer adapter `name` covers: its change scale * B A is scaled by w.
void scale_adapter(model::CausalLM& m, const std::string& name, double w);

// The stage whose output a lineage's last adapter is ("RUN/sft/final" -> "sft"); "" when none is baked.
std::string last_lineage_stage(const Lineage& lineage);

// Writes load_interpolated(out, w, dtype) with the tokenizer files as a Hugging Face model directory at
// `dir`: built in "<dir>.tmp.<pid>" and renamed into place, so `dir` is either absent or complete.
// `dir` must not exist or be an empty directory.
void export_hf(const StageOutput& out, double w, torch::Dtype dtype, const tokenizer::Tokenizer* tok,
               const std::string& dir);

// Writes the stage's adapter (lora_B scaled by w) as a PEFT directory at `dir`, atomically as export_hf, with
// the stage's reglage_lineage.json. When the lineage has adapters baked in, the adapter applies to that merged
// model and adapter_config.json names no base. Throws for a fully trained stage's output.
void export_peft(const StageOutput& out, double w, const std::string& dir);

}  // namespace reglage::io
