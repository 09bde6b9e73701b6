#include "trainers/policy_setup.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "framework/checkpoint/manifest.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/core/memory.h"
#include "framework/io/model_io.h"
#include "framework/kernels/bf16_products.h"
#include "framework/kernels/weight_only.h"
#include "framework/lora/adapter.h"
#include "framework/model/config.h"

namespace reglage::trainers {

using nlohmann::json;

Policy load_policy(const StageContext& ctx) {
  const auto& cfg = ctx.pipeline;
  const auto dtype = model::parse_dtype(cfg.model.dtype);
  Policy p;
  p.lineage.base_model = cfg.model.path;
  if (!ctx.stage.init_from.empty()) {
    const std::string from = ctx.layout.final_dir(ctx.stage.init_from);
    // Its files as written (reglage_manifest.json), before any is read; load_lineage checks the earlier ones.
    if (core::is_directory(from)) checkpoint::verify_output(from, [&](const std::string& w) { ctx.warn(w); });
    if (core::file_exists(from + "/config.json")) {
      p.lineage = {from, {}};  // a fully trained earlier stage: its model directory is the new base
    } else if (core::file_exists(from + "/adapter_config.json")) {
      Lineage before = io::read_lineage(from);
      if (!before.base_model.empty()) p.lineage = before;
      p.lineage.adapters.push_back(from);
    } else {
      fail("stage '", ctx.stage.name, "': init_from '", ctx.stage.init_from, "' has no output in ", from);
    }
  }
  p.model = io::load_lineage(p.lineage, dtype);
  if (dtype == torch::kBFloat16 && p.model->device().is_cpu()) {
    ctx.log("bfloat16 products: " + kernels::bf16_products_choice());
    // What stays LibTorch's even when every product of the LoRA layer is widened: a trained base's products
    // and the adapters' operator path (dropout).
    const bool unwidened = ctx.stage.train != config::TrainMode::kLora || cfg.lora.dropout > 0;
    if (kernels::bf16_products() == kernels::Bf16Products::kWidenedAll && unwidened)
      ctx.warn("model.dtype: bfloat16 on a CPU without bfloat16 instructions (no avx512_bf16 or amx_bf16 flag): a "
               "trained base's products and LoRA with dropout run LibTorch's bfloat16 loops, many times slower "
               "than float32 here; dtype: float32 (with model.storage: bfloat16 for LoRA) runs at float32 speed");
  }
  p.tok = io::load_model_tokenizer(cfg.model.path, cfg.model.tokenizer, p.model->config().vocab_size);
  return p;
}

Trainable setup_trainable(const StageContext& ctx, model::CausalLM& m) {
  const auto& cfg = ctx.pipeline;
  const auto& st = ctx.stage;
  Trainable t;
  if (st.train == config::TrainMode::kLora) {
    lora::LoraConfig lc;
    lc.rank = cfg.lora.rank;
    lc.alpha = cfg.lora.alpha;
    lc.dropout = cfg.lora.dropout;
    lc.targets = cfg.lora.targets;
    lora::add_adapter(m, st.name, lc, cfg.seed);
    lora::set_trainable(m, lora::TrainMode::kLora, st.name);
    for (auto& [key, tensor] : lora::adapter_tensors(m, st.name)) {
      t.names.push_back(key);
      t.params.push_back(tensor);
    }
    t.active = {st.name};
    // The frozen base in its storage (after set_trainable: nothing of the base trains now).
    m->set_storage(kernels::effective_storage(cfg.model.storage, m->dtype()));
  } else {
    const auto mode = st.train == config::TrainMode::kFull ? lora::TrainMode::kFull : lora::TrainMode::kFullFreezeLower;
    lora::set_trainable(m, mode, "", st.freeze_layers);
    for (const auto& item : m->named_parameters())
      if (item.value().requires_grad()) {
        t.names.push_back(item.key());
        t.params.push_back(item.value());
      }
  }
  m->checkpoint_layers = st.activation_checkpointing;
  return t;
}

train::AdamWConfig adamw_config(const config::StageConfig& st) {
  train::AdamWConfig ac;
  ac.beta1 = st.adam_beta1;
  ac.beta2 = st.adam_beta2;
  ac.eps = st.adam_eps;
  ac.weight_decay = st.weight_decay;
  return ac;
}

int64_t total_steps(const config::StageConfig& st, int64_t rows) {
  if (st.max_steps > 0) return st.max_steps;
  // rows x epochs overflowed once into "training -249 steps" (and a stage marked done): checked.
  int64_t samples = 0;
  if (!core::checked_mul(rows, st.epochs, samples) || samples > INT64_MAX - st.batch_size)
    fail("stage '", st.name, "': epochs = ", st.epochs, " x ", rows, " rows overflows the step count; lower epochs");
  const int64_t steps = (samples + st.batch_size - 1) / st.batch_size;
  if (steps <= 0) fail("stage '", st.name, "': epochs = ", st.epochs, " over ", rows, " rows gives no steps");
  return steps;
}

void check_step_memory(const StageContext& ctx, const model::ModelConfig& mc, int64_t sequences, int64_t tokens) {
  // Per token: logits, their softmax and gradient (3 V floats), and what each layer keeps for backward
  // (norm inputs, q/k/v/o, MLP activations: ~8 D + 4 F) plus the attention scores and probabilities
  // (2 H T). In double: an absurd batch_size must not overflow the estimate itself.
  const double T = double(tokens), L = double(mc.n_layers);
  const double per_token = 3.0 * double(mc.vocab_size) +
                           L * (8.0 * double(mc.dim) + 4.0 * double(mc.hidden_dim) + 2.0 * double(mc.n_heads) * T);
  const double bytes = 4.0 * double(sequences) * T * per_token;
  core::check_fits_in_memory(
      bytes,
      "stage '" + ctx.stage.name + "': one micro-step (" + std::to_string(sequences) + " sequences of up to " +
          std::to_string(tokens) + " tokens on each rank, vocabulary " + std::to_string(mc.vocab_size) + ", " +
          std::to_string(mc.n_layers) + " layers)",
      "lower batch_size (or rollout_batch_size / minibatch_size), raise grad_accum, or lower max_seq_len");
}

int64_t longest_sequence(const data::SftDataset& data) {
  size_t n = 0;
  for (const auto& row : data.rows) n = std::max(n, row.ids.size());
  return int64_t(n);
}

int64_t longest_sequence(const data::PreferenceDataset& data) {
  size_t n = 0;
  for (const auto& pair : data.pairs) n = std::max({n, pair.chosen.size(), pair.rejected.size()});
  return int64_t(n);
}

int64_t longest_sequence(const data::PromptDataset& data) {
  size_t n = 0;
  for (const auto& row : data.rows) n = std::max(n, row.ids.size());
  return int64_t(n);
}

void publish_final(StageContext& ctx, const Lineage& lineage, const std::function<void(const std::string&)>& write) {
  if (ctx.is_root()) {
    namespace fs = std::filesystem;
    const std::string tmp = ctx.layout.final_tmp(ctx.stage.name);
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    write(tmp);
    io::write_lineage(tmp, lineage);
    checkpoint::write_output_manifest(tmp);  // last: it lists every file above with its size and checksum
    fs::remove_all(ctx.final_dir(), ec);
    fs::rename(tmp, ctx.final_dir(), ec);
    if (ec) fail(ctx.final_dir(), ": cannot move the stage output into place (", ec.message(), ")");
  }
  ctx.comm.barrier("stage output written");
}

int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return int(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, CPU_COUNT(&set));
}

std::string thread_binding_warning(int threads, int rank) {
  const int cpus = allowed_cpus();
  if (threads <= cpus) return "";
  return "rank " + std::to_string(rank) + " runs " + std::to_string(threads) + " threads but may use only " +
         std::to_string(cpus) + " CPU" + (cpus == 1 ? "" : "s") +
         " (its affinity: Open MPI binds each rank to one core by default when there are 2 ranks or fewer), so its "
         "threads share them; start mpirun with --bind-to none (or --map-by slot:PE=" + std::to_string(threads) +
         "), or set threads: " + std::to_string(cpus);
}

int threads_per_rank(int64_t configured) {
  if (configured > 0) return int(configured);
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  // Open MPI tells each rank how many ranks share its host.
  int local = 1;
  if (const char* s = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) local = std::max(1, std::atoi(s));
  return std::max(1, std::min(cores / local, allowed_cpus()));
}

}  // namespace reglage::trainers
