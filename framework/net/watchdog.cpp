#include "framework/net/watchdog.h"

#include <sstream>

namespace reglage::net {

namespace {

std::string where(const RankHealth& h) {
  return "in stage '" + h.stage + "' at step " + std::to_string(h.step) + ", operation '" + h.op + "'";
}

// What the others are doing: usually waiting for the culprit in a collective.
std::string peers(const std::vector<RankHealth>& ranks, int culprit) {
  std::string out;
  for (const auto& k : ranks)
    if (k.rank != culprit) out += "; rank " + std::to_string(k.rank) + " is in '" + k.op + "' at step " + std::to_string(k.step);
  return out;
}

}  // namespace

std::optional<Verdict> watch_verdict(const std::vector<RankHealth>& ranks, double running_s, const WatchLimits& limits) {
  // Silent: its beats stopped. A rank whose connection closed is judged the same way (it may reconnect
  // within the timeout); it is never skipped.
  const RankHealth* silent = nullptr;
  for (const auto& h : ranks)
    if (h.since_beat_s > limits.heartbeat_timeout_s && (silent == nullptr || h.since_beat_s > silent->since_beat_s))
      silent = &h;
  if (silent != nullptr) {
    const RankHealth& h = *silent;
    std::ostringstream m;
    m << "rank " << h.rank << " on " << h.host << " (pid " << h.pid << ") ";
    if (h.connected)
      m << "has been silent for " << int(h.since_beat_s) << " s " << where(h) << ": hung";
    else
      m << "died " << where(h) << " (its heartbeat connection closed and did not come back within "
        << limits.heartbeat_timeout_s << " s)";
    m << peers(ranks, h.rank);
    return Verdict{m.str(), h.stage + "@" + std::to_string(h.step), h.rank};
  }
  // Stuck: beats arrive but its progress counter stands still.
  const RankHealth* stuck = nullptr;
  for (const auto& h : ranks)
    if (h.since_progress_s > limits.hang_timeout_s && (stuck == nullptr || h.since_progress_s > stuck->since_progress_s))
      stuck = &h;
  if (stuck != nullptr) {
    const RankHealth& h = *stuck;
    std::ostringstream m;
    m << "rank " << h.rank << " on " << h.host << " (pid " << h.pid << ") has made no progress for "
      << int(h.since_progress_s) << " s " << where(h) << " while its heartbeats continue: hung (compute thread stuck)"
      << peers(ranks, h.rank);
    return Verdict{m.str(), h.stage + "@" + std::to_string(h.step), h.rank};
  }
  if (running_s > limits.startup_timeout_s && int(ranks.size()) < limits.np) {
    std::ostringstream m;
    m << limits.np - int(ranks.size()) << " rank(s) never reported within startup_timeout_s ("
      << limits.startup_timeout_s << " s)";
    return Verdict{m.str(), "start", -1};
  }
  return std::nullopt;
}

}  // namespace reglage::net
