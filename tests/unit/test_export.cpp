// The pieces of framework/io/export.h without a pipeline run: the weight interpolation's ends are exact and
// its middle is the float64 lerp, scaling an adapter scales its change, and the small checks' messages.
#include <gtest/gtest.h>

#include <cmath>

#include "framework/io/export.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "test_util.h"

namespace reglage {
namespace {

// stories260K with every weight moved by a seeded random amount: a stand-in for fine-tuned weights.
model::CausalLM perturbed_260k(uint64_t seed) {
  auto m = io::load_model(test::model_260k());
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.01);
  return m;
}

std::map<std::string, torch::Tensor> weights_of(model::CausalLM& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : m->named_parameters(/*recurse=*/true)) out[item.key()] = item.value().clone();
  return out;
}

TEST(ExportWeights, InterpolationEndsAreExact) {
  auto base = io::load_model(test::model_260k());
  auto ft = perturbed_260k(1);
  const auto w_ft = weights_of(ft), w_base = weights_of(base);
  io::interpolate_weights(ft, base, 1.0, torch::kFloat32);
  for (const auto& [name, t] : weights_of(ft)) EXPECT_TRUE(torch::equal(t, w_ft.at(name))) << name;
  io::interpolate_weights(ft, base, 0.0, torch::kFloat32);
  for (const auto& [name, t] : weights_of(ft)) EXPECT_TRUE(torch::equal(t, w_base.at(name))) << name;
}

TEST(ExportWeights, InterpolationIsTheFloat64LerpRoundedOnce) {
  auto base = io::load_model(test::model_260k());
  auto ft = perturbed_260k(2);
  const auto w_ft = weights_of(ft), w_base = weights_of(base);
  io::interpolate_weights(ft, base, 0.3, torch::kBFloat16);
  EXPECT_EQ(ft->dtype(), torch::kBFloat16);
  for (const auto& [name, t] : weights_of(ft)) {
    const auto want = w_base.at(name).to(torch::kFloat64) * 0.7 + w_ft.at(name).to(torch::kFloat64) * 0.3;
    EXPECT_TRUE(torch::equal(t, want.to(torch::kBFloat16))) << name;
  }
}

TEST(ExportWeights, InterpolationRefusesADifferentModel) {
  auto base = io::load_model(test::model_260k());
  model::ModelConfig cfg = base->config();
  cfg.hidden_dim *= 2;
  model::CausalLM other(cfg);
  test::expect_error([&] { io::interpolate_weights(other, base, 0.5, torch::kFloat32); },
                     {"model.layers.0.mlp.gate_proj.weight", "has shape"});
}

TEST(ExportWeights, ScalingAnAdapterScalesItsChange) {
  auto m = io::load_model(test::model_260k());
  lora::LoraConfig c;
  c.rank = 4;
  lora::add_adapter(m, "a", c, 1);
  torch::manual_seed(3);
  {
    torch::NoGradGuard no_grad;
    for (auto& [path, layer] : m->linear_layers())
      if (layer->has_adapter("a")) layer->adapter("a").B.normal_(0.0, 0.1);
  }
  const auto before = lora::adapter_tensors(m, "a");
  std::vector<torch::Tensor> copies;
  for (const auto& [key, t] : before) copies.push_back(t.clone());
  io::scale_adapter(m, "a", 1.0);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i].second, copies[i])) << before[i].first;
  io::scale_adapter(m, "a", 0.5);
  for (size_t i = 0; i < before.size(); ++i) {
    const bool is_b = before[i].first.find(".lora_B.") != std::string::npos;
    EXPECT_TRUE(torch::equal(before[i].second, is_b ? copies[i] * 0.5 : copies[i])) << before[i].first;
  }
  test::expect_error([&] { io::scale_adapter(m, "missing", 0.5); }, {"no adapter named 'missing'"});
}

TEST(ExportWeights, ChecksAndNames) {
  io::check_merge_weight(0.0);
  io::check_merge_weight(1.0);
  test::expect_error([] { io::check_merge_weight(1.5); }, {"--merge-weight = 1.5 (must be in [0, 1])"});
  test::expect_error([] { io::check_merge_weight(std::nan("")); }, {"--merge-weight = nan"});
  EXPECT_EQ(io::last_lineage_stage({"base.bin", {}}), "");
  EXPECT_EQ(io::last_lineage_stage({"base.bin", {"runs/a/sft/final", "runs/a/sft2/final/"}}), "sft2");
  test::TempDir tmp;
  io::check_export_dir(tmp.path("new"));
  io::check_export_dir(tmp.path());  // empty
  core::write_file_atomic(tmp.path("f"), "x");
  test::expect_error([&] { io::check_export_dir(tmp.path(), "--out "); }, {"--out " + tmp.path(), "not empty"});
  test::expect_error([&] { io::check_export_dir(tmp.path("f"), "--out "); }, {"not a directory"});
  test::expect_error([&] { io::read_stage_output(tmp.path(), "base.bin"); },
                     {tmp.path(), "neither adapter_config.json"});
}

}  // namespace
}  // namespace reglage
