// The rank side of `reglage launch`'s watchdog: a thread that sends one JSON line every interval to the
// launcher over TCP, carrying this rank's identity and core::progress_snapshot():
//   {"rank": 1, "host": "node2", "pid": 4242, "stage": "sft", "step": 37, "total": 600, "op": "allreduce grads"}
// A process that dies closes the connection (the launcher sees it at once); one that hangs or is stopped
// falls silent. Connection failures are retried every interval; the sender never stops the training.
#pragma once
#include <memory>
#include <string>

namespace reglage::net {

class HeartbeatSender {
 public:
  // host:port of the launcher; interval_s between beats (> 0).
  HeartbeatSender(const std::string& host, int port, int rank, double interval_s);
  ~HeartbeatSender();  // stops the thread and closes the connection
  HeartbeatSender(const HeartbeatSender&) = delete;
  HeartbeatSender& operator=(const HeartbeatSender&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Starts a sender when REGLAGE_LAUNCHER=host:port is set (by `reglage launch`), with the interval in
// REGLAGE_HEARTBEAT_S (default 5); nullptr otherwise. Throws on a malformed value.
std::unique_ptr<HeartbeatSender> heartbeat_from_env(int rank);

}  // namespace reglage::net
