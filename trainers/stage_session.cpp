#include "trainers/stage_session.h"

#include <filesystem>
#include <iostream>

#include "framework/checkpoint/manifest.h"
#include "framework/core/error.h"
#include "framework/core/progress.h"
#include "framework/data/sft_data.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"

namespace reglage::trainers {

StageSession::StageSession(StageContext& ctx, int64_t total, std::string unit)
    : ctx_(ctx), total_(total), unit_(std::move(unit)) {}

int64_t StageSession::resume(TrainState& state, const std::string& fresh_message) {
  // Dropout draws from the default generator: a distinct, seeded stream per rank.
  torch::manual_seed(ctx_.pipeline.seed * 1000003ULL + uint64_t(ctx_.comm.rank()));
  state_ = &state;
  if (auto step = load_latest_checkpoint(ctx_, state)) start_ = *step;
  // Every rank starts from rank 0's weights (fresh: the same seeded init; resumed: the same files).
  dist::broadcast_tensors(ctx_.comm, state.params, 0, "broadcast weights");
  if (ctx_.is_root()) log_ = metrics::MetricsLog(ctx_.metrics_path(), start_);
  ctx_.log(start_ > 0 ? "resuming at " + unit_ + " " + std::to_string(start_) + " of " + std::to_string(total_)
                      : fresh_message);
  core::progress_stage(ctx_.stage.name, total_);
  core::progress_step(start_);
  progress_ = std::make_unique<metrics::ProgressLine>(ctx_.stage.name, unit_, total_, start_, ctx_.progress_mode(),
                                                      std::cout);
  return start_;
}

StageSession::Step StageSession::begin_step(int64_t step, data::DataSampler& sampler) const {
  const auto& st = ctx_.stage;
  Step s;
  s.start = std::chrono::steady_clock::now();
  s.lr = train::scheduled_lr(step, total_, st.lr, st.warmup_steps, st.schedule, st.min_lr_ratio);
  s.global = sampler.next_global_batch(st.batch_size);
  s.mine = data::shard(s.global, ctx_.comm.rank(), ctx_.comm.size());
  return s;
}

double StageSession::Step::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double StageSession::optimizer_step(const std::vector<torch::Tensor>& params, train::AdamW& optimizer, double lr) {
  dist::all_reduce_gradients(ctx_.comm, params);  // sync point: every rank's gradients summed
  const double grad_norm = train::clip_grad_norm(params, ctx_.stage.max_grad_norm);
  optimizer.step(lr);
  optimizer.zero_grad();
  return grad_norm;
}

void StageSession::show(int64_t done, std::vector<std::pair<std::string, double>> values, double tokens) {
  core::progress_step(done);
  progress_->update(done, std::move(values), tokens, log_due(done));
}

void StageSession::record(const nlohmann::json& rec) {
  if (ctx_.is_root()) log_.write(rec);  // rank 0 only
}

void StageSession::maybe_checkpoint(int64_t done) {
  if (due(ctx_.stage.checkpoint_every, done)) save_checkpoint(ctx_, *state_, done);
}

void StageSession::finish() { progress_->finish(); }

void StageSession::evaluate_in_chunks(model::CausalLM& m, const StageContext& ctx, int64_t rows, int64_t batch_size,
                                      const std::function<void(const std::vector<int64_t>&)>& chunk) {
  torch::NoGradGuard no_grad;
  m->eval();
  std::vector<int64_t> all(static_cast<size_t>(rows));
  for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
  const auto mine = data::shard(all, ctx.comm.rank(), ctx.comm.size());
  for (size_t start = 0; start < mine.size(); start += size_t(batch_size))
    chunk(std::vector<int64_t>(mine.begin() + start, mine.begin() + std::min(mine.size(), start + batch_size)));
  m->train();
}

void StageSession::publish(Policy& policy, const std::function<void(const std::string&)>& extra) {
  auto& m = policy.model;
  publish_final(ctx_, policy.lineage, [&](const std::string& dir) {
    if (lora::has_adapter(m, ctx_.stage.name)) lora::save_peft(m, ctx_.stage.name, dir, policy.lineage.base_model);
    else io::save_hf(m, dir, policy.tok.get());
    if (extra) extra(dir);
  });
}

}  // namespace reglage::trainers
