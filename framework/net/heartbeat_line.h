// One heartbeat line, both sides: the rank formats it (net/heartbeat.h), the launcher parses and checks it
// (net/launch_monitor.h). The line is one JSON object with exactly these fields:
//   key      string  the job's secret (64 hex digits), compared in constant time
//   rank     integer in [0, np)
//   host     string  1..256 bytes, the rank's host name
//   pid      integer in [2, 4194304] (Linux's largest pid_max)
//   stage    string  0..256 bytes
//   step     integer >= 0
//   total    integer >= 0
//   op       string  0..256 bytes
//   progress integer >= 0, core::Progress::counter
// Anything else (another type, a value out of range, a missing or extra field, bad UTF-8, a line over
// kHeartbeatMaxLine bytes) is not a beat.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace reglage::net {

struct BeatLine {
  int rank = 0;
  std::string host;
  int64_t pid = 0;
  std::string stage;
  int64_t step = 0, total = 0;
  std::string op;
  uint64_t progress = 0;
};

inline constexpr int64_t kHeartbeatMaxPid = int64_t(1) << 22;  // PID_MAX_LIMIT on 64-bit Linux

// The line a rank sends (with its trailing newline); strings are cut to the bound, bad UTF-8 replaced.
std::string format_beat(const std::string& key, const BeatLine& beat);

// The beat in `line` (its newline stripped or not) when it is well-formed, carries `key` and names a rank
// below np; std::nullopt otherwise, with the reason in *why (which never quotes the line's key). Never throws
// on any input.
std::optional<BeatLine> parse_beat(const std::string& line, const std::string& key, int np, std::string* why = nullptr);

// a == b, in time that depends only on the lengths (a wrong key gives no hint of how much of it was right).
bool same_secret(const std::string& a, const std::string& b);

}  // namespace reglage::net
