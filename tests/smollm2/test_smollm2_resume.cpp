// Exact resume on the real model: a LoRA SFT stage on SmolLM2-135M-Instruct with "messages" rows (its own chat
// template), the base stored in bfloat16, activation checkpointing and packing, on 2 ranks. Killed with
// SIGKILL after its step-2 checkpoint and run again, it ends with the same adapter, bit for bit, and the same
// metrics as an uninterrupted run.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "e2e_util.h"
#include "resume_util.h"
#include "framework/io/safetensors.h"
#include "smollm2_util.h"

namespace reglage {
namespace {

void write_chats(const std::string& path) {
  static const char* cities[] = {"Paris", "Rome", "Madrid", "Berlin", "Vienna", "Lisbon", "Prague", "Oslo"};
  static const char* countries[] = {"France", "Italy", "Spain", "Germany", "Austria", "Portugal", "Czechia", "Norway"};
  std::string rows;
  for (int i = 0; i < 16; ++i) {
    nlohmann::json messages = nlohmann::json::array();
    messages.push_back({{"role", "user"}, {"content", std::string("Capital of ") + countries[i % 8] + "?"}});
    messages.push_back({{"role", "assistant"}, {"content", std::string("It is ") + cities[i % 8] + "."}});
    if (i % 3 == 0) {  // some rows have two turns, so packed rows differ in length
      messages.push_back({{"role", "user"}, {"content", "Are you sure?"}});
      messages.push_back({{"role", "assistant"}, {"content", "Yes."}});
    }
    rows += nlohmann::json{{"messages", messages}}.dump() + "\n";
  }
  core::write_file_atomic(path, rows);
}

std::string yaml(const test::TempDir& tmp, const std::string& run_dir) {
  return "run_dir: " + run_dir + "\nseed: 3\nthreads: 1\n"
         "model:\n  path: " + test::quoted(test::smollm2_gguf()) + "\n  storage: bfloat16\n"
         "lora: {rank: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj]}\n"
         "stages:\n"
         "  - name: sft\n    type: sft\n    data: " + tmp.path("chats.jsonl") + "\n"
         "    max_steps: 4\n    batch_size: 4\n    lr: 1.0e-3\n    checkpoint_every: 2\n"
         "    activation_checkpointing: true\n    packing: true\n    max_seq_len: 128\n";
}

TEST(Smollm2Resume, ExactResumeAfterSigkillTwoRanksStoredBaseCheckpointingPacking) {
  test::TempDir tmp;
  write_chats(tmp.path("chats.jsonl"));
  core::write_file_atomic(tmp.path("a.yaml"), yaml(tmp, tmp.path("a")));
  core::write_file_atomic(tmp.path("b.yaml"), yaml(tmp, tmp.path("b")));
  test::ResumeCase c;
  c.whole_yaml = tmp.path("a.yaml"), c.killed_yaml = tmp.path("b.yaml");
  c.whole_dir = tmp.path("a"), c.killed_dir = tmp.path("b");
  c.stage = "sft";
  ASSERT_NO_FATAL_FAILURE(test::expect_exact_resume(c));
  auto a = io::read_safetensors(tmp.path("a/sft/final/adapter_model.safetensors"));
  ASSERT_EQ(a.size(), 2u * 2u * 30u);  // A and B of q_proj and v_proj in 30 layers
  // The stage learnt something: the adapter's B matrices moved away from zero.
  double moved = 0;
  for (const auto& [name, t] : a)
    if (name.find("lora_B") != std::string::npos) moved = std::max(moved, t.abs().max().item<double>());
  EXPECT_GT(moved, 0.0);
}

}  // namespace
}  // namespace reglage
