// Pipeline config loading: parsing, defaults, to_yaml round trip, overrides, and every kind of mistake
// reported with its file position and key, all problems of a file together.
#include <fstream>

#include "framework/config/config_error.h"
#include "framework/config/pipeline_config.h"
#include "config_test_util.h"
#include "test_util.h"

namespace reglage::config {
namespace {

using test::TempDir;

std::string write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  return path;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

// A temp dir with two small data files and a config written into it.
struct ConfigDir {
  TempDir tmp;
  std::string data = write_text(tmp.path("train.jsonl"), "{\"text\": \"hi\"}\n");
  std::string eval = write_text(tmp.path("eval.jsonl"), "{\"text\": \"ho\"}\n");

  // A valid config of 11 lines; `stage_extra` lines are appended to its one stage (from line 12, column 5).
  std::string minimal(const std::string& stage_extra = "", const std::string& name = "c.yaml") {
    const std::string text = "run_dir: " + tmp.path("run") + "\n"  // 1
                             "seed: 7\n"                            // 2
                             "model:\n"                             // 3
                             "  path: " + test::model_260k() + "\n"  // 4
                             "stages:\n"                            // 5
                             "  - name: sft\n"                      // 6
                             "    type: sft\n"                      // 7
                             "    data: " + data + "\n"             // 8
                             "    max_steps: 10\n"                  // 9
                             "    batch_size: 16\n"                 // 10
                             "    lr: 0.001\n" + stage_extra;       // 11
    return write_text(tmp.path(name), text);
  }

  std::string full() {
    std::string text = core::read_file(test::source_path("tests/data/config/full.yaml"));
    text = replace_all(text, "@RUN_DIR@", tmp.path("run"));
    text = replace_all(text, "@MODEL@", test::model_260k());
    text = replace_all(text, "@TOKENIZER@", test::tok_512());
    text = replace_all(text, "@DATA@", data);
    text = replace_all(text, "@EVAL@", eval);
    return write_text(tmp.path("full.yaml"), text);
  }
};

// The problems load_pipeline reports (a test failure when it succeeds).
std::vector<ConfigProblem> problems_of(const std::string& path, const std::vector<std::string>& overrides = {},
                                       int world_size = 1) {
  try {
    test::load_checked(path, overrides, world_size);
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

// Expects a problem on `key` at line:col whose message contains `text`.
void expect_problem(const std::vector<ConfigProblem>& problems, const std::string& key, int line, int column,
                    const std::string& text) {
  for (const ConfigProblem& p : problems) {
    if (p.key != key) continue;
    EXPECT_EQ(p.line, line) << dump(problems);
    EXPECT_EQ(p.column, column) << dump(problems);
    EXPECT_NE(p.message.find(text), std::string::npos) << dump(problems);
    return;
  }
  ADD_FAILURE() << "no problem on " << key << " among:\n" << dump(problems);
}

TEST(ConfigLoad, FullConfigParses) {
  ConfigDir dir;
  const PipelineConfig c = test::load_checked(dir.full(), {}, 1);
  EXPECT_EQ(c.source, dir.tmp.path("full.yaml"));
  EXPECT_EQ(c.run_dir, dir.tmp.path("run"));
  EXPECT_TRUE(core::is_directory(c.run_dir));
  EXPECT_EQ(c.seed, 99u);
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.model.path, test::model_260k());
  EXPECT_EQ(c.model.tokenizer, test::tok_512());
  EXPECT_EQ(c.model.dtype, "bfloat16");
  EXPECT_EQ(c.lora.rank, 4);
  EXPECT_EQ(c.lora.alpha, 8.5);
  EXPECT_EQ(c.lora.dropout, 0.1);
  EXPECT_EQ(c.lora.targets, (std::vector<std::string>{"q_proj", "v_proj", "down_proj"}));
  ASSERT_EQ(c.stages.size(), 2u);
  const StageConfig& s = c.stages[0];
  EXPECT_EQ(s.name, "sft");
  EXPECT_EQ(s.type, StageType::kSft);
  EXPECT_EQ(s.data, dir.data);
  EXPECT_EQ(s.eval_data, dir.eval);
  EXPECT_EQ(s.train, TrainMode::kLora);
  EXPECT_EQ(s.max_steps, 200);
  EXPECT_EQ(s.epochs, 0);
  EXPECT_EQ(s.batch_size, 16);
  EXPECT_EQ(s.grad_accum, 2);
  EXPECT_EQ(s.lr, 1.5e-4);
  EXPECT_EQ(s.weight_decay, 0.01);
  EXPECT_EQ(s.adam_beta1, 0.8);
  EXPECT_EQ(s.adam_beta2, 0.95);
  EXPECT_EQ(s.adam_eps, 1e-6);
  EXPECT_EQ(s.warmup_steps, 10);
  EXPECT_EQ(s.schedule, Schedule::kLinear);
  EXPECT_EQ(s.min_lr_ratio, 0.1);
  EXPECT_EQ(s.max_grad_norm, 0.5);
  EXPECT_EQ(s.checkpoint_every, 50);
  EXPECT_EQ(s.keep_checkpoints, 3);
  EXPECT_EQ(s.eval_every, 25);
  EXPECT_EQ(s.log_every, 5);
  EXPECT_EQ(s.init_from, "");
  EXPECT_EQ(s.chat_template, "chatml");
  EXPECT_EQ(s.max_seq_len, 128);
  EXPECT_TRUE(s.truncate);
  EXPECT_TRUE(s.skip_bad_rows);
  const StageConfig& t = c.stages[1];
  EXPECT_EQ(t.name, "sft-full_2");
  EXPECT_EQ(t.train, TrainMode::kFullFreezeLower);
  EXPECT_EQ(t.freeze_layers, 2);
  EXPECT_EQ(t.epochs, 3);
  EXPECT_EQ(t.max_steps, 0);
  EXPECT_EQ(t.init_from, "sft");
  EXPECT_EQ(c.find_stage("sft-full_2"), &c.stages[1]);
  EXPECT_EQ(c.find_stage("nope"), nullptr);
}

TEST(ConfigLoad, DefaultsFilled) {
  ConfigDir dir;
  const PipelineConfig c = test::load_checked(dir.minimal(), {}, 1);
  const StageConfig defaults;
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.threads, 0);
  EXPECT_EQ(c.model.tokenizer, "");
  EXPECT_EQ(c.model.dtype, "float32");
  EXPECT_EQ(c.lora.rank, 8);
  EXPECT_EQ(c.lora.alpha, 16.0);
  EXPECT_EQ(c.lora.targets, LoraSection().targets);
  ASSERT_EQ(c.stages.size(), 1u);
  const StageConfig& s = c.stages[0];
  EXPECT_EQ(s.lr, 0.001);
  EXPECT_EQ(s.eval_data, "");
  EXPECT_EQ(s.train, TrainMode::kLora);
  EXPECT_EQ(s.grad_accum, 1);
  EXPECT_EQ(s.adam_beta2, defaults.adam_beta2);
  EXPECT_EQ(s.adam_eps, defaults.adam_eps);
  EXPECT_EQ(s.schedule, Schedule::kCosine);
  EXPECT_EQ(s.max_grad_norm, 1.0);
  EXPECT_EQ(s.keep_checkpoints, 2);
  EXPECT_EQ(s.log_every, 1);
  EXPECT_EQ(s.chat_template, "auto");
  EXPECT_FALSE(s.truncate);
  EXPECT_EQ(choice_names<StageType>(), (std::vector<std::string>{"sft", "reward_model", "ppo", "dpo", "grpo"}));
}

// ConfigYaml.RoundTrip (every field, through the key tables) is in test_config_fields.cpp.

TEST(ConfigYaml, StageYamlDecidesStaleness) {
  ConfigDir dir;
  const PipelineConfig a = test::load_checked(dir.full(), {}, 1);
  EXPECT_EQ(stage_yaml(a, a.stages[0]), stage_yaml(test::load_checked(dir.full(), {}, 1), a.stages[0]));
  PipelineConfig b = a;
  b.run_dir = "elsewhere";
  b.threads = 7;
  EXPECT_EQ(stage_yaml(b, b.stages[0]), stage_yaml(a, a.stages[0]));
  b.stages[0].lr = 2e-4;  // changes stage 0 and, through init_from, stage 1
  EXPECT_NE(stage_yaml(b, b.stages[0]), stage_yaml(a, a.stages[0]));
  EXPECT_NE(stage_yaml(b, b.stages[1]), stage_yaml(a, a.stages[1]));
  b = a;
  b.lora.rank = 16;
  EXPECT_NE(stage_yaml(b, b.stages[0]), stage_yaml(a, a.stages[0]));
  EXPECT_NE(stage_yaml(a, a.stages[0]).find("model"), std::string::npos);
}

TEST(ConfigOverride, ByNameIndexAndNewKey) {
  ConfigDir dir;
  const std::string path = dir.minimal();
  const PipelineConfig c = test::load_checked(
      path, {"stages.sft.lr=1e-4", "stages.0.batch_size=32", "stages.sft.eval_every=5", "seed=3",
             "model.dtype=bfloat16", "lora.rank=2", "lora.targets=[all-linear]"},
      1);
  EXPECT_EQ(c.stages[0].lr, 1e-4);
  EXPECT_EQ(c.stages[0].batch_size, 32);
  EXPECT_EQ(c.stages[0].eval_every, 5);
  EXPECT_EQ(c.seed, 3u);
  EXPECT_EQ(c.model.dtype, "bfloat16");
  EXPECT_EQ(c.lora.rank, 2);  // the file has no lora section: the override makes one
  EXPECT_EQ(c.lora.targets, std::vector<std::string>{"all-linear"});
}

TEST(ConfigOverride, BadPaths) {
  ConfigDir dir;
  const auto problems = problems_of(dir.minimal(), {"stages.nope.lr=1", "stages.3.lr=1", "seed", "seed.x=1"});
  ASSERT_EQ(problems.size(), 4u) << dump(problems);
  for (const ConfigProblem& p : problems) EXPECT_EQ(p.line, 0) << dump(problems);
  EXPECT_NE(problems[0].message.find("override 'stages.nope.lr=1'"), std::string::npos) << dump(problems);
  EXPECT_NE(problems[0].message.find("'nope'"), std::string::npos) << dump(problems);
  EXPECT_NE(problems[1].message.find("out of range"), std::string::npos) << dump(problems);
  EXPECT_NE(problems[2].message.find("override 'seed': expected path=value"), std::string::npos) << dump(problems);
  EXPECT_NE(problems[3].message.find("not a section"), std::string::npos) << dump(problems);
}

TEST(ConfigOverride, ValuesAreValidated) {
  ConfigDir dir;
  const auto problems = problems_of(dir.minimal(), {"stages.sft.eval_evry=5", "stages.sft.lr=-1"});
  ASSERT_EQ(problems.size(), 2u) << dump(problems);
  expect_problem(problems, "stages[0].eval_evry", 0, 0, "did you mean 'eval_every'?");
  expect_problem(problems, "stages[0].lr", 0, 0, "= -1 (must be > 0) (from override 'stages.sft.lr=-1')");
}

TEST(ConfigProblems, TypoKeySuggestsClosest) {
  ConfigDir dir;
  const auto problems = problems_of(dir.minimal("    lrr: 0.1\n"));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages[0].lrr", 12, 5, "unknown key 'lrr' (did you mean 'lr'?)");
}

TEST(ConfigProblems, WrongTypes) {
  ConfigDir dir;
  const std::string path = dir.minimal("    weight_decay: \"fast\"\n    grad_accum: 3.5\n    truncate: maybe\n");
  auto problems = problems_of(path);
  ASSERT_EQ(problems.size(), 3u) << dump(problems);
  expect_problem(problems, "stages[0].weight_decay", 12, 19, "expected a number");
  expect_problem(problems, "stages[0].grad_accum", 13, 17, "= 3.5 (expected an integer)");
  expect_problem(problems, "stages[0].truncate", 14, 15, "expected true or false");
  const std::string text = "run_dir: " + dir.tmp.path("run") + "\nmodel:\n  path: " + test::model_260k() +
                           "\nlora:\n  targets: q_proj\nstages:\n  - {name: a, type: sft, data: " + dir.data +
                           ", max_steps: 1, lr: fast, batch_size: 3.5}\n";
  problems = problems_of(write_text(dir.tmp.path("t.yaml"), text));
  ASSERT_EQ(problems.size(), 3u) << dump(problems);
  expect_problem(problems, "lora.targets", 5, 12, "expected a list");
  expect_problem(problems, "stages[0].lr", 7, 52 + int(dir.data.size()), "= fast (expected a number)");
  expect_problem(problems, "stages[0].batch_size", 7, 70 + int(dir.data.size()), "= 3.5 (expected an integer)");
}

TEST(ConfigProblems, NegativeLr) {
  ConfigDir dir;
  const std::string path = dir.minimal();
  const auto problems = problems_of(write_text(path, replace_all(core::read_file(path), "lr: 0.001", "lr: -0.1")));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages[0].lr", 11, 9, "= -0.1 (must be > 0)");
  test::expect_error([&] { test::load_checked(path, {}, 1); },
                     {"config error: " + path + ":11:9: stages[0].lr = -0.1 (must be > 0)"});
}

TEST(ConfigProblems, MissingDataAndEvalFiles) {
  ConfigDir dir;
  const std::string missing = dir.tmp.path("missing.jsonl");
  const std::string path = dir.minimal("    eval_data: " + missing + "\n");
  const auto problems = problems_of(write_text(path, replace_all(core::read_file(path), "data: " + dir.data,
                                                                  "data: " + missing)));
  ASSERT_EQ(problems.size(), 2u) << dump(problems);
  expect_problem(problems, "stages[0].data", 8, 11, "no such file or directory");
  expect_problem(problems, "stages[0].eval_data", 12, 16, missing + " (no such file or directory)");
}

TEST(ConfigLoad, AFinishedRunsConfigLoadsWithoutItsDataFiles) {
  ConfigDir dir;
  const std::string missing = dir.tmp.path("missing.jsonl");
  const std::string path = dir.minimal("    eval_data: " + missing + "\n");
  write_text(path, replace_all(core::read_file(path), "data: " + dir.data, "data: " + missing));
  const auto c = load_pipeline(path, {}, DataFiles::may_be_missing);  // as export and eval read a run
  EXPECT_EQ(c.stages[0].data, missing);
  // The model must still be there.
  write_text(path, replace_all(core::read_file(path), test::model_260k(), "nope.bin"));
  bool model_missing = false;
  try {
    load_pipeline(path, {}, DataFiles::may_be_missing);
  } catch (const ConfigError& e) {
    for (const ConfigProblem& p : e.problems()) model_missing |= p.key == "model.path";
  }
  EXPECT_TRUE(model_missing);
}

TEST(ConfigProblems, MissingModel) {
  ConfigDir dir;
  const std::string path = dir.minimal();
  auto problems = problems_of(write_text(path, replace_all(core::read_file(path), test::model_260k(), "nope.bin")));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "model.path", 4, 9, "= nope.bin (no such file or directory)");
  const std::string text = "run_dir: " + dir.tmp.path("run") + "\nstages: [{name: a, type: sft, data: " + dir.data +
                           ", max_steps: 1}]\n";
  problems = problems_of(write_text(dir.tmp.path("m.yaml"), text));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "model", 1, 1, "required");
}

TEST(ConfigProblems, BatchNotDivisible) {
  ConfigDir dir;
  const std::string path = dir.minimal();
  write_text(path, replace_all(core::read_file(path), "batch_size: 16", "batch_size: 15"));
  EXPECT_NO_THROW(test::load_checked(path, {}, 1));
  const auto problems = problems_of(path, {}, 2);
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages[0].batch_size", 10, 17, "= 15 (must be divisible by world size 2 x grad_accum 1 = 2)");
  // A batch_size set by an override has no place in the file: line 0.
  const auto accum = problems_of(dir.minimal("    grad_accum: 3\n"), {"stages.sft.batch_size=16"}, 2);
  ASSERT_EQ(accum.size(), 1u) << dump(accum);
  expect_problem(accum, "stages[0].batch_size", 0, 0, "world size 2 x grad_accum 3 = 6");
}

TEST(ConfigProblems, UnknownStageType) {
  ConfigDir dir;
  const std::string path = dir.minimal();
  const auto problems = problems_of(write_text(path, replace_all(core::read_file(path), "type: sft", "type: orpo")));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages[0].type", 7, 11, "= orpo (unknown stage type; expected sft, reward_model, ppo, dpo or grpo)");
}

// An sft stage, then a grpo stage starting from it whose last lines are `grpo_extra` (from line 9).
std::string grpo_config(ConfigDir& dir, const std::string& sft_extra, const std::string& grpo_extra) {
  const std::string text = "run_dir: " + dir.tmp.path("run") + "\n"                                        // 1
                           "model: {path: " + test::model_260k() + "}\n"                                    // 2
                           "stages:\n"                                                                      // 3
                           "  - {name: sft, type: sft, data: " + dir.data + ", max_steps: 1" + sft_extra + "}\n"  // 4
                           "  - name: grpo\n"                                                               // 5
                           "    type: grpo\n"                                                               // 6
                           "    init_from: sft\n"                                                           // 7
                           "    data: " + dir.data + "\n" + grpo_extra;                                     // 8
  return write_text(dir.tmp.path("grpo.yaml"), text);
}

TEST(ConfigLoad, GrpoDefaultsValuesAndRoundTrip) {
  ConfigDir dir;
  const std::string path = grpo_config(dir, "", "    max_iterations: 3\n"
                                                "    beta: 0\n"
                                                "    rollout_batch_size: 4\n"
                                                "    minibatch_size: 8\n"
                                                "    reward: {type: rules, rules: [{kind: exact_reference}]}\n");
  const PipelineConfig c = test::load_checked(path, {}, 2);
  const StageConfig& g = c.stages[1];
  EXPECT_EQ(g.type, StageType::kGrpo);
  EXPECT_EQ(g.grpo.group_size, GrpoSettings{}.group_size);
  EXPECT_EQ(g.grpo.group_size, 8);
  EXPECT_EQ(g.grpo.beta, 0.0);  // 0 is allowed: no KL term
  EXPECT_EQ(g.dpo.beta, DpoSettings{}.beta);
  EXPECT_EQ(g.ppo.max_iterations, 3);
  EXPECT_EQ(g.ppo.rollout_batch_size, 4);
  try {
    check_world_size(c, 3);
    ADD_FAILURE() << "4 prompts per iteration over 3 ranks accepted";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("stages[1].rollout_batch_size = 4 (must be divisible by world size 3 (prompts per iteration; "
                        "a prompt's group stays on one rank))"),
              std::string::npos)
        << what;
  }
  EXPECT_EQ(g.ppo.actor_lr, PpoSettings{}.actor_lr);
  EXPECT_EQ(g.reward.type, RewardType::kRules);
  const std::string yaml = stage_yaml(c, g);
  EXPECT_NE(yaml.find("group_size: 8"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("kl_coef"), std::string::npos) << yaml;  // ppo-only keys are not part of a grpo stage
  const PipelineConfig reread = test::load_checked(write_text(dir.tmp.path("re.yaml"), to_yaml(c)), {}, 2);
  EXPECT_EQ(stage_yaml(reread, reread.stages[1]), yaml);
}

TEST(ConfigProblems, GrpoMistakesAreLocatedAndNamed) {
  ConfigDir dir;
  const std::string path = grpo_config(dir, ", group_size: 4",
                                       "    group_size: 1\n"             // 9
                                       "    beta: -0.1\n"                // 10
                                       "    kl_coef: 0.1\n"              // 11
                                       "    lr: 0.001\n"                 // 12
                                       "    rollout_batch_size: 3\n"     // 13
                                       "    train: full\n"               // 14
                                       "    samples_per_prompt: 2\n"     // 15
                                       "    loss: ipo\n");               // 16
  const auto problems = problems_of(path, {}, 2);
  const int sft_column = int(std::string("  - {name: sft, type: sft, data: , max_steps: 1, ").size() + dir.data.size()) + 1;
  expect_problem(problems, "stages[0].group_size", 4, sft_column, "only grpo stages have this key (this stage is sft)");
  expect_problem(problems, "stages[1].group_size", 9, 17, "= 1 (must be >= 2");
  expect_problem(problems, "stages[1].beta", 10, 11, "= -0.1 (must be >= 0; 0 = no KL term)");
  expect_problem(problems, "stages[1].kl_coef", 11, 5, "not used by grpo stages (they use beta)");
  expect_problem(problems, "stages[1].lr", 12, 5, "not used by grpo stages (they use actor_lr)");
  // The world-size checks run after loading (check_world_size), once the rest is valid: not among these.
  for (const ConfigProblem& p : problems) EXPECT_NE(p.key, "stages[1].rollout_batch_size") << p.message;
  expect_problem(problems, "stages[1].train", 14, 12, "grpo stages train a LoRA adapter");
  expect_problem(problems, "stages[1].samples_per_prompt", 15, 5, "not used by grpo stages (they use group_size)");
  expect_problem(problems, "stages[1].loss", 16, 5, "not used by grpo stages");
  bool iterations = false, reward = false;
  for (const ConfigProblem& p : problems) {
    iterations |= p.key == "stages[1].max_iterations" && p.message.find("required") != std::string::npos;
    reward |= p.key == "stages[1].reward" && p.message.find("required") != std::string::npos;
  }
  EXPECT_TRUE(iterations) << dump(problems);
  EXPECT_TRUE(reward) << dump(problems);
}

// Two stages: `first` from line 5 and `second` after it (line 9, or 10 when `first_extra` is a line).
std::string two_stages(ConfigDir& dir, const std::string& first_extra, const std::string& second_name,
                       const std::string& second_extra) {
  const std::string text = "run_dir: " + dir.tmp.path("run") + "\n"
                           "model:\n"
                           "  path: " + test::model_260k() + "\n"
                           "stages:\n"
                           "  - name: first\n"                  // 5
                           "    type: sft\n"
                           "    data: " + dir.data + "\n"
                           "    max_steps: 1\n" + first_extra +  // 8 (+ 9)
                           "  - name: " + second_name + "\n"    // 10
                           "    type: sft\n"
                           "    data: " + dir.data + "\n"
                           "    max_steps: 1\n" + second_extra;  // 13 (+ 14)
  return write_text(dir.tmp.path("two.yaml"), text);
}

TEST(ConfigProblems, InitFromLaterOrUnknown) {
  ConfigDir dir;
  EXPECT_NO_THROW(test::load_checked(two_stages(dir, "", "second", "    init_from: first\n"), {}, 1));
  auto problems = problems_of(two_stages(dir, "    init_from: second\n", "second", ""));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages[0].init_from", 9, 16, "= second (stage 'second' comes later");
  problems = problems_of(two_stages(dir, "", "second", "    init_from: zeroth\n"));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages[1].init_from", 13, 16, "= zeroth (no stage has this name; stages: first, second)");
}

TEST(ConfigProblems, DuplicateAndBadStageNames) {
  ConfigDir dir;
  auto problems = problems_of(two_stages(dir, "", "first", ""));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages[1].name", 9, 11, "= first (repeated stage name; stages[0] has it too)");
  problems = problems_of(two_stages(dir, "", "bad name!", ""));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages[1].name", 9, 11, "only letters, digits, '_' and '-'");
}

TEST(ConfigProblems, UnwritableRunDir) {
  ConfigDir dir;
  const std::string file = write_text(dir.tmp.path("a_file"), "x");
  const std::string path = dir.minimal();
  const auto problems =
      problems_of(write_text(path, replace_all(core::read_file(path), dir.tmp.path("run"), file + "/sub")));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "run_dir", 1, 10, "= " + file + "/sub (cannot create it");
}

TEST(ConfigProblems, YamlSyntaxError) {
  ConfigDir dir;
  const auto problems = problems_of(dir.minimal("    schedule: [cosine\n"));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  EXPECT_GE(problems[0].line, 12) << dump(problems);
  EXPECT_GT(problems[0].column, 0) << dump(problems);
  EXPECT_NE(problems[0].message.find("YAML syntax error"), std::string::npos) << dump(problems);
  const auto tab = problems_of(write_text(dir.tmp.path("tab.yaml"), "run_dir: a\nmodel:\n  path: b\n   bad: [1\n"));
  ASSERT_EQ(tab.size(), 1u) << dump(tab);
  EXPECT_GE(tab[0].line, 3) << dump(tab);
}

TEST(ConfigProblems, EmptyStages) {
  ConfigDir dir;
  const std::string text = "run_dir: " + dir.tmp.path("run") + "\nmodel:\n  path: " + test::model_260k() + "\nstages: []\n";
  auto problems = problems_of(write_text(dir.tmp.path("e.yaml"), text));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages", 4, 9, "at least one stage");
  problems = problems_of(write_text(dir.tmp.path("n.yaml"), "run_dir: " + dir.tmp.path("run") + "\nmodel:\n  path: " +
                                                                  test::model_260k() + "\n"));
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  expect_problem(problems, "stages", 1, 1, "at least one stage");
}

TEST(ConfigProblems, AllReportedTogether) {
  ConfigDir dir;
  const std::string text = "run_dir: " + dir.tmp.path("run") + "\n"  // 1
                           "seed: -1\n"                              // 2
                           "model:\n"                                // 3
                           "  path: " + test::model_260k() + "\n"    // 4
                           "  dtype: float16\n"                      // 5
                           "lora:\n"                                 // 6
                           "  rank: 0\n"                             // 7
                           "  targets: [q_proj, qv_proj]\n"          // 8
                           "stages:\n"                               // 9
                           "  - name: sft\n"                         // 10
                           "    type: sft\n"                         // 11
                           "    data: " + dir.data + "\n"            // 12
                           "    epochs: 1\n"                         // 13
                           "    max_steps: 5\n"                      // 14
                           "    adam_beta2: 1.0\n"                   // 15
                           "    schedule: cosin\n"                   // 16
                           "    keep_checkpoints: 0\n"               // 17
                           "    freeze_layers: 2\n"                  // 18
                           "    batch_sze: 8\n";                     // 19
  const std::string path = write_text(dir.tmp.path("many.yaml"), text);
  const auto problems = problems_of(path);
  expect_problem(problems, "seed", 2, 7, "= -1 (must be >= 0)");
  expect_problem(problems, "model.dtype", 5, 10, "= float16 (expected float32 or bfloat16)");
  expect_problem(problems, "lora.rank", 7, 9, "= 0 (must be > 0)");
  expect_problem(problems, "lora.targets[1]", 8, 21, "= qv_proj (expected q_proj,");
  expect_problem(problems, "stages[0].epochs", 13, 13, "set only one of max_steps and epochs");
  expect_problem(problems, "stages[0].adam_beta2", 15, 17, "= 1.0 (must be in [0, 1))");
  expect_problem(problems, "stages[0].schedule", 16, 15, "= cosin (expected cosine, linear or constant)");
  expect_problem(problems, "stages[0].keep_checkpoints", 17, 23, "must be >= 1");
  expect_problem(problems, "stages[0].freeze_layers", 18, 20, "only with train: full_freeze_lower");
  expect_problem(problems, "stages[0].batch_sze", 19, 5, "did you mean 'batch_size'?");
  EXPECT_EQ(problems.size(), 10u) << dump(problems);
  // what(): one line per problem, in file order.
  try {
    test::load_checked(path, {}, 1);
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_EQ(std::count(what.begin(), what.end(), '\n'), 9) << what;
    EXPECT_EQ(what.rfind("config error: " + path + ":2:7: seed = -1 (must be >= 0)\n", 0), 0u) << what;
    EXPECT_NE(what.find("config error: " + path + ":19:5: stages[0].batch_sze: unknown key 'batch_sze'"),
              std::string::npos) << what;
  }
}

TEST(ConfigProblems, MissingRequiredKeys) {
  ConfigDir dir;
  const std::string text = "model:\n  path: " + test::model_260k() + "\nstages:\n  - lr: 0.1\n";
  const auto problems = problems_of(write_text(dir.tmp.path("r.yaml"), text));
  expect_problem(problems, "run_dir", 1, 1, "required");
  expect_problem(problems, "stages[0].name", 4, 5, "required");
  expect_problem(problems, "stages[0].type", 4, 5, "required");
  expect_problem(problems, "stages[0].data", 4, 5, "required");
  expect_problem(problems, "stages[0].max_steps", 4, 5, "exactly one of max_steps and epochs");
  EXPECT_EQ(problems.size(), 5u) << dump(problems);
}

TEST(ConfigProblems, UnreadableFile) {
  test::expect_error([] { test::load_checked("/nonexistent/reglage.yaml", {}, 1); },
                     {"config error: /nonexistent/reglage.yaml: cannot open the file"});
}


// The minimal config's sft stage followed by a dpo stage (from line 12; its extra keys from line 18).
std::string with_dpo(ConfigDir& dir, const std::string& dpo_extra) {
  const std::string path = dir.minimal();
  return write_text(path, core::read_file(path) +
                              "  - name: dpo\n"                        // 12
                              "    type: dpo\n"                        // 13
                              "    init_from: sft\n"                   // 14
                              "    data: " + dir.data + "\n"           // 15
                              "    max_steps: 4\n"                     // 16
                              "    batch_size: 4\n" + dpo_extra);      // 17
}

TEST(ConfigDpo, KeysAndDefaults) {
  ConfigDir dir;
  auto c = test::load_checked(with_dpo(dir, ""), {}, 1);
  ASSERT_EQ(c.stages.size(), 2u);
  EXPECT_EQ(c.stages[1].dpo.beta, 0.1);
  EXPECT_EQ(c.stages[1].dpo.loss, LossType::kSigmoid);
  EXPECT_EQ(c.stages[1].dpo.label_smoothing, 0.0);
  EXPECT_EQ(c.stages[1].dpo.rpo_alpha, 0.0);
  c = test::load_checked(with_dpo(dir, "    loss: cdpo\n    label_smoothing: 0.2\n    beta: 0.5\n"), {}, 1);
  EXPECT_EQ(c.stages[1].dpo.beta, 0.5);
  EXPECT_EQ(c.stages[1].dpo.loss, LossType::kCdpo);
  EXPECT_EQ(c.stages[1].dpo.label_smoothing, 0.2);
}

TEST(ConfigDpo, MistakesAreLocated) {
  ConfigDir dir;
  auto problems = problems_of(with_dpo(dir, "    beta: 0\n    loss: kto\n    train: full\n    rpo_alpha: -1\n"));
  expect_problem(problems, "stages[1].rpo_alpha", 21, 16, "= -1 (must be >= 0");
  expect_problem(problems, "stages[1].beta", 18, 11, "= 0 (must be > 0)");
  expect_problem(problems, "stages[1].loss", 19, 11, "= kto (expected sigmoid, ipo or cdpo)");
  expect_problem(problems, "stages[1].train", 20, 12, "dpo stages train a LoRA adapter");
  problems = problems_of(with_dpo(dir, "    loss: cdpo\n"));
  expect_problem(problems, "stages[1].label_smoothing", 12, 5, "= 0 (must be in (0, 0.5) with loss: cdpo)");  // at the stage
  problems = problems_of(with_dpo(dir, "    loss: ipo\n    label_smoothing: 0.1\n"));
  expect_problem(problems, "stages[1].label_smoothing", 19, 22, "only loss: cdpo uses it (this stage's loss is ipo)");
  // dpo keys elsewhere
  problems = problems_of(dir.minimal("    beta: 0.1\n"));
  expect_problem(problems, "stages[0].beta", 12, 5, "only dpo and grpo stages have this key (this stage is sft)");
  problems = problems_of(dir.minimal("    loss: ipo\n"));
  expect_problem(problems, "stages[0].loss", 12, 5, "only dpo stages have this key (this stage is sft)");
}

// Issue 14 item 14: 1e400 is inf to strtod, .nan and inf are not numbers a key can take; each is refused
// where it is written, like any other value problem.
TEST(ConfigNumbers, NonFiniteValuesAreRefusedWhereTheyAreWritten) {
  ConfigDir dir;
  const std::string path = dir.minimal("    adam_eps: 1e400\n    weight_decay: -1e400\n    adam_beta1: .nan\n");
  const std::string text = core::read_file(path) + "lora:\n  alpha: 1e400\n  rank: 4\n";  // lines 15-17
  const auto problems = problems_of(write_text(path, text));
  ASSERT_EQ(problems.size(), 4u) << dump(problems);
  expect_problem(problems, "stages[0].adam_eps", 12, 15, "= 1e400 (expected a finite number)");
  expect_problem(problems, "stages[0].weight_decay", 13, 19, "= -1e400 (expected a finite number)");
  expect_problem(problems, "stages[0].adam_beta1", 14, 17, "= .nan (expected");
  expect_problem(problems, "lora.alpha", 16, 10, "= 1e400 (expected a finite number)");
  // The same through an override.
  const auto from_override = problems_of(dir.minimal(), {"stages.sft.lr=1e400"});
  ASSERT_EQ(from_override.size(), 1u) << dump(from_override);
  EXPECT_NE(from_override[0].message.find("expected a finite number"), std::string::npos) << dump(from_override);
}

// Items 11 and 15: every numeric key has a stated upper bound; epochs: 2^63-1 once overflowed into
// "training -249 steps", threads: 100000 hung creating the pool, lora.rank and batch_size exhausted memory.
TEST(ConfigNumbers, UpperBoundsAreStatedAndLocated) {
  ConfigDir dir;
  std::string text = core::read_file(dir.minimal("    adam_eps: 1\n    weight_decay: 5\n    max_seq_len: 9999999\n"));
  text = replace_all(text, "max_steps: 10", "epochs: 9223372036854775807");
  text = replace_all(text, "batch_size: 16", "batch_size: 2000000");
  text = replace_all(text, "lr: 0.001", "lr: 2");
  text = replace_all(text, "seed: 7", "threads: 100000");
  text += "lora:\n  rank: 10000000\n";  // lines 15-16
  const auto problems = problems_of(write_text(dir.tmp.path("big.yaml"), text));
  ASSERT_EQ(problems.size(), 8u) << dump(problems);
  expect_problem(problems, "threads", 2, 10, "= 100000 (must be <= 1024");
  expect_problem(problems, "stages[0].epochs", 9, 13, "= 9223372036854775807 (must be <= 1000000");
  expect_problem(problems, "stages[0].batch_size", 10, 17, "= 2000000 (must be <= 1000000)");
  expect_problem(problems, "stages[0].lr", 11, 9, "= 2 (must be <= 1");
  expect_problem(problems, "stages[0].adam_eps", 12, 15, "= 1 (must be < 1");
  expect_problem(problems, "stages[0].weight_decay", 13, 19, "= 5 (must be <= 1");
  expect_problem(problems, "stages[0].max_seq_len", 14, 18, "= 9999999 (must be <= 1048576)");
  expect_problem(problems, "lora.rank", 16, 9, "= 10000000 (must be <= 65536)");
  // At the bounds: accepted.
  ConfigDir ok;
  std::string edge = core::read_file(ok.minimal("    weight_decay: 1\n    max_seq_len: 1048576\n"));
  edge = replace_all(edge, "lr: 0.001", "lr: 1");
  edge = replace_all(edge, "seed: 7", "threads: 1024");
  EXPECT_NO_THROW(test::load_checked(write_text(ok.tmp.path("edge.yaml"), edge), {}, 1));
}

TEST(ConfigNumbers, PpoGrpoAndRewardBounds) {
  ConfigDir dir;
  const std::string text = "run_dir: " + dir.tmp.path("run") + "\n"               // 1
                           "model: {path: " + test::model_260k() + "}\n"          // 2
                           "stages:\n"                                            // 3
                           "  - name: g\n"                                        // 4
                           "    type: grpo\n"                                     // 5
                           "    data: " + dir.data + "\n"                         // 6
                           "    max_iterations: 2\n"                              // 7
                           "    group_size: 5000\n"                               // 8
                           "    temperature: 1e300\n"                             // 9
                           "    rollout_batch_size: 8\n"                          // 10
                           "    minibatch_size: 8\n"                              // 11
                           "    reward:\n"                                        // 12
                           "      type: http\n"                                   // 13
                           "      url: http://127.0.0.1:1/score\n"                // 14
                           "      timeout_s: 1e400\n"                             // 15
                           "      retries: 1000000\n";                            // 16
  const auto problems = problems_of(write_text(dir.tmp.path("g.yaml"), text));
  ASSERT_EQ(problems.size(), 4u) << dump(problems);
  expect_problem(problems, "stages[0].group_size", 8, 17, "= 5000 (must be <= 1024)");
  expect_problem(problems, "stages[0].temperature", 9, 18, "= 1e300 (must be <= 100)");
  expect_problem(problems, "stages[0].reward.timeout_s", 15, 18, "= 1e400 (expected a finite number)");
  expect_problem(problems, "stages[0].reward.retries", 16, 16, "= 1000000 (must be <= 100)");
}

// Item 16: a second document after '---' was dropped without a word.
TEST(ConfigProblems, SecondYamlDocumentIsNamed) {
  ConfigDir dir;
  const std::string path = dir.minimal();
  write_text(path, core::read_file(path) + "---\nstages: []\n");  // '---' on line 12
  const auto problems = problems_of(path);
  ASSERT_EQ(problems.size(), 1u) << dump(problems);
  EXPECT_EQ(problems[0].line, 13) << dump(problems);
  EXPECT_NE(problems[0].message.find("a second YAML document"), std::string::npos) << dump(problems);
  // An empty second document too; a leading '---' is one document and fine.
  write_text(path, core::read_file(dir.minimal()) + "---\n");
  EXPECT_EQ(problems_of(path).size(), 1u);
  const std::string leading = dir.tmp.path("leading.yaml");
  write_text(leading, "---\n" + core::read_file(dir.minimal()));
  EXPECT_NO_THROW(test::load_checked(leading, {}, 1));
}

// Item 16: a directory given as the pipeline file said "basic_filebuf::underflow ... Is a directory".
TEST(ConfigProblems, DirectoryIsNamedWithItsPath) {
  ConfigDir dir;
  test::expect_error([&] { test::load_checked(dir.tmp.path(), {}, 1); },
                     {"config error: " + dir.tmp.path() + ": is a directory, expected a file"});
}

}  // namespace
}  // namespace reglage::config
