// Learning in the suite: each stage type, run end to end by `reglage run` under mpiexec on data small enough
// for CI, must LEARN, not only run. A sign flipped in a stage's loss passes the resume and metric-key tests
// (both runs share it) but fails the test of its stage here.
//
// The data, written by the tests:
//   - names: two syllables ("Da" + "lu" = "Dalu"), 64 of them; 48 for training, 16 held out for eval.
//   - sft: "Write a story about a cat named Dalu." -> "Once upon a time, there was a cat named Dalu. Dalu
//     liked to play in the park."
//   - preference pairs (reward_model, dpo): chosen = that story with the requested name, rejected = the same
//     story with a stock TinyStories name (Lily, Tom, ...) in its place: the rule "uses the requested name",
//     learnable from the rejected story alone, as data/demo's counterfactual pairs are.
//   - rl prompts (ppo, grpo): "Once upon a time, there was a little boy named" with reference "Tim"; the
//     base model goes on " Tim" about half the time (else " Timmy", ...), so the rules reward
//     exact_reference / contains [Tim] (whole word) starts near 0.5 and has room to rise.
// Every figure quoted below was measured on 2 shared cores; the runs are deterministic (fixed seed, one
// thread), the thresholds leave room for another CPU's rounding.
// These tests build into their own binary, reglage_learning_tests (tests/CMakeLists.txt): GoogleTest refuses
// one suite name (SftPipeline, ...) whose tests use different fixture classes, as they would beside the
// fixtures of the same suites in test_*_pipeline.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "e2e_util.h"
#include "test_util.h"

namespace reglage {
namespace {

using nlohmann::json;
using test::source_path;

const char* kAnimals[] = {"cat", "dog", "bird", "fox", "frog", "duck"};
const char* kStockNames[] = {"Lily", "Tom", "Ben", "Sue", "Max", "Amy", "Lucy", "Sam"};
constexpr int kTrainNames = 48;  // names 0..47 train, 48..63 eval

// The i-th of 64 two-syllable names.
std::string name_of(int i) {
  static const char* first[] = {"Da", "Ko", "Mi", "To", "Le", "Ru", "Sa", "Pe"};
  static const char* second[] = {"lu", "ti", "ra", "bi", "na", "mo", "ke", "la"};
  return std::string(first[(i / 8) % 8]) + second[i % 8];
}

std::string prompt_of(int i, int name) {
  return std::string("Write a story about a ") + kAnimals[i % 6] + " named " + name_of(name) + ".";
}

// rows of sft data; names from first_name on.
void write_sft(const std::string& path, int rows, int first_name) {
  std::ostringstream out;
  for (int i = 0; i < rows; ++i) {
    const std::string name = name_of(first_name + i);
    out << json{{"prompt", prompt_of(i, first_name + i)},
                {"completion", std::string("Once upon a time, there was a ") + kAnimals[i % 6] + " named " + name +
                                   ". " + name + " liked to play in the park."}}
               .dump()
        << "\n";
  }
  core::write_file_atomic(path, out.str());
}

// rows preference pairs over `names` names from first_name on: chosen uses the requested name, rejected a
// stock name.
void write_pairs(const std::string& path, int rows, int first_name, int names) {
  std::ostringstream out;
  for (int i = 0; i < rows; ++i) {
    const int n = first_name + i % names;
    const std::string story = std::string("Once upon a time, there was a ") + kAnimals[i % 6] + " named ";
    const std::string name = name_of(n), other = kStockNames[(i * 3) % 8];
    out << json{{"prompt", prompt_of(i, n)},
                {"chosen", story + name + ". " + name + " was happy."},
                {"rejected", story + other + ". " + other + " was happy."}}
               .dump()
        << "\n";
  }
  core::write_file_atomic(path, out.str());
}

// Story openings that the base model ends with a boy's name; the reference is "Tim".
void write_boy_prompts(const std::string& path) {
  static const char* openings[] = {
      "Once upon a time, there was a little boy named", "Once upon a time, there was a boy named",
      "One day, a little boy named", "Once upon a time, there was a happy boy named",
      "Once upon a time, in a small house, there lived a boy named", "Once upon a time, there was a kind boy named",
      "Once upon a time, there was a brave little boy named", "One sunny day, a boy named"};
  std::ostringstream out;
  for (const char* p : openings) out << json{{"prompt", p}, {"reference", "Tim"}}.dump() << "\n";
  core::write_file_atomic(path, out.str());
}

// A pipeline of one stage on the shipped 260K-parameter model, LoRA rank 4, no dropout, one thread.
std::string pipeline_yaml(const std::string& run_dir, int seed, const std::string& stage) {
  return "run_dir: " + run_dir + "\nseed: " + std::to_string(seed) + "\nthreads: 1\nmodel:\n  path: " +
         source_path("models/stories260K/stories260K.bin") +
         "\nlora: {rank: 4, alpha: 8, dropout: 0.0, targets: [q_proj, v_proj, o_proj, down_proj]}\nstages:\n" + stage;
}

// Mean of `key` over records [from, to).
double mean_of(const std::vector<json>& recs, size_t from, size_t to, const char* key) {
  double sum = 0;
  for (size_t i = from; i < to; ++i) sum += recs[i].at(key).get<double>();
  return sum / double(to - from);
}

// ---- sft -----------------------------------------------------------------------------------------------

// 2 ranks. The eval set's names are never trained on, so only the story's shape can be learnt. The eval loss
// after step 1 (near the base model's: LoRA B starts at 0 and has taken one step) against after step 16.
// Measured (seeds 1, 2, 3, 4, 7): 2.36 -> 1.19, 2.36 -> 1.27, 2.34 -> 1.20, 2.34 -> 1.08, 2.38 -> 1.10 (falls of
// 1.09..1.28). Threshold: a fall of at least 0.6, and the first loss a cross-entropy near the base model's
// (a negated loss function, which logs a falling negative number, fails that).
// Sign flipped once (2026-12-04): the cross-entropy's backward in trainers/sft.cpp gives 2.63 -> 6.98 (fails
// the fall); the cross-entropy itself negated gives -2.63 -> -6.98 (fails the first loss's range).
TEST(SftPipeline, EvalLossFalls) {
  test::TempDir tmp;
  write_sft(tmp.path("train.jsonl"), 24, 0);
  write_sft(tmp.path("eval.jsonl"), 8, kTrainNames);
  core::write_file_atomic(
      tmp.path("p.yaml"),
      pipeline_yaml(tmp.path("run"), 7,
                    "  - {name: sft, type: sft, data: " + tmp.path("train.jsonl") + ", eval_data: " +
                        tmp.path("eval.jsonl") + ", max_steps: 16, batch_size: 4, lr: 5.0e-3, eval_every: 1}\n"));
  ASSERT_EQ(test::run_pipeline(2, tmp.path("p.yaml")), 0);
  const auto evals = test::read_metrics(tmp.path("run/sft/metrics.jsonl"), "eval");
  ASSERT_EQ(evals.size(), 16u);
  const double first = evals.front().at("loss").get<double>(), last = evals.back().at("loss").get<double>();
  EXPECT_GT(first, 1.5) << "step 1 eval loss, expected a cross-entropy near the base model's (about 2.4)";
  EXPECT_LT(first, 3.0) << "step 1 eval loss, expected a cross-entropy near the base model's (about 2.4)";
  EXPECT_LT(last, first - 0.6) << "eval loss " << first << " at step 1, " << last << " at step 16";
  std::cout << "[ figures  ] eval loss " << first << " at step 1, " << last << " at step 16\n";
}

// ---- reward_model ----------------------------------------------------------------------------------------

// 1 rank. Held-out pairs: 16 whose requested names are never trained on. The first eval comes after step 1
// at a warm-up learning rate of lr / 8, near the fresh head's chance level; the last after step 24.
// Measured (seeds 1, 2, 3, 4): accuracy 0.50/0.31/0.69/0.69 -> 1.0 for all; the mean margin (chosen minus
// rejected reward) 0.02/-0.17/0.19/0.28 -> 3.35/3.61/4.15/4.01. Threshold: accuracy >= 0.9 at the end and
// the margin up by more than 2.
// Sign flipped once: the Bradley-Terry logit in trainers/reward_model.cpp (rejected - chosen) gives accuracy
// 0.69 -> 0.06, margin 0.15 -> -3.53.
TEST(RewardPipeline, AccuracyRises) {
  test::TempDir tmp;
  write_pairs(tmp.path("pairs.jsonl"), 48, 0, kTrainNames);
  write_pairs(tmp.path("eval_pairs.jsonl"), 16, kTrainNames, 16);
  core::write_file_atomic(
      tmp.path("p.yaml"),
      pipeline_yaml(tmp.path("run"), 3,
                    "  - {name: rm, type: reward_model, data: " + tmp.path("pairs.jsonl") + ", eval_data: " +
                        tmp.path("eval_pairs.jsonl") +
                        ", max_steps: 24, batch_size: 8, lr: 2.0e-3, warmup_steps: 8, eval_every: 1}\n"));
  ASSERT_EQ(test::run_pipeline(1, tmp.path("p.yaml")), 0);
  const auto evals = test::read_metrics(tmp.path("run/rm/metrics.jsonl"), "eval");
  ASSERT_EQ(evals.size(), 24u);
  const auto &first = evals.front(), &last = evals.back();
  EXPECT_GE(last.at("accuracy").get<double>(), 0.9) << first.dump() << "\n" << last.dump();
  EXPECT_GT(last.at("margin").get<double>(), first.at("margin").get<double>() + 2.0) << first.dump() << "\n"
                                                                                      << last.dump();
  std::cout << "[ figures  ] accuracy " << first.at("accuracy") << " -> " << last.at("accuracy") << ", margin "
            << first.at("margin") << " -> " << last.at("margin") << "\n";
}

// ---- dpo ---------------------------------------------------------------------------------------------------

// 1 rank, sigmoid loss, beta 0.5, the same held-out pairs as the reward model's. Before the first update the
// policy is the reference (adapter B = 0), so every implicit reward is 0: step 1's train record (computed
// before its update) has margin 0 and loss log 2, and so would the held-out pairs. They are evaluated once,
// after step 20.
// Measured (seeds 1..6): held-out margin 0 -> 9.86/9.47/9.92/9.42/9.62/8.72, accuracy 1.0 for all, loss
// 0.693 -> 0.001..0.005. Threshold: margin above 3, accuracy >= 0.9, loss below log 2 - 0.3.
// Sign flipped once: the DPO logit in framework/rl/preference_math.cpp (rr - rc) gives margin -8.54, accuracy
// 0 (its loss, 0.015, would not tell).
TEST(DpoPipeline, MarginGrows) {
  test::TempDir tmp;
  write_pairs(tmp.path("pairs.jsonl"), 48, 0, kTrainNames);
  write_pairs(tmp.path("eval_pairs.jsonl"), 16, kTrainNames, 16);
  core::write_file_atomic(tmp.path("p.yaml"),
                          pipeline_yaml(tmp.path("run"), 5,
                                        "  - {name: dpo, type: dpo, data: " + tmp.path("pairs.jsonl") +
                                            ", eval_data: " + tmp.path("eval_pairs.jsonl") +
                                            ", beta: 0.5, max_steps: 20, batch_size: 8, lr: 3.0e-3}\n"));
  ASSERT_EQ(test::run_pipeline(1, tmp.path("p.yaml")), 0);
  const auto train = test::read_metrics(tmp.path("run/dpo/metrics.jsonl"), "train");
  const auto evals = test::read_metrics(tmp.path("run/dpo/metrics.jsonl"), "eval");
  ASSERT_EQ(train.size(), 20u);
  ASSERT_EQ(evals.size(), 1u);
  const auto &start = train.front(), &end = evals.back();
  EXPECT_NEAR(start.at("margin").get<double>(), 0.0, 1e-6) << "the policy starts as the reference: " << start.dump();
  EXPECT_GT(end.at("margin").get<double>(), 3.0) << end.dump();
  EXPECT_GE(end.at("accuracy").get<double>(), 0.9) << end.dump();
  EXPECT_LT(end.at("loss").get<double>(), std::log(2.0) - 0.3) << end.dump();
  std::cout << "[ figures  ] margin " << start.at("margin") << " at step 1 (train, before its update) -> "
            << end.at("margin") << " held out after step 20, accuracy " << end.at("accuracy") << ", loss "
            << end.at("loss") << "\n";
}

// ---- ppo and grpo --------------------------------------------------------------------------------------

// The mean rules reward of iterations 1-2 (iteration 1 samples the base policy) against iterations 6-8.
// Threshold: up by more than 0.2 and >= 0.85 at the end (a policy that does not learn stays near 0.5).
void expect_reward_rises(const std::string& metrics_path) {
  const auto train = test::read_metrics(metrics_path, "train");
  ASSERT_EQ(train.size(), 8u);
  const double early = mean_of(train, 0, 2, "reward_mean"), late = mean_of(train, 5, 8, "reward_mean");
  std::ostringstream all;
  for (const auto& r : train) all << r.at("reward_mean").get<double>() << " ";
  EXPECT_GT(late, early + 0.2) << "reward_mean per iteration: " << all.str();
  EXPECT_GE(late, 0.85) << "reward_mean per iteration: " << all.str();
  std::cout << "[ figures  ] reward_mean per iteration: " << all.str() << "(" << early << " -> " << late << ")\n";
}

// 1 rank: 4 prompts x 4 samples an iteration, 4 new tokens, exact_reference ("Tim"), critic and GAE.
// Measured (seeds 1..6), iterations 1-2 -> 6-8: 0.63 -> 0.98, 0.53 -> 1.0, 0.59 -> 0.98, 0.63 -> 1.0,
// 0.53 -> 0.96, 0.53 -> 1.0 (rises of 0.35..0.47).
// Sign flipped once: the policy-gradient term in framework/rl/ppo_math.cpp (+advantages * ratio) gives
// 0.5 0.06 0.13 0.06 0 0 0 0 (0.28 -> 0).
TEST(PpoPipeline, RewardRises) {
  test::TempDir tmp;
  write_boy_prompts(tmp.path("prompts.jsonl"));
  core::write_file_atomic(
      tmp.path("p.yaml"),
      pipeline_yaml(tmp.path("run"), 5,
                    "  - name: ppo\n    type: ppo\n    data: " + tmp.path("prompts.jsonl") +
                        "\n    reward: {type: rules, rules: [{kind: exact_reference}]}\n"
                        "    rollout_batch_size: 4\n    samples_per_prompt: 4\n    minibatch_size: 8\n"
                        "    ppo_epochs: 2\n    max_iterations: 8\n    max_new_tokens: 4\n    kl_coef: 0.02\n"
                        "    actor_lr: 1.0e-3\n    critic_lr: 1.0e-3\n    schedule: constant\n"));
  ASSERT_EQ(test::run_pipeline(1, tmp.path("p.yaml")), 0);
  expect_reward_rises(tmp.path("run/ppo/metrics.jsonl"));
}

// 2 ranks (each samples whole groups): 4 prompts x a group of 4 an iteration, 4 new tokens, contains [Tim],
// beta 0.04. Measured (seeds 1..6), iterations 1-2 -> 6-8: 0.59 -> 0.96, 0.59 -> 0.94, 0.63 -> 0.98,
// 0.63 -> 1.0, 0.59 -> 1.0, 0.56 -> 0.98 (rises of 0.34..0.42).
// Sign flipped once: the policy-gradient term in framework/rl/grpo_math.cpp (+a * ratio) gives
// 0.56 0.06 0.13 0 0 0 0 0 (0.31 -> 0).
TEST(GrpoPipeline, RewardRises) {
  test::TempDir tmp;
  write_boy_prompts(tmp.path("prompts.jsonl"));
  core::write_file_atomic(
      tmp.path("p.yaml"),
      pipeline_yaml(tmp.path("run"), 5,
                    "  - name: grpo\n    type: grpo\n    data: " + tmp.path("prompts.jsonl") +
                        "\n    reward: {type: rules, rules: [{kind: contains, words: [Tim]}]}\n"
                        "    group_size: 4\n    beta: 0.04\n    rollout_batch_size: 4\n    minibatch_size: 8\n"
                        "    ppo_epochs: 2\n    max_iterations: 8\n    max_new_tokens: 4\n"
                        "    actor_lr: 1.0e-3\n    schedule: constant\n"));
  ASSERT_EQ(test::run_pipeline(2, tmp.path("p.yaml")), 0);
  expect_reward_rises(tmp.path("run/grpo/metrics.jsonl"));
}

}  // namespace
}  // namespace reglage
