// This machine's process tree, read from /proc: whether a process descends from another, and whether it is
// still there. `reglage launch` uses it to trust (and signal) only the processes its own mpirun started.
#pragma once
#include <cstdint>
#include <string>

namespace reglage::core {

// The parent of `pid` from /proc/PID/stat; -1 when it is gone or unreadable.
int64_t parent_pid(int64_t pid);

// True when `pid` is `ancestor` or below it (the parent chain, walked at most 64 levels, reaches it).
// False for pid <= 1, for a process that is gone, and for one that is not below.
bool descends_from(int64_t pid, int64_t ancestor);

// When `pid` started, in clock ticks after boot (/proc/PID/stat field 22); -1 when it is gone. With the pid
// it names one process for good: a pid reused by a later process has another start time.
int64_t start_time(int64_t pid);

// True while `pid` exists and is not a zombie (a process killed but not yet reaped counts as gone).
bool process_alive(int64_t pid);

}  // namespace reglage::core
