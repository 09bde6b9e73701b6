// The stage-type table and the one definition of the length limits that the pre-run check
// (validate_inputs) and the trainers (stage_data_options) both read data with.
#include <fstream>

#include "framework/data/prompt_data.h"
#include "framework/io/model_io.h"
#include "test_util.h"
#include "trainers/stage_traits.h"

namespace reglage::trainers {
namespace {

using config::StageType;
using test::TempDir;

config::StageConfig stage(config::StageType type, int64_t max_seq_len, int64_t max_new_tokens = 16) {
  config::StageConfig st;
  st.name = "s";
  st.type = type;
  st.max_seq_len = max_seq_len;
  st.ppo.max_new_tokens = max_new_tokens;
  return st;
}

TEST(StageTraits, EveryTypeHasOneRow) {
  for (const char* name : {"sft", "reward_model", "ppo", "dpo", "grpo"}) {
    StageType type{};
    ASSERT_TRUE(config::parse_choice(name, type)) << name;
    EXPECT_EQ(stage_traits(type).type, type) << name;
  }
  EXPECT_EQ(all_stage_traits().size(), config::choice_names<StageType>().size());
  EXPECT_FALSE(stage_traits(StageType::kRewardModel).produces_policy);
  EXPECT_TRUE(stage_traits(StageType::kDpo).produces_policy);
  EXPECT_TRUE(stage_traits(StageType::kPpo).takes_prompts());
  EXPECT_TRUE(stage_traits(StageType::kGrpo).takes_prompts());
  EXPECT_FALSE(stage_traits(StageType::kSft).takes_prompts());
}

// Prompts leave room for the response inside min(max_seq_len, context); rows may use max_seq_len whole.
TEST(StageTraits, PromptLimitIsTheSmallerLengthLessTheResponse) {
  EXPECT_EQ(stage_data_options(stage(StageType::kPpo, 100, 64), 256).max_seq_len, 36);
  EXPECT_EQ(stage_data_options(stage(StageType::kGrpo, 0, 64), 256).max_seq_len, 192);
  EXPECT_EQ(stage_data_options(stage(StageType::kPpo, 512, 64), 256).max_seq_len, 192);
  EXPECT_EQ(stage_data_options(stage(StageType::kSft, 100), 256).max_seq_len, 100);
  EXPECT_EQ(stage_data_options(stage(StageType::kDpo, 0), 256).max_seq_len, 256);

  const auto no_room = data_limit_problem(stage(StageType::kPpo, 64, 64), 256);
  ASSERT_TRUE(no_room.has_value());
  EXPECT_EQ(no_room->field, "max_new_tokens");
  const auto too_long = data_limit_problem(stage(StageType::kSft, 300), 256);
  ASSERT_TRUE(too_long.has_value());
  EXPECT_EQ(too_long->field, "max_seq_len");
  EXPECT_EQ(too_long->message, "300 exceeds the model's context of 256");
  try {
    stage_data_options(stage(StageType::kRewardModel, 300), 256);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "stage 's': max_seq_len = 300 exceeds the model's context of 256");
  }
}

// A prompt that fits max_seq_len but not with max_new_tokens after it: the pre-run check refuses it, and
// with skip_bad_rows the trainer's reading drops it (it kept it once, with a limit of plain max_seq_len).
TEST(StageTraits, PreRunCheckAndTrainerAgreeOnPrompts) {
  TempDir tmp;
  const auto tok = io::load_model_tokenizer(test::model_260k(), "", 512);
  const std::string long_prompt = "Once upon a time there was a little girl who liked to play in the park with her dog";
  const int64_t long_tokens = int64_t(tok->encode(long_prompt, true, false).size());  // BOS + its tokens
  const std::string path = tmp.path("prompts.jsonl");
  std::ofstream(path) << "{\"prompt\": \"Hi\"}\n"
                      << "{\"prompt\": \"" << long_prompt << "\"}\n";
  auto st = stage(StageType::kPpo, long_tokens + 4, 8);  // room for prompts: long_tokens - 4
  st.data = path;

  std::vector<config::ConfigProblem> problems;
  validate_inputs(st, "stages[2].", 256, *tok, problems);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].key, "stages[2].data");

  st.skip_bad_rows = true;
  problems.clear();
  validate_inputs(st, "stages[2].", 256, *tok, problems);
  EXPECT_TRUE(problems.empty());
  const auto kept = data::load_prompt_jsonl(path, *tok, stage_data_options(st, 256));  // as the trainer reads it
  ASSERT_EQ(kept.rows.size(), 1u);
  EXPECT_EQ(kept.rows[0].text, "Hi");
}

// A max_seq_len over the context is one located problem; the files are not judged against it.
TEST(StageTraits, LimitProblemsAreLocated) {
  const auto tok = io::load_model_tokenizer(test::model_260k(), "", 512);
  std::vector<config::ConfigProblem> problems;
  validate_inputs(stage(StageType::kSft, 300), "stages[0].", 256, *tok, problems);
  validate_inputs(stage(StageType::kGrpo, 0, 256), "stages[1].", 256, *tok, problems);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].key, "stages[0].max_seq_len");
  EXPECT_EQ(problems[1].key, "stages[1].max_new_tokens");
}

}  // namespace
}  // namespace reglage::trainers
