// Loading a pipeline as `reglage run` checks it: load_pipeline (pure), then the world-size checks and the
// run_dir probe that run makes once the rank count is known.
#pragma once
#include "framework/config/pipeline_config.h"

namespace reglage::test {

inline config::PipelineConfig load_checked(const std::string& path, const std::vector<std::string>& overrides,
                                           int world_size) {
  config::PipelineConfig c = config::load_pipeline(path, overrides);
  config::check_world_size(c, world_size);
  config::prepare_run_dir(c);
  return c;
}

}  // namespace reglage::test
