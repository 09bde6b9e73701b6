#include "framework/io/model_io.h"

#include <filesystem>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/gguf.h"
#include "framework/tokenizer/gguf_tokenizer.h"

namespace reglage::io {

model::CausalLM load_model(const std::string& path, torch::Dtype dtype) {
  if (!core::file_exists(path)) fail(path, ": no such file or directory (expected a llama2.c checkpoint, a GGUF file or a Hugging Face model directory)");
  // LibTorch has no float16 matrix products on CPU; bfloat16 is the half-precision type there.
  if (dtype == torch::kFloat16)
    fail(path, ": dtype float16 needs a GPU; on CPU use float32 or bfloat16 (float16 weights load into either)");
  if (core::is_directory(path)) return load_hf(path, dtype);
  if (is_gguf_path(path)) return load_gguf(path, dtype);
  return load_llama2c(path, dtype);
}

std::unique_ptr<tokenizer::Tokenizer> load_model_tokenizer(const std::string& model_path,
                                                          const std::string& explicit_path, int64_t vocab_size) {
  if (!explicit_path.empty()) return tokenizer::load_tokenizer(explicit_path, vocab_size);
  if (core::is_directory(model_path)) return tokenizer::load_tokenizer(model_path, vocab_size);
  // A GGUF model carries its tokenizer in its metadata (tokenizer.ggml.*), when it was written with one.
  if (is_gguf_path(model_path)) {
    if (!tokenizer::gguf_has_tokenizer(GgufFile(model_path)))
      fail(model_path, ": this GGUF file has no tokenizer (no tokenizer.ggml.tokens metadata); pass --tokenizer (or "
           "model.tokenizer) with the model's tokenizer.json, its Hugging Face directory or a llama2.c tokenizer");
    return tokenizer::load_tokenizer(model_path, vocab_size);
  }
  // llama2.c models ship their tokenizer beside them: tok<V>.bin (as tok512.bin) or tokenizer.bin.
  const std::string dir = core::parent_dir(model_path);
  for (const std::string& name : {"tok" + std::to_string(vocab_size) + ".bin", std::string("tokenizer.bin")}) {
    const std::string candidate = core::path_join(dir, name);
    if (core::file_exists(candidate)) return tokenizer::load_tokenizer(candidate, vocab_size);
  }
  fail(model_path, ": no tokenizer given and none beside the model (looked for tok", vocab_size,
       ".bin and tokenizer.bin in ", dir, "); pass --tokenizer");
}

}  // namespace reglage::io
