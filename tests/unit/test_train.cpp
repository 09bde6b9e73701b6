// Training pieces against hand-computed values: AdamW, the learning-rate schedule, gradient clipping;
// checkpoints on disk: atomic layout, verification, falling back past a truncated one, pruning.
#include <gtest/gtest.h>

#include <fstream>

#include "framework/checkpoint/checkpoint.h"
#include "framework/metrics/metrics_log.h"
#include "framework/train/adamw.h"
#include "test_util.h"

namespace reglage {
namespace {

TEST(Train, AdamWFirstStepsByHand) {
  auto w = torch::tensor({1.0f, -2.0f}).set_requires_grad(true);
  train::AdamWConfig c;
  c.weight_decay = 0.0;
  train::AdamW opt({w}, {"w"}, c);
  w.mutable_grad() = torch::tensor({0.5f, -1.0f});
  opt.step(0.1);
  // step 1: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2 -> w -= lr * g / (|g| + eps) = lr * sign(g)
  EXPECT_NEAR(w[0].item<float>(), 0.9f, 1e-6);
  EXPECT_NEAR(w[1].item<float>(), -1.9f, 1e-6);
  w.mutable_grad() = torch::tensor({0.5f, 1.0f});
  opt.step(0.1);
  // element 1, step 2: m = 0.9*0.1*(-1) + 0.1*1 = 0.01; v = 0.999*0.001 + 0.001 = 0.001999
  // m_hat = 0.01/0.19, v_hat = 0.001999/0.001999 = 1 -> update 0.1 * 0.0526316 / (1 + 1e-8)
  EXPECT_NEAR(w[1].item<float>(), -1.9f - 0.1f * (0.01f / 0.19f), 1e-6);
  EXPECT_EQ(opt.steps(), 2);
}

TEST(Train, AdamWDecoupledDecayOnMatricesOnly) {
  auto m = torch::ones({2, 2}).set_requires_grad(true);
  auto v = torch::ones({2}).set_requires_grad(true);
  train::AdamWConfig c;
  c.weight_decay = 0.5;
  train::AdamW opt({m, v}, {"m", "v"}, c);
  opt.step(0.1);  // no gradients: only the decay acts, w *= 1 - lr * wd
  EXPECT_NEAR(m[0][0].item<float>(), 0.95f, 1e-7);
  EXPECT_NEAR(v[0].item<float>(), 1.0f, 1e-7);
}

TEST(Train, AdamWBfloat16KeepsFloat32Master) {
  auto w = torch::full({4}, 1.0f).to(torch::kBFloat16).set_requires_grad(true);
  train::AdamW opt({w}, {"w"}, {});
  for (int i = 0; i < 10; ++i) {
    w.mutable_grad() = torch::full({4}, 1.0f).to(torch::kBFloat16);
    opt.step(1e-4);  // 1e-4 steps vanish in bf16 (ulp at 1.0 is 2^-7) but accumulate in the master
  }
  auto state = opt.state_tensors();
  auto master = std::find_if(state.begin(), state.end(), [](auto& p) { return p.first == "master.w"; });
  ASSERT_NE(master, state.end());
  EXPECT_NEAR(master->second[0].item<float>(), 1.0f - 10 * 1e-4f, 1e-6);
  EXPECT_EQ(w.scalar_type(), torch::kBFloat16);
}

TEST(Train, AdamWStateRoundTrip) {
  auto a = torch::tensor({1.0f, 2.0f}).set_requires_grad(true);
  train::AdamW opt({a}, {"a"}, {});
  a.mutable_grad() = torch::tensor({0.3f, -0.7f});
  opt.step(0.01);
  std::map<std::string, torch::Tensor> saved;
  for (auto& [k, t] : opt.state_tensors()) saved[k] = t.clone();
  auto b = a.detach().clone().set_requires_grad(true);
  train::AdamW opt2({b}, {"a"}, {});
  opt2.load_state(saved, opt.steps());
  a.mutable_grad() = torch::tensor({0.1f, 0.2f});
  b.mutable_grad() = torch::tensor({0.1f, 0.2f});
  opt.step(0.01);
  opt2.step(0.01);
  EXPECT_TRUE(torch::equal(a, b));
  saved.erase("exp_avg.a");
  EXPECT_THROW(opt2.load_state(saved, 1), Error);
}

TEST(Train, ScheduleByHand) {
  // warm-up 2 steps to lr 1.0, then cosine over the remaining 5 to 0.1
  EXPECT_DOUBLE_EQ(train::scheduled_lr(0, 7, 1.0, 2, config::Schedule::kCosine, 0.1), 0.5);
  EXPECT_DOUBLE_EQ(train::scheduled_lr(1, 7, 1.0, 2, config::Schedule::kCosine, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(train::scheduled_lr(2, 7, 1.0, 2, config::Schedule::kCosine, 0.1), 1.0);
  EXPECT_NEAR(train::scheduled_lr(4, 7, 1.0, 2, config::Schedule::kCosine, 0.1), 0.55, 1e-12);  // half way: (1 + 0.1) / 2
  EXPECT_NEAR(train::scheduled_lr(6, 7, 1.0, 2, config::Schedule::kCosine, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(train::scheduled_lr(4, 7, 1.0, 2, config::Schedule::kLinear, 0.0), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(train::scheduled_lr(5, 7, 1.0, 2, config::Schedule::kConstant, 0.0), 1.0);
}

TEST(Train, ClipGradNorm) {
  auto a = torch::zeros({2}).set_requires_grad(true);
  auto b = torch::zeros({1}).set_requires_grad(true);
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  EXPECT_NEAR(train::clip_grad_norm({a, b}, 1.0), 5.0, 1e-9);
  EXPECT_NEAR(a.grad()[0].item<float>(), 0.6f, 1e-6);
  EXPECT_NEAR(b.grad()[0].item<float>(), 0.8f, 1e-6);
  EXPECT_NEAR(train::clip_grad_norm({a, b}, 0.0), 1.0, 1e-6);  // 0 = measure only
}

TEST(Checkpoint, WriteVerifyAndFallBack) {
  test::TempDir tmp;
  const std::string dir = tmp.path("ckpt");
  checkpoint::write_checkpoint(dir, 4, {{"a.bin", "hello"}, {"b.bin", std::string(1000, 'x')}}, {{"config_hash", "h"}});
  checkpoint::write_checkpoint(dir, 8, {{"a.bin", "world"}, {"b.bin", std::string(1000, 'y')}}, {{"config_hash", "h"}});
  EXPECT_EQ(checkpoint::list_steps(dir), (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(checkpoint::verify(dir + "/step-8"), "");
  // truncate a file of the newest: it is reported and the older one used
  std::ofstream(dir + "/step-8/b.bin", std::ios::binary | std::ios::trunc) << std::string(500, 'y');
  std::vector<std::string> warnings;
  auto c = checkpoint::latest_valid(dir, [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 4);
  EXPECT_EQ(c->meta.at("config_hash"), "h");
  EXPECT_EQ(checkpoint::read_checkpoint_file(*c, "a.bin"), "hello");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("b.bin has 500 bytes"), std::string::npos) << warnings[0];
  // same size, different bytes: the checksum catches it
  std::ofstream(dir + "/step-4/a.bin", std::ios::binary | std::ios::trunc) << "jello";
  EXPECT_NE(checkpoint::verify(dir + "/step-4").find("checksum"), std::string::npos);
  EXPECT_FALSE(checkpoint::latest_valid(dir, [](const std::string&) {}).has_value());
}

TEST(Checkpoint, DirectoryWithoutManifestIsNotACheckpoint) {
  test::TempDir tmp;
  std::filesystem::create_directories(tmp.path("c/step-3"));
  core::write_file_atomic(tmp.path("c/step-3/a.bin"), "x");
  EXPECT_EQ(checkpoint::verify(tmp.path("c/step-3")), "no manifest.json");
}

TEST(Checkpoint, PruneKeepsTheNewest) {
  test::TempDir tmp;
  for (int s : {2, 4, 6, 8}) checkpoint::write_checkpoint(tmp.path("c"), s, {{"f", "x"}});
  std::filesystem::create_directories(tmp.path("c/.tmp-step-10-123"));
  checkpoint::prune(tmp.path("c"), 2);
  EXPECT_EQ(checkpoint::list_steps(tmp.path("c")), (std::vector<int64_t>{6, 8}));
  EXPECT_FALSE(core::file_exists(tmp.path("c/.tmp-step-10-123")));
}

TEST(Checkpoint, ChecksumIsFnv1a) {
  // FNV-1a 64 test vectors: "" and "a"
  EXPECT_EQ(checkpoint::checksum(""), "cbf29ce484222325");
  EXPECT_EQ(checkpoint::checksum("a"), "af63dc4c8601ec8c");
}

TEST(Metrics, ResumeDropsLinesPastTheCheckpoint) {
  test::TempDir tmp;
  core::write_file_atomic(tmp.path("m.jsonl"), "{\"step\":1,\"split\":\"train\",\"loss\":2}\n"
                                               "{\"step\":2,\"split\":\"train\",\"loss\":1}\n"
                                               "{\"step\":2,\"split\":\"eval\",\"loss\":1.5}\n"
                                               "{\"step\":3,\"spl");
  metrics::MetricsLog log(tmp.path("m.jsonl"), 1);
  log.write({{"step", 2}, {"split", "train"}, {"loss", 0.9}});
  EXPECT_EQ(core::read_file(tmp.path("m.jsonl")),
            "{\"step\":1,\"split\":\"train\",\"loss\":2}\n{\"loss\":0.9,\"split\":\"train\",\"step\":2}\n");
  auto last = metrics::last_records(tmp.path("m.jsonl"));
  EXPECT_DOUBLE_EQ(last.at("train")["loss"].get<double>(), 0.9);
}

}  // namespace
}  // namespace reglage
