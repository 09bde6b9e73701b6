// Helpers of the end-to-end tests: running `reglage run` under mpiexec.
#pragma once
#include <sys/wait.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "framework/core/file_util.h"

namespace reglage::test {

// The binary a test runs: the test build with fault points (tests/support/fault_main.cpp) when `env` asks
// for a fault (REGLAGE_FAULT, REGLAGE_KILL_AFTER_CHECKPOINT), else reglage itself, which has none.
inline std::string binary_for(const std::string& env) {
  const bool fault = env.find("REGLAGE_FAULT=") != std::string::npos ||
                     env.find("REGLAGE_KILL_AFTER_CHECKPOINT=") != std::string::npos;
  return fault ? REGLAGE_FAULT_BINARY : REGLAGE_BINARY;
}

// `mpiexec -n ranks reglage run yaml_path` with output discarded; `env` ("K=V ...") is set for it.
// Returns the exit status (128 when the launcher itself died from a signal).
inline int run_pipeline(int ranks, const std::string& yaml_path, const std::string& env = "") {
  const std::string cmd = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + env + " " +
                          std::string(REGLAGE_MPIEXEC) + " -n " + std::to_string(ranks) + " --oversubscribe " +
                          binary_for(env) + " run " + yaml_path + " > /dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

// The records of a stage's metrics log (run_dir/<stage>/metrics.jsonl) in order, keeping those whose "split"
// is `split` ("train" or "eval"; empty keeps all).
inline std::vector<nlohmann::json> read_metrics(const std::string& path, const std::string& split = "") {
  std::istringstream in(core::read_file(path));
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (split.empty() || j.value("split", "") == split) out.push_back(std::move(j));
  }
  return out;
}

}  // namespace reglage::test
