// The bookkeeping every stage trainer shares, held by composition (a trainer owns a StageSession; nothing
// derives from it): seeding, resume and the broadcast of the weights, the metrics log (rank 0), the progress
// line, the eval/checkpoint cadence, chunked evaluation and publishing the output. A trainer keeps its own
// loop and calls the session at fixed points:
//   StageSession session(ctx, steps, "step");
//   const int64_t start = session.resume(state, "training ...");   // after setup: seed, restore, broadcast
//   for (int64_t step = start; step < steps; ++step) {
//     ... forward, backward, session.optimizer_step(...) ...
//     session.show(done, {{"loss", loss}}, tokens);                // progress line, core::progress_step
//     if (session.log_due(done)) session.record({...});            // rank 0 writes metrics.jsonl
//     if (eval && session.due(st.eval_every, done)) ...
//     session.maybe_checkpoint(done);
//   }
//   session.publish(policy);
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "framework/data/sft_data.h"
#include "framework/metrics/metrics_log.h"
#include "framework/metrics/progress_line.h"
#include "framework/train/adamw.h"
#include "trainers/policy_setup.h"
#include "trainers/train_state.h"

namespace reglage::trainers {

class StageSession {
 public:
  // total: the stage's steps (or iterations); unit: "step" or "iteration", for messages and the progress line.
  StageSession(StageContext& ctx, int64_t total, std::string unit);

  // Call once, after all setup. Seeds this rank's default generator (dropout: a distinct stream per rank),
  // restores the newest valid checkpoint into `state` (which stays the state maybe_checkpoint saves),
  // gives every rank rank 0's trainable tensors (fresh: the same seeded init; resumed: the same files),
  // opens the metrics log on rank 0 (dropping lines past the checkpoint), prints `fresh_message` or the
  // resume line, and starts the progress line. Returns the number of steps already done.
  int64_t resume(TrainState& state, const std::string& fresh_message);
  bool resumed() const { return start_ > 0; }

  // Every `every` steps and at the last one; every <= 0: the last one only.
  bool due(int64_t every, int64_t done) const { return (every > 0 && done % every == 0) || done == total_; }
  // A step the trainer logs: every log_every steps and the last.
  bool log_due(int64_t done) const { return done % ctx_.stage.log_every == 0 || done == total_; }

  // The start of step `step` (0-based) of a supervised stage: its learning rate (lr, warmup_steps, schedule),
  // the sampler's next global batch and this rank's shard of it.
  struct Step {
    std::chrono::steady_clock::time_point start;
    double lr = 0;
    std::vector<int64_t> global;  // (batch_size) row indices, the same on every rank
    std::vector<int64_t> mine;    // (batch_size / world) this rank's rows
    // Micro-batch k of grad_accum, `micro` rows of mine.
    std::vector<int64_t> micro_batch(int64_t k, int64_t micro) const {
      return std::vector<int64_t>(mine.begin() + k * micro, mine.begin() + (k + 1) * micro);
    }
    double seconds() const;  // since start
  };
  Step begin_step(int64_t step, data::DataSampler& sampler) const;

  // Sums the gradients of `params` over ranks (sync point), clips them to max_grad_norm, steps the
  // optimizer at `lr` and zeroes the gradients. Returns the norm before clipping.
  double optimizer_step(const std::vector<torch::Tensor>& params, train::AdamW& optimizer, double lr);

  // Reports step `done` (core::progress_step, for the launcher's heartbeat) and redraws the progress line.
  void show(int64_t done, std::vector<std::pair<std::string, double>> values, double tokens);
  // Writes one metrics record; rank 0 only (other ranks ignore it).
  void record(const nlohmann::json& rec);
  // Saves a checkpoint when checkpoint_every says so (and at the last step); collective.
  void maybe_checkpoint(int64_t done);
  // Ends the progress line.
  void finish();

  // Runs `chunk` over this rank's shard of rows 0..rows-1 in chunks of batch_size, in eval mode without
  // gradients, and puts the model back in train mode. The caller all-reduces what it summed.
  static void evaluate_in_chunks(model::CausalLM& m, const StageContext& ctx, int64_t rows, int64_t batch_size,
                                 const std::function<void(const std::vector<int64_t>&)>& chunk);

  // The stage output: the adapter named after the stage in PEFT format when the stage trained one (train:
  // lora, and every ppo, dpo and grpo stage), else the whole model as a Hugging Face directory; then what
  // `extra` writes into the same directory. Published whole as final/ (publish_final); collective.
  void publish(Policy& policy, const std::function<void(const std::string&)>& extra = {});

 private:
  StageContext& ctx_;
  int64_t total_;
  std::string unit_;
  int64_t start_ = 0;
  TrainState* state_ = nullptr;
  metrics::MetricsLog log_;
  std::unique_ptr<metrics::ProgressLine> progress_;
};

}  // namespace reglage::trainers
