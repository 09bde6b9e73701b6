// What the two preference-pair stages (reward_model, dpo) share beyond StageSession: their inputs, the
// token count of a global batch and the shape of their metrics records.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "framework/data/preference_data.h"
#include "trainers/policy_setup.h"

namespace reglage::trainers {

struct PreferenceInputs {
  Policy policy;                                 // the stage's starting point
  data::PreferenceDataset train;                 // `data`
  std::optional<data::PreferenceDataset> eval;   // `eval_data`, when given
  int64_t pad_id = 0;
  int64_t steps = 0;                             // max_steps, or epochs over the pairs
};
// Loads the policy and the pairs (read with stage_data_options) and refuses a micro-step that cannot fit in
// memory (both sides of micro-batch pairs on each rank).
PreferenceInputs load_preference_inputs(const StageContext& ctx);

// Chosen + rejected tokens of the pairs `rows` (a global batch: the same on every rank).
double pair_tokens(const data::PreferenceDataset& data, const std::vector<int64_t>& rows);

// Sums the numbers behind `fields` across ranks, in one collective, in place.
void all_reduce_fields(dist::Communicator& comm, const std::vector<double*>& fields, const std::string& op);

// A train record: the batch's metrics plus step, split "train", lr, grad_norm and pairs_per_s.
nlohmann::json train_record(nlohmann::json metrics, int64_t step, double lr, double grad_norm, double pairs_per_s);
// An eval record: the eval set's metrics plus step and split "eval".
nlohmann::json eval_record(nlohmann::json metrics, int64_t step);

}  // namespace reglage::trainers
