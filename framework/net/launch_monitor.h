// The launcher side of the watchdog and the live status endpoint (Boost.Asio/Beast on one thread):
//   - a TCP listener for the ranks' heartbeat lines (net/heartbeat.h): per rank its host, pid, stage, step,
//     operation, when it was last heard and whether its connection is still open;
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
  // A new attempt: forgets every rank (connections of the old job that are still open are closed).
  void reset();
  // Every rank heard from since reset(), ordered by rank.
  std::vector<RankHealth> ranks() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace reglage::net
