// Loading the models users bring, and writing models the ecosystem reads.
//   llama2.c checkpoints: legacy layout (7 int32 header fields) and version 1 ("ak42", 256-byte header);
//   Hugging Face directories: config.json + model.safetensors or a sharded model.safetensors.index.json,
//   for LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM, F32/F16/BF16 weights;
//   GGUF files (*.gguf or "GGUF" magic), architectures llama and qwen2, quantized weights dequantized.
#pragma once
#include <torch/torch.h>

#include <string>

#include "framework/model/llama.h"
#include "framework/tokenizer/tokenizer.h"

namespace reglage::io {

// Loads a model file or directory, cast to `dtype`. Errors name the file and the problem.
model::CausalLM load_model(const std::string& path, torch::Dtype dtype = torch::kFloat32);

// The model's shape from its header or config.json alone, without reading the weights.
model::ModelConfig read_model_config(const std::string& path);

// llama2.c checkpoint; wq/wk rows are permuted from llama2.c's interleaved rotary pairs to rotate-half.
model::CausalLM load_llama2c(const std::string& path, torch::Dtype dtype = torch::kFloat32);

// Hugging Face model directory.
model::CausalLM load_hf(const std::string& dir, torch::Dtype dtype = torch::kFloat32);
// config.json -> ModelConfig (exposed for tests); throws naming the file and key.
model::ModelConfig read_hf_config(const std::string& config_path);

// GGUF file (framework/io/gguf.h), memory-mapped; weights dequantized straight into the model's parameters.
model::CausalLM load_gguf(const std::string& path, torch::Dtype dtype = torch::kFloat32);
// The model's shape from the GGUF metadata and tensor infos alone.
model::ModelConfig read_gguf_config(const std::string& path);

// Writes config.json, generation_config.json, model.safetensors (in the model's dtype; merged adapters are
// part of the weights) and, when given, the tokenizer files. Each file is written atomically.
void save_hf(model::CausalLM& model, const std::string& dir, const tokenizer::Tokenizer* tok = nullptr);

// The tokenizer that belongs with a model: `explicit_path` when given, else the model directory's own
// files, else a GGUF model's own tokenizer metadata, else a llama2.c tokenizer next to the model file
// (tok<V>.bin or tokenizer.bin).
std::unique_ptr<tokenizer::Tokenizer> load_model_tokenizer(const std::string& model_path,
                                                          const std::string& explicit_path, int64_t vocab_size);

}  // namespace reglage::io
