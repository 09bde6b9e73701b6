// The ppo stage end to end on 2 ranks: sft -> reward_model -> ppo with a summed reward (the reward model on
// the shared base + a rule), normalised rewards, an adaptive KL coefficient and LoRA dropout; killed with
// SIGKILL after a mid-run checkpoint and started again, it ends with the same adapters, value head and
// metrics as an uninterrupted run. Then `reglage eval --config --stage` on the result.
#include <gtest/gtest.h>
#include <signal.h>

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
  std::ostringstream sft, pairs, prompts;
  for (int i = 0; i < 16; ++i) {
    const std::string name = kNames[i % 8], other = kNames[(i + 3) % 8];
    sft << nlohmann::json{{"prompt", "Write a story about a cat named " + name + "."},
                          {"completion", "Once upon a time, there was a cat named " + name + "."}}
               .dump()
        << "\n";
    pairs << nlohmann::json{{"prompt", "Write a story about a dog named " + name + "."},
                            {"chosen", "Once upon a time, there was a dog named " + name + "."},
                            {"rejected", "Once upon a time, there was a dog named " + other + "."}}
                 .dump()
          << "\n";
    prompts << nlohmann::json{{"prompt", "Write a story about a fox named " + name + "."}, {"reference", name}}.dump()
            << "\n";
  }
  core::write_file_atomic(tmp.path("sft.jsonl"), sft.str());
  core::write_file_atomic(tmp.path("pairs.jsonl"), pairs.str());
  core::write_file_atomic(tmp.path("prompts.jsonl"), prompts.str());
  core::write_file_atomic(tmp.path("success.yaml"), "type: rules\nrules: [{kind: exact_reference}]\n");
}

std::string yaml(const test::TempDir& tmp, const std::string& run_dir) {
  return "run_dir: " + run_dir + "\nseed: 5\nthreads: 1\nmodel:\n  path: " +
         source_path("models/stories260K/stories260K.bin") +
         "\nlora: {rank: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj]}\nstages:\n"
         "  - {name: sft, type: sft, data: " + tmp.path("sft.jsonl") + ", max_steps: 4, batch_size: 4, lr: 1.0e-3}\n"
         "  - {name: rm, type: reward_model, init_from: sft, data: " + tmp.path("pairs.jsonl") +
         ", max_steps: 3, batch_size: 4, lr: 1.0e-3}\n"
         "  - name: ppo\n"
         "    type: ppo\n"
         "    init_from: sft\n"
         "    data: " + tmp.path("prompts.jsonl") + "\n"
         "    eval_data: " + tmp.path("prompts.jsonl") + "\n"
         "    reward:\n"
         "      type: sum\n"
         "      normalize: true\n"
         "      clip: 3\n"
         "      parts:\n"
         "        - {weight: 1.0, type: model, stage: rm}\n"
         "        - {weight: 0.5, type: rules, rules: [{kind: exact_reference}]}\n"
         "    rollout_batch_size: 4\n"
         "    samples_per_prompt: 2\n"
         "    minibatch_size: 4\n"
         "    ppo_epochs: 2\n"
         "    max_iterations: 4\n"
         "    max_new_tokens: 12\n"
         "    kl_coef: 0.1\n"
         "    kl_target: 0.5\n"
         "    kl_horizon: 100\n"
         "    kl_estimator: k3\n"
         "    entropy_coef: 0.01\n"
         "    actor_lr: 1.0e-3\n"
         "    critic_lr: 1.0e-3\n"
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

nlohmann::json last_json_line(const std::string& out) {
  const size_t start = out.rfind("\n{");
  return nlohmann::json::parse(out.substr(start == std::string::npos ? 0 : start + 1));
}

TEST(PpoPipeline, ExactResumeAfterSigkillTwoRanksAndEval) {
  test::TempDir tmp;
  write_data(tmp);
  core::write_file_atomic(tmp.path("a.yaml"), yaml(tmp, tmp.path("a")));
  core::write_file_atomic(tmp.path("b.yaml"), yaml(tmp, tmp.path("b")));
  test::ResumeCase c;
  c.whole_yaml = tmp.path("a.yaml"), c.killed_yaml = tmp.path("b.yaml");
  c.whole_dir = tmp.path("a"), c.killed_dir = tmp.path("b");
  c.stage = "ppo";  // checkpoint 2 is ppo's iteration 2
  c.final_files = {"adapter_model.safetensors", "critic/adapter_model.safetensors", "critic/value_head.safetensors"};
  c.timing_keys = test::kRlTimingKeys;
  std::string ma;
  ASSERT_NO_FATAL_FAILURE(test::expect_exact_resume(c, &ma));
  // Every iteration logged its PPO quantities; the actor moved away from the reference.
  std::istringstream in(ma);
  std::string line;
  int train_lines = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["split"] != "train") continue;
    ++train_lines;
    for (const char* k : {"reward_mean", "reward_std", "kl", "kl_coef", "entropy", "policy_loss", "value_loss",
                          "clip_fraction", "approx_kl", "explained_variance", "response_length"})
      EXPECT_TRUE(j.contains(k)) << k << " in " << line;
    if (j["step"] == 4) {
      EXPECT_NE(j["kl"].get<double>(), 0.0) << line;
    }
  }
  EXPECT_EQ(train_lines, 4);

  // eval of the ppo stage's policy (and of base, whose KL to itself is 0)
  const std::string eval = std::string(REGLAGE_BINARY) + " eval --config " + tmp.path("a.yaml") + " --prompts " +
                           tmp.path("prompts.jsonl") + " --reward " + tmp.path("success.yaml") + " --max-new-tokens 12";
  auto ppo = last_json_line(output_of(eval + " --stage ppo --samples 2 2>/dev/null"));
  EXPECT_EQ(ppo["responses"], 32);
  EXPECT_TRUE(ppo.contains("pass_rate") && ppo.contains("reward_mean") && ppo.contains("kl")) << ppo.dump();
  EXPECT_EQ(ppo["pass_rate"].get<double>(), ppo["reward_mean"].get<double>());  // one check of weight 1
  auto base = last_json_line(output_of(eval + " --stage base 2>/dev/null"));
  EXPECT_EQ(base["kl"].get<double>(), 0.0);
  EXPECT_EQ(base["responses"], 16);
}

}  // namespace
}  // namespace reglage
