#include "framework/io/export.h"

#include <unistd.h>

#include <filesystem>
#include <functional>

#include "framework/checkpoint/manifest.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"

namespace reglage::io {

namespace fs = std::filesystem;

namespace {

// Builds a directory in "<dir>.tmp.<pid>" with `write`, then renames it to `dir`: readers see no directory
// or a complete one. A failed `write` leaves nothing behind.
void publish_dir(const std::string& dir, const std::function<void(const std::string&)>& write) {
  check_export_dir(dir);
  const std::string tmp = dir + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) fail(tmp, ": cannot create directory (", ec.message(), ")");
  try {
    write(tmp);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove(dir, ec);  // an empty directory made beforehand; rename cannot replace a directory otherwise
  fs::rename(tmp, dir, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove_all(tmp, ec);
    fail(dir, ": cannot move the export into place (", why, ")");
  }
}

}  // namespace

void check_merge_weight(double w, const std::string& flag) {
  if (!(w >= 0.0 && w <= 1.0)) fail(flag, " = ", w, " (must be in [0, 1])");
}

void check_export_dir(const std::string& dir, const std::string& label) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  if (!fs::is_directory(dir, ec)) fail(label, dir, ": exists and is not a directory (expected a new directory)");
  if (!fs::is_empty(dir, ec))
    fail(label, dir, ": already exists and is not empty (expected a new or empty directory)");
}

StageOutput read_stage_output(const std::string& final_dir, const std::string& default_base) {
  StageOutput out;
  out.dir = final_dir;
  if (!core::is_directory(final_dir)) fail(final_dir, ": no such directory (has the stage run?)");
  checkpoint::verify_output(final_dir);  // its files as the stage wrote them, before any is read
  if (core::file_exists(core::path_join(final_dir, "adapter_config.json"))) out.is_adapter = true;
  else if (!core::file_exists(core::path_join(final_dir, "config.json")))
    fail(final_dir, ": holds neither adapter_config.json (a LoRA stage) nor config.json (a fully trained stage)");
  out.lineage = read_lineage(final_dir);
  if (out.lineage.base_model.empty()) out.lineage.base_model = default_base;
  return out;
}

model::CausalLM load_finetuned(const StageOutput& out, torch::Dtype dtype) {
  if (!out.is_adapter) return load_model(out.dir, dtype);
  auto m = load_lineage(out.lineage, dtype);  // base + lineage adapters, each baked at w = 1
  lora::load_peft(m, "stage", out.dir);
  lora::bake_adapter(m, "stage", 1.0);
  return m;
}

void interpolate_weights(model::CausalLM& ft, model::CausalLM& base, double w, torch::Dtype dtype) {
  check_merge_weight(w, "merge weight");
  torch::NoGradGuard no_grad;
  auto base_params = base->named_parameters(/*recurse=*/true);
  auto ft_params = ft->named_parameters(/*recurse=*/true);
  // Every pair checked before any weight changes.
  for (const auto& item : ft_params) {
    const torch::Tensor* p0 = base_params.find(item.key());
    if (p0 == nullptr) fail("interpolation: the base model has no tensor '", item.key(), "'");
    if (p0->sizes() != item.value().sizes())
      fail("interpolation: tensor '", item.key(), "' has shape ", item.value().sizes(), " fine-tuned and ",
           p0->sizes(), " in the base (a different model?)");
  }
  for (auto& item : ft_params) {
    torch::Tensor& p = item.value();  // any shape, e.g. (out, in) for a linear weight
    const torch::Tensor& p0 = base_params[item.key()];
    const auto mixed = p0.to(torch::kFloat64) * (1.0 - w) + p.to(torch::kFloat64) * w;  // same shape as p
    p.set_data(mixed.to(dtype));  // one rounding, to the output dtype
  }
}

model::CausalLM load_interpolated(const StageOutput& out, double w, torch::Dtype dtype) {
  check_merge_weight(w, "merge weight");
  auto ft = load_finetuned(out, torch::kFloat32);  // theta_ft
  if (w != 1.0) {
    auto base = load_model(out.lineage.base_model, torch::kFloat32);  // theta0
    const int64_t ft_vocab = ft->config().vocab_size, base_vocab = base->config().vocab_size;
    if (ft_vocab != base_vocab)
      fail(out.dir, ": vocabulary of ", ft_vocab, " tokens, its base ", out.lineage.base_model, " has ", base_vocab);
    interpolate_weights(ft, base, w, dtype);
  }
  ft->to(dtype);  // w = 1: theta_ft's float32 weights rounded once; otherwise the buffers
  return ft;
}

void scale_adapter(model::CausalLM& m, const std::string& name, double w) {
  if (!lora::has_adapter(m, name)) fail("no adapter named '", name, "' to scale");
  torch::NoGradGuard no_grad;
  for (auto& [path, layer] : m->linear_layers())
    if (layer->has_adapter(name)) layer->adapter(name).B.mul_(w);  // (out, r); w = 1 changes no bit
}

std::string last_lineage_stage(const Lineage& lineage) {
  if (lineage.adapters.empty()) return "";
  fs::path p = fs::path(lineage.adapters.back()).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // a trailing '/'
  if (p.filename() == "final") p = p.parent_path();
  return p.filename().string();
}

void export_hf(const StageOutput& out, double w, torch::Dtype dtype, const tokenizer::Tokenizer* tok,
               const std::string& dir) {
  auto m = load_interpolated(out, w, dtype);
  publish_dir(dir, [&](const std::string& tmp) { save_hf(m, tmp, tok); });
}

void export_peft(const StageOutput& out, double w, const std::string& dir) {
  check_merge_weight(w, "merge weight");
  if (!out.is_adapter)
    fail(out.dir, ": a fully trained model, not a LoRA adapter (export it with --format hf)");
  // The adapter's tensors need only a model of the right shapes: the base's config, no weights read.
  model::CausalLM m(read_model_config(out.lineage.base_model));
  lora::load_peft(m, "stage", out.dir);
  scale_adapter(m, "stage", w);
  const bool on_merged = !out.lineage.adapters.empty();
  publish_dir(dir, [&](const std::string& tmp) {
    // On a lineage with adapters baked in, no base model path describes what the adapter applies to.
    lora::save_peft(m, "stage", tmp, on_merged ? "" : out.lineage.base_model);
    write_lineage(tmp, out.lineage);
  });
}

}  // namespace reglage::io
