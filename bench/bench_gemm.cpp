// reglage_bench peak --model PATH [--batch B --seq T]: the products a LoRA training step spends most of its time
// in, at the model's shapes, in float32 (kernels::matmul_2d, as the frozen float32 base runs them) and bfloat16
// (through the same call: oneDNN, or widened to float32 where the CPU multiplies faster so), one dtype after
// the other in each round (the order reversed every other round), with a "gemm_speedup" line of the bfloat16
// rate over the float32 one per round and the median.
// Per linear layer shape: forward x W^T and the input gradient g W over `rows` rows, as often as the model has
// layers of that shape; the LM head over one chunk of the chunked loss (logprob_chunk_rows rows) as often as
// the step runs chunks. This is the ceiling of the step's bfloat16 / float32 speed-up: the step adds
// attention, the adapters and elementwise work, none of which gains more from bfloat16 than these products.
#include "bench/bench_gemm.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "framework/io/model_io.h"
#include "framework/kernels/frozen_linear.h"
#include "framework/model/chunked_logprob.h"

namespace reglage::bench {

namespace {

struct Product {
  torch::Tensor w, x, g;  // weight (out, in), input (n, in), output gradient (n, out)
  int64_t times = 0;      // how many layers of this shape one step runs
};

// Seconds of one step's worth of the products in `ps` (forward and input gradient of each).
double run_products(const std::vector<Product>& ps) {
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& p : ps)
    for (int64_t i = 0; i < p.times; ++i) {
      auto y = kernels::matmul_2d(p.x, p.w.t());  // (n, out)
      auto gx = kernels::matmul_2d(p.g, p.w);     // (n, in)
    }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

std::vector<Measurement> bench_model_gemm(const GemmOptions& opt) {
  torch::NoGradGuard no_grad;
  torch::set_num_threads(opt.threads);
  auto m = io::load_model(opt.model_path, torch::kFloat32);
  const auto& cfg = m->config();
  std::map<std::pair<int64_t, int64_t>, int64_t> shapes;  // (out, in) -> layers
  for (auto& [path, layer] : m->linear_layers()) ++shapes[{layer->weight.size(0), layer->weight.size(1)}];
  const int64_t chunk = std::min(opt.rows, model::logprob_chunk_rows(cfg.vocab_size));

  const std::vector<torch::Dtype> dtypes = {torch::kFloat32, torch::kBFloat16};
  std::vector<std::vector<Product>> products(dtypes.size());
  double flop = 0;  // per step, both dtypes alike
  for (size_t d = 0; d < dtypes.size(); ++d) {
    torch::manual_seed(1);
    auto add = [&](int64_t out, int64_t in, int64_t n, int64_t times) {
      products[d].push_back({torch::randn({out, in}).to(dtypes[d]), torch::randn({n, in}).to(dtypes[d]),
                             torch::randn({n, out}).to(dtypes[d]), times});
      if (d == 0) flop += 4.0 * double(n) * double(in) * double(out) * double(times);
    };
    for (const auto& [shape, layers] : shapes) add(shape.first, shape.second, opt.rows, layers);
    add(cfg.vocab_size, cfg.dim, chunk, (opt.rows + chunk - 1) / chunk);
  }
  for (auto& ps : products) run_products(ps);  // warm-up: kernels chosen, pages touched

  std::vector<std::vector<double>> seconds(dtypes.size());
  for (int r = 0; r < opt.rounds; ++r)
    for (size_t k = 0; k < dtypes.size(); ++k) {
      const size_t d = r % 2 == 0 ? k : dtypes.size() - 1 - k;
      seconds[d].push_back(run_products(products[d]));
    }

  std::vector<Measurement> out;
  const std::string name = std::filesystem::path(opt.model_path).stem().string();
  for (size_t d = 0; d < dtypes.size(); ++d) {
    Measurement ms;
    ms.name = "gemm";
    ms.shape = name + " rows=" + std::to_string(opt.rows) + " fwd+dgrad";
    ms.dtype = dtypes[d] == torch::kFloat32 ? "float32" : "bfloat16";
    ms.threads = opt.threads;
    ms.step_ms = 1000.0 * median(seconds[d]);
    ms.tokens_per_s = double(opt.rows) / median(seconds[d]);
    ms.gflops = flop / median(seconds[d]) / 1e9;
    ms.peak_rss_mb = peak_rss_mb();
    print_json(ms);
    out.push_back(ms);
  }
  std::vector<double> ratios;
  for (int r = 0; r < opt.rounds; ++r) ratios.push_back(seconds[0][size_t(r)] / seconds[1][size_t(r)]);
  nlohmann::json j{{"name", "gemm_speedup"}, {"shape", out.back().shape}, {"of", "bfloat16"}, {"over", "float32"},
                   {"median", median(ratios)}, {"rounds", ratios}};
  std::printf("%s\n", j.dump().c_str());
  return out;
}

}  // namespace reglage::bench
