// reglage launch PIPELINE.yaml [--set key=value ...] [--restart-from STAGE]
// Starts the pipeline under mpirun as the `launch:` section says (this machine, one rank per core, without
// one), streams its output and exits with its status. A watchdog follows every rank's heartbeats
// (net/heartbeat.h, net/watchdog.h): a rank that dies or falls silent past heartbeat_timeout_s, whose
// progress stands still past hang_timeout_s, or that never reports within startup_timeout_s is named (rank,
// host, stage, step, operation), the job is stopped and started again, which resumes from the last
// checkpoints, up to max_restarts times; a failure that repeats at the same stage and step is not retried.
// Heartbeats carry a secret made here for the job and handed to the ranks in the environment only; the
// launcher signals only processes its own mpirun started. SIGINT, SIGTERM and SIGHUP stop the job (mpirun's
// process group, then its ranks) before the launcher exits 128 + the signal. While it runs, GET /status
// (JSON) and /metrics (Prometheus text) answer on status_port.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "framework/checkpoint/run_layout.h"
#include "framework/checkpoint/run_lock.h"
#include "framework/config/config_error.h"
#include "framework/config/pipeline_config.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/core/process_tree.h"
#include "framework/metrics/metrics_log.h"
#include "framework/net/heartbeat.h"
#include "framework/net/launch_monitor.h"
#include "framework/net/watchdog.h"
#include "launch/commands.h"

namespace reglage::launch {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string this_host() {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  return name;
}

bool is_local(const std::string& host) {
  return host == "localhost" || host == "127.0.0.1" || host == this_host();
}

// What the status endpoint shows; written by the supervisor loop, read by the network thread.
struct JobState {
  std::mutex mutex;
  std::string state = "starting";  // starting | running | restarting | finished | failed
  int attempt = 0, restarts = 0, np = 0;
  std::string last_failure;
  // rank 0's progress at the first beat seen in its current stage, for the ETA
  std::string eta_stage;
  int64_t eta_step0 = 0;
  Clock::time_point eta_t0;
};

std::string prometheus_name(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
  return s;
}

std::string label(const std::string& s) {  // a Prometheus label value, escaped
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

struct Launch {
  config::PipelineConfig cfg;
  std::string config_path;
  std::vector<std::string> overrides;
  std::string restart_from;
  int np = 1;
  JobState job;
  std::unique_ptr<net::LaunchMonitor> monitor;

  // Per stage: its state in pipeline.json and its last metrics.
  json stages_json() const {
    json out = json::object();
    json record;
    try {
      record = json::parse(core::read_file(checkpoint::RunLayout(cfg.run_dir).pipeline_json()));
    } catch (const std::exception&) {
      record = json::object();
    }
    for (const auto& st : cfg.stages) {
      json s = {{"type", config::to_string(st.type)}, {"state", "pending"}};
      if (record.contains("stages") && record["stages"].contains(st.name))
        s["state"] = record["stages"][st.name].value("state", "pending");
      const std::string metrics = checkpoint::RunLayout(cfg.run_dir).metrics(st.name);
      if (core::file_exists(metrics))
        for (const auto& [split, rec] : metrics::last_records(metrics))
          if (!rec.empty()) s["last_" + split] = rec;
      out[st.name] = s;
    }
    return out;
  }

  json status_json() {
    const auto ranks = monitor->ranks();
    json r = json::array();
    for (const auto& h : ranks)
      r.push_back({{"rank", h.rank},
                   {"host", h.host},
                   {"pid", h.pid},
                   {"stage", h.stage},
                   {"step", h.step},
                   {"total", h.total},
                   {"op", h.op},
                   {"seconds_since_heartbeat", h.since_beat_s},
                   {"healthy", h.connected && h.since_beat_s <= cfg.launch.heartbeat_timeout_s}});
    std::lock_guard<std::mutex> lock(job.mutex);
    json out = {{"pipeline", config_path}, {"run_dir", cfg.run_dir}, {"state", job.state},
                {"attempt", job.attempt},  {"restarts", job.restarts}, {"ranks_expected", job.np},
                {"ranks", r},              {"stages", stages_json()},
                {"heartbeats_rejected", monitor->rejected_beats()}};
    if (!job.last_failure.empty()) out["last_failure"] = job.last_failure;
    for (const auto& h : ranks) {
      if (h.rank != 0) continue;
      out["stage"] = h.stage;
      out["step"] = h.step;
      out["total"] = h.total;
      if (h.stage != job.eta_stage) {
        job.eta_stage = h.stage;
        job.eta_step0 = h.step;
        job.eta_t0 = Clock::now();
      } else if (h.step > job.eta_step0 && h.total > 0) {
        const double per_step = std::chrono::duration<double>(Clock::now() - job.eta_t0).count() / double(h.step - job.eta_step0);
        out["eta_s"] = per_step * double(h.total - h.step);
      }
    }
    return out;
  }

  std::string metrics_text() {
    const json s = status_json();
    std::ostringstream out;
    out << "# HELP reglage_up 1 while the launcher runs.\n# TYPE reglage_up gauge\nreglage_up 1\n";
    out << "# HELP reglage_attempt The current attempt (0 = the first run).\n# TYPE reglage_attempt gauge\n"
        << "reglage_attempt " << s["attempt"].get<int>() << "\n";
    out << "# HELP reglage_restarts_total Restarts after a dead or hung rank.\n# TYPE reglage_restarts_total counter\n"
        << "reglage_restarts_total " << s["restarts"].get<int>() << "\n";
    out << "# HELP reglage_rank_step Steps done in the rank's current stage.\n# TYPE reglage_rank_step gauge\n";
    for (const auto& r : s["ranks"])
      out << "reglage_rank_step{rank=\"" << r["rank"].get<int>() << "\",stage=\"" << label(r["stage"].get<std::string>())
          << "\"} " << r["step"].get<int64_t>() << "\n";
    out << "# HELP reglage_rank_heartbeat_age_seconds Seconds since the rank's last heartbeat.\n"
        << "# TYPE reglage_rank_heartbeat_age_seconds gauge\n";
    for (const auto& r : s["ranks"])
      out << "reglage_rank_heartbeat_age_seconds{rank=\"" << r["rank"].get<int>() << "\"} "
          << r["seconds_since_heartbeat"].get<double>() << "\n";
    out << "# HELP reglage_rank_healthy 1 when the rank's heartbeats arrive in time.\n# TYPE reglage_rank_healthy gauge\n";
    for (const auto& r : s["ranks"])
      out << "reglage_rank_healthy{rank=\"" << r["rank"].get<int>() << "\"} " << (r["healthy"].get<bool>() ? 1 : 0) << "\n";
    out << "# HELP reglage_stage_metric The last logged value of a stage's metric.\n# TYPE reglage_stage_metric gauge\n";
    for (const auto& [stage, st] : s["stages"].items())
      for (const char* split : {"last_train", "last_eval"}) {
        if (!st.contains(split)) continue;
        for (const auto& [name, v] : st[split].items())
          if (v.is_number() && std::isfinite(v.get<double>()))
            out << "reglage_stage_metric{stage=\"" << label(stage) << "\",split=\"" << std::string(split).substr(5)
                << "\",name=\"" << label(prometheus_name(name)) << "\"} " << v.get<double>() << "\n";
      }
    return out.str();
  }

  net::HttpAnswer render(const std::string& path) {
    if (path == "/status") return {200, "application/json", status_json().dump(2) + "\n"};
    if (path == "/metrics") return {200, "text/plain; version=0.0.4", metrics_text()};
    return {404, "application/json", R"j({"error":"unknown path (expected /status or /metrics)"})j"};
  }

  std::vector<std::string> mpirun_argv(int attempt) const {
    const auto& l = cfg.launch;
    std::vector<std::string> a = {"mpirun", "-np", std::to_string(np)};
    if (!l.hosts.empty()) {
      std::string hosts;
      for (const auto& h : l.hosts) hosts += (hosts.empty() ? "" : ",") + h.host + ":" + std::to_string(h.slots);
      a.insert(a.end(), {"--host", hosts});
    } else if (!l.hostfile.empty()) {
      a.insert(a.end(), {"--hostfile", l.hostfile});
    }
    // By name only: mpirun takes the values from its environment, so the secret is on no command line.
    for (const char* v : {"REGLAGE_LAUNCHER", "REGLAGE_HEARTBEAT_S", "REGLAGE_ATTEMPT", net::kHeartbeatKeyVar})
      a.insert(a.end(), {"-x", v});
    for (const auto& v : l.env) a.insert(a.end(), {"-x", v});
    a.insert(a.end(), l.mpirun_args.begin(), l.mpirun_args.end());
    a.insert(a.end(), {std::filesystem::read_symlink("/proc/self/exe").string(), "run", config_path});
    for (const auto& o : overrides) a.insert(a.end(), {"--set", o});
    if (attempt == 0 && !restart_from.empty()) a.insert(a.end(), {"--restart-from", restart_from});
    return a;
  }
};

// One local process for good: a pid reused after it died has another start time.
struct Process {
  int64_t pid = 0, start = -1;
};

// The ranks that may be signalled: those on this machine whose pid descends from mpirun now.
std::vector<Process> trusted_ranks(pid_t child, const std::vector<net::RankHealth>& ranks) {
  std::vector<Process> out;
  for (const auto& h : ranks)
    if (h.local && core::descends_from(h.pid, child)) out.push_back({h.pid, core::start_time(h.pid)});
  return out;
}

void kill_if_same(const std::vector<Process>& ranks, int sig) {
  for (const Process& p : ranks)
    if (p.start >= 0 && core::start_time(p.pid) == p.start) ::kill(pid_t(p.pid), sig);
}

// Stops the job and returns mpirun's wait status. kill_ranks_first (a dead or hung rank): SIGKILL to the
// trusted local ranks at once (a stopped rank ignores everything else). Then SIGTERM to mpirun's process
// group; after grace_s, SIGKILL to the group and to the ranks.
int stop_job(pid_t child, const std::vector<Process>& ranks, bool kill_ranks_first, double grace_s) {
  if (kill_ranks_first) kill_if_same(ranks, SIGKILL);
  ::kill(-child, SIGTERM);
  int status = 0;
  const auto deadline = Clock::now() + std::chrono::duration<double>(grace_s);
  while (Clock::now() < deadline) {
    if (::waitpid(child, &status, WNOHANG) == child) {
      kill_if_same(ranks, SIGKILL);  // a rank mpirun did not take down with it
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(-child, SIGKILL);
  kill_if_same(ranks, SIGKILL);
  ::waitpid(child, &status, 0);
  return status;
}

// The signal that asks the launcher to stop (SIGINT, SIGTERM, SIGHUP); 0 while none came.
volatile std::sig_atomic_t stop_signal = 0;

void on_stop_signal(int sig) { stop_signal = sig; }

void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

}  // namespace

int cmd_launch(int argc, char** argv) {
  Launch L;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= argc) fail(flag, " needs a value");
      return argv[++i];
    };
    if (a == "--set") L.overrides.push_back(value(a));
    else if (a == "--restart-from") L.restart_from = value(a);
    else if (a.rfind("--", 0) == 0) fail("unknown option ", a, " for 'launch' (expected --set key=value or --restart-from STAGE)");
    else if (L.config_path.empty()) L.config_path = a;
    else fail("unexpected argument '", a, "' (launch takes one pipeline file)");
  }
  if (L.config_path.empty()) fail("usage: reglage launch PIPELINE.yaml [--set key=value ...] [--restart-from STAGE]");

  // The rank count decides what the config must divide: it comes from the launch section.
  try {
    L.cfg = config::load_pipeline(L.config_path, L.overrides);
    const auto& l = L.cfg.launch;
    int64_t slots = 0;
    for (const auto& h : l.hosts) slots += h.slots;
    if (l.np > 0) L.np = int(l.np);
    else if (slots > 0) L.np = int(slots);
    else if (!l.hostfile.empty()) fail(L.config_path, ": launch.np is required with a hostfile");
    else L.np = int(std::max(1u, std::thread::hardware_concurrency()));
    config::check_world_size(L.cfg, L.np);
    config::prepare_run_dir(L.cfg);
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  // A run already holding run_dir's lock: refuse before starting mpirun (the ranks would refuse anyway).
  if (const std::string busy = checkpoint::run_dir_busy(L.cfg.run_dir); !busy.empty()) {
    std::cerr << "reglage launch: error: " << busy << "\n";
    return 1;
  }
  const auto& l = L.cfg.launch;
  bool remote = !l.hostfile.empty();
  for (const auto& h : l.hosts) remote = remote || !is_local(h.host);
  // The job's secret: in mpirun's environment (forwarded by name) and nowhere else; never printed.
  const std::string key = net::new_heartbeat_key();
  ::setenv(net::kHeartbeatKeyVar, key.c_str(), 1);
  net::LaunchMonitorOptions mo;
  mo.heartbeat_host = remote ? "0.0.0.0" : "127.0.0.1";
  mo.status_host = l.status_host;
  mo.status_port = l.status_port > 0 ? int(l.status_port) : -1;
  mo.key = key;
  L.monitor = std::make_unique<net::LaunchMonitor>(mo, [&L](const std::string& path) { return L.render(path); });
  const std::string beat_host = !l.heartbeat_host.empty() ? l.heartbeat_host : remote ? this_host() : "127.0.0.1";
  const std::string where = beat_host + ":" + std::to_string(L.monitor->heartbeat_port());
  std::cerr << "reglage launch: " << L.np << " rank(s)" << (remote ? " across hosts" : " on this machine")
            << "; heartbeats on " << where;
  if (L.monitor->status_port() > 0)
    std::cerr << "; status on http://" << l.status_host << ":" << L.monitor->status_port() << "/status";
  std::cerr << std::endl;
  catch_stop_signals();
  net::WatchLimits limits;
  limits.np = L.np;
  limits.heartbeat_timeout_s = l.heartbeat_timeout_s;
  limits.startup_timeout_s = l.startup_timeout_s;
  limits.hang_timeout_s = l.hang_timeout_s;
  auto stopped_by_signal = [&L](int sig) {
    std::lock_guard<std::mutex> lock(L.job.mutex);
    L.job.state = "failed";
    return 128 + sig;
  };

  std::string previous_failure_at;
  for (int attempt = 0;; ++attempt) {
    if (stop_signal != 0) return stopped_by_signal(stop_signal);
    {
      std::lock_guard<std::mutex> lock(L.job.mutex);
      L.job.attempt = attempt;
      L.job.np = L.np;
      L.job.state = "running";
    }
    ::setenv("REGLAGE_LAUNCHER", where.c_str(), 1);
    ::setenv("REGLAGE_HEARTBEAT_S", std::to_string(l.heartbeat_interval_s).c_str(), 1);
    ::setenv("REGLAGE_ATTEMPT", std::to_string(attempt).c_str(), 1);
    const auto args = L.mpirun_argv(attempt);
    // Signals wait while mpirun is forked, so that none arrives between the fork and the watch below.
    sigset_t stops, previous;
    sigemptyset(&stops);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stops, sig);
    ::sigprocmask(SIG_BLOCK, &stops, &previous);
    const pid_t child = ::fork();
    if (child < 0) fail("launch: cannot fork mpirun");
    if (child == 0) {
      ::setpgid(0, 0);  // its own process group: stopping the job reaches mpirun and its local ranks
      for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, SIG_DFL);
      ::sigprocmask(SIG_SETMASK, &previous, nullptr);
      std::vector<char*> cargs;
      for (const auto& s : args) cargs.push_back(const_cast<char*>(s.c_str()));
      cargs.push_back(nullptr);
      ::execvp(cargs[0], cargs.data());
      std::fprintf(stderr, "reglage launch: cannot run mpirun: %s\n", std::strerror(errno));
      std::_Exit(127);
    }
    ::setpgid(child, child);
    L.monitor->reset(L.np, child, remote);  // this attempt's ranks: pids below `child` (or remote)
    ::sigprocmask(SIG_SETMASK, &previous, nullptr);

    // Watch: the job ends, a rank dies, falls silent or stops making progress, or we are told to stop.
    const auto started = Clock::now();
    int status = 0;
    std::string failure, failure_at;
    while (true) {
      if (::waitpid(child, &status, WNOHANG) == child) break;
      if (const int sig = stop_signal; sig != 0) {
        std::cerr << "reglage launch: " << strsignal(sig) << "; stopping the job" << std::endl;
        stop_job(child, trusted_ranks(child, L.monitor->ranks()), /*kill_ranks_first=*/false, /*grace_s=*/10);
        std::cerr << "reglage launch: the job is stopped" << std::endl;
        return stopped_by_signal(sig);
      }
      const double running_s = std::chrono::duration<double>(Clock::now() - started).count();
      const auto ranks = L.monitor->ranks();
      if (const auto verdict = net::watch_verdict(ranks, running_s, limits)) {
        failure = verdict->message;
        failure_at = verdict->at;
        std::cerr << "reglage launch: " << failure << "; stopping the job" << std::endl;
        status = stop_job(child, trusted_ranks(child, ranks), /*kill_ranks_first=*/true, /*grace_s=*/5);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (failure.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      std::lock_guard<std::mutex> lock(L.job.mutex);
      L.job.state = "finished";
      std::cerr << "reglage launch: the pipeline finished" << (attempt > 0 ? " after " + std::to_string(attempt) + " restart(s)" : "")
                << std::endl;
      return 0;
    }
    if (failure.empty()) {
      // The job ended badly: the first rank whose connection dropped is the one that died.
      const auto ranks = L.monitor->ranks();
      const net::RankHealth* first = nullptr;
      for (const auto& h : ranks)
        if (h.lost_at_s >= 0 && (first == nullptr || h.lost_at_s < first->lost_at_s)) first = &h;
      std::ostringstream m;
      if (first != nullptr) {
        m << "rank " << first->rank << " on " << first->host << " (pid " << first->pid << ") died in stage '"
          << first->stage << "' at step " << first->step << ", operation '" << first->op << "'";
        failure_at = first->stage + "@" + std::to_string(first->step);
      } else {
        m << "the job exited before any rank reported";
        failure_at = "start";
      }
      m << " (mpirun " << (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                             : "signal " + std::to_string(WTERMSIG(status)))
        << ")";
      failure = m.str();
      std::cerr << "reglage launch: " << failure << std::endl;
    }
    {
      std::lock_guard<std::mutex> lock(L.job.mutex);
      L.job.last_failure = failure;
    }
    if (failure_at == previous_failure_at) {
      std::cerr << "reglage launch: the failure repeats at the same place (" << failure_at
                << "); not restarting. The ranks' output above says why." << std::endl;
      std::lock_guard<std::mutex> lock(L.job.mutex);
      L.job.state = "failed";
      return 1;
    }
    if (attempt >= l.max_restarts) {
      std::cerr << "reglage launch: giving up after " << attempt << " restart(s) (launch.max_restarts = "
                << l.max_restarts << ")" << std::endl;
      std::lock_guard<std::mutex> lock(L.job.mutex);
      L.job.state = "failed";
      return 1;
    }
    previous_failure_at = failure_at;
    {
      std::lock_guard<std::mutex> lock(L.job.mutex);
      L.job.state = "restarting";
      L.job.restarts = attempt + 1;
    }
    std::cerr << "reglage launch: restarting (restart " << attempt + 1 << " of " << l.max_restarts
              << "); the pipeline resumes from its last checkpoints" << std::endl;
  }
}

}  // namespace reglage::launch
