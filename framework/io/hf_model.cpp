// Hugging Face model directories: config.json + model.safetensors (or a sharded index), read and written.
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/model_io.h"
#include "framework/io/safetensors.h"

namespace reglage::io {

using nlohmann::json;

namespace {

json parse_json_file(const std::string& path) {
  const std::string text = core::read_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

// Typed getters that name the file and key on a wrong type.
int64_t get_int(const json& j, const std::string& path, const char* key, int64_t fallback, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) fail(path, ": missing key '", key, "'");
    return fallback;
  }
  if (!j[key].is_number_integer()) fail(path, ": key '", key, "' = ", j[key].dump(), " (expected an integer)");
  return j[key].get<int64_t>();
}

double get_double(const json& j, const std::string& path, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) fail(path, ": key '", key, "' = ", j[key].dump(), " (expected a number)");
  return j[key].get<double>();
}

bool get_bool(const json& j, const std::string& path, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) fail(path, ": key '", key, "' = ", j[key].dump(), " (expected true or false)");
  return j[key].get<bool>();
}

std::string model_type_of(const std::string& arch) {
  if (arch == "MistralForCausalLM") return "mistral";
  if (arch == "Qwen2ForCausalLM") return "qwen2";
  return "llama";
}

bool is_rotary_table(const std::string& name) {
  return name.size() >= 19 && name.compare(name.size() - 19, 19, "rotary_emb.inv_freq") == 0;
}

// The weight files' headers against the shapes config.json implies, before the model is allocated: a
// config.json that describes a model its weights are not (hidden_size 1e9 beside a 1 MB file) fails here,
// naming the file and tensor, instead of in the allocator.
void check_weights_match(const std::string& dir, const model::ModelConfig& cfg, const std::vector<std::string>& files) {
  std::map<std::string, std::vector<int64_t>> expected;
  for (auto& [name, shape] : cfg.parameter_shapes()) expected.emplace(name, std::move(shape));
  std::set<std::string> seen;
  for (const auto& file : files) {
    for (const auto& entry : read_safetensors_header(file)) {
      if (is_rotary_table(entry.name)) continue;
      auto it = expected.find(entry.name);
      if (it == expected.end()) {
        if (entry.name == "lm_head.weight" && cfg.tie_embeddings) continue;  // a tied model may store it
        fail(file, ": unexpected tensor '", shown(entry.name), "' for ", cfg.architecture);
      }
      if (entry.shape != it->second)
        fail(file, ": tensor '", entry.name, "' has shape ", c10::IntArrayRef(entry.shape), ", config.json implies ",
             c10::IntArrayRef(it->second));
      if (!c10::isFloatingType(entry.dtype)) fail(file, ": tensor '", entry.name, "' is not floating point");
      seen.insert(entry.name);
    }
  }
  for (const auto& [name, shape] : expected)
    if (!seen.count(name)) fail(dir, ": weights have no tensor '", name, "'");
}

}  // namespace

model::ModelConfig read_hf_config(const std::string& path) {
  const json j = parse_json_file(path);
  if (!j.is_object()) fail(path, ": expected a JSON object");
  model::ModelConfig cfg;
  if (!j.contains("architectures") || !j["architectures"].is_array() || j["architectures"].empty() ||
      !j["architectures"][0].is_string())
    fail(path, ": missing 'architectures' (expected e.g. [\"LlamaForCausalLM\"])");
  cfg.architecture = j["architectures"][0].get<std::string>();
  static const std::set<std::string> supported = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
  if (!supported.count(cfg.architecture))
    fail(path, ": architecture '", cfg.architecture,
         "' is not supported (expected LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM)");
  const bool qwen2 = cfg.architecture == "Qwen2ForCausalLM";

  cfg.vocab_size = get_int(j, path, "vocab_size", 0, true);
  cfg.dim = get_int(j, path, "hidden_size", 0, true);
  cfg.hidden_dim = get_int(j, path, "intermediate_size", 0, true);
  cfg.n_layers = get_int(j, path, "num_hidden_layers", 0, true);
  cfg.n_heads = get_int(j, path, "num_attention_heads", 0, true);
  cfg.n_kv_heads = get_int(j, path, "num_key_value_heads", cfg.n_heads, false);
  cfg.head_dim = get_int(j, path, "head_dim", 0, false);
  cfg.max_seq_len = get_int(j, path, "max_position_embeddings", 2048, false);
  cfg.rope_theta = get_double(j, path, "rope_theta", 10000.0);
  // transformers 5 writes rotary settings under "rope_parameters" instead.
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const json& rp = j["rope_parameters"];
    cfg.rope_theta = get_double(rp, path, "rope_theta", cfg.rope_theta);
    const std::string type = rp.value("rope_type", std::string("default"));
    if (type != "default")
      fail(path, ": rope_parameters.rope_type = \"", type, "\" is not supported (expected \"default\")");
  }
  cfg.norm_eps = get_double(j, path, "rms_norm_eps", 1e-6);
  cfg.tie_embeddings = get_bool(j, path, "tie_word_embeddings", false);
  // Qwen2 always has q/k/v biases; Llama's attention_bias puts a bias on o_proj too, which we do not model.
  cfg.attention_bias = qwen2;
  if (!qwen2 && get_bool(j, path, "attention_bias", false))
    fail(path, ": attention_bias = true is not supported for ", cfg.architecture);
  if (get_bool(j, path, "mlp_bias", false)) fail(path, ": mlp_bias = true is not supported");
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    fail(path, ": hidden_act = ", j["hidden_act"].dump(), " is not supported (expected \"silu\")");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    fail(path, ": rope_scaling = ", j["rope_scaling"].dump(), " is not supported (expected null)");
  // Sliding-window attention equals full attention for sequences no longer than the window, so the
  // usable context is the window.
  if (j.contains("sliding_window") && j["sliding_window"].is_number_integer() &&
      !(qwen2 && !get_bool(j, path, "use_sliding_window", false))) {
    const int64_t window = j["sliding_window"].get<int64_t>();
    if (window > 0 && window < cfg.max_seq_len) cfg.max_seq_len = window;
  }
  cfg.bos_id = get_int(j, path, "bos_token_id", -1, false);
  cfg.eos_ids.clear();
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    for (const auto& e : j["eos_token_id"]) {
      if (!e.is_number_integer()) fail(path, ": eos_token_id holds ", e.dump(), " (expected integers)");
      cfg.eos_ids.push_back(e.get<int64_t>());
    }
  } else {
    const int64_t eos = get_int(j, path, "eos_token_id", -1, false);
    if (eos >= 0) cfg.eos_ids.push_back(eos);
  }
  cfg.validate(path);
  return cfg;
}

model::CausalLM load_hf(const std::string& dir, torch::Dtype dtype) {
  const std::string config_path = core::path_join(dir, "config.json");
  if (!core::file_exists(config_path)) fail(dir, ": not a Hugging Face model directory (no config.json)");
  model::ModelConfig cfg = read_hf_config(config_path);

  // The weight files: one model.safetensors, or the shards an index names.
  std::vector<std::string> files;
  const std::string single = core::path_join(dir, "model.safetensors");
  const std::string index = core::path_join(dir, "model.safetensors.index.json");
  if (core::file_exists(single)) {
    files.push_back(single);
  } else if (core::file_exists(index)) {
    const json j = parse_json_file(index);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index, ": missing object 'weight_map'");
    std::set<std::string> names;
    for (const auto& [tensor, file] : j["weight_map"].items()) {
      if (!file.is_string()) fail(index, ": weight_map[\"", tensor, "\"] is not a file name");
      const std::string f = file.get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f.find("..") != std::string::npos)
        fail(index, ": weight_map[\"", tensor, "\"] = \"", f, "\" (expected a file name inside the directory)");
      names.insert(f);
    }
    for (const auto& f : names) files.push_back(core::path_join(dir, f));
  } else {
    fail(dir, ": no model.safetensors or model.safetensors.index.json");
  }

  check_weights_match(dir, cfg, files);
  model::CausalLM m(cfg);
  m->to(dtype);
  auto params = m->named_parameters(/*recurse=*/true);
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  for (const auto& file : files) {
    // One tensor in memory at a time beside the model, not the whole file.
    for_each_safetensor(file, [&](const std::string& name, torch::Tensor& tensor) {
      if (is_rotary_table(name)) return;
      auto* p = params.find(name);
      if (p == nullptr) {
        // A tied model may still store lm_head.weight; it must then equal the embedding (checked loosely by shape).
        if (name == "lm_head.weight" && cfg.tie_embeddings) return;
        fail(file, ": unexpected tensor '", shown(name), "' for ", cfg.architecture);
      }
      if (tensor.sizes() != p->sizes())
        fail(file, ": tensor '", name, "' has shape ", tensor.sizes(), ", the config implies ", p->sizes());
      if (!tensor.is_floating_point()) fail(file, ": tensor '", name, "' is not floating point");
      p->copy_(tensor);
      loaded.insert(name);
    });
  }
  for (const auto& item : params) {
    if (!loaded.count(item.key())) fail(dir, ": weights have no tensor '", item.key(), "'");
  }
  return m;
}

void save_hf(model::CausalLM& m, const std::string& dir, const tokenizer::Tokenizer* tok) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail(dir, ": cannot create directory (", ec.message(), ")");
  const model::ModelConfig& cfg = m->config();

  json c;
  c["architectures"] = {cfg.architecture};
  c["model_type"] = model_type_of(cfg.architecture);
  c["vocab_size"] = cfg.vocab_size;
  c["hidden_size"] = cfg.dim;
  c["intermediate_size"] = cfg.hidden_dim;
  c["num_hidden_layers"] = cfg.n_layers;
  c["num_attention_heads"] = cfg.n_heads;
  c["num_key_value_heads"] = cfg.n_kv_heads;
  c["head_dim"] = cfg.head_size();
  c["max_position_embeddings"] = cfg.max_seq_len;
  c["rope_theta"] = cfg.rope_theta;
  c["rms_norm_eps"] = cfg.norm_eps;
  c["tie_word_embeddings"] = cfg.tie_embeddings;
  c["hidden_act"] = "silu";
  c["rope_scaling"] = nullptr;
  if (cfg.architecture != "Qwen2ForCausalLM") c["attention_bias"] = false;
  if (cfg.architecture == "MistralForCausalLM") c["sliding_window"] = nullptr;
  c["torch_dtype"] = model::dtype_name(m->dtype());
  if (cfg.bos_id >= 0) c["bos_token_id"] = cfg.bos_id;
  if (cfg.eos_ids.size() == 1) c["eos_token_id"] = cfg.eos_ids[0];
  else if (!cfg.eos_ids.empty()) c["eos_token_id"] = cfg.eos_ids;
  core::write_file_atomic(core::path_join(dir, "config.json"), c.dump(2) + "\n");

  json g;
  if (cfg.bos_id >= 0) g["bos_token_id"] = cfg.bos_id;
  if (!cfg.eos_ids.empty()) g["eos_token_id"] = cfg.eos_ids.size() == 1 ? json(cfg.eos_ids[0]) : json(cfg.eos_ids);
  core::write_file_atomic(core::path_join(dir, "generation_config.json"), g.dump(2) + "\n");

  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : m->named_parameters(/*recurse=*/true)) tensors.emplace_back(item.key(), item.value());
  write_safetensors(core::path_join(dir, "model.safetensors"), tensors, {{"format", "pt"}});
  if (tok) tok->save_hf(dir);
}

}  // namespace reglage::io
