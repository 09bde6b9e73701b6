// The model against external references: llama2.c's run.c logits for stories260K (legacy and version-1
// files, one forward and token by token through the KV cache), and Hugging Face transformers' logits for
// tiny random Llama, Mistral, Qwen2 models and a PEFT adapter (tests/data/hf, made by make_fixtures.py).
#include <gtest/gtest.h>

#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "test_util.h"

namespace reglage {
namespace {

using test::max_abs_diff;
using test::read_ref_logits;
using test::source_path;

torch::Tensor full_logits(model::CausalLM& m, const std::vector<int64_t>& ids, const model::AdapterSet& a = {}) {
  torch::NoGradGuard no_grad;
  auto x = torch::tensor(ids, torch::kLong).unsqueeze(0);  // (1, T)
  return m->forward({x, {}, {}, nullptr, a})[0];          // (T, V)
}

torch::Tensor incremental_logits(model::CausalLM& m, const std::vector<int64_t>& ids,
                                 const model::AdapterSet& a = {}) {
  torch::NoGradGuard no_grad;
  auto x = torch::tensor(ids, torch::kLong).unsqueeze(0);
  auto cache = m->new_cache(1, int64_t(ids.size()));
  std::vector<torch::Tensor> rows;
  for (int64_t t = 0; t < int64_t(ids.size()); ++t)
    rows.push_back(m->forward({x.narrow(1, t, 1), {}, {}, &cache, a})[0][0]);
  return torch::stack(rows);  // (T, V)
}

TEST(ModelReference, Llama2cLegacyMatchesRunC) {
  auto ref = read_ref_logits(source_path("tests/data/reference/ref_logits_once_upon_a_time_64.bin"));
  auto m = io::load_model(test::model_260k());
  EXPECT_LT(max_abs_diff(full_logits(m, ref.ids), ref.logits), 1e-4);
  EXPECT_LT(max_abs_diff(incremental_logits(m, ref.ids), ref.logits), 1e-4);
}

TEST(ModelReference, Llama2cVersion1MatchesRunC) {
  auto ref = read_ref_logits(source_path("tests/data/reference/ref_logits_once_upon_a_time_64.bin"));
  auto m = io::load_model(test::model_260k_v1());
  EXPECT_LT(max_abs_diff(full_logits(m, ref.ids), ref.logits), 1e-4);
  EXPECT_LT(max_abs_diff(incremental_logits(m, ref.ids), ref.logits), 1e-4);
}

TEST(ModelReference, Bfloat16StaysCloseToFloat32) {
  auto ref = read_ref_logits(source_path("tests/data/reference/ref_logits_once_upon_a_time_64.bin"));
  auto m = io::load_model(test::model_260k(), torch::kBFloat16);
  EXPECT_EQ(m->dtype(), torch::kBFloat16);
  auto logits = full_logits(m, ref.ids);
  // bf16 keeps 8 mantissa bits: logits move, but by far less than their spread (~10).
  EXPECT_LT(max_abs_diff(logits, ref.logits), 0.5);
  auto agree = (logits.argmax(-1) == ref.logits.argmax(-1)).to(torch::kFloat32).mean().item<double>();
  EXPECT_GT(agree, 0.9);
}

class HfFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(HfFixture, MatchesTransformers) {
  const std::string dir = source_path(std::string("tests/data/hf/") + GetParam());
  auto ref = read_ref_logits(dir + "/ref_logits.bin");
  auto m = io::load_model(dir);
  EXPECT_LT(max_abs_diff(full_logits(m, ref.ids), ref.logits), 1e-4) << dir;
  EXPECT_LT(max_abs_diff(incremental_logits(m, ref.ids), ref.logits), 1e-4) << dir;
}

INSTANTIATE_TEST_SUITE_P(Models, HfFixture,
                         ::testing::Values("llama_f32", "llama_bf16_sharded", "mistral_f16", "qwen2_f32"));

TEST(ModelReference, PeftAdapterMatchesPeft) {
  auto ref = read_ref_logits(source_path("tests/data/hf/peft_llama/ref_logits.bin"));
  auto m = io::load_model(source_path("tests/data/hf/llama_f32"));
  auto base = full_logits(m, ref.ids);
  auto cfg = lora::load_peft(m, "actor", source_path("tests/data/hf/peft_llama"));
  EXPECT_EQ(cfg.rank, 4);
  EXPECT_LT(max_abs_diff(full_logits(m, ref.ids, {"actor"}), ref.logits), 1e-4);
  EXPECT_LT(max_abs_diff(incremental_logits(m, ref.ids, {"actor"}), ref.logits), 1e-4);
  // The adapter changes the logits a lot; without it active the model is the base, exactly.
  EXPECT_GT(max_abs_diff(base, ref.logits), 0.5);
  EXPECT_TRUE(torch::equal(full_logits(m, ref.ids), base));
}

}  // namespace
}  // namespace reglage
