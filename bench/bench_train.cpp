// Training-step throughput: what one optimizer step of the sft stage does (forward, token cross-entropy,
// backward, gradient clipping, AdamW), on random tokens, in this process.
//   reglage_bench train [--shapes stories260K,stories15M] [--modes full,lora] [--dtypes float32,bfloat16]
//                       [--seq T] [--threads N] [--steps K]
//   reglage_bench train --shapes model --model PATH --batch B [--storages auto,bfloat16,int8] [--checkpointing 1]
// stories260K is the shipped model; stories15M is its larger sibling's shape (dim 288, 6 layers, 6 heads,
// vocab 32000), randomly initialised; "model" is the model file given by --model. The loss is the sft
// stage's: token log-probs through the chunked LM head (CausalLM::token_logprobs). tokens/s = batch x seq over the median step. MFU counts
// 6 x parameters x tokens for full training and 4 x parameters x tokens for LoRA (no weight gradients of
// the frozen base), attention scores ignored, over the matmul peak at the same dtype and thread count,
// measured just before and just after each configuration's steps (the mean of the two; both in the JSON line):
// on a shared VM the peak itself moved by 10-30% within minutes, and a figure measured once, minutes away,
// made the MFU move with it.
#include <algorithm>
#include <chrono>
#include <filesystem>

#include "bench/bench_train.h"
#include "framework/config/choices.h"
#include "framework/core/error.h"
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

}  // namespace

std::vector<Measurement> bench_train(const TrainOptions& opt) {
  namespace F = torch::nn::functional;
  std::vector<Measurement> out;
  torch::set_num_threads(opt.threads);
  for (const auto& dtype_name : opt.dtypes) {
    const auto dtype = model::parse_dtype(dtype_name);
    for (const auto& shape : opt.shapes) {
      for (const auto& mode : opt.modes)
       for (const auto& storage_name : opt.storages) {
        const auto storage = kernels::parse_storage(storage_name);
        if (storage != kernels::Storage::kNative && (mode != "lora" || dtype != torch::kFloat32)) continue;
        config::TrainMode train = config::TrainMode::kLora;
        if (!config::parse_choice(mode, train) || train == config::TrainMode::kFullFreezeLower)
          fail("--modes: unknown mode '", mode, "' (expected full or lora)");
        auto m = make_model(shape, opt, dtype);
        const auto& cfg = m->config();
        const int64_t B = shape == "stories15M" ? opt.batch_15m : shape == "model" ? opt.batch_model : opt.batch_260k;
        const int64_t T = std::min(opt.seq, cfg.max_seq_len);
        model::AdapterSet active;
        std::vector<torch::Tensor> params;
        if (train == config::TrainMode::kLora) {
          lora::LoraConfig lc;
          lc.rank = 16;
          lc.alpha = 32;
          lc.targets = {"all-linear"};
          lora::add_adapter(m, "bench", lc, 1);
          params = lora::set_trainable(m, lora::TrainMode::kLora, "bench");
          active = {"bench"};
          m->set_storage(storage);
        } else {
          params = lora::set_trainable(m, lora::TrainMode::kFull);
        }
        std::vector<std::string> names;
        for (size_t i = 0; i < params.size(); ++i) names.push_back("p" + std::to_string(i));
        train::AdamW optimizer(params, names, {});
        m->checkpoint_layers = opt.checkpointing;
        m->train();

        torch::manual_seed(1);
        auto ids = torch::randint(3, cfg.vocab_size, {B, T + 1}, torch::kLong);
        auto input = ids.narrow(1, 0, T), targets = ids.narrow(1, 1, T).contiguous();
        auto valid = torch::ones({B, T}, torch::kBool);
        std::vector<double> times;
        const double peak_before = measure_matmul_peak(dtype);
        for (int s = 0; s < opt.steps + 2; ++s) {  // 2 warm-up steps
          const auto t0 = std::chrono::steady_clock::now();
          auto loss = -m->token_logprobs({input, {}, valid, nullptr, active}, targets).mean();  // (B, T) -> ()
          loss.backward();
          train::clip_grad_norm(params, 1.0);
          optimizer.step(1e-4);
          optimizer.zero_grad();
          if (s >= 2) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        const double peak_after = measure_matmul_peak(dtype);
        const double peak = 0.5 * (peak_before + peak_after);
        std::sort(times.begin(), times.end());
        const double step_s = times[times.size() / 2];
        double n_params = 0;  // every weight that takes part in a matmul: the linear layers and the LM head
        for (auto& [path, layer] : m->linear_layers()) n_params += double(layer->weight.numel());
        n_params += double(cfg.vocab_size) * double(cfg.dim);

        Measurement ms;
        ms.name = "train";
        const std::string name = shape == "model" ? std::filesystem::path(opt.model_path).stem().string() : shape;
        ms.shape = name + " batch=" + std::to_string(B) + "x" + std::to_string(T) + " " + mode +
                   (opt.checkpointing ? " ckpt" : "");
        ms.dtype = storage == kernels::Storage::kNative ? dtype_name : dtype_name + "/" + storage_name;
        ms.threads = opt.threads;
        ms.tokens_per_s = double(B * T) / step_s;
        ms.step_ms = 1000.0 * step_s;
        ms.gflops = ms.tokens_per_s * (train == config::TrainMode::kFull ? 6.0 : 4.0) * n_params / 1e9;
        ms.mfu = ms.gflops * 1e9 / peak;
        // Attention's products, counted as PaLM's MFU counts them (Chowdhery et al. 2022, appendix B): per token
        // and layer, q k^T and p v over the T keys are 4 T H Dh in forward, twice that in backward; they have
        // no weights, so LoRA's backward does them whole as well.
        const double attention_flops = 12.0 * double(cfg.n_layers) * double(T) * double(cfg.n_heads * cfg.head_size());
        ms.mfu_with_attention = ms.tokens_per_s * attention_flops / peak + ms.mfu;
        ms.peak_gflops = {peak_before / 1e9, peak_after / 1e9};
        ms.peak_rss_mb = peak_rss_mb();
        print_json(ms);
        out.push_back(ms);
      }
    }
  }
  return out;
}

}  // namespace reglage::bench
