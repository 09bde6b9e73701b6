// Reward server: Beast sessions on one network thread, a batching scorer thread. See reward_server.h.
#include "framework/net/reward_server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "framework/core/error.h"
#include "framework/net/http_util.h"

namespace reglage::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

namespace {

class Session;

// One parsed /score request, from the network thread to the scorer thread and back. The scorer thread owns it
// while it is queued or being scored (next, rewards change only there).
struct Job {
  std::shared_ptr<Session> session;  // where the answer goes (kept alive until answered)
  ScoreRequest request;
  size_t next = 0;                   // first query not yet handed to the scorer
  std::vector<double> rewards;       // (next) the rewards of the queries scored so far, in order
};
using JobPtr = std::shared_ptr<Job>;

// The queries [begin, end) of one job inside one scorer call.
struct Slice {
  JobPtr job;
  size_t begin, end;
};

std::chrono::steady_clock::duration seconds_to_duration(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

// Parses {"query": [str...], "prompts": [str...]}; returns the reason on failure, "" on success.
std::string parse_score_body(const std::string& body, ScoreRequest& out) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return "malformed JSON body";
  if (!j.is_object()) return "body must be a JSON object {\"query\": [str...], \"prompts\": [str...]}";
  auto q = j.find("query");
  if (q == j.end()) return "missing field \"query\" (a list of strings)";
  if (!q->is_array()) return "field \"query\" must be a list of strings";
  for (size_t i = 0; i < q->size(); ++i) {
    if (!(*q)[i].is_string()) return "query[" + std::to_string(i) + "] is not a string";
    out.queries.push_back((*q)[i].get<std::string>());
  }
  auto p = j.find("prompts");
  if (p == j.end() || p->is_null()) {
    out.prompts.assign(out.queries.size(), "");
    return "";
  }
  if (!p->is_array()) return "field \"prompts\" must be a list of strings";
  if (p->size() != out.queries.size())
    return "\"prompts\" has " + std::to_string(p->size()) + " entries, \"query\" has " +
           std::to_string(out.queries.size()) + " (must match)";
  for (size_t i = 0; i < p->size(); ++i) {
    if (!(*p)[i].is_string()) return "prompts[" + std::to_string(i) + "] is not a string";
    out.prompts.push_back((*p)[i].get<std::string>());
  }
  return "";
}

}  // namespace

struct RewardServer::Impl {
  BatchScorer scorer;
  RewardServerOptions opt;

  asio::io_context ioc;  // run by net_thread only; the scorer thread only post()s
  std::optional<tcp::acceptor> acceptor;
  std::shared_ptr<AcceptLoop> accept_loop;
  int bound_port = 0;
  std::thread net_thread;
  std::thread scorer_thread;
  bool started = false;
  bool stopped = false;
  std::mutex lifecycle_mu;  // start()/stop() against each other
  std::atomic<bool> stop_requested{false};  // set first thing by stop() or the signal: scorers may poll it

  // The queue between the network thread (producer) and the scorer thread (consumer). Jobs being scored are
  // out of the queue; an unfinished one goes back to its end after its slice.
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<JobPtr> queue;
  int64_t in_scorer = 0;  // unfinished jobs out of the queue for the current call (for queued_requests())
  bool stopping = false;

  std::vector<std::weak_ptr<Session>> sessions;  // network thread only: closed by stop()

  void on_socket(tcp::socket socket);
  void enqueue(JobPtr job);
  void scorer_loop();
  void score_slices(std::vector<Slice>& slices);
  void answer(JobPtr job, unsigned status, std::string body);
};

namespace {

// One client connection: read a request, answer it (maybe via the scorer), repeat while keep-alive.
// Every completion handler runs its body through guarded(): nothing thrown there reaches the io_context (which
// would end the network thread and the process); the client gets a 500 instead, or the connection closes.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, RewardServer::Impl* server) : stream_(std::move(socket)), server_(server) {}

  void start() {
    guarded([this] { do_read(); });
  }

  void close() noexcept {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

  // Sends a JSON response; called on the network thread only.
  void send(unsigned status, std::string body) {
    res_ = {};
    res_.version(11);
    res_.result(static_cast<http::status>(status));
    res_.set(http::field::server, "reglage-reward");
    res_.set(http::field::content_type, "application/json");
    res_.keep_alive(keep_alive_);
    res_.body() = std::move(body);
    res_.prepare_payload();
    // A client that stops reading its answer is dropped after the same timeout as a stalled request.
    stream_.expires_after(seconds_to_duration(server_->opt.read_timeout_s));
    writing_ = true;  // from here on res_ belongs to async_write: an error may only close
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->guarded([&] { self->on_write(ec); });
    });
  }

  // Runs `body` as a handler: an exception becomes a 500 (when no answer is being written yet) or closes.
  template <typename F>
  void guarded(F&& body) noexcept {
    std::string reason;
    try {
      body();
      return;
    } catch (const std::exception& e) {
      try {
        reason = e.what();
      } catch (...) {
      }
    } catch (...) {
      reason = "unknown exception";
    }
    try {
      if (writing_) return close();
      keep_alive_ = false;
      send(500, json_error_body("internal error: " + reason));
    } catch (...) {
      close();
    }
  }

 private:
  void do_read() {
    writing_ = false;
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(server_->opt.max_body_bytes));
    stream_.expires_after(seconds_to_duration(server_->opt.read_timeout_s));
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->guarded([&] { self->on_read(ec); });
    });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted)
      return close();
    if (ec) {
      // Malformed or oversized HTTP: answer once, then close (the stream position is lost).
      keep_alive_ = false;
      if (ec == http::error::body_limit)
        return send(413, json_error_body("request body exceeds max_body_bytes = " +
                                         std::to_string(server_->opt.max_body_bytes)));
      if (ec == http::error::header_limit) return send(431, json_error_body("request header too large"));
      if (ec.category() == http::make_error_code(http::error::bad_target).category())
        return send(400, json_error_body(std::string("bad HTTP request: ") + ec.message()));
      return close();  // connection reset and friends: nobody to answer
    }
    stream_.expires_never();  // no timer while the request waits for the scorer
    handle(parser_->release());
  }

  void handle(http::request<http::string_body> req) {
    keep_alive_ = req.keep_alive();
    std::string path(req.target());
    path = path.substr(0, path.find('?'));
    if (path == "/health") {  // open to liveness probes, with or without a token
      if (req.method() != http::verb::get) return send(405, json_error_body("use GET for /health"));
      return send(200, safe_dump(json{{"status", "ok"}}));
    }
    // The token before the route: without it a client learns nothing about paths and methods.
    const std::string& token = server_->opt.token;
    const beast::string_view auth = req[http::field::authorization];
    if (!token.empty() && !equal_constant_time(std::string_view(auth.data(), auth.size()), "Bearer " + token))
      return send(401, json_error_body("missing or wrong bearer token"));
    const bool score_path = path == "/score" || path == "/" || path == "/get_reward";
    if (!score_path) return send(404, json_error_body("no route for " + clip(path)));
    if (req.method() != http::verb::post) return send(405, json_error_body("use POST for " + path));
    auto job = std::make_shared<Job>();
    if (std::string reason = parse_score_body(req.body(), job->request); !reason.empty())
      return send(400, json_error_body(reason));
    const int64_t n = static_cast<int64_t>(job->request.queries.size());
    if (n > server_->opt.max_queries)
      return send(413, json_error_body("request has " + std::to_string(n) + " queries, more than max_queries = " +
                                       std::to_string(server_->opt.max_queries)));
    if (n == 0) return send(200, safe_dump(json{{"rewards", json::array()}}));
    job->session = shared_from_this();
    server_->enqueue(std::move(job));  // the scorer thread posts send() back
  }

  void on_write(beast::error_code ec) {
    if (ec) return close();
    if (!keep_alive_) return linger_close();
    do_read();
  }

  // After a last answer (413, 400, Connection: close): send FIN, then discard what the client still sends for a
  // moment, so closing with unread bytes does not reset the connection before the client reads the answer.
  void linger_close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(1));
    drain_budget_ = server_->opt.max_body_bytes + (64 << 10);
    drain();
  }

  void drain() {
    stream_.async_read_some(asio::buffer(drain_buf_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->drain_budget_ -= int64_t(n);
      if (ec || self->drain_budget_ <= 0) return self->close();
      self->guarded([&] { self->drain(); });
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;  // fresh per request (body_limit is per parser)
  http::response<http::string_body> res_;  // kept alive for async_write
  bool keep_alive_ = true;
  bool writing_ = false;   // res_ is being written: a failure can only close the connection
  char drain_buf_[4096];   // discarded bytes of a closing connection
  int64_t drain_budget_ = 0;
  RewardServer::Impl* server_;  // outlives every session: sessions die with the io_context
};

}  // namespace

void RewardServer::Impl::on_socket(tcp::socket socket) {
  auto session = std::make_shared<Session>(std::move(socket), this);
  // Forget closed sessions now and then, so the list stays about as long as the open connections.
  if (sessions.size() >= 64 && (sessions.size() & (sessions.size() - 1)) == 0)
    sessions.erase(std::remove_if(sessions.begin(), sessions.end(), [](auto& w) { return w.expired(); }),
                   sessions.end());
  sessions.push_back(session);
  session->start();
}

void RewardServer::Impl::enqueue(JobPtr job) {
  {
    std::lock_guard<std::mutex> lock(mu);
    queue.push_back(std::move(job));
  }
  cv.notify_one();
}

// Each call takes the next queries of the queued jobs in order until max_batch: a job is taken from the front,
// and if unfinished after the call it goes to the back, behind jobs that arrived during the call.
void RewardServer::Impl::scorer_loop() {
  for (;;) {
    std::vector<Slice> slices;
    {
      std::unique_lock<std::mutex> lock(mu);
      // Checked between slices: stop() (or the signal, which comes first) waits for one call at most.
      cv.wait(lock, [&] { return stopping || stop_requested || !queue.empty(); });
      if (stopping || stop_requested) return;
      size_t room = static_cast<size_t>(opt.max_batch);
      while (room > 0 && !queue.empty()) {
        JobPtr job = std::move(queue.front());
        queue.pop_front();
        const size_t k = std::min(room, job->request.queries.size() - job->next);
        slices.push_back({job, job->next, job->next + k});
        job->next += k;
        room -= k;
      }
      in_scorer = static_cast<int64_t>(slices.size());
    }
    score_slices(slices);
  }
}

// Scores the concatenated slices in one call, appends each slice's rewards to its job, answers the jobs that
// are complete and puts the others back at the end of the queue.
void RewardServer::Impl::score_slices(std::vector<Slice>& slices) {
  std::vector<std::string> queries, prompts;  // (N) concatenated over slices
  for (const Slice& s : slices) {
    const ScoreRequest& r = s.job->request;
    queries.insert(queries.end(), r.queries.begin() + s.begin, r.queries.begin() + s.end);
    prompts.insert(prompts.end(), r.prompts.begin() + s.begin, r.prompts.begin() + s.end);
  }
  std::vector<double> rewards;  // (N)
  std::string failure;
  try {
    rewards = scorer(queries, prompts);
    if (rewards.size() != queries.size())
      fail("scorer returned ", rewards.size(), " rewards for ", queries.size(), " queries");
  } catch (const std::exception& e) {
    failure = std::string("scorer failed: ") + e.what();
  } catch (...) {
    failure = "scorer failed: unknown exception";
  }
  // Stopping: no answers, no requeueing; stop() closes the connections of this call with the others.
  if (stop_requested) return;
  std::vector<JobPtr> unfinished;
  size_t offset = 0;
  for (Slice& s : slices) {
    Job& job = *s.job;
    const size_t k = s.end - s.begin;
    if (!failure.empty()) {
      answer(s.job, 500, json_error_body(failure));
      continue;
    }
    job.rewards.insert(job.rewards.end(), rewards.begin() + offset, rewards.begin() + offset + k);
    offset += k;
    if (job.next < job.request.queries.size()) {
      unfinished.push_back(s.job);
      continue;
    }
    answer(s.job, 200, safe_dump(json{{"rewards", job.rewards}}));
  }
  std::lock_guard<std::mutex> lock(mu);
  in_scorer = 0;
  for (JobPtr& job : unfinished) queue.push_back(std::move(job));
}

// From the scorer thread: the job's session sends on the network thread.
void RewardServer::Impl::answer(JobPtr job, unsigned status, std::string body) {
  asio::post(ioc, [session = std::move(job->session), status, body = std::move(body)]() mutable {
    session->guarded([&] { session->send(status, std::move(body)); });
  });
}

RewardServer::RewardServer(BatchScorer scorer, RewardServerOptions opt) : impl_(std::make_unique<Impl>()) {
  if (!scorer) fail("reward server: scorer is empty");
  if (opt.max_batch < 1) fail("reward server: max_batch = ", opt.max_batch, " (must be >= 1)");
  if (opt.max_queries < 1) fail("reward server: max_queries = ", opt.max_queries, " (must be >= 1)");
  if (opt.max_body_bytes < 1) fail("reward server: max_body_bytes = ", opt.max_body_bytes, " (must be >= 1)");
  if (!(opt.read_timeout_s > 0)) fail("reward server: read_timeout_s = ", opt.read_timeout_s, " (must be > 0)");
  if (opt.port < 0 || opt.port > 65535) fail("reward server: port = ", opt.port, " (must be in 0..65535)");
  impl_->scorer = std::move(scorer);
  impl_->opt = std::move(opt);
}

RewardServer::~RewardServer() { stop(); }

void RewardServer::start() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.lifecycle_mu);
  const std::string where = s.opt.host + ":" + std::to_string(s.opt.port);
  if (s.started) fail("reward server ", where, ": start() called twice");
  beast::error_code ec;
  tcp::resolver resolver(s.ioc);
  auto results = resolver.resolve(s.opt.host, std::to_string(s.opt.port), tcp::resolver::passive, ec);
  if (ec || results.empty()) fail("reward server: cannot resolve ", where, ": ", ec.message());
  const tcp::endpoint endpoint = results.begin()->endpoint();
  s.acceptor.emplace(s.ioc);
  if (s.acceptor->open(endpoint.protocol(), ec); ec) fail("reward server: cannot open socket for ", where, ": ", ec.message());
  if (s.acceptor->set_option(asio::socket_base::reuse_address(true), ec); ec)
    fail("reward server: cannot set SO_REUSEADDR on ", where, ": ", ec.message());
  if (s.acceptor->bind(endpoint, ec); ec) fail("reward server: cannot bind ", where, ": ", ec.message());
  if (s.acceptor->listen(asio::socket_base::max_listen_connections, ec); ec)
    fail("reward server: cannot listen on ", where, ": ", ec.message());
  s.bound_port = s.acceptor->local_endpoint().port();
  s.started = true;
  s.accept_loop = std::make_shared<AcceptLoop>(*s.acceptor, [&s](tcp::socket socket) { s.on_socket(std::move(socket)); });
  s.accept_loop->start();
  s.scorer_thread = std::thread([&s] { s.scorer_loop(); });
  s.net_thread = std::thread([&s] {
    // Handlers guard themselves; should one still throw, the loop goes on rather than end the process.
    for (;;) {
      try {
        s.ioc.run();
        return;  // stop()
      } catch (...) {
      }
    }
  });
}

int RewardServer::port() const { return impl_->bound_port; }

bool RewardServer::stop_requested() const { return impl_->stop_requested.load(); }

int64_t RewardServer::queued_requests() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return static_cast<int64_t>(impl_->queue.size()) + impl_->in_scorer;
}

int64_t RewardServer::accept_errors() const { return impl_->accept_loop ? impl_->accept_loop->errors() : 0; }

void RewardServer::stop() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.lifecycle_mu);
  if (!s.started || s.stopped) return;
  s.stopped = true;
  s.stop_requested = true;
  // 1. The scorer thread finishes its current call (one slice) and exits; queued requests are dropped.
  {
    std::lock_guard<std::mutex> qlock(s.mu);
    s.stopping = true;
  }
  s.cv.notify_all();
  s.scorer_thread.join();
  // 2. Close the listener on the network thread, then stop the loop; pending sessions are destroyed (and their
  //    sockets closed) with the io_context's handlers.
  asio::post(s.ioc, [&s] {
    beast::error_code ignored;
    s.acceptor->close(ignored);
    for (auto& weak : s.sessions)
      if (auto session = weak.lock()) session->close();
    s.ioc.stop();
  });
  s.net_thread.join();
  // 3. Handlers that were already due when the loop stopped (an accept that completed just before the
  //    listener closed) run now: they see the closed listener and drop their socket, so no client is left
  //    connected to a stopped server.
  s.ioc.restart();
  s.ioc.poll();
  std::lock_guard<std::mutex> qlock(s.mu);
  s.queue.clear();
}

void RewardServer::run_until_signal() {
  if (!impl_->started) start();
  // A signal_set on the server's io_context: the network thread wakes this one through a flag.
  std::mutex mu;
  std::condition_variable cv;
  bool signalled = false;
  asio::signal_set signals(impl_->ioc, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code ec, int) {
    if (ec) return;
    impl_->stop_requested = true;  // a scorer polling it gives up its call now
    std::lock_guard<std::mutex> lock(mu);
    signalled = true;
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return signalled; });
  }
  stop();
}

}  // namespace reglage::net
