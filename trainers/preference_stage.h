// What the two preference-pair stages (reward_model, dpo) share beyond StageSession: the token count of a
// global batch and the shape of their metrics records.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "framework/data/preference_data.h"

namespace reglage::trainers {

// Chosen + rejected tokens of the pairs `rows` (a global batch: the same on every rank).
double pair_tokens(const data::PreferenceDataset& data, const std::vector<int64_t>& rows);

// A train record: the batch's metrics plus step, split "train", lr, grad_norm and pairs_per_s.
nlohmann::json train_record(nlohmann::json metrics, int64_t step, double lr, double grad_norm, double pairs_per_s);
// An eval record: the eval set's metrics plus step and split "eval".
nlohmann::json eval_record(nlohmann::json metrics, int64_t step);

}  // namespace reglage::trainers
