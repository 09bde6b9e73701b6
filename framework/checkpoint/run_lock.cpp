#include "framework/checkpoint/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>

#include "framework/checkpoint/run_layout.h"
#include "framework/core/file_util.h"

namespace reglage::checkpoint {

using nlohmann::json;

namespace {

constexpr auto kRetryEvery = std::chrono::milliseconds(200);  // while waiting out a previous holder

std::string this_host() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Opens (creating) the lock file; close-on-exec, so a child process (mpirun, a tool) never inherits the lock.
int open_lock_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, ": cannot open the run_dir lock file (", std::strerror(errno), ")");
  return fd;
}

// Whatever the holder wrote, read through our own descriptor.
std::string read_all(int fd) {
  std::string out;
  char buf[512];
  off_t at = 0;
  for (int i = 0; i < 64; ++i) {  // the content is one short line; bounded all the same
    const ssize_t n = ::pread(fd, buf, sizeof(buf), at);
    if (n <= 0) break;
    out.append(buf, size_t(n));
    at += n;
  }
  return out;
}

std::string refusal(const std::string& run_dir, const std::string& path, const std::string& content) {
  std::string who;
  try {
    const json j = json::parse(content);
    who = "pid " + std::to_string(j.at("pid").get<long long>()) + " on host " + j.at("host").get<std::string>() +
          ", since " + j.value("since", std::string("?")) + "; ";
  } catch (const std::exception&) {
    who = "which has not written its pid and host yet; ";  // it took the lock a moment ago
  }
  return "run_dir " + run_dir + " is in use by another reglage run (" + who + "lock file " + path +
         "): wait for it to end or stop it";
}

// Locks fd (retrying for wait_s while another process holds it): "" when locked, else the refusal line.
std::string lock_or_refusal(int fd, const std::string& run_dir, const std::string& path, double wait_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(std::max(0.0, wait_s));
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EINTR) continue;
    if (err != EWOULDBLOCK) return path + ": cannot lock (" + std::strerror(err) + ")";
    if (std::chrono::steady_clock::now() >= deadline) return refusal(run_dir, path, read_all(fd));
    std::this_thread::sleep_for(kRetryEvery);
  }
  return "";
}

}  // namespace

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor drops the flock
}

std::string RunLock::try_acquire(const std::string& run_dir, double wait_s) {
  if (fd_ >= 0) return "";
  const std::string path = RunLayout(run_dir).lock_file();
  const int fd = open_lock_file(path);
  const std::string refused = lock_or_refusal(fd, run_dir, path, wait_s);
  if (!refused.empty()) {
    ::close(fd);
    return refused;
  }
  // Ours: replace what an earlier holder (now gone) left with who holds it now.
  const std::string line = json{{"pid", static_cast<long long>(::getpid())}, {"host", this_host()}, {"since", utc_now()}}
                               .dump() + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, line.data(), line.size(), 0) != ssize_t(line.size())) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    fail(path, ": cannot write the run_dir lock file (", why, ")");
  }
  fd_ = fd;
  return "";
}

std::string run_dir_busy(const std::string& run_dir) {
  if (!core::is_directory(run_dir)) return "";  // nothing has run there
  const std::string path = RunLayout(run_dir).lock_file();
  if (!core::file_exists(path)) return "";
  const int fd = open_lock_file(path);
  const std::string refused = lock_or_refusal(fd, run_dir, path, 0);
  ::close(fd);  // a probe: taken (and dropped here) without writing, so the file still names the last holder
  return refused;
}

}  // namespace reglage::checkpoint
