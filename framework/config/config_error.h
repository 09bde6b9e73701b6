// The error type config loading throws: every problem found, one per line.
#pragma once
#include <vector>

#include "framework/config/pipeline_config.h"
#include "framework/core/error.h"

namespace reglage::config {

class ConfigError : public Error {
 public:
  ConfigError(const std::string& file, std::vector<ConfigProblem> problems);
  const std::vector<ConfigProblem>& problems() const { return problems_; }

 private:
  std::vector<ConfigProblem> problems_;
};

}  // namespace reglage::config
