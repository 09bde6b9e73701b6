// The rank side of `reglage launch`'s watchdog: a thread that sends one JSON line every interval to the
// launcher over TCP, carrying the job's secret, this rank's identity and core::progress_snapshot():
//   {"key": "<64 hex digits>", "rank": 1, "host": "node2", "pid": 4242, "stage": "sft", "step": 37,
//    "total": 600, "op": "allreduce grads", "progress": 913}
// The launcher drops lines without the secret (net/launch_monitor.h), so only the job's own ranks are
// heard. A process that dies closes the connection (the launcher sees it at once); one that hangs or is
// stopped falls silent; one whose compute thread is stuck keeps beating with a `progress` that no longer
// moves. Connection failures are retried every interval; the sender never stops the training.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

namespace reglage::net {

// The variable that hands the ranks the job's secret. The launcher sets it in mpirun's environment and
// forwards it by name (`-x REGLAGE_HEARTBEAT_KEY`), so the value is never on a command line or in a log.
inline constexpr const char* kHeartbeatKeyVar = "REGLAGE_HEARTBEAT_KEY";
inline constexpr size_t kHeartbeatKeyHex = 64;       // 32 random bytes as hex
inline constexpr size_t kHeartbeatMaxString = 256;   // host, stage and op are cut to this many bytes
inline constexpr size_t kHeartbeatMaxLine = 4096;    // a longer line is not a rank's

// A fresh secret: 32 bytes from /dev/urandom as 64 lowercase hex digits. Throws when it cannot be read.
std::string new_heartbeat_key();

// `s` cut to at most `max_bytes` bytes without splitting a UTF-8 sequence.
std::string cut_utf8(const std::string& s, size_t max_bytes);

class HeartbeatSender {
 public:
  // host:port of the launcher; key = the job's secret; interval_s between beats (> 0).
  HeartbeatSender(const std::string& host, int port, const std::string& key, int rank, double interval_s);
  ~HeartbeatSender();  // stops the thread and closes the connection
  HeartbeatSender(const HeartbeatSender&) = delete;
  HeartbeatSender& operator=(const HeartbeatSender&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Starts a sender when REGLAGE_LAUNCHER=host:port is set (by `reglage launch`), with the secret in
// REGLAGE_HEARTBEAT_KEY (removed from this process's environment once read, so that programs it starts do
// not inherit it) and the interval in REGLAGE_HEARTBEAT_S (default 5); nullptr otherwise. Throws on a
// malformed or missing value. Call it before starting other threads (it edits the environment).
std::unique_ptr<HeartbeatSender> heartbeat_from_env(int rank);

}  // namespace reglage::net
