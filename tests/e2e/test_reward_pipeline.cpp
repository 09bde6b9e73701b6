// The reward_model stage end to end (exact resume after SIGKILL) and `reglage serve-reward` scored through
// the http reward source against in-process scoring of the same model.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "framework/io/safetensors.h"
#include "reward/http_source.h"
#include "reward/model_source.h"
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

void write_pairs(const std::string& path, int n) {
  std::ostringstream out;
  for (int i = 0; i < n; ++i) {
    const std::string name = kNames[i % 8], other = kNames[(i + 3) % 8];
    out << nlohmann::json{{"prompt", "Write a story about a dog named " + name + "."},
                          {"chosen", "Once upon a time, there was a dog named " + name + ". " + name + " was happy."},
                          {"rejected", "Once upon a time, there was a dog named " + other + ". " + other + " was happy."}}
               .dump()
        << "\n";
  }
  core::write_file_atomic(path, out.str());
}

std::string yaml(const test::TempDir& tmp, const std::string& run_dir) {
  return "run_dir: " + run_dir + "\nseed: 3\nthreads: 1\nmodel:\n  path: " +
         source_path("models/stories260K/stories260K.bin") +
         "\nlora: {rank: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj]}\nstages:\n"
         "  - {name: sft, type: sft, data: " + tmp.path("sft.jsonl") + ", max_steps: 4, batch_size: 4, lr: 1.0e-3}\n"
         "  - {name: rm, type: reward_model, init_from: sft, data: " + tmp.path("pairs.jsonl") +
         ", eval_data: " + tmp.path("eval_pairs.jsonl") +
         ", max_steps: 6, batch_size: 4, grad_accum: 1, lr: 1.0e-3, checkpoint_every: 3, eval_every: 3}\n";
}

int run(int ranks, const std::string& yaml_path, const std::string& env = "") {
  return test::run_pipeline(ranks, yaml_path, env);
}

class RewardPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    write_sft(tmp_.path("sft.jsonl"));
    write_pairs(tmp_.path("pairs.jsonl"), 24);
    write_pairs(tmp_.path("eval_pairs.jsonl"), 8);
  }
  test::TempDir tmp_;
};

TEST_F(RewardPipeline, ExactResumeAfterSigkillTwoRanks) {
  core::write_file_atomic(tmp_.path("a.yaml"), yaml(tmp_, tmp_.path("a")));
  core::write_file_atomic(tmp_.path("b.yaml"), yaml(tmp_, tmp_.path("b")));
  test::ResumeCase c;
  c.whole_yaml = tmp_.path("a.yaml"), c.killed_yaml = tmp_.path("b.yaml");
  c.whole_dir = tmp_.path("a"), c.killed_dir = tmp_.path("b");
  c.stage = "rm";
  c.kill_after_checkpoint = 3;  // rm's step-3 checkpoint
  c.checkpoint_step = 3;
  c.final_files = {"adapter_model.safetensors", "reward_head.safetensors"};
  c.timing_keys = {"pairs_per_s"};  // metrics past the checkpoint were replayed, not duplicated
  test::expect_exact_resume(c);
}

TEST_F(RewardPipeline, ServedRewardsEqualInProcessScoring) {
  core::write_file_atomic(tmp_.path("p.yaml"), yaml(tmp_, tmp_.path("run")));
  ASSERT_EQ(run(1, tmp_.path("p.yaml")), 0);
  const std::string final_dir = tmp_.path("run/rm/final");

  // Start the server on a free loopback port; the shell prints its pid, the server its address.
  const std::string cmd = "sh -c 'echo $$; exec " + std::string(REGLAGE_BINARY) + " serve-reward --adapter " +
                          final_dir + " --port 0 --threads 1'";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char line[512];
  ASSERT_NE(fgets(line, sizeof(line), pipe), nullptr);
  const int pid = std::atoi(line);
  ASSERT_NE(fgets(line, sizeof(line), pipe), nullptr) << "server did not start";
  const std::string banner = line;
  const auto at = banner.find("http://127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << banner;
  const int port = std::atoi(banner.c_str() + at + 17);

  std::vector<reward::RewardInput> inputs;
  for (int i = 0; i < 10; ++i) {
    const std::string name = kNames[i % 8], other = kNames[(i + 5) % 8];
    inputs.push_back({"Write a story about a fox named " + name + ".",
                      "Once upon a time, there was a fox named " + (i % 2 ? name : other) + ".", ""});
  }
  reward::HttpRewardConfig hc;
  hc.url = "http://127.0.0.1:" + std::to_string(port) + "/score";
  hc.batch_size = 4;
  hc.timeout_s = 60;
  auto served = reward::make_http_source(hc)->score(inputs);
  auto local = reward::make_model_source(final_dir)->score(inputs);
  kill(pid, SIGTERM);
  pclose(pipe);
  ASSERT_EQ(served.size(), local.size());
  for (size_t i = 0; i < local.size(); ++i) EXPECT_NEAR(served[i], local[i], 1e-5) << i;
}

}  // namespace
}  // namespace reglage
