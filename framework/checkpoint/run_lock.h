// One run at a time per run_dir. `reglage run` takes an exclusive flock(2) on run_dir/.reglage.lock on
// rank 0 and holds it until the run ends; the kernel drops it when that process ends however it ends
// (SIGKILL and OOM kills included), so a lock file left behind never blocks the next run. The file's
// content, one JSON line {"pid": .., "host": .., "since": ..}, only names the holder in the refusal:
//   run_dir /x/run is in use by another reglage run (pid 4242 on host node1, since 2026-12-01T08:00:00Z;
//   lock file /x/run/.reglage.lock): wait for it to end or stop it
// On a shared file system the lock is as good as its flock: NFS (v4, or v3 with lockd) carries it between
// hosts.
#pragma once
#include <string>

#include "framework/core/error.h"

namespace reglage::checkpoint {

constexpr const char* kRunLockFile = ".reglage.lock";

// A run refused before it started, thrown on every rank at the same point (no rank waits in a collective),
// so the caller prints it once and exits without aborting MPI.
class RunRefused : public Error {
 public:
  using Error::Error;
};

class RunLock {
 public:
  RunLock() = default;
  ~RunLock();  // drops the lock (the file stays: removing it could let two runs lock two different files)
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  // Takes run_dir's lock and writes this process's pid, host and start time into the file. Returns "" when
  // taken, else the refusal line naming the holder. With wait_s > 0 a held lock is retried for that long
  // first (a launcher restart whose previous rank 0 is still exiting). Throws when the file cannot be opened.
  std::string try_acquire(const std::string& run_dir, double wait_s = 0);
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// "" when no process holds run_dir's lock now, else the refusal line. Takes the lock and drops it again, for
// a caller that wants to refuse early (reglage launch) before its ranks take it for real.
std::string run_dir_busy(const std::string& run_dir);

}  // namespace reglage::checkpoint
