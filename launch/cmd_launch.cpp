// reglage launch PIPELINE.yaml [--set key=value ...] [--restart-from STAGE]
// Starts the pipeline under mpirun as the `launch:` section says (this machine, one rank per core, without
// one), streams its output and exits with its status. A watchdog follows every rank's heartbeats
// (net/heartbeat.h): a rank that dies or falls silent past heartbeat_timeout_s is named (rank, host, stage,
// step, operation), the job is stopped and started again, which resumes from the last checkpoints, up to
// max_restarts times; a failure that repeats at the same stage and step is not retried. While it runs,
// GET /status (JSON) and /metrics (Prometheus text) answer on status_port.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "framework/config/config_error.h"
#include "framework/config/pipeline_config.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/metrics/metrics_log.h"
#include "framework/net/launch_monitor.h"
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
      record = json::parse(core::read_file(cfg.run_dir + "/pipeline.json"));
    } catch (const std::exception&) {
      record = json::object();
    }
    for (const auto& st : cfg.stages) {
      json s = {{"type", st.type}, {"state", "pending"}};
      if (record.contains("stages") && record["stages"].contains(st.name))
        s["state"] = record["stages"][st.name].value("state", "pending");
      const std::string metrics = cfg.run_dir + "/" + st.name + "/metrics.jsonl";
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
                {"ranks", r},              {"stages", stages_json()}};
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
    for (const char* v : {"REGLAGE_LAUNCHER", "REGLAGE_HEARTBEAT_S", "REGLAGE_ATTEMPT"}) a.insert(a.end(), {"-x", v});
    for (const auto& v : l.env) a.insert(a.end(), {"-x", v});
    a.insert(a.end(), l.mpirun_args.begin(), l.mpirun_args.end());
    a.insert(a.end(), {std::filesystem::read_symlink("/proc/self/exe").string(), "run", config_path});
    for (const auto& o : overrides) a.insert(a.end(), {"--set", o});
    if (attempt == 0 && !restart_from.empty()) a.insert(a.end(), {"--restart-from", restart_from});
    return a;
  }
};

// Stops the job: SIGKILL to the named local pids (a stopped rank ignores everything else), SIGTERM to
// mpirun's process group, then SIGKILL after 5 s. Returns mpirun's wait status.
int stop_job(pid_t child, const std::vector<int64_t>& local_pids) {
  for (int64_t pid : local_pids)
    if (pid > 0) ::kill(pid_t(pid), SIGKILL);
  ::kill(-child, SIGTERM);
  int status = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < deadline) {
    if (::waitpid(child, &status, WNOHANG) == child) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(-child, SIGKILL);
  ::waitpid(child, &status, 0);
  return status;
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

  // The rank count decides what the config must divide, so read the launch section first.
  try {
    L.cfg = config::load_pipeline(L.config_path, L.overrides, 1);
    const auto& l = L.cfg.launch;
    int64_t slots = 0;
    for (const auto& h : l.hosts) slots += h.slots;
    if (l.np > 0) L.np = int(l.np);
    else if (slots > 0) L.np = int(slots);
    else if (!l.hostfile.empty()) fail(L.config_path, ": launch.np is required with a hostfile");
    else L.np = int(std::max(1u, std::thread::hardware_concurrency()));
    L.cfg = config::load_pipeline(L.config_path, L.overrides, L.np);
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  const auto& l = L.cfg.launch;
  bool remote = !l.hostfile.empty();
  for (const auto& h : l.hosts) remote = remote || !is_local(h.host);
  net::LaunchMonitorOptions mo;
  mo.heartbeat_host = remote ? "0.0.0.0" : "127.0.0.1";
  mo.status_host = l.status_host;
  mo.status_port = l.status_port > 0 ? int(l.status_port) : -1;
  L.monitor = std::make_unique<net::LaunchMonitor>(mo, [&L](const std::string& path) { return L.render(path); });
  const std::string beat_host = !l.heartbeat_host.empty() ? l.heartbeat_host : remote ? this_host() : "127.0.0.1";
  const std::string where = beat_host + ":" + std::to_string(L.monitor->heartbeat_port());
  std::cerr << "reglage launch: " << L.np << " rank(s)" << (remote ? " across hosts" : " on this machine")
            << "; heartbeats on " << where;
  if (L.monitor->status_port() > 0)
    std::cerr << "; status on http://" << l.status_host << ":" << L.monitor->status_port() << "/status";
  std::cerr << std::endl;

  std::string previous_failure_at;
  for (int attempt = 0;; ++attempt) {
    L.monitor->reset();
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
    const pid_t child = ::fork();
    if (child < 0) fail("launch: cannot fork mpirun");
    if (child == 0) {
      ::setpgid(0, 0);  // its own process group: stopping the job reaches mpirun and its local ranks
      std::vector<char*> cargs;
      for (const auto& s : args) cargs.push_back(const_cast<char*>(s.c_str()));
      cargs.push_back(nullptr);
      ::execvp(cargs[0], cargs.data());
      std::fprintf(stderr, "reglage launch: cannot run mpirun: %s\n", std::strerror(errno));
      std::_Exit(127);
    }
    ::setpgid(child, child);

    // Watch: the job ends, or a rank falls silent.
    const auto started = Clock::now();
    int status = 0;
    std::string failure, failure_at;
    std::vector<int64_t> kill_pids;
    while (true) {
      if (::waitpid(child, &status, WNOHANG) == child) break;
      const double running_s = std::chrono::duration<double>(Clock::now() - started).count();
      const auto ranks = L.monitor->ranks();
      for (const auto& h : ranks) {
        if (!h.connected || h.since_beat_s <= l.heartbeat_timeout_s) continue;
        std::ostringstream m;
        m << "rank " << h.rank << " on " << h.host << " (pid " << h.pid << ") has been silent for "
          << int(h.since_beat_s) << " s in stage '" << h.stage << "' at step " << h.step << ", operation '" << h.op
          << "': hung";
        for (const auto& k : ranks)  // what the others are doing: usually waiting for it in a collective
          if (k.rank != h.rank) m << "; rank " << k.rank << " is in '" << k.op << "' at step " << k.step;
        failure = m.str();
        failure_at = h.stage + "@" + std::to_string(h.step);
        for (const auto& k : ranks)
          if (is_local(k.host)) kill_pids.push_back(k.pid);
        break;
      }
      if (failure.empty() && running_s > l.heartbeat_timeout_s && int(ranks.size()) < L.np) {
        failure = std::to_string(L.np - int(ranks.size())) + " rank(s) never reported within heartbeat_timeout_s";
        failure_at = "start";
      }
      if (!failure.empty()) {
        std::cerr << "reglage launch: " << failure << "; stopping the job" << std::endl;
        status = stop_job(child, kill_pids);
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
