// Generation throughput: batched sampling with the KV cache on the shipped stories260K model.
//   reglage_bench generate [--model PATH] [--batches 1,8,32] [--dtypes float32,bfloat16] [--new-tokens N]
//                          [--threads N] [--repeats R]
// tokens/s counts generated tokens (batch x new tokens) over the wall time of the whole generate() call,
// prefill included. MFU: 2 x (matmul parameters) FLOP per generated token over the measured matmul peak.
#include <chrono>

#include "bench/bench_generate.h"
#include "framework/generate/generate.h"
#include "framework/io/model_io.h"
#include "framework/model/config.h"

namespace reglage::bench {

std::vector<Measurement> bench_generate(const GenerateOptions& opt) {
  std::vector<Measurement> out;
  torch::set_num_threads(opt.threads);
  for (const auto& dtype_name : opt.dtypes) {
    const auto dtype = model::parse_dtype(dtype_name);
    auto m = io::load_model(opt.model_path, dtype);
    const auto& cfg = m->config();
    // Parameters that take part in a matmul per token: every linear layer plus the LM head.
    double matmul_params = double(cfg.vocab_size) * cfg.dim;
    for (auto& [path, layer] : m->linear_layers()) matmul_params += double(layer->weight.numel());
    const double peak = measure_matmul_peak(dtype);

    for (int64_t batch : opt.batches) {
      // Distinct short prompts: BOS plus a few tokens that vary with the row.
      std::vector<std::vector<int64_t>> prompts;
      for (int64_t b = 0; b < batch; ++b) prompts.push_back({1, 300 + (b * 7) % 200, 261 + b % 50});
      generate::SamplingParams p;
      p.temperature = 1.0;
      p.max_new_tokens = opt.new_tokens;
      p.seed = 1;  // no stop tokens: every row generates exactly new_tokens
      generate::generate(m, prompts, p);  // warm-up
      double best = 1e30;
      for (int r = 0; r < opt.repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        generate::generate(m, prompts, p);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      Measurement ms;
      ms.name = "generate";
      ms.shape = "stories260K batch=" + std::to_string(batch) + " new=" + std::to_string(opt.new_tokens);
      ms.dtype = dtype_name;
      ms.threads = opt.threads;
      ms.tokens_per_s = double(batch * opt.new_tokens) / best;
      ms.step_ms = 1000.0 * best / double(opt.new_tokens);
      ms.gflops = ms.tokens_per_s * 2.0 * matmul_params / 1e9;
      ms.mfu = ms.gflops * 1e9 / peak;
      ms.peak_rss_mb = peak_rss_mb();
      print_json(ms);
      out.push_back(ms);
    }
  }
  return out;
}

}  // namespace reglage::bench
