#include "framework/net/launch_monitor.h"

#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <thread>

#include "framework/core/error.h"
#include "framework/net/http_util.h"
#include "framework/core/process_tree.h"
#include "framework/net/heartbeat.h"
#include "framework/net/heartbeat_line.h"

namespace reglage::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct RankRecord {
  RankHealth health;
  Clock::time_point last_beat, last_progress;
  uint64_t connection = 0;  // the connection that last carried its beats
};

constexpr auto kFirstLineWithin = std::chrono::seconds(30);  // a connection silent this long is not a rank's
constexpr size_t kMaxConnections = 1024;                       // more at once are refused

}  // namespace

struct LaunchMonitor::Impl {  // handlers capture `this`: the io thread is joined before the Impl goes
  asio::io_context io;
  std::optional<tcp::acceptor> heartbeats, status;
  HttpRenderer renderer;
  std::string key;
  std::thread thread;
  mutable std::mutex mutex;  // guards everything below
  std::map<int, RankRecord> ranks;
  uint64_t generation = 0;   // the attempt
  int np = 0;
  int64_t job_pid = 0;
  bool remote_ranks = false;
  Clock::time_point reset_at = Clock::now();
  uint64_t rejected = 0, next_connection = 0;
  std::atomic<size_t> connections{0};  // atomic: a Beat may be destroyed after the mutex, with the io_context

  // One heartbeat connection: reads lines until EOF, a bad line, or a first line that does not come.
  struct Beat : std::enable_shared_from_this<Beat> {
    Impl* impl;
    tcp::socket socket;
    asio::streambuf buffer{kHeartbeatMaxLine + 1};  // bounded: a longer line ends the read with an error
    asio::steady_timer first_line;
    uint64_t id;
    int rank = -1;              // set by its first valid line; every later line must name the same rank
    uint64_t generation = 0;
    Beat(Impl* i, tcp::socket s, uint64_t id_) : impl(i), socket(std::move(s)), first_line(i->io), id(id_) {}
    ~Beat() { --impl->connections; }
    void start() {
      first_line.expires_after(kFirstLineWithin);
      first_line.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (!ec && self->rank < 0) self->close();
      });
      read();
    }
    void read() {
      asio::async_read_until(socket, buffer, '\n', [self = shared_from_this()](boost::system::error_code ec, size_t n) {
        try {
          if (ec) {
            if (ec == asio::error::not_found) self->impl->reject();  // over kHeartbeatMaxLine without a newline
            return self->lost();
          }
          std::string line(asio::buffers_begin(self->buffer.data()), asio::buffers_begin(self->buffer.data()) + n);
          self->buffer.consume(n);
          if (!self->impl->on_beat(*self, line)) return self->lost();  // a bad line: not a rank of ours
          self->read();
        } catch (const std::exception&) {  // never out of the handler: the watchdog must keep running
          self->lost();
        }
      });
    }
    void close() {
      boost::system::error_code ignored;
      socket.close(ignored);
    }
    // The connection ends: the rank it carried is marked lost, unless it already beats on a newer one.
    void lost() {
      close();
      first_line.cancel();
      std::lock_guard<std::mutex> lock(impl->mutex);
      auto it = impl->ranks.find(rank);
      if (rank >= 0 && generation == impl->generation && it != impl->ranks.end() && it->second.connection == id &&
          it->second.health.connected) {
        it->second.health.connected = false;
        it->second.health.lost_at_s = seconds_between(impl->reset_at, Clock::now());
      }
    }
  };

  void reject() {
    std::lock_guard<std::mutex> lock(mutex);
    ++rejected;
  }

  // Checks one line and records it; false when the line is not a trusted beat (the caller drops the
  // connection).
  bool on_beat(Beat& b, const std::string& line) {
    const std::optional<BeatLine> beat = parse_beat(line, key, np_now());
    std::lock_guard<std::mutex> lock(mutex);
    if (!beat) {
      ++rejected;
      return false;
    }
    if (b.rank >= 0 && (b.generation != generation || b.rank != beat->rank)) {
      // a rank of a stopped attempt, or a connection that changes its rank: not one of ours
      if (b.generation == generation) ++rejected;
      return false;
    }
    auto it = ranks.find(beat->rank);
    if (it == ranks.end()) {
      // First beat of this rank in this attempt: trust its pid, then pin it.
      // Strictly below mpirun: neither mpirun itself nor this launcher is ever a rank.
      const bool local = core::descends_from(beat->pid, job_pid) && beat->pid != job_pid && beat->pid != int64_t(::getpid());
      if (!local && !remote_ranks) {
        ++rejected;
        return false;
      }
      RankRecord r;
      r.health.rank = beat->rank;
      r.health.host = beat->host;
      r.health.pid = beat->pid;
      r.health.local = local;
      r.health.progress = beat->progress;
      r.last_progress = Clock::now();
      it = ranks.emplace(beat->rank, std::move(r)).first;
    } else if (it->second.health.pid != beat->pid || it->second.health.host != beat->host) {
      ++rejected;  // another process claims a rank that is already pinned
      return false;
    }
    RankRecord& r = it->second;
    const auto now = Clock::now();
    if (beat->progress != r.health.progress) r.last_progress = now;
    r.last_beat = now;
    r.connection = b.id;
    r.health.stage = beat->stage;
    r.health.step = beat->step;
    r.health.total = beat->total;
    r.health.op = beat->op;
    r.health.progress = beat->progress;
    r.health.connected = true;
    r.health.lost_at_s = -1;
    b.rank = beat->rank;
    b.generation = generation;
    b.first_line.cancel();
    return true;
  }

  int np_now() {
    std::lock_guard<std::mutex> lock(mutex);
    return np;
  }

  void accept_beats() {
    heartbeats->async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;  // the acceptor was closed
      try {
        uint64_t id = 0;
        {
          std::lock_guard<std::mutex> lock(mutex);
          id = ++next_connection;
        }
        if (connections < kMaxConnections) {
          ++connections;
          std::make_shared<Beat>(this, std::move(s), id)->start();
        }
      } catch (const std::exception&) {  // e.g. out of memory: this connection is dropped, the next accepted
      }
      accept_beats();
    });
  }

  // One HTTP request, answered and closed. Each completion handler runs its body through guarded(): nothing
  // thrown there (by the renderer, by a body that will not encode) reaches io.run(), which would end the
  // monitor's thread and with it the launcher; the client gets a 500 or a closed connection instead.
  struct Page : std::enable_shared_from_this<Page> {
    Impl* impl;
    beast::tcp_stream stream;
    beast::flat_buffer buffer;
    http::request_parser<http::string_body> parser;
    http::response<http::string_body> response;
    bool writing = false;  // response belongs to async_write: a failure can only close
    Page(Impl* i, tcp::socket s) : impl(i), stream(std::move(s)) { parser.body_limit(1 << 16); }
    void start() {
      stream.expires_after(std::chrono::seconds(5));  // a stalled client is dropped
      http::async_read(stream, buffer, parser, [self = shared_from_this()](beast::error_code ec, size_t) {
        self->guarded([&] { self->on_read(ec); });
      });
    }
    void on_read(beast::error_code ec) {
      if (ec == http::error::body_limit) return answer({413, "application/json", R"({"error":"body too large"})"});
      if (ec) return;
      const auto& req = parser.get();
      if (req.method() != http::verb::get)
        return answer({405, "application/json", R"({"error":"only GET is served"})"});
      std::string path(req.target());
      if (const size_t q = path.find('?'); q != std::string::npos) path.resize(q);
      HttpAnswer a;
      try {
        a = impl->renderer(path);
      } catch (const std::exception& e) {
        a = {500, "application/json", json_error_body(std::string("status page failed: ") + e.what())};
      } catch (...) {
        a = {500, "application/json", json_error_body("status page failed: unknown exception")};
      }
      answer(a);
    }
    void answer(const HttpAnswer& a) {
      // A status outside 100..599 (Beast throws above 999) is the renderer's bug: 500 says so.
      const bool valid = a.status >= 100 && a.status <= 599;
      response.result(valid ? unsigned(a.status) : 500u);
      response.version(11);
      response.set(http::field::content_type, valid ? a.content_type : std::string("application/json"));
      response.set(http::field::connection, "close");
      response.body() = valid ? a.body : json_error_body("status page failed: HTTP status " + std::to_string(a.status));
      response.prepare_payload();
      writing = true;
      http::async_write(stream, response, [self = shared_from_this()](beast::error_code, size_t) {
        beast::error_code ignored;
        self->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
      });
    }
    template <typename F>
    void guarded(F&& body) noexcept {
      try {
        body();
        return;
      } catch (...) {
      }
      try {
        if (!writing) answer({500, "application/json", R"({"error":"internal error"})"});
      } catch (...) {
      }
    }
  };

  std::shared_ptr<AcceptLoop> page_loop;
  void accept_pages() {
    // Backs off 100 ms after a failed accept (EMFILE) and tries again, instead of giving up on the listener.
    page_loop = std::make_shared<AcceptLoop>(*status, [this](tcp::socket s) {
      std::make_shared<Page>(this, std::move(s))->start();
    });
    page_loop->start();
  }

  static tcp::acceptor listen(asio::io_context& io, const std::string& host, int port, const char* what) {
    try {
      tcp::endpoint ep(asio::ip::make_address(host), static_cast<unsigned short>(port));
      tcp::acceptor a(io);
      a.open(ep.protocol());
      a.set_option(tcp::acceptor::reuse_address(true));
      a.bind(ep);
      a.listen();
      return a;
    } catch (const std::exception& e) {
      fail(what, " ", host, ":", port, ": cannot listen (", e.what(), ")");
    }
  }
};

LaunchMonitor::LaunchMonitor(const LaunchMonitorOptions& options, HttpRenderer renderer)
    : impl_(std::make_unique<Impl>()) {
  impl_->renderer = std::move(renderer);
  impl_->key = options.key;
  impl_->heartbeats.emplace(Impl::listen(impl_->io, options.heartbeat_host, options.heartbeat_port, "heartbeat listener"));
  if (options.status_port >= 0)
    impl_->status.emplace(Impl::listen(impl_->io, options.status_host, options.status_port, "status server"));
  impl_->accept_beats();
  if (impl_->status) impl_->accept_pages();
  impl_->thread = std::thread([impl = impl_.get()] { impl->io.run(); });
}

LaunchMonitor::~LaunchMonitor() {
  impl_->io.stop();
  impl_->thread.join();
}

int LaunchMonitor::heartbeat_port() const { return impl_->heartbeats->local_endpoint().port(); }
int LaunchMonitor::status_port() const { return impl_->status ? impl_->status->local_endpoint().port() : -1; }
int64_t LaunchMonitor::status_accept_errors() const { return impl_->page_loop ? impl_->page_loop->errors() : 0; }

void LaunchMonitor::reset(int np, int64_t job_pid, bool remote_ranks) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->ranks.clear();
  ++impl_->generation;
  impl_->np = np;
  impl_->job_pid = job_pid;
  impl_->remote_ranks = remote_ranks;
  impl_->reset_at = Clock::now();
}

uint64_t LaunchMonitor::rejected_beats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->rejected;
}

std::vector<RankHealth> LaunchMonitor::ranks() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<RankHealth> out;
  const auto now = Clock::now();
  for (const auto& [rank, r] : impl_->ranks) {
    RankHealth h = r.health;
    h.since_beat_s = seconds_between(r.last_beat, now);
    h.since_progress_s = seconds_between(r.last_progress, now);
    out.push_back(h);
  }
  return out;
}

}  // namespace reglage::net
