// The dpo stage end to end: exact resume after SIGKILL on 2 ranks, and the preference being learnt.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "framework/io/safetensors.h"
#include "e2e_util.h"
#include "resume_util.h"
#include "test_util.h"

namespace reglage {
namespace {

using test::source_path;

const char* kNames[] = {"Dalu", "Koti", "Mira", "Tobi", "Lena", "Rumi", "Sako", "Pela"};

void write_sft(const std::string& path) {
  std::ostringstream out;
  for (int i = 0; i < 16; ++i)
    out << nlohmann::json{{"prompt", std::string("Write a story about a cat named ") + kNames[i % 8] + "."},
                          {"completion", std::string("Once upon a time, there was a cat named ") + kNames[i % 8] + "."}}
               .dump()
        << "\n";
  core::write_file_atomic(path, out.str());
}

// chosen uses the requested name, rejected another one: the preference the stage has to learn.
void write_pairs(const std::string& path, int n, int offset) {
  std::ostringstream out;
  for (int i = 0; i < n; ++i) {
    const std::string name = kNames[(i + offset) % 8], other = kNames[(i + offset + 3) % 8];
    out << nlohmann::json{{"prompt", "Write a story about a dog named " + name + "."},
                          {"chosen", "Once upon a time, there was a dog named " + name + ". " + name + " was happy."},
                          {"rejected", "Once upon a time, there was a dog named " + other + ". " + other + " was happy."}}
               .dump()
        << "\n";
  }
  core::write_file_atomic(path, out.str());
}

std::string yaml(const test::TempDir& tmp, const std::string& run_dir, const std::string& dpo) {
  return "run_dir: " + run_dir + "\nseed: 5\nthreads: 1\nmodel:\n  path: " +
         source_path("models/stories260K/stories260K.bin") +
         "\nlora: {rank: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj, down_proj]}\nstages:\n"
         "  - {name: sft, type: sft, data: " + tmp.path("sft.jsonl") + ", max_steps: 4, batch_size: 4, lr: 1.0e-3}\n"
         "  - {name: dpo, type: dpo, init_from: sft, data: " + tmp.path("pairs.jsonl") +
         ", eval_data: " + tmp.path("eval_pairs.jsonl") + ", " + dpo + "}\n";
}

std::vector<nlohmann::json> records(const std::string& path) {
  std::istringstream in(core::read_file(path));
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

class DpoPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    write_sft(tmp_.path("sft.jsonl"));
    write_pairs(tmp_.path("pairs.jsonl"), 24, 0);
    write_pairs(tmp_.path("eval_pairs.jsonl"), 8, 5);
  }
  test::TempDir tmp_;
};

// Conservative DPO + the RPO term, with gradient accumulation and LoRA dropout, killed after the step-3
// checkpoint.
TEST_F(DpoPipeline, ExactResumeAfterSigkillTwoRanks) {
  const std::string dpo = "loss: cdpo, label_smoothing: 0.1, rpo_alpha: 0.5, beta: 0.2, max_steps: 6, batch_size: 8, "
                          "grad_accum: 2, lr: 2.0e-3, checkpoint_every: 3, eval_every: 3";
  core::write_file_atomic(tmp_.path("a.yaml"), yaml(tmp_, tmp_.path("a"), dpo));
  core::write_file_atomic(tmp_.path("b.yaml"), yaml(tmp_, tmp_.path("b"), dpo));
  test::ResumeCase c;
  c.whole_yaml = tmp_.path("a.yaml"), c.killed_yaml = tmp_.path("b.yaml");
  c.whole_dir = tmp_.path("a"), c.killed_dir = tmp_.path("b");
  c.stage = "dpo";
  c.kill_after_checkpoint = 3;  // sft's one checkpoint is its step 4, so step 3 is dpo's
  c.checkpoint_step = 3;
  c.timing_keys = {"pairs_per_s"};
  std::string metrics;
  ASSERT_NO_FATAL_FAILURE(test::expect_exact_resume(c, &metrics));
  const auto first = nlohmann::json::parse(metrics.substr(0, metrics.find('\n')));
  for (const char* key : {"loss", "accuracy", "chosen_reward", "rejected_reward", "margin", "chosen_nll", "grad_norm"})
    EXPECT_TRUE(first.contains(key)) << key;
}

// One rank, sigmoid loss: the held-out pairs (names unseen in training order) are ranked right by the end.
TEST_F(DpoPipeline, LearnsThePreference) {
  core::write_file_atomic(tmp_.path("p.yaml"),
                          yaml(tmp_, tmp_.path("p"), "beta: 0.5, max_steps: 40, batch_size: 4, lr: 3.0e-3, "
                                                     "eval_every: 40"));
  ASSERT_EQ(test::run_pipeline(1, tmp_.path("p.yaml")), 0);
  const auto recs = records(tmp_.path("p/dpo/metrics.jsonl"));
  ASSERT_FALSE(recs.empty());
  const auto& last = recs.back();
  ASSERT_EQ(last["split"], "eval");
  // At step 0 every implicit reward is 0 (adapter B = 0): loss log 2, margin 0.
  EXPECT_LT(last["loss"].get<double>(), 0.6931 - 0.05) << last.dump();
  EXPECT_GT(last["margin"].get<double>(), 0.0) << last.dump();
  EXPECT_GE(last["accuracy"].get<double>(), 0.75) << last.dump();
}

}  // namespace
}  // namespace reglage
