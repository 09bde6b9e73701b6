// The stage-type table and the one definition of the length limits that the pre-run check
// (validate_inputs) and the trainers (stage_data_options) both read data with.
#include <fstream>

#include "framework/data/prompt_data.h"
#include "test_util.h"
#include "trainers/stage_traits.h"

namespace reglage::trainers {
namespace {

using test::TempDir;

// One token per byte (id = byte + 3), BOS 1, EOS 2: prompt lengths can be counted by hand.
class ByteTokenizer : public tokenizer::Tokenizer {
 public:
  ByteTokenizer() {
    bos_id_ = 1;
    add_bos_ = true;
    eos_id_ = 2;
  }
  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const override {
    std::vector<int64_t> ids;
    if (add_bos) ids.push_back(bos_id_);
    for (unsigned char c : text) ids.push_back(int64_t(c) + 3);
    if (add_eos) ids.push_back(eos_id_);
    return ids;
  }
  std::string decode_piece(int64_t, int64_t token) const override {
    return token >= 3 ? std::string(1, char(token - 3)) : std::string();
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string s;
    for (auto id : ids) s += decode_piece(0, id);
    return s;
  }
  int64_t vocab_size() const override { return 259; }
  void save_hf(const std::string&) const override {}
};

config::StageConfig stage(const std::string& type, int64_t max_seq_len, int64_t max_new_tokens = 16) {
  config::StageConfig st;
  st.name = "s";
  st.type = type;
  st.max_seq_len = max_seq_len;
  st.ppo.max_new_tokens = max_new_tokens;
  return st;
}

TEST(StageTraits, EveryTypeHasOneRow) {
  for (const char* type : {"sft", "reward_model", "ppo", "dpo", "grpo"}) EXPECT_EQ(stage_traits(type).type, type);
  EXPECT_FALSE(stage_traits("reward_model").produces_policy);
  EXPECT_TRUE(stage_traits("dpo").produces_policy);
  EXPECT_TRUE(stage_traits("ppo").takes_prompts());
  EXPECT_TRUE(stage_traits("grpo").takes_prompts());
  EXPECT_FALSE(stage_traits("sft").takes_prompts());
  EXPECT_THROW(stage_traits("rlhf"), Error);
}

// Prompts leave room for the response inside min(max_seq_len, context); rows may use max_seq_len whole.
TEST(StageTraits, PromptLimitIsTheSmallerLengthLessTheResponse) {
  EXPECT_EQ(stage_data_options(stage("ppo", 100, 64), 256).max_seq_len, 36);
  EXPECT_EQ(stage_data_options(stage("grpo", 0, 64), 256).max_seq_len, 192);
  EXPECT_EQ(stage_data_options(stage("ppo", 512, 64), 256).max_seq_len, 192);
  EXPECT_EQ(stage_data_options(stage("sft", 100), 256).max_seq_len, 100);
  EXPECT_EQ(stage_data_options(stage("dpo", 0), 256).max_seq_len, 256);

  const auto no_room = data_limit_problem(stage("ppo", 64, 64), 256);
  ASSERT_TRUE(no_room.has_value());
  EXPECT_EQ(no_room->field, "max_new_tokens");
  const auto too_long = data_limit_problem(stage("sft", 300), 256);
  ASSERT_TRUE(too_long.has_value());
  EXPECT_EQ(too_long->field, "max_seq_len");
  EXPECT_EQ(too_long->message, "300 exceeds the model's context of 256");
  try {
    stage_data_options(stage("reward_model", 300), 256);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "stage 's': max_seq_len = 300 exceeds the model's context of 256");
  }
}

// A prompt that fits max_seq_len but not with max_new_tokens after it: the pre-run check refuses it, and
// with skip_bad_rows the trainer's reading drops it (it kept it once, with a limit of plain max_seq_len).
TEST(StageTraits, PreRunCheckAndTrainerAgreeOnPrompts) {
  TempDir tmp;
  const std::string path = tmp.path("prompts.jsonl");
  std::ofstream(path) << "{\"prompt\": \"short\"}\n"
                      << "{\"prompt\": \"" << std::string(30, 'x') << "\"}\n";  // BOS + 30 tokens
  ByteTokenizer tok;
  auto st = stage("ppo", 40, 16);  // room for prompts: 40 - 16 = 24 tokens
  st.data = path;

  std::vector<config::ConfigProblem> problems;
  validate_inputs(st, "stages[2].", 256, tok, problems);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].key, "stages[2].data");

  st.skip_bad_rows = true;
  problems.clear();
  validate_inputs(st, "stages[2].", 256, tok, problems);
  EXPECT_TRUE(problems.empty());
  const auto kept = data::load_prompt_jsonl(path, tok, stage_data_options(st, 256));  // as the trainer reads it
  ASSERT_EQ(kept.rows.size(), 1u);
  EXPECT_EQ(kept.rows[0].text, "short");
}

// A max_seq_len over the context is one located problem; the files are not judged against it.
TEST(StageTraits, LimitProblemsAreLocated) {
  ByteTokenizer tok;
  std::vector<config::ConfigProblem> problems;
  validate_inputs(stage("sft", 300), "stages[0].", 256, tok, problems);
  validate_inputs(stage("grpo", 0, 256), "stages[1].", 256, tok, problems);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].key, "stages[0].max_seq_len");
  EXPECT_EQ(problems[1].key, "stages[1].max_new_tokens");
}

}  // namespace
}  // namespace reglage::trainers
