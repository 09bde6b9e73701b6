#include "framework/net/heartbeat.h"

#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "framework/core/error.h"
#include "framework/core/progress.h"

namespace reglage::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct HeartbeatSender::Impl {
  std::string host;
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
    return nlohmann::json{{"rank", rank},   {"host", name},       {"pid", ::getpid()}, {"stage", p.stage},
                          {"step", p.step}, {"total", p.total},   {"op", p.op}}
               .dump() +
           "\n";
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

HeartbeatSender::HeartbeatSender(const std::string& host, int port, int rank, double interval_s)
    : impl_(std::make_unique<Impl>()) {
  if (!(interval_s > 0)) fail("heartbeat interval ", interval_s, " s (must be > 0)");
  impl_->host = host;
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
  double interval = 5;
  if (const char* i = std::getenv("REGLAGE_HEARTBEAT_S")) interval = std::atof(i);
  return std::make_unique<HeartbeatSender>(s.substr(0, colon), port, rank, interval);
}

}  // namespace reglage::net
