#include "reward/reward_factory.h"

#include <cstdlib>
#include <utility>
#include <vector>

#include "framework/checkpoint/run_layout.h"
#include "framework/core/error.h"
#include "reward/combine.h"
#include "reward/http_source.h"
#include "reward/model_source.h"
#include "reward/rules.h"

namespace reglage::reward {

namespace {

// `adapter`: the name a model reward's adapter takes on the shared base, unique per part of a sum.
std::unique_ptr<RewardSource> make_source(const config::RewardSpec& spec, RewardBuildContext& ctx,
                                          const std::string& key, const std::string& adapter) {
  try {
    if (spec.type == config::RewardType::kModel) {
      const std::string dir = spec.stage.empty() ? spec.path : checkpoint::RunLayout(ctx.run_dir).final_dir(spec.stage);
      if (!ctx.shared) return make_model_source(dir, spec.batch_size, ctx.base_model);
      bool used = false;
      auto source = make_model_source_on(dir, spec.batch_size, ctx.shared, ctx.shared_lineage, &used, adapter);
      ctx.models_shared += used ? 1 : 0;
      return source;
    }
    if (spec.type == config::RewardType::kRules) return make_rules_source(spec.rules);
    if (spec.type == config::RewardType::kHttp) {
      HttpRewardConfig http = spec.http;
      if (!spec.token_env.empty()) {
        const char* token = std::getenv(spec.token_env.c_str());
        if (token == nullptr || *token == '\0')
          fail("token_env: the environment variable ", spec.token_env, " is not set (expected the bearer token)");
        http.token = token;
      }
      return make_http_source(http);
    }
    if (spec.type == config::RewardType::kSum) {
      std::vector<std::pair<double, std::unique_ptr<RewardSource>>> parts;
      for (size_t i = 0; i < spec.parts.size(); ++i)
        parts.emplace_back(spec.parts[i].weight,
                           make_source(spec.parts[i], ctx, key + ".parts[" + std::to_string(i) + "]",
                                       adapter + "-" + std::to_string(i)));
      return make_sum_source(std::move(parts));
    }
    fail("type: missing (expected ", config::choice_list<config::RewardType>(), ")");
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind(key + ": ", 0) == 0 || what.rfind(key + ".", 0) == 0) throw;  // a nested part named itself
    fail(key, ": ", what);
  }
}

}  // namespace

std::unique_ptr<RewardSource> make_reward_source(const config::RewardSpec& spec, RewardBuildContext& ctx,
                                                 const std::string& key) {
  return make_source(spec, ctx, key, kRewardAdapter);
}

}  // namespace reglage::reward
