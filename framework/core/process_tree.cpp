#include "framework/core/process_tree.h"

#include <fstream>
#include <sstream>

namespace reglage::core {

namespace {

// The fields of /proc/PID/stat after the command name, which is in parentheses and may hold spaces and
// ')' itself: everything after the last ')' is "STATE PPID ...". False when the process is gone.
bool read_stat(int64_t pid, char& state, int64_t& ppid, int64_t* start = nullptr) {
  if (pid <= 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return false;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 1));
  if (!(rest >> state >> ppid)) return false;
  if (start == nullptr) return true;
  std::string skip;
  for (int field = 5; field < 22; ++field) rest >> skip;  // fields 5..21: pgrp .. itrealvalue
  return static_cast<bool>(rest >> *start);
}

}  // namespace

int64_t parent_pid(int64_t pid) {
  char state = 0;
  int64_t ppid = -1;
  return read_stat(pid, state, ppid) ? ppid : -1;
}

bool descends_from(int64_t pid, int64_t ancestor) {
  if (pid <= 1 || ancestor <= 1) return false;
  for (int level = 0; level < 64 && pid > 1; ++level) {  // bounded: a tree deeper than 64 is not ours
    if (pid == ancestor) return true;
    pid = parent_pid(pid);
  }
  return false;
}

int64_t start_time(int64_t pid) {
  char state = 0;
  int64_t ppid = -1, start = -1;
  return read_stat(pid, state, ppid, &start) ? start : -1;
}

bool process_alive(int64_t pid) {
  char state = 0;
  int64_t ppid = -1;
  return read_stat(pid, state, ppid) && state != 'Z' && state != 'X';
}

}  // namespace reglage::core
