// Reward-model stage: Bradley-Terry on preference pairs.
//   mpirun -np N reglage run configs/demo.yaml      (a stage with type: reward_model, usually init_from: sft)
// The model is the shared base (with the init_from stage merged) plus a "reward" LoRA adapter named after the
// stage (or full training) and a scalar head read at each sequence's last token. Loss over the global batch:
// mean of -log sigmoid(r_chosen - r_rejected - margin). Output in run_dir/<stage>/final/: the adapter (PEFT)
// or model directory, reward_head.safetensors, and the lineage that makes it loadable alone.
#include <cmath>

#include "framework/core/error.h"
#include "framework/data/preference_data.h"
#include "framework/io/safetensors.h"
#include "framework/model/heads.h"
#include "trainers/preference_stage.h"
#include "trainers/stage_session.h"

namespace reglage::trainers {

namespace F = torch::nn::functional;

// Scores of both sides of a batch: (chosen, rejected), each (n).
std::pair<torch::Tensor, torch::Tensor> pair_rewards(model::CausalLM& m, model::ScalarHead& head,
                                                     const data::PreferenceBatch& batch,
                                                     const model::AdapterSet& active) {
  auto hidden = m->hidden({batch.ids, {}, batch.valid, nullptr, active});  // (2n, T, D)
  auto r = model::gather_last_valid(head(hidden), batch.valid);            // (2n)
  const int64_t n = r.size(0) / 2;
  return {r.narrow(0, 0, n), r.narrow(0, n, n)};
}

// Bradley-Terry loss summed over pairs: sum -log sigmoid(r_c - r_r - margin).
torch::Tensor bradley_terry_sum(const torch::Tensor& chosen, const torch::Tensor& rejected, const torch::Tensor& margin) {
  return -F::logsigmoid(chosen - rejected - margin).sum();
}

namespace {

struct PairStats {
  double loss = 0, correct = 0, margin = 0, reward_sum = 0, reward_sq = 0, pairs = 0;
  void add(const torch::Tensor& c, const torch::Tensor& r, const torch::Tensor& loss_sum) {
    loss += loss_sum.item<double>();
    correct += (c > r).sum().item<double>();
    margin += (c - r).sum().item<double>();
    reward_sum += (c.sum() + r.sum()).item<double>();
    reward_sq += (c.pow(2).sum() + r.pow(2).sum()).item<double>();
    pairs += double(c.size(0));
  }
  // Sums across ranks (collective).
  void all_reduce(dist::Communicator& comm) {
    all_reduce_fields(comm, {&loss, &correct, &margin, &reward_sum, &reward_sq, &pairs}, "allreduce reward metrics");
  }
  nlohmann::json metrics() const {
    const double n = std::max(pairs, 1.0), mean = reward_sum / (2 * n);
    return {{"loss", loss / n},
            {"accuracy", correct / n},
            {"margin", margin / n},
            {"reward_mean", mean},
            {"reward_std", std::sqrt(std::max(0.0, reward_sq / (2 * n) - mean * mean))}};
  }
};

PairStats evaluate(StageContext& ctx, model::CausalLM& m, model::ScalarHead& head, const data::PreferenceDataset& eval,
                   const model::AdapterSet& active, int64_t batch_size, int64_t pad_id) {
  PairStats stats;
  const int64_t rows = int64_t(eval.pairs.size());
  StageSession::evaluate_in_chunks(m, ctx, rows, batch_size, [&](const std::vector<int64_t>& chunk) {
    auto batch = data::collate_pairs(eval, chunk, pad_id);
    auto [c, r] = pair_rewards(m, head, batch, active);
    stats.add(c, r, bradley_terry_sum(c, r, batch.margin));
  });
  stats.all_reduce(ctx.comm);
  return stats;
}

}  // namespace

void run_reward_model(StageContext& ctx) {
  const auto& st = ctx.stage;

  // ---- setup: model + adapter + head, data, optimizer, resume -------------------------------------
  PreferenceInputs in = load_preference_inputs(ctx);
  auto& m = in.policy.model;
  Trainable trainable = setup_trainable(ctx, m);
  model::ScalarHead head(m->config().dim, ctx.pipeline.seed + 17);
  trainable.params.push_back(head->weight);
  trainable.names.push_back("reward_head.weight");
  trainable.params.push_back(head->bias);
  trainable.names.push_back("reward_head.bias");
  train::AdamW optimizer(trainable.params, trainable.names, adamw_config(st));
  data::DataSampler sampler(int64_t(in.train.pairs.size()), ctx.pipeline.seed);
  TrainState state{trainable.params, trainable.names, optimizer, sampler};
  StageSession session(ctx, in.steps, "step");
  const int64_t start_step = session.resume(state, "training " + std::to_string(in.steps) + " steps on " +
                                                       std::to_string(in.train.pairs.size()) + " pairs, " +
                                                       std::to_string(ctx.comm.size()) + " rank(s)");

  // ---- the loop: Bradley-Terry over this rank's micro-batches, the mean over the global batch ---------
  m->train();
  const int64_t micro = st.batch_size / ctx.comm.size() / st.grad_accum;
  for (int64_t step = start_step; step < in.steps; ++step) {
    const auto b = session.begin_step(step, sampler);
    PairStats stats;
    for (int64_t k = 0; k < st.grad_accum; ++k) {
      auto batch = data::collate_pairs(in.train, b.micro_batch(k, micro), in.pad_id);
      auto [c, r] = pair_rewards(m, head, batch, trainable.active);
      auto loss = bradley_terry_sum(c, r, batch.margin);
      (loss / double(st.batch_size)).backward();
      stats.add(c.detach(), r.detach(), loss.detach());
    }
    const double grad_norm = session.optimizer_step(trainable.params, optimizer, b.lr);
    stats.all_reduce(ctx.comm);
    const int64_t done = step + 1;
    if (!std::isfinite(stats.loss) || !std::isfinite(grad_norm))
      fail("stage '", st.name, "' step ", done, ": loss = ", stats.loss, ", grad norm = ", grad_norm, " (not finite)");
    const auto rec = stats.metrics();
    session.show(done, {{"loss", rec["loss"].get<double>()}, {"accuracy", rec["accuracy"].get<double>()}},
                 pair_tokens(in.train, b.global));
    if (session.log_due(done)) session.record(train_record(rec, done, b.lr, grad_norm, stats.pairs / b.seconds()));
    if (in.eval && session.due(st.eval_every, done)) {
      auto ev = evaluate(ctx, m, head, *in.eval, trainable.active, std::max<int64_t>(micro, 1), in.pad_id).metrics();
      session.record(eval_record(ev, done));
      ctx.log("step " + std::to_string(done) + " eval accuracy " + std::to_string(ev["accuracy"].get<double>()) +
              " loss " + std::to_string(ev["loss"].get<double>()));
    }
    session.maybe_checkpoint(done);
  }
  session.finish();

  // ---- output: adapter or model, and the head ----------------------------------------------------------
  session.publish(in.policy, [&](const std::string& dir) {
    io::write_safetensors(dir + "/reward_head.safetensors", {{"weight", head->weight}, {"bias", head->bias}});
  });
}

}  // namespace reglage::trainers
