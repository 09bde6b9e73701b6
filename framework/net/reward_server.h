// An HTTP/1.1 reward server (Boost.Beast) that batches the queries of concurrent requests into calls of a
// pluggable scoring function. Only net/ sees Boost.Asio; this header hides it behind a pimpl.
//
// Routes:
//   POST /score, POST /, POST /get_reward (OpenRLHF)   {"query": [str...], "prompts": [str...] (optional)}
//                                                      -> 200 {"rewards": [float...]}
//   GET  /health                                       -> 200 {"status": "ok"}  (no token needed: liveness probes)
// With a token, every path but /health needs "Authorization: Bearer <token>"; the token is checked before the
// route, so an unauthenticated client learns nothing about routes or methods.
// Errors are JSON {"error": "<reason>"} (valid UTF-8 always: client bytes that are not become U+FFFD):
// 400 malformed request or body, 401 bad token, 404 unknown path, 405 wrong method, 413 body over max_body_bytes
// or more than max_queries queries, 431 header too large, 500 scorer threw or returned the wrong number of
// rewards (or an internal error: no request can end the server).
//
// Threads: one network thread runs the io_context (accept, parse, write); one scorer thread scores the queued
// requests in slices of at most max_batch queries per scorer call, taking them round-robin: one call holds the
// next queries of every waiting request in arrival order until max_batch is reached, and a request that is not
// finished goes behind those that arrived meanwhile. So a small request is answered after at most a slice or two
// of a big one. Each finished request's rewards are posted back to its connection on the network thread.
// stop() (and SIGINT/SIGTERM in run_until_signal) waits for at most the scorer call in progress; the requests
// still queued are dropped (their connections closed). When accept() fails (EMFILE: out of descriptors) the
// listener waits 100 ms before it tries again.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace reglage::net {

struct ScoreRequest {
  std::vector<std::string> queries;  // (N) full texts (prompt + response) to score
  std::vector<std::string> prompts;  // (N) the prompt of each query; "" when the client sent none
};

// Returns one reward per query, in order. Called on ONE thread, never concurrently, with at most max_batch
// queries (slices of one or more requests); may throw (every request with queries in that call gets 500 with the
// message, the server keeps serving).
using BatchScorer = std::function<std::vector<double>(const std::vector<std::string>& queries,
                                                      const std::vector<std::string>& prompts)>;

struct RewardServerOptions {
  std::string host = "127.0.0.1";       // address to bind; loopback unless configured otherwise
  int port = 0;                         // 0 = any free port (read it back with port())
  std::string token;                    // "" = no auth; else "Authorization: Bearer <token>" required
  int64_t max_body_bytes = 8 << 20;     // larger request bodies get 413
  int64_t max_batch = 256;              // most queries per scorer call (a larger request is scored in slices)
  int64_t max_queries = 1024;           // most queries in one request; more get 413
  double read_timeout_s = 10;           // a client that stalls mid-request (or idles on keep-alive) is dropped
};

class RewardServer {
 public:
  RewardServer(BatchScorer scorer, RewardServerOptions opt);
  ~RewardServer();  // stop()s
  RewardServer(const RewardServer&) = delete;
  RewardServer& operator=(const RewardServer&) = delete;

  // Binds and listens, then starts the network and scorer threads; returns once connections are accepted.
  // Throws reglage::Error naming host:port when the address cannot be resolved or bound, or when already started.
  void start();
  // The bound port (the real one when options.port was 0); 0 before start().
  int port() const;
  // Closes the listener and every connection, joins both threads. Idempotent; waits for the scorer call in
  // progress (one slice of at most max_batch queries), drops the requests still queued.
  void stop();
  // True once stop() began or run_until_signal() got its signal: a long scorer may poll it between its own
  // sub-batches and throw to give up early (the requests of that call are dropped anyway). Any thread.
  bool stop_requested() const;
  // Requests waiting for the scorer, including those partly scored (for tests and monitoring). Any thread.
  int64_t queued_requests() const;
  // accept() calls that failed so far (each followed by a 100 ms pause); for tests. Any thread.
  int64_t accept_errors() const;
  // For the CLI: start()s if needed, blocks until SIGINT or SIGTERM, then stop()s.
  void run_until_signal();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace reglage::net
