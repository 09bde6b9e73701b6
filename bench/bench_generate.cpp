// Generation throughput: batched sampling with the KV cache on the shipped stories260K model.
//   reglage_bench generate [--model PATH] [--batches 1,8,32] [--dtypes float32,bfloat16]
//                          [--storages auto,bfloat16,int8] [--decodes fused,ops] [--new-tokens N] [--threads N]
//                          [--repeats R]
// tokens/s counts generated tokens (batch x new tokens) over the wall time of the whole generate() call,
// prefill included. MFU: 2 x (matmul parameters) FLOP per generated token over the measured matmul peak.
// BW %: bytes of weights a decode step reads (every linear layer and the LM head, in their storage) times
// decode steps per second, over the read bandwidth (measure_read_bandwidth) probed just before and just after
// that timed run; the median over the repeats. cBW %: the same over the copy bandwidth (measure_copy_bandwidth,
// bytes read plus written, as STREAM counts), the measure the performance issue's target names; on the AVX-512
// EPYC VM the copy probe read 28-32 GB/s beside 34-37 for the read probe. A VM's bandwidth moves with its neighbours (28-44 GB/s on 2
// threads of one AVX-512 EPYC VM within minutes, 25-37 GB/s between passes of one kernel loop), so a probe
// taken once beside runs seconds later measured that noise more than the step.
// --decodes: the fused decode step (float32 compute, batches up to 16) and/or the operator path; a
// configuration the fused step does not take runs once, labelled "ops".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "bench/bench_generate.h"
#include "framework/core/error.h"
#include "framework/generate/generate.h"
#include "framework/io/model_io.h"
#include "framework/kernels/weight_only.h"
#include "framework/model/config.h"
#include "framework/model/fused_decode.h"

namespace reglage::bench {

namespace {

// The median over runs of rates[r] (bytes per second) over the mean of the probes just before and just after
// run r (probes has one more entry than rates).
double median_fraction(const std::vector<double>& rates, const std::vector<double>& probes) {
  std::vector<double> fractions;
  for (size_t r = 0; r < rates.size(); ++r) fractions.push_back(rates[r] / (0.5 * (probes[r] + probes[r + 1])));
  std::sort(fractions.begin(), fractions.end());
  const size_t mid = fractions.size() / 2;
  return fractions.size() % 2 ? fractions[mid] : 0.5 * (fractions[mid - 1] + fractions[mid]);
}

// The lowest and highest probe, in GB/s.
std::pair<double, double> probe_range(const std::vector<double>& probes) {
  const auto [lo, hi] = std::minmax_element(probes.begin(), probes.end());
  return {*lo / 1e9, *hi / 1e9};
}

}  // namespace

std::vector<Measurement> bench_generate(const GenerateOptions& opt) {
  std::vector<Measurement> out;
  torch::set_num_threads(opt.threads);
  std::printf("{\"name\":\"read_bandwidth\",\"threads\":%d,\"gb_per_s\":%.2f,\"kernel_path\":\"%s\"}\n",
              opt.threads, measure_read_bandwidth() / 1e9, kernels::cpu_path().c_str());
  std::printf("{\"name\":\"copy_bandwidth\",\"threads\":%d,\"gb_per_s\":%.2f}\n", opt.threads,
              measure_copy_bandwidth() / 1e9);
  const std::string model_name = std::filesystem::path(opt.model_path).stem().string();
  for (const auto& dtype_name : opt.dtypes)
   for (const auto& storage_name : opt.storages) {
    const auto dtype = model::parse_dtype(dtype_name);
    const auto storage = kernels::parse_storage(storage_name);
    if (storage != kernels::Storage::kNative && dtype != torch::kFloat32) continue;  // storage computes in fp32
    auto m = io::load_model(opt.model_path, dtype);
    m->set_storage(storage);
    const auto& cfg = m->config();
    // Parameters that take part in a matmul per token: every linear layer plus the LM head; and their bytes.
    const double elem_bytes = storage == kernels::Storage::kInt8 ? 1.0
                              : storage == kernels::Storage::kBFloat16 || dtype == torch::kBFloat16 ? 2.0 : 4.0;
    double matmul_params = double(cfg.vocab_size) * cfg.dim;
    for (auto& [path, layer] : m->linear_layers()) matmul_params += double(layer->weight.numel());
    const double step_bytes = matmul_params * elem_bytes;
    const std::string label = storage == kernels::Storage::kNative ? dtype_name : dtype_name + "/" + storage_name;

    std::vector<Measurement> timed;
    for (int64_t batch : opt.batches)
     for (const auto& decode : opt.decodes) {
      if (decode != "fused" && decode != "ops") fail("--decodes: '", decode, "' (expected fused or ops)");
      const bool fusable = dtype == torch::kFloat32 && batch <= model::kFusedDecodeMaxBatch;
      // Only one run where the fused step does not apply: the operator path, labelled as such.
      if (!fusable && decode == "fused" &&
          std::find(opt.decodes.begin(), opt.decodes.end(), "ops") != opt.decodes.end())
        continue;
      m->fused_decode = decode == "fused";
      // Distinct short prompts: BOS plus a few tokens that vary with the row.
      std::vector<std::vector<int64_t>> prompts;
      for (int64_t b = 0; b < batch; ++b) prompts.push_back({1, 300 + (b * 7) % 200, 261 + b % 50});
      generate::SamplingParams p;
      p.temperature = opt.temperature;
      p.max_new_tokens = opt.new_tokens;
      p.seed = 1;  // no stop tokens: every row generates exactly new_tokens
      generate::generate(m, prompts, p);  // warm-up
      // Both probes before each run and after the last; each run's bytes per second over the mean of the probes
      // around it.
      double best = 1e30;
      std::vector<double> rates, reads = {measure_read_bandwidth(1)}, copies = {measure_copy_bandwidth(1)};
      for (int r = 0; r < opt.repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        generate::generate(m, prompts, p);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::min(best, seconds);
        rates.push_back(step_bytes * double(opt.new_tokens) / seconds);
        reads.push_back(measure_read_bandwidth(1));
        copies.push_back(measure_copy_bandwidth(1));
      }
      Measurement ms;
      ms.name = "generate";
      ms.shape = model_name + " batch=" + std::to_string(batch) + " new=" + std::to_string(opt.new_tokens) +
                 (opt.temperature == 0 ? " greedy" : "");
      ms.dtype = label + (decode == "fused" && fusable ? " fused" : " ops");
      ms.threads = opt.threads;
      ms.tokens_per_s = double(batch * opt.new_tokens) / best;
      ms.step_ms = 1000.0 * best / double(opt.new_tokens);
      ms.gflops = ms.tokens_per_s * 2.0 * matmul_params / 1e9;
      ms.peak_rss_mb = peak_rss_mb();
      ms.bw_fraction = median_fraction(rates, reads);
      ms.copy_bw_fraction = median_fraction(rates, copies);
      ms.probe_gb_per_s = probe_range(reads);
      ms.copy_probe_gb_per_s = probe_range(copies);
      timed.push_back(ms);
    }
    // The matmul peak after the timed runs: seconds of full-width GEMM just before them left the decode
    // steps that followed 10-20% slower on the AVX2 EPYC VM (measured with and without a 2 s GEMM first).
    const double peak = measure_matmul_peak(dtype);
    for (auto& ms : timed) {
      ms.mfu = ms.gflops * 1e9 / peak;
      print_json(ms);
      out.push_back(ms);
    }
  }
  return out;
}

}  // namespace reglage::bench
