// config/choices.h: every choice's name parses to its value and back, and other names are refused with the
// list of valid ones (the text of the config's "expected ..." messages).
#include <gtest/gtest.h>

#include "framework/config/choices.h"

namespace reglage::config {
namespace {

// Each table's names, in order; parse(to_string(v)) == v for every row.
template <typename E>
void expect_table(const std::vector<std::string>& names) {
  EXPECT_EQ(choice_names<E>(), names);
  for (const Choice<E>& c : ChoiceTable<E>::entries) {
    E parsed{};
    ASSERT_TRUE(parse_choice(c.name, parsed)) << c.name;
    EXPECT_EQ(parsed, c.value) << c.name;
    EXPECT_STREQ(to_string(c.value), c.name);
  }
}

TEST(ConfigChoices, TablesRoundTrip) {
  expect_table<StageType>({"sft", "reward_model", "ppo", "dpo", "grpo"});
  expect_table<TrainMode>({"lora", "full", "full_freeze_lower"});
  expect_table<Schedule>({"cosine", "linear", "constant"});
  expect_table<KlEstimator>({"k1", "k3"});
  expect_table<LossType>({"sigmoid", "ipo", "cdpo"});
  expect_table<RewardType>({"model", "rules", "http", "sum"});
}

TEST(ConfigChoices, UnknownNameIsRefusedAndListed) {
  KlEstimator k = KlEstimator::kK3;
  EXPECT_FALSE(parse_choice("k2", k));
  EXPECT_FALSE(parse_choice("K1", k));  // names are case-sensitive, as YAML writes them
  EXPECT_FALSE(parse_choice("", k));
  EXPECT_EQ(k, KlEstimator::kK3);       // untouched
  EXPECT_EQ(choice_list<KlEstimator>(), "k1 or k3");
  EXPECT_EQ(choice_list<StageType>(), "sft, reward_model, ppo, dpo or grpo");
}

}  // namespace
}  // namespace reglage::config
