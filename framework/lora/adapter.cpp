#include "framework/lora/adapter.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/safetensors.h"

namespace reglage::lora {

using nlohmann::json;

namespace {

const std::vector<std::string> kAllLinear = {"q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};

std::string short_name(const std::string& path) { return path.substr(path.rfind('.') + 1); }

std::set<std::string> target_set(const std::vector<std::string>& targets) {
  std::set<std::string> out;
  for (const auto& t : targets) {
    if (t == "all-linear" || t == "all_linear") {
      out.insert(kAllLinear.begin(), kAllLinear.end());
    } else if (std::find(kAllLinear.begin(), kAllLinear.end(), t) != kAllLinear.end()) {
      out.insert(t);
    } else {
      fail("lora target '", t, "' is not a layer name (expected q_proj, k_proj, v_proj, o_proj, gate_proj, ",
           "up_proj, down_proj or all-linear)");
    }
  }
  return out;
}

const std::string kPeftPrefix = "base_model.model.";

}  // namespace

void add_adapter(model::CausalLM& m, const std::string& name, const LoraConfig& cfg, uint64_t seed) {
  if (name.empty()) fail("adapter name must not be empty");
  if (has_adapter(m, name)) fail("adapter '", name, "' already exists");
  if (cfg.rank <= 0) fail("lora rank = ", cfg.rank, " (must be > 0)");
  if (!(cfg.alpha > 0) || !std::isfinite(cfg.alpha)) fail("lora alpha = ", cfg.alpha, " (must be a finite number > 0)");
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) fail("lora dropout = ", cfg.dropout, " (must be in [0, 1))");
  const auto targets = target_set(cfg.targets);
  if (targets.empty()) fail("lora targets are empty");
  // A rank above min(in, out) adds nothing a full update would not, and lora.rank: 10000000 would try to
  // allocate rank x in floats per layer: check every targeted layer before adding to any.
  for (auto& [path, layer] : m->linear_layers()) {
    if (!targets.count(short_name(path))) continue;
    const int64_t limit = std::min(layer->in_features(), layer->out_features());
    if (cfg.rank > limit)
      fail("lora.rank = ", cfg.rank, " is larger than layer ", path, " (", layer->in_features(), " in, ",
           layer->out_features(), " out); it must be <= min(in, out) = ", limit);
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [path, layer] : m->linear_layers()) {
    if (!targets.count(short_name(path))) continue;
    layer->add_adapter(name, cfg.rank, cfg.alpha, cfg.dropout, gen);
    // rsLoRA scales by alpha / sqrt(r) instead of alpha / r.
    if (cfg.use_rslora) layer->adapter(name).scale = cfg.alpha / std::sqrt(double(cfg.rank));
  }
}

bool has_adapter(model::CausalLM& m, const std::string& name) {
  for (auto& [path, layer] : m->linear_layers())
    if (layer->has_adapter(name)) return true;
  return false;
}

void remove_adapter(model::CausalLM& m, const std::string& name) {
  for (auto& [path, layer] : m->linear_layers())
    if (layer->has_adapter(name)) layer->remove_adapter(name);
}

void merge_adapter(model::CausalLM& m, const std::string& name, double w) {
  if (!has_adapter(m, name)) fail("no adapter named '", name, "' to merge");
  for (auto& [path, layer] : m->linear_layers())
    if (layer->has_adapter(name)) layer->merge(name, w);
}

void unmerge_adapter(model::CausalLM& m, const std::string& name) {
  for (auto& [path, layer] : m->linear_layers())
    if (layer->has_adapter(name)) layer->unmerge(name);
}

void bake_adapter(model::CausalLM& m, const std::string& name, double w) {
  if (!has_adapter(m, name)) fail("no adapter named '", name, "' to merge");
  for (auto& [path, layer] : m->linear_layers())
    if (layer->has_adapter(name)) layer->bake(name, w);
}

std::vector<std::pair<std::string, torch::Tensor>> adapter_tensors(model::CausalLM& m, const std::string& name) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [path, layer] : m->linear_layers()) {
    if (!layer->has_adapter(name)) continue;
    auto& a = layer->adapter(name);
    out.emplace_back(kPeftPrefix + path + ".lora_A.weight", a.A);
    out.emplace_back(kPeftPrefix + path + ".lora_B.weight", a.B);
  }
  return out;
}

void save_peft(model::CausalLM& m, const std::string& name, const std::string& dir,
               const std::string& base_model_path) {
  auto tensors = adapter_tensors(m, name);
  if (tensors.empty()) fail("no adapter named '", name, "' to save");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail(dir, ": cannot create directory (", ec.message(), ")");

  // Rank, scale and dropout are per layer; an adapter made by add_adapter/load_peft has one of each.
  int64_t rank = 0;
  double scale = 0, dropout = 0;
  std::set<std::string> modules;
  for (auto& [path, layer] : m->linear_layers()) {
    if (!layer->has_adapter(name)) continue;
    auto& a = layer->adapter(name);
    rank = a.A.size(0);
    scale = a.scale;
    dropout = a.dropout;
    modules.insert(short_name(path));
  }
  json c;
  c["peft_type"] = "LORA";
  c["task_type"] = "CAUSAL_LM";
  c["base_model_name_or_path"] = base_model_path;
  c["r"] = rank;
  c["lora_alpha"] = scale * double(rank);  // scale = alpha / r
  c["lora_dropout"] = dropout;
  c["target_modules"] = std::vector<std::string>(modules.begin(), modules.end());
  c["bias"] = "none";
  c["fan_in_fan_out"] = false;
  c["inference_mode"] = true;
  c["init_lora_weights"] = true;
  c["modules_to_save"] = nullptr;
  c["use_rslora"] = false;
  c["use_dora"] = false;
  c["rank_pattern"] = json::object();
  c["alpha_pattern"] = json::object();
  c["layers_to_transform"] = nullptr;
  c["revision"] = nullptr;
  core::write_file_atomic(core::path_join(dir, "adapter_config.json"), c.dump(2) + "\n");
  io::write_safetensors(core::path_join(dir, "adapter_model.safetensors"), tensors, {{"format", "pt"}});
}

LoraConfig load_peft(model::CausalLM& m, const std::string& name, const std::string& dir) {
  const std::string config_path = core::path_join(dir, "adapter_config.json");
  const std::string weights_path = core::path_join(dir, "adapter_model.safetensors");
  if (!core::is_directory(dir)) fail(dir, ": adapter directory not found");
  if (!core::file_exists(config_path)) fail(dir, ": no adapter_config.json (expected a PEFT adapter directory)");
  if (!core::file_exists(weights_path)) fail(dir, ": no adapter_model.safetensors");
  json c;
  try {
    c = json::parse(core::read_file(config_path));
  } catch (const json::exception& e) {
    fail(config_path, ": not valid JSON (", e.what(), ")");
  }
  if (!c.is_object()) fail(config_path, ": expected a JSON object");
  if (c.value("peft_type", std::string("LORA")) != "LORA")
    fail(config_path, ": peft_type = ", c["peft_type"].dump(), " (expected \"LORA\")");
  if (!c.contains("r") || !c["r"].is_number_integer() || c["r"].get<int64_t>() <= 0)
    fail(config_path, ": key 'r' missing or not a positive integer");
  if (!c.contains("lora_alpha") || !c["lora_alpha"].is_number())
    fail(config_path, ": key 'lora_alpha' missing or not a number");
  if (c.value("use_dora", false)) fail(config_path, ": use_dora = true is not supported");
  if (c.value("fan_in_fan_out", false)) fail(config_path, ": fan_in_fan_out = true is not supported");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (c.contains(key) && c[key].is_object() && !c[key].empty())
      fail(config_path, ": ", key, " is not supported (per-layer ranks)");

  LoraConfig cfg;
  cfg.rank = c["r"].get<int64_t>();
  cfg.alpha = c["lora_alpha"].get<double>();
  cfg.dropout = c.contains("lora_dropout") && c["lora_dropout"].is_number() ? c["lora_dropout"].get<double>() : 0.0;
  // Finite and in range, as the pipeline's lora section: a huge alpha turns every output into inf/NaN.
  if (!(cfg.alpha > 0) || !(cfg.alpha <= 1e6))
    fail(config_path, ": lora_alpha = ", c["lora_alpha"].dump(), " (must be in (0, 1e6])");
  if (!(cfg.dropout >= 0 && cfg.dropout < 1))
    fail(config_path, ": lora_dropout = ", c["lora_dropout"].dump(), " (must be in [0, 1))");
  cfg.use_rslora = c.value("use_rslora", false);
  const double scale = cfg.use_rslora ? cfg.alpha / std::sqrt(double(cfg.rank)) : cfg.alpha / double(cfg.rank);

  // Which layers: those the weights file names (target_modules may be a regex in PEFT).
  auto tensors = io::read_safetensors(weights_path);
  std::map<std::string, lora::Linear> layers;
  for (auto& [path, layer] : m->linear_layers()) layers.emplace(path, layer);
  std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> found;  // module path -> (A, B)
  for (auto& [key, t] : tensors) {
    if (key.rfind(kPeftPrefix, 0) != 0) fail(weights_path, ": tensor '", key, "' does not start with '", kPeftPrefix, "'");
    std::string rest = key.substr(kPeftPrefix.size());
    // PEFT may keep the adapter name in the key ("...q_proj.lora_A.default.weight"); accept both forms.
    for (const std::string& part : {std::string(".lora_A."), std::string(".lora_B.")}) {
      const auto at = rest.find(part);
      if (at == std::string::npos) continue;
      const std::string module = rest.substr(0, at);
      if (!layers.count(module)) fail(weights_path, ": tensor '", key, "' names no linear layer of this model");
      (part == ".lora_A." ? found[module].first : found[module].second) = t;
      rest.clear();
      break;
    }
    if (!rest.empty()) fail(weights_path, ": tensor '", key, "' is not a LoRA A or B weight");
  }
  if (found.empty()) fail(weights_path, ": holds no LoRA tensors");
  if (has_adapter(m, name)) fail("adapter '", name, "' already exists; cannot load ", dir, " into it");

  // Validate every shape before changing the model.
  for (auto& [module, ab] : found) {
    auto& layer = layers.at(module);
    if (!ab.first.defined() || !ab.second.defined())
      fail(weights_path, ": layer '", module, "' has only one of lora_A / lora_B");
    const std::vector<int64_t> want_a = {cfg.rank, layer->in_features()};
    const std::vector<int64_t> want_b = {layer->out_features(), cfg.rank};
    if (ab.first.sizes() != c10::IntArrayRef(want_a))
      fail(weights_path, ": tensor '", kPeftPrefix, module, ".lora_A.weight' has shape ", ab.first.sizes(),
           ", the model's layer needs ", c10::IntArrayRef(want_a));
    if (ab.second.sizes() != c10::IntArrayRef(want_b))
      fail(weights_path, ": tensor '", kPeftPrefix, module, ".lora_B.weight' has shape ", ab.second.sizes(),
           ", the model's layer needs ", c10::IntArrayRef(want_b));
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  torch::NoGradGuard no_grad;
  std::set<std::string> modules;
  for (auto& [module, ab] : found) {
    auto& layer = layers.at(module);
    layer->add_adapter(name, cfg.rank, cfg.alpha, cfg.dropout, gen);
    auto& a = layer->adapter(name);
    a.A.copy_(ab.first);
    a.B.copy_(ab.second);
    a.scale = scale;
    modules.insert(short_name(module));
  }
  cfg.targets.assign(modules.begin(), modules.end());
  return cfg;
}

std::vector<torch::Tensor> set_trainable(model::CausalLM& m, TrainMode mode, const std::string& adapter,
                                         int64_t freeze_layers) {
  std::vector<torch::Tensor> out;
  const bool base_trains = mode != TrainMode::kLora;
  for (auto& p : m->parameters()) p.set_requires_grad(base_trains);
  if (mode == TrainMode::kFullFreezeLower) {
    const int64_t L = m->config().n_layers;
    if (freeze_layers < 0 || freeze_layers > L)
      fail("freeze_layers = ", freeze_layers, " (must be in [0, ", L, "])");
    m->model->embed_tokens->weight.set_requires_grad(false);
    for (int64_t l = 0; l < freeze_layers; ++l)
      for (auto& p : m->model->layers[l]->parameters()) p.set_requires_grad(false);
  }
  if (base_trains) {
    for (auto& p : m->parameters())
      if (p.requires_grad()) out.push_back(p);
  }
  // Adapters other than the one named stay frozen.
  for (auto& [path, layer] : m->linear_layers()) {
    for (const auto& [adapter_name, w] : layer->adapters()) {
      const bool trains = mode == TrainMode::kLora && adapter_name == adapter;
      auto& a = layer->adapter(adapter_name);
      a.A.set_requires_grad(trains);
      a.B.set_requires_grad(trains);
      if (trains) {
        out.push_back(a.A);
        out.push_back(a.B);
      }
    }
  }
  if (mode == TrainMode::kLora && out.empty()) fail("no adapter named '", adapter, "' to train");
  return out;
}

}  // namespace reglage::lora
