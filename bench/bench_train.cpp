// Training-step throughput: what one optimizer step of the sft stage does (forward, token cross-entropy,
// backward, gradient clipping, AdamW), on random tokens, in this process.
//   reglage_bench train [--shapes stories260K,stories15M] [--modes full,lora] [--dtypes float32,bfloat16]
//                       [--seq T] [--threads N] [--steps K]
//   reglage_bench train --shapes model --model PATH --batch B [--storages auto,bfloat16,int8] [--checkpointing 1]
//                       [--profile PREFIX]   (one more step per run under LibTorch's profiler, a Chrome trace)
// stories260K is the shipped model; stories15M is its larger sibling's shape (dim 288, 6 layers, 6 heads,
// vocab 32000), randomly initialised; "model" is the model file given by --model. The loss is the sft
// stage's: token log-probs through the chunked LM head (CausalLM::token_logprobs). tokens/s = batch x seq over the median step. MFU counts
// 6 x parameters x tokens for full training; for LoRA 4 x base parameters x tokens (no weight gradients of
// the frozen base) plus 6 x adapter parameters x tokens (trained weights); attention scores ignored (the
// JSON's mfu_with_attention adds them), over the matmul peak at the same dtype and thread count,
// measured just before and just after each configuration's steps (the mean of the two; both in the JSON line):
// on a shared VM the peak itself moved by 10-30% within minutes, and a figure measured once, minutes away,
// made the MFU move with it.
// --interleave 1: the configurations of one shape, mode and storage that differ by dtype are built together and
// take their timed steps in turn (the order reversed every other round); besides each one's line, a
// "train_speedup" line gives the step time of the first dtype over each later one's, per round and the median.
// A ratio of two runs minutes apart measured the VM's drift as much as the dtypes (the bfloat16 / float32
// ratio of SmolLM2's LoRA step ran 1.74-2.37x over six such runs).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>

#include "bench/bench_train.h"
#include "framework/config/choices.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/model_io.h"
#include "framework/kernels/weight_only.h"
#include "framework/lora/adapter.h"
#include "framework/model/config.h"
#include "framework/train/adamw.h"

namespace reglage::bench {

namespace {

model::ModelConfig stories15m_config() {
  model::ModelConfig c;
  c.vocab_size = 32000;
  c.dim = 288;
  c.hidden_dim = 768;
  c.n_layers = 6;
  c.n_heads = 6;
  c.n_kv_heads = 6;
  c.max_seq_len = 256;
  return c;
}

model::CausalLM make_model(const std::string& shape, const TrainOptions& opt, torch::Dtype dtype) {
  if (shape == "stories260K" || shape == "model") return io::load_model(opt.model_path, dtype);
  if (shape != "stories15M") fail("--shapes: unknown shape '", shape, "' (expected stories260K, stories15M or model)");
  torch::manual_seed(0);
  model::CausalLM m(stories15m_config());
  m->to(dtype);
  return m;
}

// One configuration's model, adapter, optimizer and batch of random tokens, ready to take optimizer steps.
struct TrainRun {
  std::string shape, mode, dtype_name, storage_name;
  torch::Dtype dtype = torch::kFloat32;
  kernels::Storage storage = kernels::Storage::kNative;
  config::TrainMode train = config::TrainMode::kLora;
  model::CausalLM m{nullptr};
  model::AdapterSet active;
  std::vector<torch::Tensor> params;
  std::unique_ptr<train::AdamW> optimizer;
  torch::Tensor input, targets, valid;  // (B, T) each
  int64_t B = 0, T = 0;

  // One optimizer step of the sft stage; returns its seconds.
  double step() {
    const auto t0 = std::chrono::steady_clock::now();
    auto loss = -m->token_logprobs({input, {}, valid, nullptr, active}, targets).mean();  // (B, T) -> ()
    loss.backward();
    train::clip_grad_norm(params, 1.0);
    optimizer->step(1e-4);
    optimizer->zero_grad();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

std::unique_ptr<TrainRun> make_run(const TrainOptions& opt, const std::string& shape, const std::string& mode,
                                   const std::string& dtype_name, const std::string& storage_name) {
  auto run = std::make_unique<TrainRun>();
  run->shape = shape;
  run->mode = mode;
  run->dtype_name = dtype_name;
  run->storage_name = storage_name;
  run->dtype = model::parse_dtype(dtype_name);
  run->storage = kernels::parse_storage(storage_name);
  if (!config::parse_choice(mode, run->train) || run->train == config::TrainMode::kFullFreezeLower)
    fail("--modes: unknown mode '", mode, "' (expected full or lora)");
  // The base's storage computes in float32 under LoRA: other combinations are skipped.
  if (run->storage != kernels::Storage::kNative && (mode != "lora" || run->dtype != torch::kFloat32)) return nullptr;
  run->m = make_model(shape, opt, run->dtype);
  auto& m = run->m;
  const auto& cfg = m->config();
  run->B = shape == "stories15M" ? opt.batch_15m : shape == "model" ? opt.batch_model : opt.batch_260k;
  run->T = std::min(opt.seq, cfg.max_seq_len);
  if (run->train == config::TrainMode::kLora) {
    lora::LoraConfig lc;
    lc.rank = 16;
    lc.alpha = 32;
    lc.targets = {"all-linear"};
    lora::add_adapter(m, "bench", lc, 1);
    run->params = lora::set_trainable(m, lora::TrainMode::kLora, "bench");
    run->active = {"bench"};
    m->set_storage(run->storage);
  } else {
    run->params = lora::set_trainable(m, lora::TrainMode::kFull);
  }
  std::vector<std::string> names;
  for (size_t i = 0; i < run->params.size(); ++i) names.push_back("p" + std::to_string(i));
  run->optimizer = std::make_unique<train::AdamW>(run->params, names, train::AdamWConfig{});
  m->checkpoint_layers = opt.checkpointing;
  m->train();
  torch::manual_seed(1);
  auto ids = torch::randint(3, cfg.vocab_size, {run->B, run->T + 1}, torch::kLong);
  run->input = ids.narrow(1, 0, run->T);
  run->targets = ids.narrow(1, 1, run->T).contiguous();
  run->valid = torch::ones({run->B, run->T}, torch::kBool);
  return run;
}

// One more step under LibTorch's profiler (every LibTorch operator with its shapes and thread; our own kernels
// show as the gaps inside the nodes that call them), its Chrome trace (chrome://tracing, Perfetto) in a file.
void profile_step(const TrainOptions& opt, TrainRun& run) {
  const std::string path = opt.profile + "-" + run.shape + "-" + run.mode + "-" + run.dtype_name + "-" +
                           run.storage_name + ".json";
  std::ostringstream trace;
  {
    torch::autograd::profiler::RecordProfile guard(trace);  // writes the trace when it goes out of scope
    run.step();
  }
  core::write_file_atomic(path, trace.str());
  std::fprintf(stderr, "profile of one step: %s\n", path.c_str());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The measurement of `run` from its timed steps and the matmul peak probed before and after them.
Measurement measurement(const TrainOptions& opt, TrainRun& run, const std::vector<double>& times, double peak_before,
                        double peak_after) {
  const auto& cfg = run.m->config();
  const double peak = 0.5 * (peak_before + peak_after);
  const double step_s = median(times);
  double n_params = 0;  // every base weight that takes part in a matmul: the linear layers and the LM head
  for (auto& [path, layer] : run.m->linear_layers()) n_params += double(layer->weight.numel());
  n_params += double(cfg.vocab_size) * double(cfg.dim);
  // Per token, a trained weight costs 6 operations (forward, input gradient, its own gradient) and a frozen
  // one 4 (no gradient of its own). LoRA trains its adapters (A and B of every adapted layer: t = x A^T and
  // t B^T forward; g B, (g B) A, g^T t and (g B)^T x backward) over a frozen base.
  double n_adapter = 0;
  if (run.train == config::TrainMode::kLora)
    for (const auto& p : run.params) n_adapter += double(p.numel());
  const double flops_per_token =
      run.train == config::TrainMode::kFull ? 6.0 * n_params : 4.0 * n_params + 6.0 * n_adapter;

  Measurement ms;
  ms.name = "train";
  const std::string name = run.shape == "model" ? std::filesystem::path(opt.model_path).stem().string() : run.shape;
  ms.shape = name + " batch=" + std::to_string(run.B) + "x" + std::to_string(run.T) + " " + run.mode +
             (opt.checkpointing ? " ckpt" : "");
  ms.dtype = run.storage == kernels::Storage::kNative ? run.dtype_name : run.dtype_name + "/" + run.storage_name;
  ms.threads = opt.threads;
  ms.tokens_per_s = double(run.B * run.T) / step_s;
  ms.step_ms = 1000.0 * step_s;
  ms.gflops = ms.tokens_per_s * flops_per_token / 1e9;
  ms.mfu = ms.gflops * 1e9 / peak;
  // Attention's products, counted as PaLM's MFU counts them (Chowdhery et al. 2022, appendix B): per token
  // and layer, q k^T and p v over the T keys are 4 T H Dh in forward, twice that in backward; they have
  // no weights, so LoRA's backward does them whole as well. A model-FLOPs count: from T = 512 attention skips
  // the key blocks causality masks whole (model::causal_block_rows) and does 5/8 of these at 4 blocks.
  const double attention_flops = 12.0 * double(cfg.n_layers) * double(run.T) * double(cfg.n_heads * cfg.head_size());
  ms.mfu_with_attention = ms.tokens_per_s * attention_flops / peak + ms.mfu;
  ms.peak_gflops = {peak_before / 1e9, peak_after / 1e9};
  ms.peak_rss_mb = peak_rss_mb();
  return ms;
}

}  // namespace

std::vector<Measurement> bench_train(const TrainOptions& opt) {
  if (!opt.profile.empty()) {  // before minutes of steps, not after them
    const std::string dir = core::parent_dir(opt.profile);
    if (!dir.empty() && !core::is_directory(dir))
      fail("--profile ", opt.profile, ": the directory '", dir, "' does not exist (expected a path prefix in an existing directory)");
  }
  std::vector<Measurement> out;
  torch::set_num_threads(opt.threads);
  for (const auto& shape : opt.shapes)
    for (const auto& mode : opt.modes)
      for (const auto& storage_name : opt.storages) {
        if (!opt.interleave) {
          for (const auto& dtype_name : opt.dtypes) {
            auto run = make_run(opt, shape, mode, dtype_name, storage_name);
            if (!run) continue;
            std::vector<double> times;
            const double peak_before = measure_matmul_peak(run->dtype);
            for (int s = 0; s < opt.steps + 2; ++s) {  // 2 warm-up steps
              const double t = run->step();
              if (s >= 2) times.push_back(t);
            }
            out.push_back(measurement(opt, *run, times, peak_before, measure_matmul_peak(run->dtype)));
            print_json(out.back());
            if (!opt.profile.empty()) profile_step(opt, *run);
          }
          continue;
        }
        // Interleaved: every dtype's run takes its steps in turn (the order reversed every other round), so
        // the VM's drift over minutes reaches all of them alike, and each round gives a ratio of step times.
        std::vector<std::unique_ptr<TrainRun>> runs;
        for (const auto& dtype_name : opt.dtypes)
          if (auto run = make_run(opt, shape, mode, dtype_name, storage_name)) runs.push_back(std::move(run));
        if (runs.empty()) continue;
        std::vector<double> before;
        for (auto& run : runs) before.push_back(measure_matmul_peak(run->dtype));
        for (int s = 0; s < 2; ++s)  // warm-up steps
          for (auto& run : runs) run->step();
        std::vector<std::vector<double>> times(runs.size());
        for (int s = 0; s < opt.steps; ++s)
          for (size_t k = 0; k < runs.size(); ++k) {
            const size_t i = s % 2 == 0 ? k : runs.size() - 1 - k;
            times[i].push_back(runs[i]->step());
          }
        for (size_t i = 0; i < runs.size(); ++i) {
          out.push_back(measurement(opt, *runs[i], times[i], before[i], measure_matmul_peak(runs[i]->dtype)));
          print_json(out.back());
        }
        // Speed of each later dtype over the first, per round (the step time of the first over its own).
        for (size_t i = 1; i < runs.size(); ++i) {
          std::vector<double> ratios;
          for (int s = 0; s < opt.steps; ++s) ratios.push_back(times[0][size_t(s)] / times[i][size_t(s)]);
          nlohmann::json j{{"name", "train_speedup"}, {"shape", out.back().shape},
                           {"of", runs[i]->dtype_name}, {"over", runs[0]->dtype_name},
                           {"median", median(ratios)}, {"rounds", ratios}};
          std::printf("%s\n", j.dump().c_str());
        }
      }
  return out;
}

}  // namespace reglage::bench
