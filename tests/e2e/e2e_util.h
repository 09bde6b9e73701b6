// Helpers of the end-to-end tests: running `reglage run` under mpiexec.
#pragma once
#include <sys/wait.h>

#include <cstdlib>
#include <string>

namespace reglage::test {

// `mpiexec -n ranks reglage run yaml_path` with output discarded; `env` ("K=V ...") is set for it.
// Returns the exit status (128 when the launcher itself died from a signal).
inline int run_pipeline(int ranks, const std::string& yaml_path, const std::string& env = "") {
  const std::string cmd = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + env + " " +
                          std::string(REGLAGE_MPIEXEC) + " -n " + std::to_string(ranks) + " --oversubscribe " +
                          std::string(REGLAGE_BINARY) + " run " + yaml_path + " > /dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

}  // namespace reglage::test
