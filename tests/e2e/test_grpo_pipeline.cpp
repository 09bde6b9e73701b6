// The grpo stage end to end on 2 ranks: sft -> grpo with a summed rules reward (normalised, so the
// normaliser's state travels in checkpoints), a KL term, an entropy bonus and LoRA dropout; killed with
// SIGKILL after grpo's iteration-2 checkpoint and started again, it ends with the same adapter and metrics
// (timings aside) as an uninterrupted run. Then `reglage eval --config --stage grpo` on the result.
#include <gtest/gtest.h>

#include <cstdio>
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

void write_data(const test::TempDir& tmp) {
  std::ostringstream sft, prompts;
  for (int i = 0; i < 16; ++i) {
    const std::string name = kNames[i % 8];
    sft << nlohmann::json{{"prompt", "Write a story about a cat named " + name + "."},
                          {"completion", "Once upon a time, there was a cat named " + name + "."}}
               .dump()
        << "\n";
    prompts << nlohmann::json{{"prompt", "Write a story about a fox named " + name + "."}, {"reference", name}}.dump()
            << "\n";
  }
  core::write_file_atomic(tmp.path("sft.jsonl"), sft.str());
  core::write_file_atomic(tmp.path("prompts.jsonl"), prompts.str());
  core::write_file_atomic(tmp.path("success.yaml"), "type: rules\nrules: [{kind: exact_reference}]\n");
}

std::string yaml(const test::TempDir& tmp, const std::string& run_dir) {
  return "run_dir: " + run_dir + "\nseed: 5\nthreads: 1\nmodel:\n  path: " +
         source_path("models/stories260K/stories260K.bin") +
         "\nlora: {rank: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj]}\nstages:\n"
         "  - {name: sft, type: sft, data: " + tmp.path("sft.jsonl") + ", max_steps: 4, batch_size: 4, lr: 1.0e-3}\n"
         "  - name: grpo\n"
         "    type: grpo\n"
         "    init_from: sft\n"
         "    data: " + tmp.path("prompts.jsonl") + "\n"
         "    eval_data: " + tmp.path("prompts.jsonl") + "\n"
         "    reward:\n"
         "      type: sum\n"
         "      normalize: true\n"
         "      clip: 3\n"
         "      parts:\n"
         "        - {weight: 1.0, type: rules, rules: [{kind: exact_reference}]}\n"
         "        - {weight: 0.5, type: rules, rules: [{kind: contains, words: [fox]}]}\n"
         "    group_size: 4\n"
         "    beta: 0.05\n"
         "    rollout_batch_size: 4\n"
         "    minibatch_size: 8\n"
         "    ppo_epochs: 2\n"
         "    max_iterations: 4\n"
         "    max_new_tokens: 12\n"
         "    entropy_coef: 0.01\n"
         "    actor_lr: 1.0e-3\n"
         "    checkpoint_every: 2\n"
         "    eval_every: 2\n";
}

// stdout of a command (the last line is eval's JSON).
std::string output_of(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  ::pclose(p);
  return out;
}

TEST(GrpoPipeline, ExactResumeAfterSigkillTwoRanksAndEval) {
  test::TempDir tmp;
  write_data(tmp);
  core::write_file_atomic(tmp.path("a.yaml"), yaml(tmp, tmp.path("a")));
  core::write_file_atomic(tmp.path("b.yaml"), yaml(tmp, tmp.path("b")));
  test::ResumeCase c;
  c.whole_yaml = tmp.path("a.yaml"), c.killed_yaml = tmp.path("b.yaml");
  c.whole_dir = tmp.path("a"), c.killed_dir = tmp.path("b");
  c.stage = "grpo";  // sft checkpoints only at its end (step 4), so checkpoint 2 is grpo's iteration 2
  c.timing_keys = test::kRlTimingKeys;
  std::string ma;
  ASSERT_NO_FATAL_FAILURE(test::expect_exact_resume(c, &ma));
  // Every iteration logged its GRPO quantities; the policy moved away from the reference.
  std::istringstream in(ma);
  std::string line;
  int train_lines = 0, eval_lines = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["split"] == "eval") ++eval_lines;
    if (j["split"] != "train") continue;
    ++train_lines;
    for (const char* k : {"reward_mean", "reward_std", "zero_std_fraction", "advantage_abs_mean", "kl",
                          "kl_per_token", "beta", "loss", "policy_loss", "kl_loss", "entropy", "clip_fraction",
                          "grad_norm", "response_length", "actor_lr"})
      EXPECT_TRUE(j.contains(k)) << k << " in " << line;
    EXPECT_GE(j["zero_std_fraction"].get<double>(), 0.0);
    EXPECT_LE(j["zero_std_fraction"].get<double>(), 1.0);
    if (j["step"] == 4) EXPECT_NE(j["kl"].get<double>(), 0.0) << line;
  }
  EXPECT_EQ(train_lines, 4);
  EXPECT_EQ(eval_lines, 2);

  // eval of the grpo stage's policy (its adapter on the sft-merged base)
  const std::string eval = std::string(REGLAGE_BINARY) + " eval --config " + tmp.path("a.yaml") + " --prompts " +
                           tmp.path("prompts.jsonl") + " --reward " + tmp.path("success.yaml") +
                           " --max-new-tokens 12 --stage grpo 2>/dev/null";
  const std::string out = output_of(eval);
  const size_t start = out.rfind("\n{");
  auto j = nlohmann::json::parse(out.substr(start == std::string::npos ? 0 : start + 1));
  EXPECT_EQ(j["responses"], 16);
  EXPECT_TRUE(j.contains("pass_rate") && j.contains("kl")) << j.dump();
}

}  // namespace
}  // namespace reglage
