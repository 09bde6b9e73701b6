// The launcher side of the watchdog and the live status endpoint (Boost.Asio/Beast on one thread):
//   - a TCP listener for the ranks' heartbeat lines (net/heartbeat_line.h): per rank its host, pid, stage,
//     step, operation, progress counter, when it was last heard, when its counter last moved and whether its
//     connection is still open. Only lines with the job's secret count, and only for ranks in [0, np) whose
//     pid is trusted: on this machine a descendant of the attempt's mpirun; a pid elsewhere (allowed only
//     when the job has remote hosts) is pinned to the rank by its first beat. Any other line is counted in
//     rejected_beats() and its connection closed; a connection with no valid line in 30 s is closed too.
//     No input can throw out of a handler.
//   - an HTTP server answering GET requests through a render callback (the launcher builds /status JSON and
//     /metrics Prometheus text); any other method gets 405, a body over 64 KiB 413, a stalled client is
//     dropped after 5 s. No request can end it: a renderer that throws (or answers a status outside 100..599)
//     gives 500 with a JSON error that is always valid UTF-8; a failed accept (EMFILE) is retried after 100 ms.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace reglage::net {

struct RankHealth {
  int rank = 0;
  std::string host;
  int64_t pid = 0;
  std::string stage, op;
  int64_t step = 0, total = 0;
  double since_beat_s = 0;       // seconds since its last heartbeat
  bool connected = false;        // its heartbeat connection is open
  double lost_at_s = -1;         // when the connection closed, in seconds since reset(); -1 = still open
  uint64_t progress = 0;         // core::Progress::counter in its last beat
  double since_progress_s = 0;   // seconds since `progress` last changed (since its first beat at most)
  bool local = false;            // pid descends from this attempt's mpirun on this machine (checked when
                                 // first heard): the only ranks whose pid the launcher may signal
};

struct HttpAnswer {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};
// Called on the network thread for each GET with the request's path (query string stripped).
using HttpRenderer = std::function<HttpAnswer(const std::string& path)>;

struct LaunchMonitorOptions {
  std::string heartbeat_host = "127.0.0.1";  // where ranks connect (0.0.0.0 for ranks on other hosts)
  int heartbeat_port = 0;                    // 0 = any free port
  std::string status_host = "127.0.0.1";
  int status_port = -1;                      // -1 = no status server; 0 = any free port
  std::string key;                           // the job's secret (net/heartbeat.h); beats without it are dropped
};

class LaunchMonitor {
 public:
  LaunchMonitor(const LaunchMonitorOptions& options, HttpRenderer renderer);
  ~LaunchMonitor();
  LaunchMonitor(const LaunchMonitor&) = delete;
  LaunchMonitor& operator=(const LaunchMonitor&) = delete;

  int heartbeat_port() const;
  int status_port() const;  // -1 when off
  // accept() calls on the status listener that failed (EMFILE...), each followed by a 100 ms pause; for tests.
  int64_t status_accept_errors() const;
  // A new attempt of np ranks started by mpirun as job_pid: forgets every rank (connections of the old
  // attempt are closed when they next speak). remote_ranks = ranks may run on other hosts, whose pids
  // cannot be checked here; without it, a pid that does not descend from job_pid is rejected.
  void reset(int np, int64_t job_pid, bool remote_ranks);
  // Lines dropped since the monitor started: malformed, without the secret, or for an untrusted rank/pid.
  uint64_t rejected_beats() const;
  // Every rank heard from since reset(), ordered by rank.
  std::vector<RankHealth> ranks() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace reglage::net
