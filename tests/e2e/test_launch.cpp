// `reglage launch` end to end with 2 ranks: a rank killed with SIGKILL mid-stage, and a rank stopped with
// SIGSTOP (a hang), are each named by the watchdog; the job is restarted, resumes from its checkpoints and
// ends with the same weights as an undisturbed run. /status and /metrics answer while it runs, and /metrics
// parses as Prometheus text.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "e2e_util.h"
#include "framework/io/safetensors.h"
#include "framework/net/http_client.h"
#include "test_util.h"

namespace reglage {
namespace {

using test::source_path;

// A port that was free a moment ago (the launcher binds it right after).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

void write_sft(const std::string& path) {
  std::ostringstream out;
  for (int i = 0; i < 16; ++i)
    out << nlohmann::json{{"prompt", "Write a story about a cat number " + std::to_string(i) + "."},
                          {"completion", "Once upon a time, there was a cat. It was number " + std::to_string(i) + "."}}
               .dump()
        << "\n";
  core::write_file_atomic(path, out.str());
}

std::string yaml(const test::TempDir& tmp, const std::string& run_dir, int status_port) {
  return "run_dir: " + run_dir + "\nseed: 11\nthreads: 1\nmodel:\n  path: " +
         source_path("models/stories260K/stories260K.bin") +
         "\nlora: {rank: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj]}\nstages:\n"
         "  - {name: sft, type: sft, data: " + tmp.path("sft.jsonl") +
         ", max_steps: 12, batch_size: 4, lr: 1.0e-3, checkpoint_every: 4}\n"
         "launch:\n"
         "  np: 2\n"
         "  mpirun_args: [--oversubscribe]\n"
         "  max_restarts: 2\n"
         "  heartbeat_interval_s: 0.2\n"
         "  heartbeat_timeout_s: 3\n"
         "  status_port: " + std::to_string(status_port) + "\n";
}

struct Outcome {
  int status = -1;
  std::string err;  // the launcher's stderr (and the ranks')
};

Outcome launch(const std::string& yaml_path, const std::string& env) {
  const std::string cmd = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + env + " " +
                          std::string(REGLAGE_BINARY) + " launch " + yaml_path + " 2>&1 >/dev/null";
  Outcome o;
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) o.err.append(buf, n);
  const int status = ::pclose(p);
  o.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return o;
}

void expect_same_adapter(const std::string& a_dir, const std::string& b_dir) {
  auto a = io::read_safetensors(a_dir + "/adapter_model.safetensors");
  auto b = io::read_safetensors(b_dir + "/adapter_model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
}

// Every line of a Prometheus text exposition: a comment, or `name{label="v",...} number`.
void expect_prometheus_text(const std::string& text) {
  static const std::regex sample(
      R"re(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+]?([0-9.]+([eE][-+]?[0-9]+)?|NaN|[-+]?Inf)$)re");
  static const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]*( .*)?$)");
  std::istringstream in(text);
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      EXPECT_TRUE(std::regex_match(line, comment)) << line;
    } else {
      EXPECT_TRUE(std::regex_match(line, sample)) << line;
      ++samples;
    }
  }
  EXPECT_GT(samples, 3) << text;
}

class Launch : public ::testing::Test {
 protected:
  void SetUp() override {
    write_sft(tmp_.path("sft.jsonl"));
    core::write_file_atomic(tmp_.path("ref.yaml"), yaml(tmp_, tmp_.path("ref"), 0));
    ASSERT_EQ(test::run_pipeline(2, tmp_.path("ref.yaml")), 0);  // the undisturbed run, plain mpirun
  }
  test::TempDir tmp_;
};

TEST_F(Launch, KilledRankIsNamedAndTheJobRestartsToTheSameWeights) {
  core::write_file_atomic(tmp_.path("k.yaml"), yaml(tmp_, tmp_.path("k"), 0));
  const Outcome o = launch(tmp_.path("k.yaml"), "REGLAGE_FAULT=1:6:kill");  // rank 1 dies after step 6
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.err.find("rank 1 on "), std::string::npos) << o.err;
  // the step is the one in its last heartbeat before it died: at most 6
  EXPECT_TRUE(std::regex_search(o.err, std::regex("died in stage 'sft' at step [0-6], operation '"))) << o.err;
  EXPECT_NE(o.err.find("restarting (restart 1 of 2)"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("finished after 1 restart"), std::string::npos) << o.err;
  expect_same_adapter(tmp_.path("ref/sft/final"), tmp_.path("k/sft/final"));
}

TEST_F(Launch, HungRankIsDetectedNamedWithItsOperationAndRestarted) {
  const int port = free_port();
  core::write_file_atomic(tmp_.path("h.yaml"), yaml(tmp_, tmp_.path("h"), port));
  // While the job runs (rank 1 stopped for heartbeat_timeout_s), ask /status and /metrics.
  std::atomic<bool> done{false};
  nlohmann::json status;
  std::string metrics;
  std::thread poll([&] {
    net::HttpOptions opt;
    opt.timeout_s = 2;
    for (int i = 0; i < 400 && !done; ++i) {  // bounded: about 40 s at most
      try {
        auto s = net::http_get("http://127.0.0.1:" + std::to_string(port) + "/status", opt);
        auto j = nlohmann::json::parse(s.body);
        if (s.status == 200 && j["ranks"].size() == 2 && j["stage"] == "sft") {
          status = j;
          metrics = net::http_get("http://127.0.0.1:" + std::to_string(port) + "/metrics", opt).body;
          return;
        }
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  const Outcome o = launch(tmp_.path("h.yaml"), "REGLAGE_FAULT=1:6:stop");  // rank 1 stops itself at step 6
  done = true;
  poll.join();
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.err.find("rank 1 on "), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("in stage 'sft' at step 6"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find(": hung"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("finished after 1 restart"), std::string::npos) << o.err;
  // The stopped rank is named with the operation it was in when it stopped; its peer waits in a collective.
  EXPECT_NE(o.err.find("operation '"), std::string::npos) << o.err;
  expect_same_adapter(tmp_.path("ref/sft/final"), tmp_.path("h/sft/final"));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(took, 60.0);  // detected within the timeout, not left hanging

  ASSERT_FALSE(status.is_null()) << "no /status answer during the run";
  EXPECT_EQ(status["ranks_expected"], 2);
  EXPECT_TRUE(status["stages"].contains("sft")) << status.dump();
  EXPECT_EQ(status["pipeline"], tmp_.path("h.yaml"));
  expect_prometheus_text(metrics);
  EXPECT_NE(metrics.find("reglage_rank_step{rank=\"0\",stage=\"sft\"}"), std::string::npos) << metrics;
}

// A failure that every attempt meets (here a malformed data row, found when the ranks start) is reported
// once as repeating and not retried up to max_restarts.
TEST_F(Launch, RepeatedFailureAtTheSameStepIsNotRetriedForever) {
  core::write_file_atomic(tmp_.path("bad.jsonl"), "{\"prompt\": \"a\", \"completion\": \"b\"}\nnot json\n");
  std::string text = yaml(tmp_, tmp_.path("r"), 0);
  text.replace(text.find(tmp_.path("sft.jsonl")), tmp_.path("sft.jsonl").size(), tmp_.path("bad.jsonl"));
  core::write_file_atomic(tmp_.path("r.yaml"), text);
  const Outcome o = launch(tmp_.path("r.yaml"), "");
  EXPECT_EQ(o.status, 1) << o.err;
  EXPECT_NE(o.err.find("bad.jsonl:2"), std::string::npos) << o.err;  // the ranks' own message
  EXPECT_NE(o.err.find("repeats at the same place"), std::string::npos) << o.err;
  EXPECT_EQ(o.err.find("restarting (restart 2"), std::string::npos) << o.err;
}

// The multi-node path for real: a hostfile with two host entries (127.0.0.2 and 127.0.0.3, which Open MPI does
// not take for this machine) that mpirun reaches through its remote agent, ssh to an sshd the test starts on
// loopback. Each rank runs under a daemon started over ssh; the launcher listens for heartbeats on all
// interfaces and the ranks reach it by this host's name.
TEST_F(Launch, HostfileRanksAreStartedThroughSsh) {
  ASSERT_TRUE(core::file_exists("/usr/sbin/sshd")) << "openssh-server is missing (scripts/bootstrap.sh installs it)";
  const std::string dir = tmp_.path("ssh");
  std::filesystem::create_directories(dir);
  std::filesystem::create_directories("/run/sshd");  // sshd's privilege separation directory
  auto sh = [](const std::string& cmd) { return std::system(cmd.c_str()); };
  ASSERT_EQ(sh("ssh-keygen -q -t ed25519 -N '' -f " + dir + "/hostkey && ssh-keygen -q -t ed25519 -N '' -f " + dir +
               "/key && cp " + dir + "/key.pub " + dir + "/authorized_keys"), 0);
  const int port = free_port();
  core::write_file_atomic(dir + "/sshd_config",
                          "Port " + std::to_string(port) + "\nListenAddress 127.0.0.1\nHostKey " + dir +
                              "/hostkey\nAuthorizedKeysFile " + dir + "/authorized_keys\nPermitRootLogin prohibit-password\n"
                              "PasswordAuthentication no\nStrictModes no\nUsePAM no\nPidFile " + dir + "/sshd.pid\n"
                              "SetEnv OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n");
  ASSERT_EQ(sh("/usr/sbin/sshd -f " + dir + "/sshd_config -E " + dir + "/sshd.log"), 0);
  struct StopSshd {
    std::string pidfile;
    ~StopSshd() { std::system(("kill $(cat " + pidfile + ") 2>/dev/null").c_str()); }
  } stop{dir + "/sshd.pid"};
  // mpirun's agent: whatever the host, ssh to the loopback sshd (a cluster would use plain ssh).
  core::write_file_atomic(dir + "/agent", "#!/bin/sh\nshift\nexec ssh -p " + std::to_string(port) + " -i " + dir +
                                              "/key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                              "-o LogLevel=ERROR -o ConnectTimeout=10 127.0.0.1 \"$@\"\n");
  ASSERT_EQ(sh("chmod +x " + dir + "/agent"), 0);
  core::write_file_atomic(dir + "/hosts", "127.0.0.2 slots=1\n127.0.0.3 slots=1\n");
  std::string text = yaml(tmp_, tmp_.path("m"), 0);
  // The ranks reach the launcher on loopback here; on a cluster the default is this host's name.
  text.replace(text.find("  np: 2\n"), 8, "  np: 2\n  hostfile: " + dir + "/hosts\n  heartbeat_host: 127.0.0.1\n");
  text.replace(text.find("  mpirun_args: [--oversubscribe]\n"), 33,
               "  mpirun_args: [--mca, plm_rsh_agent, " + dir + "/agent, --mca, btl_tcp_if_include, lo, "
               "--mca, oob_tcp_if_include, lo]\n");
  // A remote daemon starts ranks with sshd's environment, not this one: forward the variables that choose
  // OpenBLAS's kernels (e.g. OPENBLAS_CORETYPE), which decide float rounding, as a cluster job would.
  std::string forwarded;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var(*e);
    const std::string name = var.substr(0, var.find('='));
    if (name.rfind("OPENBLAS_", 0) == 0 || name.rfind("OMP_", 0) == 0) forwarded += (forwarded.empty() ? "" : ", ") + name;
  }
  if (!forwarded.empty()) text.replace(text.find("  np: 2\n"), 8, "  np: 2\n  env: [" + forwarded + "]\n");
  core::write_file_atomic(tmp_.path("m.yaml"), text);
  const Outcome o = launch(tmp_.path("m.yaml"), "");
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.err.find("2 rank(s) across hosts; heartbeats on 127.0.0.1:"), std::string::npos) << o.err;
  // Two daemons were started through the agent: sshd logged two logins.
  const std::string log = core::read_file(dir + "/sshd.log");
  size_t logins = 0;
  for (size_t at = log.find("Accepted publickey"); at != std::string::npos; at = log.find("Accepted publickey", at + 1))
    ++logins;
  EXPECT_GE(logins, 2u) << log;
  // The same training as the local run, bit for bit (without the forwarded OpenBLAS variables the first
  // loss differed in the last float32 digits: 3.15207910 vs 3.15207926).
  auto a = io::read_safetensors(tmp_.path("ref/sft/final/adapter_model.safetensors"));
  auto b = io::read_safetensors(tmp_.path("m/sft/final/adapter_model.safetensors"));
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
}

}  // namespace
}  // namespace reglage
