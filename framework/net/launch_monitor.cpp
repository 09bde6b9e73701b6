#include "framework/net/launch_monitor.h"

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
  Clock::time_point last_beat;
  uint64_t generation = 0;  // the attempt it belongs to
};

}  // namespace

struct LaunchMonitor::Impl {  // handlers capture `this`: the io thread is joined before the Impl goes
  asio::io_context io;
  std::optional<tcp::acceptor> heartbeats, status;
  HttpRenderer renderer;
  std::thread thread;
  mutable std::mutex mutex;
  std::map<int, RankRecord> ranks;
  uint64_t generation = 0;
  Clock::time_point reset_at = Clock::now();

  // One rank's heartbeat connection: reads lines until EOF.
  struct Beat : std::enable_shared_from_this<Beat> {
    Impl* impl;
    tcp::socket socket;
    asio::streambuf buffer;
    int rank = -1;
    uint64_t generation;
    Beat(Impl* i, tcp::socket s, uint64_t g) : impl(i), socket(std::move(s)), generation(g) {}
    void read() {
      asio::async_read_until(socket, buffer, '\n', [self = shared_from_this()](boost::system::error_code ec, size_t n) {
        if (ec) return self->lost();
        std::string line(asio::buffers_begin(self->buffer.data()), asio::buffers_begin(self->buffer.data()) + n);
        self->buffer.consume(n);
        self->impl->on_beat(*self, line);
        if (self->buffer.size() > (1 << 16)) return self->lost();  // a line without end: not a rank
        self->read();
      });
    }
    void lost() {
      std::lock_guard<std::mutex> lock(impl->mutex);
      auto it = impl->ranks.find(rank);
      if (rank >= 0 && it != impl->ranks.end() && it->second.generation == generation && it->second.health.connected) {
        it->second.health.connected = false;
        it->second.health.lost_at_s = seconds_between(impl->reset_at, Clock::now());
      }
    }
  };

  void on_beat(Beat& b, const std::string& line) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("rank") || !j["rank"].is_number_integer()) return;
    std::lock_guard<std::mutex> lock(mutex);
    if (b.generation != generation) return;  // a rank of an attempt that was stopped
    b.rank = j["rank"].get<int>();
    RankRecord& r = ranks[b.rank];
    r.generation = generation;
    r.last_beat = Clock::now();
    r.health.rank = b.rank;
    r.health.host = j.value("host", "");
    r.health.pid = j.value("pid", int64_t(0));
    r.health.stage = j.value("stage", "");
    r.health.step = j.value("step", int64_t(0));
    r.health.total = j.value("total", int64_t(0));
    r.health.op = j.value("op", "");
    r.health.connected = true;
    r.health.lost_at_s = -1;
  }

  void accept_beats() {
    heartbeats->async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;  // the acceptor was closed
      uint64_t g;
      {
        std::lock_guard<std::mutex> lock(mutex);
        g = generation;
      }
      std::make_shared<Beat>(this, std::move(s), g)->read();
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

void LaunchMonitor::reset() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->ranks.clear();
  ++impl_->generation;
  impl_->reset_at = Clock::now();
}

std::vector<RankHealth> LaunchMonitor::ranks() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<RankHealth> out;
  const auto now = Clock::now();
  for (const auto& [rank, r] : impl_->ranks) {
    RankHealth h = r.health;
    h.since_beat_s = seconds_between(r.last_beat, now);
    out.push_back(h);
  }
  return out;
}

}  // namespace reglage::net
