// reglage export RUN_DIR --stage NAME --format hf|peft --out DIR [--merge-weight W] [--dtype float32|bfloat16]
// Writes the policy a finished stage of a pipeline run produced in a form other tools load
// (framework/io/export.h):
//   hf    a Hugging Face model directory (config.json, model.safetensors, tokenizer files): the base with every
//         adapter merged, or the fully trained model; theta = theta0 + W (theta_ft - theta0), theta0 the
//         original base before any adapter. --dtype sets the weights' type (default float32).
//   peft  the stage's LoRA adapter (adapter_config.json, adapter_model.safetensors, reglage_lineage.json) with
//         lora_B scaled by W. LoRA stages only. When earlier adapters are baked into the stage's lineage the
//         adapter applies to that merged model; a note on stderr says which and how to export it.
// W is in [0, 1], default 1 (the fine-tuned policy exactly). RUN_DIR holds config.yaml (written by reglage run)
// and RUN_DIR/<stage>/final/. DIR must be new or empty; it appears complete or not at all.
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "framework/checkpoint/run_layout.h"
#include "framework/config/pipeline_config.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/export.h"
#include "framework/io/model_io.h"
#include "framework/model/config.h"
#include "launch/commands.h"
#include "trainers/stage_traits.h"

namespace reglage::launch {

namespace {

const char* kUsage =
    "usage: reglage export RUN_DIR --stage NAME --format hf|peft --out DIR [--merge-weight W] "
    "[--dtype float32|bfloat16]";

// The stage's entry in the run's config; throws naming the stage when it has no policy to export.
const config::StageConfig& policy_stage(const config::PipelineConfig& cfg, const std::string& stage) {
  std::string policies;  // the stages of this run that do have one
  for (const auto& s : cfg.stages)
    if (trainers::stage_traits(s.type).produces_policy) policies += (policies.empty() ? "" : ", ") + s.name;
  const config::StageConfig* st = cfg.find_stage(stage);
  if (st == nullptr)
    fail("--stage ", stage, ": no such stage in ", cfg.source, " (policy stages: ", policies.empty() ? "none" : policies,
         ")");
  if (!trainers::stage_traits(st->type).produces_policy)
    fail("--stage ", stage, ": its type is reward_model, which is not a policy and has nothing to export (policy stages: ",
         policies.empty() ? "none" : policies, ")");
  return *st;
}

}  // namespace

int cmd_export(int argc, char** argv) {
  if (argc >= 1 && (std::string(argv[0]) == "--help" || std::string(argv[0]) == "-h")) {
    std::cout << kUsage << "\n";
    return 0;
  }
  if (argc < 1 || argv[0][0] == '-') fail(kUsage);
  const std::string run_dir = argv[0];
  Args args(argc - 1, argv + 1, "export");
  const std::string stage = args.required("stage");
  const std::string format = args.required("format");
  const std::string out_dir = args.required("out");
  const double merge_weight = args.number("merge-weight", 1.0);
  const bool dtype_given = args.has("dtype");
  const std::string dtype_name = args.str("dtype", "float32");
  args.finish();

  // Everything checked before a model is read.
  if (format != "hf" && format != "peft") fail("--format = '", format, "' (expected hf or peft)");
  io::check_merge_weight(merge_weight);
  if (dtype_name != "float32" && dtype_name != "bfloat16")
    fail("--dtype = '", dtype_name, "' (expected float32 or bfloat16)");
  if (format == "peft" && dtype_given) fail("--dtype applies to --format hf (a PEFT adapter is written in float32)");
  io::check_export_dir(out_dir, "--out ");
  if (!core::is_directory(run_dir))
    fail(run_dir, ": no such run directory (expected the run_dir of a pipeline run, holding config.yaml)");
  const checkpoint::RunLayout layout(run_dir);
  const std::string config_path = layout.config_yaml();
  if (!core::file_exists(config_path))
    fail(config_path, ": not found (expected the resolved config reglage run writes into its run_dir)");
  // The run's outputs are read from RUN_DIR, wherever the config's run_dir pointed when it ran (the value is
  // YAML: a JSON string is a quoted YAML scalar, whatever characters the path holds).
  const auto cfg = config::load_pipeline(config_path, {"run_dir=" + nlohmann::json(run_dir).dump()},
                                         config::DataFiles::may_be_missing);
  const config::StageConfig& st = policy_stage(cfg, stage);
  const std::string final_dir = layout.final_dir(stage);
  if (!core::is_directory(final_dir)) fail("--stage ", stage, ": no output in ", final_dir, " (has the stage finished?)");
  const io::StageOutput out = io::read_stage_output(final_dir, cfg.model.path);

  if (format == "hf") {
    // The tokenizer before the weights: a missing one fails fast.
    const auto shape = io::read_model_config(out.is_adapter ? out.lineage.base_model : out.dir);
    auto tok = io::load_model_tokenizer(cfg.model.path, cfg.model.tokenizer, shape.vocab_size);
    io::export_hf(out, merge_weight, model::parse_dtype(dtype_name), tok.get(), out_dir);
    std::cout << "wrote " << out_dir << ": Hugging Face model of stage " << stage << " (merge weight " << merge_weight
              << ", " << dtype_name << ")\n";
    return 0;
  }
  if (!out.is_adapter)
    fail("--format peft: stage ", stage, " was trained with train: ", config::to_string(st.train),
         ", its output is a full model, not a LoRA adapter (use --format hf)");
  io::export_peft(out, merge_weight, out_dir);
  std::cout << "wrote " << out_dir << ": PEFT adapter of stage " << stage << " (merge weight " << merge_weight << ")\n";
  const std::string below = io::last_lineage_stage(out.lineage);
  if (!below.empty())
    std::cerr << "note: this adapter applies to stage " << below << "'s merged model (" << out.lineage.base_model
              << " + " << out.lineage.adapters.size() << " adapter(s)), not to the base; get that model with: "
              << "reglage export " << run_dir << " --stage " << below << " --format hf --out DIR\n";
  return 0;
}

}  // namespace reglage::launch
