// Supervised fine-tuning stage.
//   mpirun -np N reglage run configs/demo.yaml      (a stage with type: sft)
// Every rank holds the whole model and a shard of each global batch; gradients of the trainable tensors
// (the stage's LoRA adapter, or the base weights for full training) are summed across ranks, so N ranks
// compute what one rank would with the same global batch. The loss is the mean cross-entropy over the
// completion tokens of the whole global batch.
#include <cmath>

#include "framework/core/error.h"
#include "framework/data/sft_data.h"
#include "trainers/stage_session.h"
#include "trainers/stage_traits.h"

namespace reglage::trainers {

namespace F = torch::nn::functional;

namespace {

// Sum of token cross-entropies of one micro-batch: (B, T) -> scalar. The LM head runs only on the positions
// with a target, in chunks (never the (B, T, V) logits at once).
torch::Tensor micro_batch_loss_sum(model::CausalLM& m, const data::SftBatch& batch, const model::AdapterSet& active) {
  model::ForwardInput in{batch.ids, batch.positions, batch.valid, nullptr, active};
  in.segments = batch.segments;  // packed rows: attention inside each row (undefined when not packed)
  return -m->token_logprobs(in, batch.targets).sum();  // (B, T) -> ()
}

// This rank's rows of a micro-batch, packed into sequences of `pack_len` tokens when packing is on.
data::SftBatch make_batch(const data::SftDataset& data, const std::vector<int64_t>& rows, int64_t pad_id,
                          int64_t pack_len) {
  return pack_len > 0 ? data::collate_packed(data, rows, pad_id, pack_len) : data::collate(data, rows, pad_id);
}

// Mean loss over the completion tokens of a whole data set, sharded across ranks.
double evaluate(StageContext& ctx, model::CausalLM& m, const data::SftDataset& eval, const model::AdapterSet& active,
                int64_t batch_size, int64_t pad_id, int64_t pack_len) {
  double loss_sum = 0;
  const int64_t rows = int64_t(eval.rows.size());
  StageSession::evaluate_in_chunks(m, ctx, rows, batch_size, [&](const std::vector<int64_t>& chunk) {
    loss_sum += micro_batch_loss_sum(m, make_batch(eval, chunk, pad_id, pack_len), active).item<double>();
  });
  std::vector<int64_t> all(eval.rows.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
  const double total = dist::all_reduce_sum(ctx.comm, loss_sum, "allreduce eval loss");
  return total / double(data::count_target_tokens(eval, all));
}

}  // namespace

void run_sft(StageContext& ctx) {
  const auto& st = ctx.stage;
  const int world = ctx.comm.size();

  // ---- setup: model, adapters, data, optimizer, resume --------------------------------------------
  Policy policy = load_policy(ctx);
  auto& m = policy.model;
  const auto opt = stage_data_options(st, m->config().max_seq_len);
  const auto train_data = data::load_sft_jsonl(st.data, *policy.tok, opt);
  std::optional<data::SftDataset> eval_data;
  if (!st.eval_data.empty()) eval_data = data::load_sft_jsonl(st.eval_data, *policy.tok, opt);
  if (train_data.skipped || train_data.truncated)
    ctx.warn(st.data + ": " + std::to_string(train_data.skipped) + " malformed rows skipped, " +
             std::to_string(train_data.truncated) + " rows truncated");
  const int64_t pad_id = std::max<int64_t>(policy.tok->eos_id(), 0);
  // packing: rows packed into sequences of max_seq_len (the model's context when 0) tokens.
  const int64_t pack_len = st.packing ? (st.max_seq_len > 0 ? st.max_seq_len : m->config().max_seq_len) : 0;
  const int64_t steps = total_steps(st, int64_t(train_data.rows.size()));
  check_step_memory(ctx, m->config(), st.batch_size / world / st.grad_accum,
                    pack_len > 0 ? pack_len : longest_sequence(train_data));  // packed: up to pack_len tokens

  StageSession session(ctx, steps, "step");
  Trainable trainable = setup_trainable(ctx, m);
  train::AdamW optimizer(trainable.params, trainable.names, adamw_config(st));
  data::DataSampler sampler(int64_t(train_data.rows.size()), ctx.pipeline.seed);
  TrainState state{trainable.params, trainable.names, optimizer, sampler};
  const int64_t start_step = session.resume(state, "training " + std::to_string(steps) + " steps on " +
                                                       std::to_string(train_data.rows.size()) + " rows, " +
                                                       std::to_string(world) + " rank(s)");

  // ---- the loop: forward/backward over this rank's micro-batches, normalised by the global target count -
  m->train();
  const int64_t micro = st.batch_size / world / st.grad_accum;
  for (int64_t step = start_step; step < steps; ++step) {
    const auto b = session.begin_step(step, sampler);
    const int64_t targets = data::count_target_tokens(train_data, b.global);  // same on every rank
    double loss_sum = 0;
    int64_t input_tokens = 0;
    for (int64_t k = 0; k < st.grad_accum; ++k) {
      auto batch = make_batch(train_data, b.micro_batch(k, micro), pad_id, pack_len);
      auto loss = micro_batch_loss_sum(m, batch, trainable.active);
      (loss / double(targets)).backward();
      loss_sum += loss.item<double>();
      input_tokens += batch.valid.sum().item<int64_t>();
    }
    const double grad_norm = session.optimizer_step(trainable.params, optimizer, b.lr);

    const double loss = dist::all_reduce_sum(ctx.comm, loss_sum, "allreduce loss") / double(targets);
    const double tokens = dist::all_reduce_sum(ctx.comm, double(input_tokens), "allreduce tokens");
    if (!std::isfinite(loss) || !std::isfinite(grad_norm))
      fail("stage '", st.name, "' step ", step + 1, ": loss = ", loss, ", grad norm = ", grad_norm, " (not finite)");
    const int64_t done = step + 1;
    if (session.log_due(done))
      session.record({{"step", done}, {"split", "train"}, {"loss", loss}, {"lr", b.lr}, {"grad_norm", grad_norm},
                      {"epoch", sampler.state().epoch}, {"tokens", tokens}, {"tokens_per_s", tokens / b.seconds()}});
    session.show(done, {{"loss", loss}, {"lr", b.lr}}, tokens);
    if (eval_data && session.due(st.eval_every, done)) {
      const double eval_loss = evaluate(ctx, m, *eval_data, trainable.active, std::max<int64_t>(micro, 1), pad_id, pack_len);
      session.record({{"step", done}, {"split", "eval"}, {"loss", eval_loss}});
      ctx.log("step " + std::to_string(done) + " eval loss " + std::to_string(eval_loss));
    }
    session.maybe_checkpoint(done);
  }
  session.finish();

  // ---- output: the adapter (PEFT) or the full model (Hugging Face directory) -------------------------
  session.publish(policy);
}

}  // namespace reglage::trainers
