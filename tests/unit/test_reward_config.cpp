// The `reward:` section and the ppo keys of a pipeline: parsing into RewardSpec / PpoSettings, every mistake
// located and named, reward files of their own, and the factory that builds a RewardSource from a spec.
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "framework/config/config_error.h"
#include "framework/config/pipeline_config.h"
#include "framework/config/reward_config.h"
#include "reward/combine.h"
#include "reward/reward_factory.h"
#include "test_util.h"

namespace reglage::config {
namespace {

using test::TempDir;

std::string write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  return path;
}

// sft -> rm (reward_model) -> ppo; the ppo stage's lines start at line 18, its extra lines at line 23.
struct PpoConfigDir {
  TempDir tmp;
  std::string data = write_text(tmp.path("train.jsonl"), "{\"text\": \"hi\"}\n");

  std::string write(const std::string& ppo_extra, const std::string& rm_type = "reward_model") {
    const std::string text = "run_dir: " + tmp.path("run") + "\n"   // 1
                             "model:\n"                              // 2
                             "  path: " + test::model_260k() + "\n"  // 3
                             "stages:\n"                             // 4
                             "  - name: sft\n"                       // 5
                             "    type: sft\n"                       // 6
                             "    data: " + data + "\n"              // 7
                             "    max_steps: 10\n"                   // 8
                             "    batch_size: 4\n"                   // 9
                             "  - name: rm\n"                        // 10
                             "    type: " + rm_type + "\n"           // 11
                             "    data: " + data + "\n"              // 12
                             "    init_from: sft\n"                  // 13
                             "    max_steps: 10\n"                   // 14
                             "    batch_size: 4\n"                   // 15
                             "    lr: 0.001\n"                       // 16
                             "    eval_every: 0\n"                   // 17
                             "  - name: ppo\n"                       // 18
                             "    type: ppo\n"                       // 19
                             "    data: " + data + "\n"              // 20
                             "    init_from: sft\n"                  // 21
                             "    max_iterations: 5\n"               // 22
                             + ppo_extra;
    return write_text(tmp.path("c.yaml"), text);
  }
};

std::vector<ConfigProblem> problems_of(const std::string& path, int world_size = 1) {
  try {
    load_pipeline(path, {}, world_size);
  } catch (const ConfigError& e) {
    return e.problems();
  }
  ADD_FAILURE() << "no ConfigError for " << path;
  return {};
}

std::string dump(const std::vector<ConfigProblem>& problems) {
  std::string out;
  for (const ConfigProblem& p : problems)
    out += std::to_string(p.line) + ":" + std::to_string(p.column) + " " + p.key + ": " + p.message + "\n";
  return out;
}

void expect_problem(const std::vector<ConfigProblem>& problems, const std::string& key, int line,
                    const std::string& text) {
  for (const ConfigProblem& p : problems) {
    if (p.key != key) continue;
    EXPECT_EQ(p.line, line) << dump(problems);
    EXPECT_NE(p.message.find(text), std::string::npos) << dump(problems);
    return;
  }
  ADD_FAILURE() << "no problem on " << key << " among:\n" << dump(problems);
}

const std::string kSumReward =
    "    reward:\n"                                                          // 23
    "      type: sum\n"                                                      // 24
    "      normalize: true\n"                                                // 25
    "      clip: 4\n"                                                        // 26
    "      parts:\n"                                                         // 27
    "        - {weight: 1.5, type: model, stage: rm, batch_size: 8}\n"       // 28
    "        - weight: 0.5\n"                                                // 29
    "          type: rules\n"                                                // 30
    "          rules:\n"                                                     // 31
    "            - {principle: names the hero, kind: exact_reference, weight: 2}\n"  // 32
    "            - {kind: regex, pattern: '^Once', weight: 0.25}\n"         // 33
    "            - {kind: excludes, words: [Lily, Kitty], case_sensitive: false}\n"  // 34
    "            - {kind: length, min_chars: 20, max_chars: 400, penalty_per_char: 0.01}\n"  // 35
    "        - {weight: -1, type: http, url: 'http://127.0.0.1:9/score', timeout_s: 2, retries: 1, token_env: RM_TOKEN}\n";  // 36

TEST(RewardConfig, PpoStageWithSumRewardParses) {
  PpoConfigDir dir;
  const PipelineConfig c = load_pipeline(dir.write(kSumReward + "    kl_coef: 0.1\n    kl_estimator: k3\n"
                                                                "    rollout_batch_size: 8\n    minibatch_size: 4\n"),
                                         {}, 2);
  ASSERT_EQ(c.stages.size(), 3u);
  const StageConfig& s = c.stages[2];
  EXPECT_EQ(s.type, StageType::kPpo);
  EXPECT_EQ(s.ppo.max_iterations, 5);
  EXPECT_EQ(s.ppo.kl_coef, 0.1);
  EXPECT_EQ(s.ppo.kl_estimator, KlEstimator::kK3);
  EXPECT_EQ(s.ppo.rollout_batch_size, 8);
  EXPECT_EQ(s.ppo.minibatch_size, 4);
  EXPECT_EQ(s.ppo.gamma, 1.0);  // defaults
  EXPECT_EQ(s.ppo.clip_range, 0.2);
  const RewardSpec& r = s.reward;
  EXPECT_EQ(r.type, RewardType::kSum);
  EXPECT_TRUE(r.normalize);
  EXPECT_EQ(r.clip, 4.0);
  ASSERT_EQ(r.parts.size(), 3u);
  EXPECT_EQ(r.parts[0].type, RewardType::kModel);
  EXPECT_EQ(r.parts[0].weight, 1.5);
  EXPECT_EQ(r.parts[0].stage, "rm");
  EXPECT_EQ(r.parts[0].batch_size, 8);
  ASSERT_EQ(r.parts[1].rules.size(), 4u);
  EXPECT_EQ(r.parts[1].weight, 0.5);
  EXPECT_EQ(r.parts[1].rules[0].principle, "names the hero");
  EXPECT_EQ(r.parts[1].rules[0].kind, "exact_reference");
  EXPECT_EQ(r.parts[1].rules[0].weight, 2.0);
  EXPECT_EQ(r.parts[1].rules[1].pattern, "^Once");
  EXPECT_EQ(r.parts[1].rules[2].words, (std::vector<std::string>{"Lily", "Kitty"}));
  EXPECT_FALSE(r.parts[1].rules[2].case_sensitive);
  EXPECT_EQ(r.parts[1].rules[3].max_chars, 400);
  EXPECT_EQ(r.parts[1].rules[3].penalty_per_char, 0.01);
  EXPECT_EQ(r.parts[2].http.url, "http://127.0.0.1:9/score");
  EXPECT_EQ(r.parts[2].http.timeout_s, 2.0);
  EXPECT_EQ(r.parts[2].http.retries, 1);
  EXPECT_EQ(r.parts[2].token_env, "RM_TOKEN");
  EXPECT_EQ(describe_reward(r),
            "sum of (1.5 * model stage rm, 0.5 * rules (4 checks), -1 * http http://127.0.0.1:9/score), normalized, "
            "clipped to +-4");

  // The reward and the ppo settings are part of the stage's identity, and of config.yaml.
  const std::string yaml = to_yaml(c);
  EXPECT_NE(yaml.find("kl_estimator: k3"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("pattern: ^Once"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("token_env: RM_TOKEN"), std::string::npos) << yaml;
  PipelineConfig changed = c;
  changed.stages[2].reward.parts[1].rules[0].weight = 3;
  EXPECT_NE(stage_yaml(c, c.stages[2]), stage_yaml(changed, changed.stages[2]));
  changed = c;
  changed.stages[2].ppo.kl_coef = 0.2;
  EXPECT_NE(stage_yaml(c, c.stages[2]), stage_yaml(changed, changed.stages[2]));
  // Other stages' identity does not depend on the ppo settings.
  EXPECT_EQ(stage_yaml(c, c.stages[0]), stage_yaml(changed, changed.stages[0]));
  // config.yaml reads back as the same pipeline.
  const std::string again = write_text(dir.tmp.path("again.yaml"), yaml);
  const PipelineConfig reread = load_pipeline(again, {}, 2);
  EXPECT_EQ(stage_yaml(reread, reread.stages[2]), stage_yaml(c, c.stages[2]));
}

TEST(RewardConfig, MistakesAreLocatedAndNamed) {
  PpoConfigDir dir;
  const std::string extra =
      "    max_steps: 3\n"                                      // 23
      "    kl_coef: -0.1\n"                                     // 24
      "    kl_estimator: k2\n"                                  // 25
      "    rollout_batch_size: 6\n"                             // 26
      "    minibatch_size: 4\n"                                 // 27
      "    reward:\n"                                           // 28
      "      type: sum\n"                                       // 29
      "      parts:\n"                                          // 30
      "        - {type: model, stage: sft}\n"                   // 31
      "        - {type: modle}\n"                               // 32
      "        - {type: rules, rules: [{kind: contains, pattern: x, words: [a]}, {kind: length}, {weight: 1}]}\n"  // 33
      "        - {type: http, url: 'https://x/score', token: t, token_env: T}\n"  // 34
      "        - {type: model, stage: rm, path: /tmp}\n"        // 35
      "        - {type: rules, normalize: true, rules: [{kind: regex}]}\n";  // 36
  const auto problems = problems_of(dir.write(extra), 4);
  expect_problem(problems, "stages[2].max_steps", 23, "not used by ppo stages (they use max_iterations)");
  expect_problem(problems, "stages[2].kl_coef", 24, "must be >= 0");
  expect_problem(problems, "stages[2].kl_estimator", 25, "expected k1 or k3");
  expect_problem(problems, "stages[2].minibatch_size", 27, "must divide rollout_batch_size x samples_per_prompt = 6");
  expect_problem(problems, "stages[2].rollout_batch_size", 26, "must be divisible by world size 4");
  expect_problem(problems, "stages[2].reward.parts[0].stage", 31, "is a sft stage; a model reward needs a reward_model stage");
  expect_problem(problems, "stages[2].reward.parts[1].type", 32, "expected model, rules, http or sum");
  expect_problem(problems, "stages[2].reward.parts[2].rules[0].pattern", 33, "not used by a contains rule");
  expect_problem(problems, "stages[2].reward.parts[2].rules[1].max_chars", 33, "needs min_chars or max_chars");
  expect_problem(problems, "stages[2].reward.parts[2].rules[2].kind", 33, "required");
  expect_problem(problems, "stages[2].reward.parts[3].url", 34, "https is not supported");
  expect_problem(problems, "stages[2].reward.parts[3].token_env", 34, "only one of token and token_env");
  expect_problem(problems, "stages[2].reward.parts[4].stage", 35, "exactly one of stage");
  expect_problem(problems, "stages[2].reward.parts[5].normalize", 36, "unknown key 'normalize'");
  expect_problem(problems, "stages[2].reward.parts[5].rules[0].pattern", 36, "required: a non-empty PCRE2 pattern");
}

TEST(RewardConfig, RewardIsRequiredForPpoAndRefusedElsewhere) {
  PpoConfigDir dir;
  expect_problem(problems_of(dir.write("")), "stages[2].reward", 18, "required: the reward to optimise");
  // A reward stage that comes after the ppo stage, and ppo keys in an sft stage.
  TempDir tmp;
  const std::string text = "run_dir: " + tmp.path("run") + "\n"                                         // 1
                           "model: {path: " + test::model_260k() + "}\n"                                // 2
                           "stages:\n"                                                                  // 3
                           "  - {name: sft, type: sft, data: " + dir.data + ", max_steps: 1, kl_coef: 1}\n"  // 4
                           "  - {name: ppo, type: ppo, data: " + dir.data +
                           ", max_iterations: 1, reward: {type: model, stage: rm}}\n"                  // 5
                           "  - {name: rm, type: reward_model, data: " + dir.data + ", max_steps: 1}\n";  // 6
  const auto problems = problems_of(write_text(tmp.path("c.yaml"), text));
  expect_problem(problems, "stages[0].kl_coef", 4, "only ppo stages have this key (this stage is sft)");
  expect_problem(problems, "stages[1].reward.stage", 5, "must come before this stage");
}

TEST(RewardConfig, RewardFileLoadsAloneOrWrapped) {
  TempDir tmp;
  const RewardSpec alone = load_reward_file(write_text(
      tmp.path("r.yaml"), "type: rules\nrules:\n  - {kind: contains, words: [Tim], weight: 2}\nnormalize: false\n"));
  EXPECT_EQ(alone.type, RewardType::kRules);
  ASSERT_EQ(alone.rules.size(), 1u);
  EXPECT_EQ(alone.rules[0].weight, 2.0);
  const RewardSpec wrapped = load_reward_file(
      write_text(tmp.path("w.yaml"), "reward:\n  type: model\n  path: " + tmp.path("") + "\n  batch_size: 4\n"));
  EXPECT_EQ(wrapped.type, RewardType::kModel);
  EXPECT_EQ(wrapped.batch_size, 4);
  try {
    load_reward_file(write_text(tmp.path("s.yaml"), "type: model\nstage: rm\n"));
    ADD_FAILURE() << "a stage name outside a pipeline was accepted";
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.problems().size(), 1u) << e.what();
    EXPECT_EQ(e.problems()[0].key, "stage");
    EXPECT_EQ(e.problems()[0].line, 2);
    EXPECT_NE(std::string(e.what()).find("names its model by path"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_reward_file(tmp.path("missing.yaml")), ConfigError);
}

// The factory builds what the spec says: a weighted sum of rules scores exactly the weighted sum by hand.
TEST(RewardFactory, SumOfRulesScoresTheWeightedSum) {
  TempDir tmp;
  const RewardSpec spec = load_reward_file(write_text(tmp.path("r.yaml"),
                                                      "type: sum\n"
                                                      "parts:\n"
                                                      "  - weight: 2\n"
                                                      "    type: rules\n"
                                                      "    rules: [{kind: exact_reference, weight: 1}, {kind: excludes, words: [Lily], weight: 0.5}]\n"
                                                      "  - weight: -0.5\n"
                                                      "    type: rules\n"
                                                      "    rules: [{kind: length, max_chars: 10, penalty_per_char: 0.25}]\n"));
  reward::RewardBuildContext ctx;
  auto source = reward::make_reward_source(spec, ctx);
  const std::vector<reward::RewardInput> batch = {
      {"p", "Tim ran.", "Tim"},                   // ref 1, excludes 1 -> 2 * 1.5; length 8 <= 10 -> 1 -> -0.5
      {"p", "Lily and Tim went out", "Tim"},      // ref 1, excludes 0 -> 2 * 1; length 21: 1 - 0.25 * 11 = -1.75
      {"p", "Lily", "Sam"}};                      // 0 + 0 -> 0; length 4 -> 1 -> -0.5
  const std::vector<double> r = source->score(batch);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_DOUBLE_EQ(r[0], 3.0 - 0.5);
  EXPECT_DOUBLE_EQ(r[1], 2.0 + 0.875);
  EXPECT_DOUBLE_EQ(r[2], -0.5);
  EXPECT_EQ(ctx.models_shared, 0);
}

TEST(RewardFactory, ErrorsNameThePart) {
  TempDir tmp;
  RewardSpec spec = load_reward_file(write_text(
      tmp.path("r.yaml"),
      "type: sum\nparts:\n  - {weight: 1, type: rules, rules: [{kind: contains, words: [a]}]}\n"
      "  - {weight: 1, type: http, url: 'http://127.0.0.1:9/x', token_env: REGLAGE_TEST_UNSET_TOKEN}\n"));
  ::unsetenv("REGLAGE_TEST_UNSET_TOKEN");
  reward::RewardBuildContext ctx;
  try {
    reward::make_reward_source(spec, ctx);
    ADD_FAILURE() << "an unset token_env was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reward.parts[1]: token_env: the environment variable REGLAGE_TEST_UNSET_TOKEN"),
              std::string::npos)
        << e.what();
  }
  RewardSpec bad_regex;
  bad_regex.type = RewardType::kRules;
  bad_regex.rules.resize(1);
  bad_regex.rules[0].kind = "regex";
  bad_regex.rules[0].pattern = "a(b";
  try {
    reward::make_reward_source(bad_regex, ctx, "stages[2].reward");
    ADD_FAILURE() << "a bad regex was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("stages[2].reward: ", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("rules[0]: pattern 'a(b' does not compile"), std::string::npos) << e.what();
  }
  RewardSpec missing;
  missing.type = RewardType::kModel;
  missing.stage = "rm";
  ctx.run_dir = tmp.path("run");
  try {
    reward::make_reward_source(missing, ctx);
    ADD_FAILURE() << "a missing reward model was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reward: reward model " + tmp.path("run") + "/rm/final: directory not found"),
              std::string::npos)
        << e.what();
  }
}

// Normalising a batch split over ranks (merge of each part's moments) equals normalising it whole.
TEST(RewardNormalizer, MergedPartsEqualTheWholeBatch) {
  const std::vector<double> first = {1.0, -2.0, 0.5}, a = {3.0, 4.5}, b = {-1.0, 0.25, 7.0};
  reward::RewardNormalizer whole(1.5), split(1.5);
  whole.normalize(first);
  split.normalize(first);
  std::vector<double> ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  const std::vector<double> expected = whole.normalize(ab);
  // Moments of a and b, summed as an all-reduce would: count, sum, sum of squares.
  double n = 0, sum = 0, sq = 0;
  for (double r : ab) n += 1, sum += r, sq += r * r;
  const double mean = sum / n;
  split.merge(int64_t(n), mean, sq - n * mean * mean);
  std::vector<double> got = split.apply(a);
  const std::vector<double> got_b = split.apply(b);
  got.insert(got.end(), got_b.begin(), got_b.end());
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-12) << i;
  EXPECT_EQ(split.state().count, whole.state().count);
  EXPECT_NEAR(split.state().m2, whole.state().m2, 1e-9);
  EXPECT_DOUBLE_EQ(*std::max_element(expected.begin(), expected.end()), 1.5);  // 7.0 is clipped
  EXPECT_THROW(split.merge(1, std::nan(""), 0.0), Error);
  EXPECT_EQ(reward::clip_rewards({-3.0, 0.5, 9.0}, 1.0), (std::vector<double>{-1.0, 0.5, 1.0}));
}

}  // namespace
}  // namespace reglage::config
