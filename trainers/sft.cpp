// Supervised fine-tuning stage.
//   mpirun -np N reglage run configs/demo.yaml      (a stage with type: sft)
// Every rank holds the whole model and a shard of each global batch; gradients of the trainable tensors
// (the stage's LoRA adapter, or the base weights for full training) are summed across ranks, so N ranks
// compute what one rank would with the same global batch. The loss is the mean cross-entropy over the
// completion tokens of the whole global batch.
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "framework/checkpoint/checkpoint.h"
#include "framework/core/error.h"
#include "framework/core/progress.h"
#include "framework/core/file_util.h"
#include "framework/data/sft_data.h"
#include "framework/io/model_io.h"
#include "framework/io/safetensors.h"
#include "framework/lora/adapter.h"
#include "framework/metrics/metrics_log.h"
#include "framework/metrics/progress_line.h"
#include "framework/train/adamw.h"
#include "trainers/policy_setup.h"
#include "trainers/train_state.h"

namespace reglage::trainers {

namespace F = torch::nn::functional;
using nlohmann::json;

namespace {

// Sum of token cross-entropies of one micro-batch: (B, T) -> scalar, and its number of input tokens.
torch::Tensor micro_batch_loss_sum(model::CausalLM& m, const data::SftBatch& batch, const model::AdapterSet& active) {
  auto logits = m->forward({batch.ids, {}, batch.valid, nullptr, active});  // (B, T, V) float32
  const int64_t V = logits.size(-1);
  return F::cross_entropy(logits.view({-1, V}), batch.targets.view({-1}),
                          F::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

// Mean loss over the completion tokens of a whole data set, sharded across ranks.
double evaluate(StageContext& ctx, model::CausalLM& m, const data::SftDataset& eval, const model::AdapterSet& active,
                int64_t batch_size, int64_t pad_id) {
  torch::NoGradGuard no_grad;
  m->eval();
  std::vector<int64_t> all(eval.rows.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
  const auto mine = data::shard(all, ctx.comm.rank(), ctx.comm.size());
  double loss_sum = 0;
  for (size_t start = 0; start < mine.size(); start += size_t(batch_size)) {
    std::vector<int64_t> chunk(mine.begin() + start, mine.begin() + std::min(mine.size(), start + batch_size));
    loss_sum += micro_batch_loss_sum(m, data::collate(eval, chunk, pad_id), active).item<double>();
  }
  m->train();
  const double total = dist::all_reduce_sum(ctx.comm, loss_sum, "allreduce eval loss");
  return total / double(data::count_target_tokens(eval, all));
}

}  // namespace

void run_sft(StageContext& ctx) {
  const auto& cfg = ctx.pipeline;
  const auto& st = ctx.stage;
  const int rank = ctx.comm.rank(), world = ctx.comm.size();

  // ---- setup: model, adapters, data, optimizer --------------------------------------------------
  Policy policy = load_policy(ctx);
  auto& m = policy.model;
  const int64_t context = m->config().max_seq_len;
  if (st.max_seq_len > context)
    fail("stage '", st.name, "': max_seq_len = ", st.max_seq_len, " exceeds the model's context of ", context);
  const auto opt = row_data_options(st, context);
  const auto train_data = data::load_sft_jsonl(st.data, *policy.tok, opt);
  std::optional<data::SftDataset> eval_data;
  if (!st.eval_data.empty()) eval_data = data::load_sft_jsonl(st.eval_data, *policy.tok, opt);
  if (train_data.skipped || train_data.truncated)
    ctx.warn(st.data + ": " + std::to_string(train_data.skipped) + " malformed rows skipped, " +
             std::to_string(train_data.truncated) + " rows truncated");
  const int64_t pad_id = std::max<int64_t>(policy.tok->eos_id(), 0);

  const int64_t steps = total_steps(st, int64_t(train_data.rows.size()));
  check_step_memory(ctx, m->config(), st.batch_size / world / st.grad_accum, longest_sequence(train_data));
  Trainable trainable = setup_trainable(ctx, m);
  auto& params = trainable.params;
  auto& names = trainable.names;
  const auto& active = trainable.active;
  train::AdamW optimizer(params, names, adamw_config(st));
  data::DataSampler sampler(int64_t(train_data.rows.size()), cfg.seed);
  // Dropout draws from the default generator: a distinct, seeded stream per rank.
  torch::manual_seed(cfg.seed * 1000003ULL + uint64_t(rank));

  // ---- resume -------------------------------------------------------------------------------------
  int64_t start_step = 0;
  TrainState state{params, names, optimizer, sampler};
  if (auto ckpt = load_latest_checkpoint(ctx, state)) start_step = *ckpt;
  // Every rank starts from rank 0's weights (fresh: the same seeded init; resumed: the same files).
  dist::broadcast_tensors(ctx.comm, params, 0, "broadcast weights");
  metrics::MetricsLog log;
  if (ctx.is_root()) log = metrics::MetricsLog(ctx.metrics_path(), start_step);
  if (start_step > 0) ctx.log("resuming at step " + std::to_string(start_step) + " of " + std::to_string(steps));
  else ctx.log("training " + std::to_string(steps) + " steps on " + std::to_string(train_data.rows.size()) +
               " rows, " + std::to_string(world) + " rank(s)");

  // ---- the loop -------------------------------------------------------------------------------------
  m->train();
  const int64_t per_rank = st.batch_size / world;
  const int64_t micro = per_rank / st.grad_accum;
  core::progress_stage(st.name, steps);
  core::progress_step(start_step);
  metrics::ProgressLine progress(st.name, "step", steps, start_step, ctx.progress_mode(), std::cout);
  for (int64_t step = start_step; step < steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = train::scheduled_lr(step, steps, st.lr, st.warmup_steps, st.schedule, st.min_lr_ratio);
    const auto global = sampler.next_global_batch(st.batch_size);
    const int64_t targets = data::count_target_tokens(train_data, global);  // same on every rank
    const auto mine = data::shard(global, rank, world);

    // forward/backward over this rank's micro-batches; the loss is normalised by the global target count
    double loss_sum = 0;
    int64_t input_tokens = 0;
    for (int64_t k = 0; k < st.grad_accum; ++k) {
      std::vector<int64_t> chunk(mine.begin() + k * micro, mine.begin() + (k + 1) * micro);
      auto batch = data::collate(train_data, chunk, pad_id);
      auto loss = micro_batch_loss_sum(m, batch, active);
      (loss / double(targets)).backward();
      loss_sum += loss.item<double>();
      input_tokens += batch.valid.sum().item<int64_t>();
    }
    dist::all_reduce_gradients(ctx.comm, params);  // sync point: every rank's gradients summed
    const double grad_norm = train::clip_grad_norm(params, st.max_grad_norm);
    optimizer.step(lr);
    optimizer.zero_grad();

    const double loss = dist::all_reduce_sum(ctx.comm, loss_sum, "allreduce loss") / double(targets);
    const double tokens = dist::all_reduce_sum(ctx.comm, double(input_tokens), "allreduce tokens");
    if (!std::isfinite(loss) || !std::isfinite(grad_norm))
      fail("stage '", st.name, "' step ", step + 1, ": loss = ", loss, ", grad norm = ", grad_norm, " (not finite)");
    const int64_t done = step + 1;
    core::progress_step(done);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const bool log_step = done % st.log_every == 0 || done == steps;
    if (ctx.is_root() && log_step)
      log.write({{"step", done}, {"split", "train"}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                 {"epoch", sampler.state().epoch}, {"tokens", tokens}, {"tokens_per_s", tokens / seconds}});
    progress.update(done, {{"loss", loss}, {"lr", lr}}, tokens, log_step);
    const bool last = done == steps;
    if (eval_data && ((st.eval_every > 0 && done % st.eval_every == 0) || last)) {
      const double eval_loss = evaluate(ctx, m, *eval_data, active, std::max<int64_t>(micro, 1), pad_id);
      if (ctx.is_root()) {
        log.write({{"step", done}, {"split", "eval"}, {"loss", eval_loss}});
        ctx.log("step " + std::to_string(done) + " eval loss " + std::to_string(eval_loss));
      }
    }
    if ((st.checkpoint_every > 0 && done % st.checkpoint_every == 0) || last) save_checkpoint(ctx, state, done);
  }
  progress.finish();

  // ---- output: the adapter (PEFT) or the full model (Hugging Face directory) -------------------------
  publish_final(ctx, policy.lineage, [&](const std::string& dir) {
    if (st.train == config::TrainMode::kLora) lora::save_peft(m, st.name, dir, policy.lineage.base_model);
    else io::save_hf(m, dir, policy.tok.get());
  });
}

}  // namespace reglage::trainers
