// Model rewards on a shared base: each `type: model` part of a `sum` loads its reward model's adapter under
// its own name, so two parts (two reward models, or one twice) do not collide, and the sum scores exactly
// the weighted sum of each reward model scored alone on its own copy of the base.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <fstream>

#include "framework/checkpoint/manifest.h"
#include "framework/config/reward_config.h"
#include "framework/io/lineage.h"
#include "framework/io/safetensors.h"
#include "framework/lora/adapter.h"
#include "framework/model/heads.h"
#include "reward/model_source.h"
#include "reward/reward_factory.h"
#include "test_util.h"

namespace reglage::reward {
namespace {

using test::TempDir;

// A reward_model stage's final/ on the stories260K base: a LoRA adapter whose B is drawn (not 0, so the
// adapter changes the scores), a scalar head, the lineage and the manifest, as the stage writes them.
std::string make_reward_model_dir(const std::string& dir, uint64_t seed) {
  const io::Lineage lineage{test::model_260k(), {}};
  auto m = io::load_lineage(lineage, torch::kFloat32);
  lora::LoraConfig lc;
  lc.rank = 4;
  lora::add_adapter(m, "rm", lc, seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 100);
  {
    torch::NoGradGuard no_grad;
    for (auto& [key, t] : lora::adapter_tensors(m, "rm"))
      if (key.find("lora_B") != std::string::npos) t.normal_(0.0, 0.05, gen);
  }
  lora::save_peft(m, "rm", dir, lineage.base_model);
  model::ScalarHead head(m->config().dim, seed + 7);
  io::write_safetensors(dir + "/reward_head.safetensors", {{"weight", head->weight}, {"bias", head->bias}});
  io::write_lineage(dir, lineage);
  checkpoint::write_output_manifest(dir);
  return dir;
}

TEST(RewardFactory, ModelPartsOfASumEachGetTheirOwnAdapter) {
  TempDir tmp;
  const std::string a = make_reward_model_dir(tmp.path("rm_a"), 11);
  const std::string b = make_reward_model_dir(tmp.path("rm_b"), 12);
  {
    std::ofstream out(tmp.path("r.yaml"));
    out << "type: sum\nparts:\n"
        << "  - {weight: 0.5, type: model, path: " << a << "}\n"
        << "  - {weight: 2.0, type: model, path: " << b << "}\n"
        << "  - {weight: -1.5, type: model, path: " << a << "}\n";  // the same reward model again
  }
  const config::RewardSpec spec = config::load_reward_file(tmp.path("r.yaml"));

  // All three parts go onto one shared base (the policy's, in a ppo stage), each as its own adapter.
  const io::Lineage base{test::model_260k(), {}};
  RewardBuildContext ctx{"", test::model_260k(), io::load_lineage(base, torch::kFloat32), base};
  auto sum = make_reward_source(spec, ctx);
  EXPECT_EQ(ctx.models_shared, 3);
  for (const char* name : {"reward-0", "reward-1", "reward-2"})
    EXPECT_TRUE(lora::has_adapter(ctx.shared, name)) << name;

  const std::vector<RewardInput> batch = {{"Once upon a time", " there was a cat.", ""},
                                          {"Tom had a ball", " and he liked to play.", ""},
                                          {"The sun", " was big and hot and happy.", ""}};
  const auto got = sum->score(batch);
  const auto alone_a = make_model_source(a)->score(batch);  // each on its own copy of the base
  const auto alone_b = make_model_source(b)->score(batch);
  ASSERT_EQ(got.size(), batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    EXPECT_NE(alone_a[i], alone_b[i]) << "the two reward models must differ for the test to mean anything";
    double want = 0;  // in the sum source's order
    want += 0.5 * alone_a[i];
    want += 2.0 * alone_b[i];
    want += -1.5 * alone_a[i];
    EXPECT_NEAR(got[i], want, 1e-9 * (1 + std::abs(want))) << "row " << i;
  }
}

}  // namespace
}  // namespace reglage::reward
