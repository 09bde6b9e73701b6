// DPO stage: direct preference optimisation on preference pairs, no reward model, no rollouts.
//   mpirun -np N reglage run configs/demo_dpo.yaml      (a stage with type: dpo, usually init_from: sft)
// The policy is the shared base (with the init_from stage merged) plus a LoRA adapter named after the stage;
// the reference policy is the same model with the adapter off, so there is no second model. For each batch
// the reference log-probabilities of both responses are computed first (no grad), then the policy's; the
// loss (sigmoid | ipo | cdpo, framework/rl/preference_math.h) is averaged over the global batch. Output in
// run_dir/<stage>/final/: the adapter (PEFT) and the lineage, loadable like an sft stage's.
#include <cmath>
#include <tuple>

#include "framework/core/error.h"
#include "framework/data/preference_data.h"
#include "framework/rl/preference_math.h"
#include "trainers/preference_stage.h"
#include "trainers/stage_session.h"

namespace reglage::trainers {

namespace {

// Summed response log-probabilities of both sides of a batch under `active`: (chosen, rejected), each (n).
std::pair<torch::Tensor, torch::Tensor> pair_logprobs(model::CausalLM& m, const data::PreferenceBatch& batch,
                                                      const model::AdapterSet& active) {
  // (2n, T) token log-probs, 0 off the responses, summed per row: (2n); no (2n, T, V) logits held
  auto lp = m->token_logprobs({batch.ids, {}, batch.valid, nullptr, active}, batch.targets).sum(-1);
  const int64_t n = lp.size(0) / 2;
  return {lp.narrow(0, 0, n), lp.narrow(0, n, n)};
}

// A batch's loss per pair (with the RPO term when rpo_alpha > 0) and what the stage logs about it.
struct BatchLoss {
  rl::DpoResult dpo;  // loss (n): the DPO-family loss plus rpo_alpha x chosen_nll
  torch::Tensor chosen_nll;  // (n) per-token NLL of the chosen response under the policy, no graph
};

// Sums over pairs of the quantities the stage logs, all-reduced across ranks.
struct DpoStats {
  double loss = 0, correct = 0, chosen = 0, rejected = 0, nll = 0, pairs = 0;
  void add(const BatchLoss& b) {
    const rl::DpoResult& r = b.dpo;
    nll += b.chosen_nll.sum().item<double>();
    loss += r.loss.detach().sum().item<double>();
    correct += (r.chosen_reward > r.rejected_reward).sum().item<double>();
    chosen += r.chosen_reward.sum().item<double>();
    rejected += r.rejected_reward.sum().item<double>();
    pairs += double(r.loss.size(0));
  }
  void all_reduce(dist::Communicator& comm) {
    all_reduce_fields(comm, {&loss, &correct, &chosen, &rejected, &nll, &pairs}, "allreduce dpo metrics");
  }
  nlohmann::json metrics() const {
    const double n = std::max(pairs, 1.0);
    return {{"loss", loss / n},
            {"accuracy", correct / n},
            {"chosen_reward", chosen / n},
            {"rejected_reward", rejected / n},
            {"margin", (chosen - rejected) / n},
            {"chosen_nll", nll / n}};
  }
};

// The loss and its statistics for one batch: reference first (adapter off, no grad), then the policy.
BatchLoss batch_loss(model::CausalLM& m, const data::PreferenceBatch& batch, const model::AdapterSet& active,
                     const config::DpoSettings& o) {
  torch::Tensor ref_c, ref_r;
  {
    torch::NoGradGuard no_grad;
    std::tie(ref_c, ref_r) = pair_logprobs(m, batch, {});
  }
  auto [pi_c, pi_r] = pair_logprobs(m, batch, active);
  BatchLoss out{rl::dpo_loss(pi_c, pi_r, ref_c, ref_r, o.beta, o.loss, o.label_smoothing), {}};
  const int64_t n = pi_c.size(0);
  auto chosen_tokens = batch.targets.narrow(0, 0, n).ne(-100).sum(1);  // (n)
  auto nll = rl::chosen_nll(pi_c, chosen_tokens);                     // (n)
  if (o.rpo_alpha > 0) out.dpo.loss = out.dpo.loss + o.rpo_alpha * nll;
  out.chosen_nll = nll.detach();
  return out;
}

DpoStats evaluate(StageContext& ctx, model::CausalLM& m, const data::PreferenceDataset& eval,
                  const model::AdapterSet& active, int64_t batch_size, int64_t pad_id) {
  DpoStats stats;
  const int64_t rows = int64_t(eval.pairs.size());
  StageSession::evaluate_in_chunks(m, ctx, rows, batch_size, [&](const std::vector<int64_t>& chunk) {
    stats.add(batch_loss(m, data::collate_pairs(eval, chunk, pad_id), active, ctx.stage.dpo));
  });
  stats.all_reduce(ctx.comm);
  return stats;
}

}  // namespace

void run_dpo(StageContext& ctx) {
  const auto& st = ctx.stage;
  const int world = ctx.comm.size();

  // ---- setup: model + adapter (validated: train: lora), data, optimizer, resume -----------------------
  PreferenceInputs in = load_preference_inputs(ctx);
  auto& m = in.policy.model;
  StageSession session(ctx, in.steps, "step");
  Trainable trainable = setup_trainable(ctx, m);
  train::AdamW optimizer(trainable.params, trainable.names, adamw_config(st));
  data::DataSampler sampler(int64_t(in.train.pairs.size()), ctx.pipeline.seed);
  TrainState state{trainable.params, trainable.names, optimizer, sampler};
  const std::string loss_name = config::to_string(st.dpo.loss);
  const int64_t start_step = session.resume(
      state, "dpo (" + loss_name + ", beta " + std::to_string(st.dpo.beta) + "): " + std::to_string(in.steps) +
                 " steps on " + std::to_string(in.train.pairs.size()) + " pairs, " + std::to_string(world) +
                 " rank(s)");

  // ---- the loop: reference then policy log-probs per micro-batch, the loss averaged over the global batch
  m->train();
  const int64_t micro = st.batch_size / world / st.grad_accum;
  for (int64_t step = start_step; step < in.steps; ++step) {
    const auto b = session.begin_step(step, sampler);
    DpoStats stats;
    for (int64_t k = 0; k < st.grad_accum; ++k) {
      auto r = batch_loss(m, data::collate_pairs(in.train, b.micro_batch(k, micro), in.pad_id), trainable.active,
                          st.dpo);
      (r.dpo.loss.sum() / double(st.batch_size)).backward();
      stats.add(r);
    }
    const double grad_norm = session.optimizer_step(trainable.params, optimizer, b.lr);
    stats.all_reduce(ctx.comm);
    const int64_t done = step + 1;
    if (!std::isfinite(stats.loss) || !std::isfinite(grad_norm))
      fail("stage '", st.name, "' step ", done, ": loss = ", stats.loss, ", grad norm = ", grad_norm, " (not finite)");
    auto rec = stats.metrics();
    // tokens: chosen + rejected over the global batch; each is run twice (reference, policy)
    session.show(done,
                 {{"loss", rec["loss"].get<double>()}, {"accuracy", rec["accuracy"].get<double>()},
                  {"margin", rec["margin"].get<double>()}},
                 pair_tokens(in.train, b.global));
    if (session.log_due(done)) session.record(train_record(rec, done, b.lr, grad_norm, stats.pairs / b.seconds()));
    if (in.eval && session.due(st.eval_every, done)) {
      auto ev = evaluate(ctx, m, *in.eval, trainable.active, std::max<int64_t>(micro, 1), in.pad_id).metrics();
      session.record(eval_record(ev, done));
      ctx.log("step " + std::to_string(done) + " eval accuracy " + std::to_string(ev["accuracy"].get<double>()) +
              " margin " + std::to_string(ev["margin"].get<double>()) + " loss " +
              std::to_string(ev["loss"].get<double>()));
    }
    session.maybe_checkpoint(done);
  }
  session.finish();

  // ---- output: the adapter (PEFT), loadable like an sft stage's ------------------------------------
  session.publish(in.policy);
}

}  // namespace reglage::trainers
