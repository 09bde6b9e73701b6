#include "trainers/preference_stage.h"

namespace reglage::trainers {

double pair_tokens(const data::PreferenceDataset& data, const std::vector<int64_t>& rows) {
  double tokens = 0;
  for (int64_t i : rows) {
    const auto& pair = data.pairs[size_t(i)];
    tokens += double(pair.chosen.size() + pair.rejected.size());
  }
  return tokens;
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
