// The launcher's verdict on a running attempt, from the ranks' heartbeats (net/launch_monitor.h): which rank
// is dead or hung, named with what it and its peers were doing. Pure, so that every rule is unit-tested.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "framework/net/launch_monitor.h"

namespace reglage::net {

struct WatchLimits {
  int np = 1;                        // ranks expected
  double heartbeat_timeout_s = 60;   // a rank heard from, then silent this long, is hung (or dead when its
                                     // connection closed and did not come back)
  double startup_timeout_s = 600;    // time a rank may take to send its first beat
  double hang_timeout_s = 1800;      // a rank whose progress counter stands still this long while it beats
                                     // is hung (its compute thread is stuck)
};

struct Verdict {
  std::string message;  // "rank 1 on node2 (pid 4242) ...", one line
  std::string at;       // "STAGE@STEP" ("start" before every rank reported): a failure that repeats here
                        // is not retried
  int rank = -1;        // -1 when no single rank is to blame (start-up)
};

// The first problem, in this order: the rank silent longest past heartbeat_timeout_s; the rank whose
// counter stood still longest past hang_timeout_s; ranks missing past startup_timeout_s. running_s = time
// since the attempt started. nullopt while all is well.
std::optional<Verdict> watch_verdict(const std::vector<RankHealth>& ranks, double running_s, const WatchLimits& limits);

}  // namespace reglage::net
