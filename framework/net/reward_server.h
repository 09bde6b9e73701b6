// An HTTP/1.1 reward server (Boost.Beast) that batches the queries of concurrent requests into one call of a
// pluggable scoring function. Only net/ sees Boost.Asio; this header hides it behind a pimpl.
//
// Routes:
//   POST /score, POST /, POST /get_reward (OpenRLHF)   {"query": [str...], "prompts": [str...] (optional)}
//                                                      -> 200 {"rewards": [float...]}
//   GET  /health                                       -> 200 {"status": "ok"}  (no token needed: liveness probes)
// Errors are JSON {"error": "<reason>"}: 400 malformed body, 401 bad token, 404 unknown path, 405 wrong method,
// 413 body over max_body_bytes, 500 scorer threw or returned the wrong number of rewards.
//
// Threads: one network thread runs the io_context (accept, parse, write); one scorer thread takes every queued
// request (up to max_batch queries), calls the scorer once, and posts each request's slice of the rewards back
// to its own connection on the network thread.
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

// Returns one reward per query, in order. Called on ONE thread, never concurrently; may throw (the requests of
// that batch get 500 with the message, the server keeps serving).
using BatchScorer = std::function<std::vector<double>(const std::vector<std::string>& queries,
                                                      const std::vector<std::string>& prompts)>;

struct RewardServerOptions {
  std::string host = "127.0.0.1";       // address to bind; loopback unless configured otherwise
  int port = 0;                         // 0 = any free port (read it back with port())
  std::string token;                    // "" = no auth; else "Authorization: Bearer <token>" required
  int64_t max_body_bytes = 8 << 20;     // larger request bodies get 413
  int64_t max_batch = 256;              // most queries per scorer call (a larger request is scored in chunks)
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
  // Closes the listener and every connection, joins both threads. Idempotent; waits for a running scorer call.
  void stop();
  // For the CLI: start()s if needed, blocks until SIGINT or SIGTERM, then stop()s.
  void run_until_signal();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace reglage::net
