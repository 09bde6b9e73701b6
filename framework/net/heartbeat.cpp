#include "framework/net/heartbeat.h"

#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

#include "framework/core/error.h"
#include "framework/core/progress.h"
#include "framework/net/heartbeat_line.h"

namespace reglage::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

std::string new_heartbeat_key() {
  std::ifstream in("/dev/urandom", std::ios::binary);
  unsigned char bytes[kHeartbeatKeyHex / 2];
  if (!in.read(reinterpret_cast<char*>(bytes), sizeof(bytes))) fail("cannot read /dev/urandom for the heartbeat secret");
  static const char* kHex = "0123456789abcdef";
  std::string key;
  for (unsigned char b : bytes) {
    key += kHex[b >> 4];
    key += kHex[b & 15];
  }
  return key;
}

std::string cut_utf8(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // s[n] continues a sequence
  return s.substr(0, n);
}

struct HeartbeatSender::Impl {
  std::string host, key;
  int port = 0, rank = 0;
  std::chrono::milliseconds interval{5000};
  std::mutex mutex;              // guards stop and pending
  std::condition_variable wake;
  bool stop = false, pending = false;
  std::thread thread;
  std::mutex socket_mutex;       // the connection is used by the thread and by flushes
  asio::io_context io;
  std::unique_ptr<tcp::socket> socket;

  std::string beat() const {
    const core::Progress p = core::progress_snapshot();
    char name[256] = {0};
    ::gethostname(name, sizeof(name) - 1);
    BeatLine b;
    b.rank = rank;
    b.host = name;
    b.pid = ::getpid();
    b.stage = p.stage;
    b.step = p.step;
    b.total = p.total;
    b.op = p.op;
    b.progress = p.counter;
    return format_beat(key, b);  // strings cut to the launcher's bound: a long stage name stays acceptable
  }

  // One beat, connecting first when needed; a failure drops the connection (retried next beat).
  void send() {
    std::lock_guard<std::mutex> lock(socket_mutex);
    try {
      if (!socket) {
        tcp::resolver resolver(io);
        socket = std::make_unique<tcp::socket>(io);
        asio::connect(*socket, resolver.resolve(host, std::to_string(port)));
      }
      asio::write(*socket, asio::buffer(beat()));
    } catch (const std::exception&) {
      socket.reset();
    }
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!stop) {
      pending = false;
      lock.unlock();
      send();
      lock.lock();
      wake.wait_for(lock, interval, [&] { return stop || pending; });
    }
  }
};

HeartbeatSender::HeartbeatSender(const std::string& host, int port, const std::string& key, int rank, double interval_s)
    : impl_(std::make_unique<Impl>()) {
  if (!(interval_s > 0)) fail("heartbeat interval ", interval_s, " s (must be > 0)");
  impl_->host = host;
  impl_->key = key;
  impl_->port = port;
  impl_->rank = rank;
  impl_->interval = std::chrono::milliseconds(int64_t(interval_s * 1000));
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
  // A new stage or step is reported at once, not at the next interval.
  core::set_progress_listener([impl = impl_.get()](bool flush) {
    if (flush) return impl->send();
    {
      std::lock_guard<std::mutex> lock(impl->mutex);
      impl->pending = true;
    }
    impl->wake.notify_all();
  });
}

HeartbeatSender::~HeartbeatSender() {
  core::set_progress_listener(nullptr);
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
}

std::unique_ptr<HeartbeatSender> heartbeat_from_env(int rank) {
  const char* where = std::getenv("REGLAGE_LAUNCHER");
  if (where == nullptr || *where == '\0') return nullptr;
  const std::string s = where;
  const size_t colon = s.rfind(':');
  const int port = colon == std::string::npos ? 0 : std::atoi(s.c_str() + colon + 1);
  if (colon == std::string::npos || colon == 0 || port <= 0 || port > 65535)
    fail("REGLAGE_LAUNCHER = '", s, "' (expected host:port)");
  const char* k = std::getenv(kHeartbeatKeyVar);
  const std::string key = k == nullptr ? "" : k;
  // The value is never echoed: only its shape is described.
  if (key.size() != kHeartbeatKeyHex || key.find_first_not_of("0123456789abcdef") != std::string::npos)
    fail(kHeartbeatKeyVar, " is ", k == nullptr ? "not set" : "malformed", " (expected the ", kHeartbeatKeyHex,
         " hex digits `reglage launch` passes its ranks)");
  ::unsetenv(kHeartbeatKeyVar);
  double interval = 5;
  if (const char* i = std::getenv("REGLAGE_HEARTBEAT_S")) interval = std::atof(i);
  return std::make_unique<HeartbeatSender>(s.substr(0, colon), port, key, rank, interval);
}

}  // namespace reglage::net
