// `reglage launch` end to end with 2 ranks: a rank killed with SIGKILL mid-stage, a rank stopped with
// SIGSTOP (a hang), and a rank whose compute thread blocks while its heartbeats go on, are each named by the
// watchdog; the job is restarted, resumes from its checkpoints and ends with the same weights as an
// undisturbed run. /status and /metrics answer while it runs, and /metrics parses as Prometheus text.
// SIGINT and SIGTERM stop the launcher with every rank. With a stand-in mpirun whose ranks are shell loops:
// forged and malformed heartbeat lines kill nothing and stop nothing, the secret stays in the environment,
// and a rank whose heartbeat connection drops is reported dead.
// Limits are generous (heartbeat_timeout_s 15, start-up at its default 600 s) so that a loaded machine
// (load 10+ on 2 cores) slows the tests down without failing them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "e2e_util.h"
#include "framework/core/process_tree.h"
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
         "  heartbeat_timeout_s: 15\n"
         "  status_port: " + std::to_string(status_port) + "\n";
}

struct Outcome {
  int status = -1;
  std::string err;  // the launcher's stderr (and the ranks')
};

Outcome launch(const std::string& yaml_path, const std::string& env) {
  const std::string cmd = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + env + " " +
                          test::binary_for(env) + " launch " + yaml_path + " 2>&1 >/dev/null";
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
    for (int i = 0; i < 3000 && !done; ++i) {  // bounded: 3000 tries
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

  ASSERT_FALSE(status.is_null()) << "no /status answer during the run";
  EXPECT_EQ(status["ranks_expected"], 2);
  EXPECT_TRUE(status["stages"].contains("sft")) << status.dump();
  EXPECT_EQ(status["pipeline"], tmp_.path("h.yaml"));
  expect_prometheus_text(metrics);
  EXPECT_NE(metrics.find("reglage_rank_step{rank=\"0\",stage=\"sft\"}"), std::string::npos) << metrics;
}

// Item 6 of issue 14: rank 1's compute thread blocks at step 6 while its heartbeat thread goes on beating.
// Its progress counter stops; past hang_timeout_s it is named and the job restarts to the same weights.
TEST_F(Launch, ComputeThreadHangIsDetectedByItsStalledProgress) {
  std::string text = yaml(tmp_, tmp_.path("c"), 0);
  text += "  hang_timeout_s: 20\n";
  core::write_file_atomic(tmp_.path("c.yaml"), text);
  const Outcome o = launch(tmp_.path("c.yaml"), "REGLAGE_FAULT=1:6:hang");
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.err.find("rank 1 on "), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("has made no progress for"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("in stage 'sft' at step 6"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("while its heartbeats continue: hung (compute thread stuck); rank 0 is in '"), std::string::npos)
      << o.err;
  EXPECT_NE(o.err.find("finished after 1 restart"), std::string::npos) << o.err;
  expect_same_adapter(tmp_.path("ref/sft/final"), tmp_.path("c/sft/final"));
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

// Polls `done` every 100 ms for up to `seconds` (generous: the machine may be loaded).
bool wait_until(const std::function<bool()>& done, double seconds = 120) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done();
}

// `reglage launch YAML` as a child process, its stderr in a file; env = extra "NAME=value" entries.
struct Launcher {
  pid_t pid = -1;
  std::string err_path;
  int status = -1;  // the exit code once reaped (128 + signal when killed)
  Launcher(const std::string& yaml_path, const std::string& err, const std::vector<std::string>& env) : err_path(err) {
    pid = ::fork();
    if (pid == 0) {
      const int out = ::open("/dev/null", O_WRONLY), e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out, 1);
      ::dup2(e, 2);
      ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
      ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
      for (const auto& v : env) ::putenv(const_cast<char*>(v.c_str()));
      ::execl(REGLAGE_BINARY, REGLAGE_BINARY, "launch", yaml_path.c_str(), static_cast<char*>(nullptr));
      std::_Exit(127);
    }
  }
  ~Launcher() {
    if (status < 0) {  // a failed test: do not leave it running
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  std::string err() const { return core::file_exists(err_path) ? core::read_file(err_path) : ""; }
  // Waits for it to end (bounded); -1 when it did not.
  int wait(double seconds = 300) {
    int st = 0;
    if (!wait_until([&] { return ::waitpid(pid, &st, WNOHANG) == pid; }, seconds)) return -1;
    status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return status;
  }
  // The heartbeat port from its first line, once it is written; -1 when it never is.
  int heartbeat_port() const {
    static const std::regex re("heartbeats on 127\\.0\\.0\\.1:([0-9]+)");
    std::smatch m;
    std::string text;
    if (!wait_until([&] {
          text = err();
          return std::regex_search(text, m, re) || !core::process_alive(pid);  // or it ended early
        }) ||
        m.empty())
      return -1;
    return std::stoi(m[1]);
  }
};

nlohmann::json get_status(int port) {
  net::HttpOptions opt;
  opt.timeout_s = 10;
  try {
    const auto r = net::http_get("http://127.0.0.1:" + std::to_string(port) + "/status", opt);
    if (r.status == 200) return nlohmann::json::parse(r.body);
  } catch (const std::exception&) {
  }
  return nullptr;
}

// Sends one line to 127.0.0.1:port on a connection of its own.
void send_line(int port, const std::string& line) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(uint16_t(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0)
    (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
  ::close(fd);
}

std::string this_host() {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  return name;
}

// A stand-in for mpirun on PATH: it records its arguments and the secret it was handed, and starts
// FAKE_RANKS (default: -np) ranks that beat to the launcher as `reglage run` does, until the file `finish`
// appears (bounded: 3000 beats). On the first attempt rank FAKE_DROP_RANK closes its heartbeat connection
// after 3 beats and stays alive, silent.
const char* kFakeMpirun = R"sh(#!/bin/bash
dir=@DIR@
attempt=${REGLAGE_ATTEMPT:-0}
printf '%s\n' "$@" > "$dir/args.$attempt"
printf '%s' "$REGLAGE_HEARTBEAT_KEY" > "$dir/key"
np=${FAKE_RANKS:-$2}
host=${REGLAGE_LAUNCHER%:*}
port=${REGLAGE_LAUNCHER##*:}
rank_loop() {
  local r=$1 n=0
  exec 3<>"/dev/tcp/$host/$port" || exit 1
  echo $BASHPID > "$dir/pid.$r.$attempt"
  while [ ! -e "$dir/finish" ] && [ $n -lt 3000 ]; do
    if [ "$r" = "${FAKE_DROP_RANK:--1}" ] && [ "$attempt" = 0 ] && [ $n -ge 3 ]; then
      exec 3>&-
      while [ ! -e "$dir/finish" ] && [ $n -lt 3000 ]; do sleep 0.1; n=$((n+1)); done
      exit 0
    fi
    printf '{"key":"%s","rank":%d,"host":"%s","pid":%d,"stage":"fake","step":%d,"total":0,"op":"compute","progress":%d}\n' \
      "$REGLAGE_HEARTBEAT_KEY" "$r" "$HOSTNAME" "$BASHPID" "$n" "$n" >&3 || exit 1
    sleep 0.1
    n=$((n+1))
  done
}
for r in $(seq 0 $((np-1))); do rank_loop "$r" & done
wait
)sh";

class LaunchGuard : public ::testing::Test {
 protected:
  void SetUp() override {
    write_sft(tmp_.path("sft.jsonl"));
    std::filesystem::create_directories(tmp_.path("bin"));
    std::string script = kFakeMpirun;
    script.replace(script.find("@DIR@"), 5, tmp_.path());
    core::write_file_atomic(tmp_.path("bin/mpirun"), script);
    std::filesystem::permissions(tmp_.path("bin/mpirun"), std::filesystem::perms::owner_all);
    status_port_ = free_port();
    std::string text = yaml(tmp_, tmp_.path("run"), status_port_);
    text.replace(text.find("heartbeat_timeout_s: 15"), 23, "heartbeat_timeout_s: 6");
    core::write_file_atomic(tmp_.path("g.yaml"), text);
  }
  std::vector<std::string> env(const std::vector<std::string>& more = {}) const {
    std::vector<std::string> e = {"PATH=" + tmp_.path("bin") + ":" + std::getenv("PATH")};
    e.insert(e.end(), more.begin(), more.end());
    return e;
  }
  // Waits until the launcher's /status lists n ranks.
  bool ranks_reported(size_t n) const {
    return wait_until([&] {
      const auto s = get_status(status_port_);
      return s.is_object() && s["ranks"].size() == n;
    });
  }
  void finish() const { core::write_file_atomic(tmp_.path("finish"), ""); }
  test::TempDir tmp_;
  int status_port_ = 0;
};

// Items 2 and 3 of issue 14, and the secret. Rank 3 of 4 never starts, so its slot is free for forgeries.
// Every forged line (no key, a wrong key, ranks outside [0, np), pids that are not the job's: a victim the
// test starts, the launcher, pid 1, the test itself, mpirun; another host; a rank already pinned) is
// dropped; none makes the launcher kill or restart anything, and the victim survives.
TEST_F(LaunchGuard, ForgedHeartbeatsKillNothingAndTheSecretStaysInTheEnvironment) {
  std::string text = core::read_file(tmp_.path("g.yaml"));
  text.replace(text.find("  np: 2\n"), 8, "  np: 4\n");
  core::write_file_atomic(tmp_.path("g.yaml"), text);
  const pid_t victim = ::fork();
  if (victim == 0) {
    ::execlp("sleep", "sleep", "600", static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  Launcher l(tmp_.path("g.yaml"), tmp_.path("err"), env({"FAKE_RANKS=3"}));
  const int port = l.heartbeat_port();
  ASSERT_GT(port, 0) << l.err();
  ASSERT_TRUE(ranks_reported(3)) << l.err();
  const std::string key = core::read_file(tmp_.path("key"));
  ASSERT_EQ(key.size(), 64u);
  const int64_t mpirun = core::parent_pid(std::stoll(core::read_file(tmp_.path("pid.0.0"))));
  const std::string host = this_host();
  auto beat = [&](const std::string& k, const std::string& rank, const std::string& h, int64_t pid) {
    return "{\"key\":\"" + k + "\",\"rank\":" + rank + ",\"host\":\"" + h + "\",\"pid\":" + std::to_string(pid) +
           ",\"stage\":\"sft\",\"step\":1,\"total\":9,\"op\":\"compute\",\"progress\":1}\n";
  };
  std::vector<std::string> lines;
  for (const char* rank : {"7", "3", "1", "0"})  // the issue's line, without a key
    lines.push_back(std::string("{\"rank\":") + rank + ",\"host\":\"" + host + "\",\"pid\":" + std::to_string(victim) + "}\n");
  for (const std::string& k : {std::string(64, '0'), key.substr(0, 63) + (key[63] == 'a' ? "b" : "a"), std::string()})
    lines.push_back(beat(k, "3", host, victim));
  for (const char* rank : {"4", "-1", "7", "4294967296", "99999999999999999999", "3.0", "\"3\""})
    lines.push_back(beat(key, rank, host, victim));
  for (int64_t pid : {int64_t(victim), int64_t(l.pid), int64_t(1), int64_t(::getpid()), mpirun})
    lines.push_back(beat(key, "3", host, pid));
  lines.push_back(beat(key, "3", "elsewhere", victim));
  lines.push_back(beat(key, "1", host, victim));  // rank 1 is pinned to its own pid
  for (const auto& line : lines) send_line(port, line);
  const bool counted = wait_until([&] {
    const auto s = get_status(status_port_);
    return s.is_object() && s.value("heartbeats_rejected", 0) == int(lines.size());
  });
  EXPECT_TRUE(counted) << get_status(status_port_).dump();
  // Nothing to wait for here: a forged rank would be declared silent after heartbeat_timeout_s (6 s), so
  // give it well past that before the job ends.
  std::this_thread::sleep_for(std::chrono::seconds(15));
  const std::string status_text = get_status(status_port_).dump();
  finish();
  ASSERT_EQ(l.wait(), 0) << l.err();
  const std::string err = l.err();
  EXPECT_EQ(err.find("stopping the job"), std::string::npos) << err;
  EXPECT_EQ(err.find("restarting"), std::string::npos) << err;
  EXPECT_EQ(::waitpid(victim, nullptr, WNOHANG), 0) << "the victim was killed";
  ::kill(victim, SIGKILL);
  ::waitpid(victim, nullptr, 0);
  // The secret went to mpirun by name only, and appears in no output.
  const std::string args = core::read_file(tmp_.path("args.0"));
  EXPECT_NE(args.find("-x\nREGLAGE_HEARTBEAT_KEY\n"), std::string::npos) << args;
  EXPECT_EQ(args.find(key), std::string::npos) << args;
  EXPECT_EQ(err.find(key), std::string::npos) << err;
  EXPECT_EQ(status_text.find(key), std::string::npos) << status_text;
}

// Item 3 of issue 14: `{"rank":0,"host":5}` aborted the launcher (exit 134) and left the job unwatched.
TEST_F(LaunchGuard, MalformedHeartbeatLinesLeaveTheWatchdogRunning) {
  Launcher l(tmp_.path("g.yaml"), tmp_.path("err"), env());
  const int port = l.heartbeat_port();
  ASSERT_GT(port, 0) << l.err();
  ASSERT_TRUE(ranks_reported(2)) << l.err();
  const std::vector<std::string> lines = {
      "{\"rank\":0,\"host\":5}\n",  "{\"rank\":1,\"host\":null,\"pid\":\"x\"}\n", "{\"rank\":0,\"pid\":[1]}\n",
      "{\"rank\":1.5}\n",           "{\"rank\":0,\"stage\":{\"a\":1},\"step\":1e999}\n", "[[[[\n",
      "{\"rank\":0,\"host\":\"\xff\xfe\"}\n", std::string(200000, 'x') + "\n"};
  for (const auto& line : lines) send_line(port, line);
  EXPECT_TRUE(wait_until([&] {
    const auto s = get_status(status_port_);
    return s.is_object() && s.value("heartbeats_rejected", 0) == int(lines.size());
  })) << l.err();
  EXPECT_EQ(::waitpid(l.pid, nullptr, WNOHANG), 0) << "the launcher died: " << l.err();
  finish();
  EXPECT_EQ(l.wait(), 0) << l.err();
  EXPECT_EQ(l.err().find("restarting"), std::string::npos) << l.err();
}

// Item 4 of issue 14: once a rank's heartbeat connection dropped, the watch loop skipped it for good. Now a
// rank whose connection closed and did not come back within heartbeat_timeout_s is dead: named, stopped
// and restarted.
TEST_F(LaunchGuard, ARankWhoseHeartbeatConnectionDropsIsReportedDeadAndRestarted) {
  Launcher l(tmp_.path("g.yaml"), tmp_.path("err"), env({"FAKE_DROP_RANK=1"}));
  const bool restarted = wait_until([&] { return core::file_exists(tmp_.path("args.1")); }, 180);
  EXPECT_TRUE(restarted) << l.err();
  if (restarted) {
    EXPECT_TRUE(ranks_reported(2)) << l.err();
  }
  finish();
  ASSERT_EQ(l.wait(), 0) << l.err();
  const std::string err = l.err();
  EXPECT_TRUE(std::regex_search(err, std::regex("rank 1 on [^ ]+ \\(pid [0-9]+\\) died in stage 'fake' at step [0-9]+, "
                                                "operation 'compute' \\(its heartbeat connection closed")))
      << err;
  EXPECT_NE(err.find("finished after 1 restart"), std::string::npos) << err;
}

// The pids of the ranks a fake job started on attempt 0.
std::vector<int64_t> fake_rank_pids(const test::TempDir& tmp, int np) {
  std::vector<int64_t> pids;
  for (int r = 0; r < np; ++r) pids.push_back(std::stoll(core::read_file(tmp.path("pid." + std::to_string(r) + ".0"))));
  return pids;
}

// Item 10 of issue 14: SIGTERM on the launcher ended only the launcher. Now it stops mpirun's process
// group and the ranks, then exits 143.
TEST_F(LaunchGuard, SigtermStopsTheJobBeforeTheLauncherExits) {
  Launcher l(tmp_.path("g.yaml"), tmp_.path("err"), env());
  ASSERT_TRUE(ranks_reported(2)) << l.err();
  const std::vector<int64_t> ranks = fake_rank_pids(tmp_, 2);
  const int64_t mpirun = core::parent_pid(ranks[0]);
  ASSERT_GT(mpirun, 1);
  ::kill(l.pid, SIGTERM);
  EXPECT_EQ(l.wait(), 143) << l.err();
  for (int64_t pid : ranks) EXPECT_TRUE(wait_until([&] { return !core::process_alive(pid); }, 60)) << "rank pid " << pid;
  EXPECT_TRUE(wait_until([&] { return !core::process_alive(mpirun); }, 60));
  EXPECT_NE(l.err().find("stopping the job"), std::string::npos) << l.err();
  finish();  // whatever survived ends its loop
}

// Item 10 with the real mpirun and ranks: Ctrl-C (SIGINT) on the launcher stops every rank, then the
// launcher exits 130.
TEST(LaunchStop, InterruptStopsMpirunAndEveryRank) {
  test::TempDir tmp;
  write_sft(tmp.path("sft.jsonl"));
  const int port = free_port();
  std::string text = yaml(tmp, tmp.path("i"), port);
  text.replace(text.find("max_steps: 12"), 13, "max_steps: 1000000");  // runs until stopped
  core::write_file_atomic(tmp.path("i.yaml"), text);
  Launcher l(tmp.path("i.yaml"), tmp.path("err"), {});
  std::vector<int64_t> ranks;
  ASSERT_TRUE(wait_until([&] {
    const auto s = get_status(port);
    if (!s.is_object() || s["ranks"].size() != 2) return false;
    ranks.clear();
    for (const auto& r : s["ranks"])
      if (r.value("step", 0) >= 1) ranks.push_back(r["pid"].get<int64_t>());
    return ranks.size() == 2;
  }, 300)) << l.err();
  const int64_t mpirun = core::parent_pid(ranks[0]);
  ::kill(l.pid, SIGINT);
  EXPECT_EQ(l.wait(), 130) << l.err();
  for (int64_t pid : ranks) EXPECT_TRUE(wait_until([&] { return !core::process_alive(pid); }, 60)) << "rank pid " << pid;
  EXPECT_TRUE(wait_until([&] { return !core::process_alive(mpirun); }, 60));
  EXPECT_NE(l.err().find("Interrupt; stopping the job"), std::string::npos) << l.err();
}

}  // namespace
}  // namespace reglage
