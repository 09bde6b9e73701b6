// reglage convert --model PATH [--tokenizer PATH] --out DIR [--dtype float32|bfloat16]
// Writes any model reglage loads (llama2.c file or Hugging Face directory) as a Hugging Face model
// directory: config.json, generation_config.json, model.safetensors and the tokenizer files.
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/model_io.h"
#include "framework/model/config.h"
#include "launch/commands.h"

namespace reglage::launch {

int cmd_convert(Args& args) {
  const std::string model_path = args.required("model");
  const std::string tokenizer_path = args.str("tokenizer");
  const std::string out_dir = args.required("out");
  const auto dtype = model::parse_dtype(args.str("dtype", "float32"));
  args.finish();
  if (core::file_exists(out_dir) && !core::is_directory(out_dir))
    fail("--out ", out_dir, " exists and is not a directory");
  auto m = io::load_model(model_path, dtype);
  auto tok = io::load_model_tokenizer(model_path, tokenizer_path, m->config().vocab_size);
  io::save_hf(m, out_dir, tok.get());
  return 0;
}

}  // namespace reglage::launch
