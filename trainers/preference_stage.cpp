#include "trainers/preference_stage.h"

#include <algorithm>

#include "trainers/stage_traits.h"

namespace reglage::trainers {

PreferenceInputs load_preference_inputs(const StageContext& ctx) {
  const auto& st = ctx.stage;
  PreferenceInputs in;
  in.policy = load_policy(ctx);
  const auto opt = stage_data_options(st, in.policy.model->config().max_seq_len);
  in.train = data::load_preference_jsonl(st.data, *in.policy.tok, opt);
  if (!st.eval_data.empty()) in.eval = data::load_preference_jsonl(st.eval_data, *in.policy.tok, opt);
  in.pad_id = std::max<int64_t>(in.policy.tok->eos_id(), 0);
  in.steps = total_steps(st, int64_t(in.train.pairs.size()));
  const int64_t micro = st.batch_size / ctx.comm.size() / st.grad_accum;
  check_step_memory(ctx, in.policy.model->config(), 2 * micro, longest_sequence(in.train));
  return in;
}

double pair_tokens(const data::PreferenceDataset& data, const std::vector<int64_t>& rows) {
  double tokens = 0;
  for (int64_t i : rows) {
    const auto& pair = data.pairs[size_t(i)];
    tokens += double(pair.chosen.size() + pair.rejected.size());
  }
  return tokens;
}

void all_reduce_fields(dist::Communicator& comm, const std::vector<double*>& fields, const std::string& op) {
  std::vector<double> values;
  for (const double* f : fields) values.push_back(*f);
  auto t = torch::tensor(values, torch::kFloat64);
  comm.all_reduce_sum(t, op);
  for (size_t i = 0; i < fields.size(); ++i) *fields[i] = t[int64_t(i)].item<double>();
}

nlohmann::json train_record(nlohmann::json metrics, int64_t step, double lr, double grad_norm, double pairs_per_s) {
  metrics["step"] = step;
  metrics["split"] = "train";
  metrics["lr"] = lr;
  metrics["grad_norm"] = grad_norm;
  metrics["pairs_per_s"] = pairs_per_s;
  return metrics;
}

nlohmann::json eval_record(nlohmann::json metrics, int64_t step) {
  metrics["step"] = step;
  metrics["split"] = "eval";
  return metrics;
}

}  // namespace reglage::trainers
