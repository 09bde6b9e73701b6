// The SmolLM2 demo's shipped files (configs/smollm2.yaml, configs/smollm2_success.yaml, data/smollm2/):
//   the pipeline loads, and every data file parses whole with the model's own tokenizer and chat template
//   under each stage's settings (no row skipped, none too long);
//   the success rules accept and reject hand-written answers as the task states it, and GRPO trains on the
//   same rules that `reglage eval --reward configs/smollm2_success.yaml` measures.
// scripts/demo.sh smollm2 runs the pipeline itself (18 min): far too long for the suite.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "framework/config/pipeline_config.h"
#include "framework/config/reward_config.h"
#include "framework/data/preference_data.h"
#include "framework/data/prompt_data.h"
#include "framework/data/sft_data.h"
#include "framework/io/model_io.h"
#include "reward/rules.h"
#include "smollm2_util.h"
#include "test_util.h"

namespace reglage {
namespace {

int64_t lines_of(const std::string& path) {
  std::ifstream in(path);
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) n += line.empty() ? 0 : 1;
  return n;
}

struct InSourceDir {  // the config's paths are relative to the repository root
  std::filesystem::path before = std::filesystem::current_path();
  InSourceDir() { std::filesystem::current_path(REGLAGE_SOURCE_DIR); }
  ~InSourceDir() { std::filesystem::current_path(before); }
};

TEST(Smollm2Demo, ConfigLoadsAndEveryDataFileParsesWhole) {
  InSourceDir here;
  const config::PipelineConfig cfg = config::load_pipeline("configs/smollm2.yaml", {});
  auto tok = io::load_model_tokenizer(cfg.model.path, cfg.model.tokenizer, 49152);
  ASSERT_EQ(cfg.stages.size(), 3u);
  for (const auto& st : cfg.stages) {
    data::SftDataOptions opt;
    opt.chat_template = st.chat_template;
    opt.max_seq_len = st.max_seq_len;
    EXPECT_EQ(st.chat_template, "auto") << st.name;  // the model's own template
    EXPECT_GT(st.max_seq_len, 0) << st.name;
    for (const std::string& path : {st.data, st.eval_data}) {
      if (path.empty()) continue;
      int64_t rows = 0;
      if (st.type == config::StageType::kSft) rows = int64_t(data::load_sft_jsonl(path, *tok, opt).rows.size());
      if (st.type == config::StageType::kRewardModel)
        rows = int64_t(data::load_preference_jsonl(path, *tok, opt).pairs.size());
      if (st.type == config::StageType::kGrpo) rows = int64_t(data::load_prompt_jsonl(path, *tok, opt).rows.size());
      EXPECT_EQ(rows, lines_of(path)) << path;
      EXPECT_GT(rows, 20) << path;
    }
  }
  data::SftDataOptions prompt_opt;
  prompt_opt.max_seq_len = 256;
  EXPECT_EQ(data::load_prompt_jsonl("data/smollm2/heldout_prompts.jsonl", *tok, prompt_opt).rows.size(), 40u);
}

TEST(Smollm2Demo, SuccessRulesFollowTheTaskAndGrpoTrainsOnThem) {
  InSourceDir here;
  const config::RewardSpec success = config::load_reward_file("configs/smollm2_success.yaml");
  const auto pass = [&](const std::string& answer) { return reward::rules_pass(success.rules, {"", answer, ""}); };
  EXPECT_TRUE(pass("- Eat more vegetables\n- Sleep eight hours\n- Walk daily"));
  EXPECT_TRUE(pass("- Eat more vegetables\n- Sleep eight hours\n- Walk daily\n"));      // a final newline
  EXPECT_TRUE(pass("- one two three four five six seven eight\n- a\n- b"));             // 8 words
  EXPECT_FALSE(pass("- one two three four five six seven eight nine\n- a\n- b"));       // 9 words
  EXPECT_FALSE(pass("- a\n- b\n- one two three four five six seven eight nine"));       // 9 words, last line
  EXPECT_FALSE(pass("Here are three tips:\n- a\n- b\n- c"));                             // an introduction
  EXPECT_FALSE(pass("- a\n- b\n- c\nHope this helps!"));                                 // a closing line
  EXPECT_FALSE(pass("- a\n- b"));                                                        // two
  EXPECT_FALSE(pass("- a\n- b\n- c\n- d"));                                              // four
  EXPECT_FALSE(pass("1. a\n2. b\n3. c"));                                                // numbered
  EXPECT_FALSE(pass("* a\n* b\n* c"));                                                   // another marker
  EXPECT_FALSE(pass("- a\n-  \n- c"));                                                   // an empty item
  EXPECT_FALSE(pass("- a\n\n- b\n- c"));                                                 // a blank line

  const config::PipelineConfig cfg = config::load_pipeline("configs/smollm2.yaml", {});
  const config::RewardSpec& grpo_reward = cfg.stages.back().reward;
  ASSERT_EQ(grpo_reward.parts.size(), 2u);
  const config::RewardSpec& rules = grpo_reward.parts[1];
  ASSERT_EQ(rules.rules.size(), success.rules.size());
  for (size_t i = 0; i < rules.rules.size(); ++i) {
    EXPECT_EQ(rules.rules[i].kind, success.rules[i].kind) << i;
    EXPECT_EQ(rules.rules[i].pattern, success.rules[i].pattern) << i;
  }
}

}  // namespace
}  // namespace reglage
