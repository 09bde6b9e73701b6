// reglage logits --model PATH --ids "1 403 407" --out FILE [--incremental] [--adapter DIR] [--dtype D]
// Writes int32 T, int32 V, float32[T][V] logits, int32[T] ids: the layout of llama2.c reference dumps.
// Row t holds the logits after reading ids[0..t]. --incremental feeds one token at a time through the KV
// cache instead of one forward over the whole sequence.
#include <torch/torch.h>

#include <cstring>
#include <sstream>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "framework/model/config.h"
#include "launch/commands.h"

namespace reglage::launch {

void set_threads(long long threads);

int cmd_logits(Args& args) {
  const std::string model_path = args.required("model");
  const std::string ids_text = args.required("ids");
  const std::string out_path = args.required("out");
  const std::string adapter_dir = args.str("adapter");
  const bool incremental = args.flag("incremental");
  const auto dtype = model::parse_dtype(args.str("dtype", "float32"));
  const long long threads = args.integer("threads", 0);
  args.finish();
  set_threads(threads);

  std::vector<int64_t> ids;
  std::istringstream in(ids_text);
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    const long long id = std::strtoll(word.c_str(), &end, 10);
    if (*end != '\0') fail("--ids: '", word, "' is not an integer token id");
    ids.push_back(id);
  }
  if (ids.empty()) fail("--ids is empty (expected space-separated token ids)");

  auto m = io::load_model(model_path, dtype);
  const int64_t V = m->config().vocab_size, T = int64_t(ids.size());
  for (auto id : ids)
    if (id < 0 || id >= V) fail("--ids: token id ", id, " is outside the vocabulary [0, ", V, ")");
  model::AdapterSet adapters;
  if (!adapter_dir.empty()) {
    lora::load_peft(m, "adapter", adapter_dir);
    adapters.push_back("adapter");
  }
  m->eval();
  torch::NoGradGuard no_grad;
  auto ids_t = torch::tensor(ids, torch::kLong).unsqueeze(0).to(m->device());  // (1, T)
  torch::Tensor logits;                                                        // (T, V)
  if (incremental) {
    auto cache = m->new_cache(1, T);
    std::vector<torch::Tensor> rows;
    for (int64_t t = 0; t < T; ++t) {
      model::ForwardInput step{ids_t.narrow(1, t, 1), {}, {}, &cache, adapters};
      rows.push_back(m->forward(step)[0][0]);
    }
    logits = torch::stack(rows);
  } else {
    logits = m->forward({ids_t, {}, {}, nullptr, adapters})[0];
  }
  logits = logits.to(torch::kCPU, torch::kFloat32).contiguous();

  std::string bytes(8 + size_t(T * V) * 4 + size_t(T) * 4, '\0');
  const int32_t header[2] = {int32_t(T), int32_t(V)};
  std::memcpy(&bytes[0], header, 8);
  std::memcpy(&bytes[8], logits.data_ptr<float>(), size_t(T * V) * 4);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = int32_t(ids[t]);
    std::memcpy(&bytes[8 + size_t(T * V) * 4 + size_t(t) * 4], &id, 4);
  }
  core::write_file_atomic(out_path, bytes);
  return 0;
}

}  // namespace reglage::launch
