// reglage run PIPELINE.yaml [--set key=value ...] [--restart-from STAGE]
// reglage run --help-config [markdown]      every pipeline key: type, default, range, stage types, help
//   mpirun -np N reglage run configs/demo.yaml
// Runs the pipeline's stages as MPI ranks; running the same command again resumes.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "framework/checkpoint/run_lock.h"
#include "framework/config/config_error.h"
#include "framework/core/error.h"
#include "framework/dist/communicator.h"
#include "framework/net/heartbeat.h"
#include "launch/commands.h"
#include "framework/core/error_line.h"
#include "trainers/pipeline.h"

namespace reglage::launch {

int cmd_run(int argc, char** argv) {
  // --help-config [markdown]: every pipeline key (generated from the key tables), then exit.
  if (argc >= 1 && std::string(argv[0]) == "--help-config") {
    const bool markdown = argc >= 2 && std::string(argv[1]) == "markdown";
    if (argc > 2 || (argc == 2 && !markdown)) fail("usage: reglage run --help-config [markdown]");
    std::cout << config::help_config(markdown);
    return 0;
  }
  trainers::RunOptions opt;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= argc) fail(flag, " needs a value");
      return argv[++i];
    };
    if (a == "--set") opt.overrides.push_back(value(a));
    else if (a.rfind("--set=", 0) == 0) opt.overrides.push_back(a.substr(6));
    else if (a == "--restart-from") opt.restart_from = value(a);
    else if (a.rfind("--", 0) == 0) fail("unknown option ", a, " for 'run' (expected --set key=value or --restart-from STAGE)");
    else if (opt.config_path.empty()) opt.config_path = a;
    else fail("unexpected argument '", a, "' (run takes one pipeline file)");
  }
  if (opt.config_path.empty()) fail("usage: reglage run PIPELINE.yaml [--set key=value ...] [--restart-from STAGE]");

  // Under `reglage launch` the heartbeats start first, before MPI and the model load (which can take minutes
  // on a shared file system): the watchdog hears the rank while it starts. mpirun tells each rank its rank
  // in the environment.
  std::unique_ptr<net::HeartbeatSender> heartbeat;
  try {
    const char* env_rank = std::getenv("OMPI_COMM_WORLD_RANK");
    heartbeat = net::heartbeat_from_env(env_rank != nullptr ? std::atoi(env_rank) : 0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reglage run: error: %s\n", e.what());
    return 1;
  }
  dist::init(nullptr, nullptr);
  const int rank = dist::world_rank(), world = dist::world_size();
  try {
    auto comm = dist::make_communicator(torch::kCPU);
    trainers::run_pipeline(opt, *comm);
  } catch (const config::ConfigError& e) {
    // Every rank validates the same files; rank 0 speaks for all.
    if (rank == 0) std::fprintf(stderr, "%s\n", e.what());
    dist::finalize();
    return 1;
  } catch (const checkpoint::RunRefused& e) {
    // Thrown on every rank after the same broadcast: one line, no abort.
    if (rank == 0) std::fprintf(stderr, "reglage run: error: %s\n", e.what());
    dist::finalize();
    return 1;
  } catch (...) {
    // One line (error_line.h): a LibTorch error's backtrace or a bad_alloc would otherwise reach the user raw.
    std::fprintf(stderr, "reglage run: rank %d: error: %s\n", rank, core::current_error_line().c_str());
    std::fflush(stderr);
    if (world > 1) dist::abort_all(1);  // peers may be waiting in a collective
    dist::finalize();
    return 1;
  }
  dist::finalize();
  return 0;
}

int cmd_status(const std::string& run_dir) {
  trainers::print_status(run_dir);
  return 0;
}

}  // namespace reglage::launch
