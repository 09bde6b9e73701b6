// Reward server over loopback: answers, errors, auth, stalled clients, a concurrent burst (batching), stop().
// Clients are plain synchronous Boost.Beast with SO_RCVTIMEO/SO_SNDTIMEO, so no wait is unbounded.
#include <gtest/gtest.h>
#include <atomic>
#include <chrono>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "framework/core/error.h"
#include "framework/net/reward_server.h"

namespace reglage::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

// reward = len(query) + 0.5 * len(prompt): every answer is checkable by hand.
double expected_reward(const std::string& q, const std::string& p) { return double(q.size()) + 0.5 * double(p.size()); }

struct CountingScorer {
  std::atomic<int> calls{0};
  std::atomic<int> max_batch_seen{0};
  BatchScorer fn() {
    return [this](const std::vector<std::string>& q, const std::vector<std::string>& p) {
      calls++;
      if (int(q.size()) > max_batch_seen) max_batch_seen = int(q.size());
      std::vector<double> r;
      for (size_t i = 0; i < q.size(); ++i) {
        if (q[i] == "boom") throw std::runtime_error("boom query");
        r.push_back(expected_reward(q[i], p[i]));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // lets concurrent requests pile up
      return r;
    };
  }
};

// A loopback connection whose every call gives up after timeout_s: each call runs one async operation on a
// private io_context with run_for (Asio's sync calls would ignore SO_RCVTIMEO and wait forever).
struct Client {
  asio::io_context ioc;
  tcp::socket socket{ioc};
  beast::flat_buffer buffer;
  std::chrono::milliseconds timeout;

  explicit Client(int port, double timeout_s = 5.0) : timeout(int64_t(timeout_s * 1000)) {
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), uint16_t(port)));
  }

  // Runs the async operation started by `start(handler)`; returns its error, or timed_out.
  template <typename Start>
  beast::error_code wait(Start start) {
    bool done = false;
    beast::error_code result;
    ioc.restart();
    start([&](beast::error_code ec, size_t) {
      done = true;
      result = ec;
    });
    ioc.run_for(timeout);
    if (!done) {
      beast::error_code ignored;
      socket.close(ignored);  // cancels the operation
      ioc.restart();
      ioc.run_for(timeout);
      return asio::error::timed_out;
    }
    return result;
  }

  void send(http::verb method, const std::string& target, const std::string& body, const std::string& token = "") {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    beast::error_code ec = wait([&](auto handler) { http::async_write(socket, req, handler); });
    if (ec) throw std::runtime_error("client write: " + ec.message());
  }

  void send_raw(const std::string& bytes) {
    beast::error_code ec = wait([&](auto handler) { asio::async_write(socket, asio::buffer(bytes), handler); });
    if (ec) throw std::runtime_error("client raw write: " + ec.message());
  }

  http::response<http::string_body> receive() {
    http::response<http::string_body> res;
    beast::error_code ec = wait([&](auto handler) { http::async_read(socket, buffer, res, handler); });
    if (ec) throw std::runtime_error("client read: " + ec.message());
    return res;
  }

  // Reads one byte: eof/reset when the server closed the connection, timed_out when it kept it open.
  beast::error_code read_byte() {
    char byte = 0;
    return wait([&](auto handler) { socket.async_read_some(asio::buffer(&byte, 1), handler); });
  }

  http::response<http::string_body> request(http::verb method, const std::string& target, const std::string& body,
                                            const std::string& token = "") {
    send(method, target, body, token);
    return receive();
  }
};

json score_body(const std::vector<std::string>& q, const std::vector<std::string>& p) {
  json j{{"query", q}};
  if (!p.empty()) j["prompts"] = p;
  return j;
}

RewardServerOptions loopback() {
  RewardServerOptions opt;
  opt.read_timeout_s = 5;
  return opt;
}

TEST(RewardServer, ScoresAndHealth) {
  CountingScorer scorer;
  RewardServer server(scorer.fn(), loopback());
  server.start();
  ASSERT_GT(server.port(), 0);
  Client c(server.port());
  auto res = c.request(http::verb::post, "/score", score_body({"abcd", "xy"}, {"pp", ""}).dump());
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  EXPECT_EQ(json::parse(res.body()), json::parse(R"({"rewards": [5.0, 2.0]})"));
  // Same keep-alive connection: prompts default to "", OpenRLHF routes.
  for (const char* path : {"/", "/get_reward"}) {
    res = c.request(http::verb::post, path, score_body({"abc"}, {}).dump());
    ASSERT_EQ(res.result_int(), 200u) << path << " " << res.body();
    EXPECT_EQ(json::parse(res.body())["rewards"], json::array({3.0}));
  }
  res = c.request(http::verb::get, "/health", "");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(json::parse(res.body()), json::parse(R"({"status": "ok"})"));
  res = c.request(http::verb::post, "/score", R"({"query": []})");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(json::parse(res.body())["rewards"], json::array());
  res = c.request(http::verb::get, "/nope", "");
  EXPECT_EQ(res.result_int(), 404u);
  res = c.request(http::verb::get, "/score", "");
  EXPECT_EQ(res.result_int(), 405u);
  res = c.request(http::verb::post, "/health", "");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(scorer.calls, 3);
  server.stop();
  server.stop();  // idempotent
}

TEST(RewardServer, BadBodiesGet400) {
  CountingScorer scorer;
  RewardServer server(scorer.fn(), loopback());
  server.start();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"query\": [\"a\"", "malformed JSON"},
      {R"({"query": "abc"})", "\"query\" must be a list"},
      {R"({"query": ["a", 3]})", "query[1] is not a string"},
      {R"({"prompts": ["a"]})", "missing field \"query\""},
      {R"([1, 2])", "JSON object"},
      {R"({"query": ["a"], "prompts": ["x", "y"]})", "must match"},
      {R"({"query": ["a"], "prompts": [null]})", "prompts[0] is not a string"},
  };
  Client c(server.port());
  for (const auto& [body, reason] : cases) {
    auto res = c.request(http::verb::post, "/score", body);
    EXPECT_EQ(res.result_int(), 400u) << body;
    const json j = json::parse(res.body(), nullptr, false);
    ASSERT_TRUE(j.contains("error")) << res.body();
    EXPECT_NE(j["error"].get<std::string>().find(reason), std::string::npos) << j["error"];
  }
  EXPECT_EQ(scorer.calls, 0);
  auto res = c.request(http::verb::post, "/score", score_body({"ok"}, {}).dump());
  EXPECT_EQ(res.result_int(), 200u);
}

TEST(RewardServer, OversizedBodyGets413) {
  CountingScorer scorer;
  RewardServerOptions opt = loopback();
  opt.max_body_bytes = 100;
  RewardServer server(scorer.fn(), opt);
  server.start();
  {
    Client c(server.port());
    auto res = c.request(http::verb::post, "/score", score_body({std::string(500, 'x')}, {}).dump());
    EXPECT_EQ(res.result_int(), 413u) << res.body();
  }
  Client c(server.port());
  auto res = c.request(http::verb::post, "/score", score_body({"small"}, {}).dump());
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(scorer.calls, 1);
}

TEST(RewardServer, TokenChecked) {
  CountingScorer scorer;
  RewardServerOptions opt = loopback();
  opt.token = "s3cret";
  RewardServer server(scorer.fn(), opt);
  server.start();
  Client c(server.port());
  const std::string body = score_body({"abc"}, {}).dump();
  EXPECT_EQ(c.request(http::verb::post, "/score", body, "wrong").result_int(), 401u);
  EXPECT_EQ(c.request(http::verb::post, "/score", body).result_int(), 401u);
  EXPECT_EQ(c.request(http::verb::post, "/score", body, "s3cret").result_int(), 200u);
  EXPECT_EQ(scorer.calls, 1);
}

TEST(RewardServer, ScorerErrorsGive500AndServerKeepsServing) {
  CountingScorer scorer;
  RewardServer server(scorer.fn(), loopback());
  server.start();
  Client c(server.port());
  auto res = c.request(http::verb::post, "/score", score_body({"a", "boom"}, {}).dump());
  EXPECT_EQ(res.result_int(), 500u);
  EXPECT_NE(res.body().find("boom query"), std::string::npos) << res.body();
  res = c.request(http::verb::post, "/score", score_body({"abc"}, {}).dump());
  EXPECT_EQ(res.result_int(), 200u);

  // A scorer that returns the wrong number of rewards.
  RewardServer bad([](const std::vector<std::string>&, const std::vector<std::string>&) {
    return std::vector<double>{1.0};
  }, loopback());
  bad.start();
  Client b(bad.port());
  res = b.request(http::verb::post, "/score", score_body({"a", "b"}, {}).dump());
  EXPECT_EQ(res.result_int(), 500u);
  EXPECT_NE(res.body().find("returned 1 rewards for 2 queries"), std::string::npos) << res.body();
}

TEST(RewardServer, LargeRequestScoredInChunksOfMaxBatch) {
  CountingScorer scorer;
  RewardServerOptions opt = loopback();
  opt.max_batch = 4;
  RewardServer server(scorer.fn(), opt);
  server.start();
  std::vector<std::string> q;
  for (int i = 0; i < 10; ++i) q.push_back(std::string(size_t(i + 1), 'q'));
  Client c(server.port());
  auto res = c.request(http::verb::post, "/score", score_body(q, {}).dump());
  ASSERT_EQ(res.result_int(), 200u);
  const json rewards = json::parse(res.body())["rewards"];
  ASSERT_EQ(rewards.size(), q.size());
  for (size_t i = 0; i < q.size(); ++i) EXPECT_EQ(rewards[i].get<double>(), double(i + 1));
  EXPECT_EQ(scorer.calls, 3);
  EXPECT_LE(scorer.max_batch_seen, 4);
}

TEST(RewardServer, StalledClientDroppedWhileOthersServed) {
  CountingScorer scorer;
  RewardServerOptions opt;
  opt.read_timeout_s = 0.3;
  RewardServer server(scorer.fn(), opt);
  server.start();
  Client stalled(server.port());
  const std::string half = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"query\": [";
  stalled.send_raw(half);
  // Another client is served while the first one stalls.
  Client other(server.port());
  auto res = other.request(http::verb::post, "/score", score_body({"abcdef"}, {"ab"}).dump());
  ASSERT_EQ(res.result_int(), 200u);
  EXPECT_EQ(json::parse(res.body())["rewards"], json::array({7.0}));
  // The server closes the stalled connection (EOF), well before the client's own 5 s receive timeout.
  const beast::error_code ec = stalled.read_byte();
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  EXPECT_EQ(scorer.calls, 1);
}

TEST(RewardServer, ConcurrentBurstIsBatchedAndAnsweredInOrder) {
  CountingScorer scorer;
  RewardServer server(scorer.fn(), loopback());
  server.start();
  constexpr int kRequests = 500, kThreads = 16, kConnsPerThread = 8;
  // Request i holds (i % 3) + 1 distinct queries; its rewards identify it.
  auto queries_of = [](int i) {
    std::vector<std::string> q;
    for (int k = 0; k <= i % 3; ++k) q.push_back(std::to_string(i) + ":" + std::string(size_t(i + 1000 * k), 'x'));
    return q;
  };
  auto prompts_of = [](int i) {
    std::vector<std::string> p;
    for (int k = 0; k <= i % 3; ++k) p.push_back(std::string(size_t(i % 7), 'p'));
    return p;
  };
  std::atomic<int> ok{0};
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        std::vector<std::unique_ptr<Client>> conns;
        for (int c = 0; c < kConnsPerThread; ++c) conns.push_back(std::make_unique<Client>(server.port()));
        // This thread's requests: i = t, t + kThreads, ...; sent kConnsPerThread at a time, then all read.
        std::vector<int> mine;
        for (int i = t; i < kRequests; i += kThreads) mine.push_back(i);
        for (size_t start = 0; start < mine.size(); start += kConnsPerThread) {
          const size_t n = std::min(mine.size() - start, size_t(kConnsPerThread));
          for (size_t c = 0; c < n; ++c) {
            const int i = mine[start + c];
            conns[c]->send(http::verb::post, "/score", score_body(queries_of(i), prompts_of(i)).dump());
          }
          for (size_t c = 0; c < n; ++c) {
            const int i = mine[start + c];
            auto res = conns[c]->receive();
            const json j = json::parse(res.body(), nullptr, false);
            std::vector<double> want;
            const auto q = queries_of(i), p = prompts_of(i);
            for (size_t k = 0; k < q.size(); ++k) want.push_back(expected_reward(q[k], p[k]));
            if (res.result_int() == 200 && j.contains("rewards") && j["rewards"] == json(want))
              ok++;
            else if (failures[t].empty())
              failures[t] = "request " + std::to_string(i) + ": " + res.body();
          }
        }
      } catch (const std::exception& e) {
        failures[t] = std::string("client exception: ") + e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& f : failures) EXPECT_TRUE(f.empty()) << f;
  EXPECT_EQ(ok, kRequests);
  EXPECT_LT(scorer.calls, kRequests) << "no batching happened";
  EXPECT_LE(scorer.max_batch_seen, 256);
  // Still serving afterwards.
  Client c(server.port());
  auto res = c.request(http::verb::post, "/score", score_body({"ab"}, {}).dump());
  EXPECT_EQ(res.result_int(), 200u);
  server.stop();
}

TEST(RewardServer, BindFailureNamesAddress) {
  CountingScorer scorer;
  RewardServer first(scorer.fn(), loopback());
  first.start();
  RewardServerOptions opt = loopback();
  opt.port = first.port();
  RewardServer second(scorer.fn(), opt);
  try {
    second.start();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(first.port())), std::string::npos) << e.what();
  }
  second.stop();  // never started: a no-op
}

TEST(RewardServer, StopWithOpenConnectionsJoins) {
  CountingScorer scorer;
  RewardServer server(scorer.fn(), loopback());
  server.start();
  Client idle(server.port());
  Client half(server.port());
  half.send_raw("POST /score HTTP/1.1\r\nContent-Length: 50\r\n\r\n{");
  server.stop();
  for (Client* c : {&idle, &half}) {
    const beast::error_code ec = c->read_byte();
    EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  }
}

}  // namespace
}  // namespace reglage::net
