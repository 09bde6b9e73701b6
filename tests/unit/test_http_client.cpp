// HTTP client and HTTP reward source against a tiny blocking server on 127.0.0.1 (OS-assigned port), one
// std::thread per test. The server's life is bounded: it polls its acceptor in 50 ms steps, stops on a flag
// set by the destructor (or after 10 s at most), and every read waits at most 2 s.
#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "framework/core/error.h"
#include "framework/net/http_client.h"
#include "reward/http_source.h"

namespace reglage {
namespace {

namespace asio = boost::asio;
using tcp = boost::asio::ip::tcp;
using nlohmann::json;

struct Request {
  std::string head;  // request line and headers, header names lower-cased
  std::string body;
};

struct Reply {
  enum class Kind { answer, stall, close } kind = Kind::answer;
  std::string raw;  // the full HTTP response for Kind::answer
};

// A full HTTP/1.1 response with a JSON body.
std::string http_reply(int status, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " Status\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

// Waits up to `ms` for the socket to be readable; false on timeout.
bool wait_readable(tcp::socket& s, int ms) {
  pollfd p{s.native_handle(), POLLIN, 0};
  return ::poll(&p, 1, ms) > 0;
}

// Reads one request: headers up to "\r\n\r\n", then Content-Length bytes of body. False on error or timeout.
bool read_request(tcp::socket& s, Request& req) {
  std::string data;
  char chunk[4096];
  boost::system::error_code ec;
  size_t head_end = std::string::npos;
  while ((head_end = data.find("\r\n\r\n")) == std::string::npos) {
    if (data.size() > (1 << 20) || !wait_readable(s, 2000)) return false;
    const size_t n = s.read_some(asio::buffer(chunk), ec);
    if (ec) return false;
    data.append(chunk, n);
  }
  req.head = data.substr(0, head_end);
  // Lower-case the header names and values so tests can search without caring about case.
  std::string lower = req.head;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  size_t length = 0;
  const size_t at = lower.find("content-length:");
  if (at != std::string::npos) length = std::stoul(lower.substr(at + 15));
  req.body = data.substr(head_end + 4);
  while (req.body.size() < length) {
    if (!wait_readable(s, 2000)) return false;
    const size_t n = s.read_some(asio::buffer(chunk), ec);
    if (ec) return false;
    req.body.append(chunk, n);
  }
  req.head = lower;
  return true;
}

class TestServer {
 public:
  // handler(index of the request, request) says how to answer; close_on_accept closes before reading.
  using Handler = std::function<Reply(int, const Request&)>;
  explicit TestServer(Handler handler, bool close_on_accept = false)
      : handler_(std::move(handler)),
        close_on_accept_(close_on_accept),
        acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
  }
  std::string url(const std::string& path = "/score") const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + path;
  }
  int connections() const { return connections_; }
  std::vector<Request> requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

 private:
  void serve() {
    const auto end_of_life = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!stop_ && std::chrono::steady_clock::now() < end_of_life) {
      pollfd p{acceptor_.native_handle(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      boost::system::error_code ec;
      tcp::socket s(io_);
      acceptor_.accept(s, ec);
      if (ec) continue;
      ++connections_;
      if (close_on_accept_) continue;  // the socket closes as it goes out of scope
      Request req;
      if (!read_request(s, req)) continue;
      int index = 0;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        index = int(requests_.size());
        requests_.push_back(req);
      }
      const Reply reply = handler_(index, req);
      if (reply.kind == Reply::Kind::answer) {
        asio::write(s, asio::buffer(reply.raw), ec);
      } else if (reply.kind == Reply::Kind::stall) {
        // Say nothing for up to 1 s, or until the client hangs up, or the test ends.
        for (int step = 0; step < 100 && !stop_; ++step) {
          if (!wait_readable(s, 10)) continue;
          char c;
          s.read_some(asio::buffer(&c, 1), ec);
          if (ec) break;
        }
      }
      s.shutdown(tcp::socket::shutdown_both, ec);
    }
  }

  Handler handler_;
  bool close_on_accept_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  mutable std::mutex mutex_;
  std::vector<Request> requests_;
  std::thread thread_;
};

// A port with nothing listening: bind port 0, note the port, close.
int free_port() {
  asio::io_context io;
  tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const int port = a.local_endpoint().port();
  a.close();
  return port;
}

// Expects `run` to throw reglage::Error whose message contains every one of `parts`; returns the message.
template <typename F>
std::string expect_error(F run, const std::vector<std::string>& parts) {
  try {
    run();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    return e.what();
  }
  return "";
}

// The reference service: reward = length of each query, so order and chunking are visible.
Reply echo_lengths(int, const Request& req) {
  const json in = json::parse(req.body);
  json rewards = json::array();
  for (const auto& q : in.at("query")) rewards.push_back(double(q.get<std::string>().size()));
  return {Reply::Kind::answer, http_reply(200, json{{"rewards", rewards}}.dump())};
}

std::vector<reward::RewardInput> five_inputs() {
  return {{"a", "b", ""}, {"ccc", "dd", ""}, {"", "eeee", ""}, {"ffffff", "", ""}, {"g", "hhhhhhhhh", ""}};
}

reward::HttpRewardConfig quick_config(const std::string& url) {
  reward::HttpRewardConfig c;
  c.url = url;
  c.timeout_s = 2;
  c.connect_timeout_s = 2;
  c.retries = 3;
  c.backoff_s = 0.01;  // keep test backoffs tiny
  return c;
}

net::HttpOptions quick_options() {
  net::HttpOptions opt;
  opt.connect_timeout_s = 2;
  opt.timeout_s = 2;
  return opt;
}

// ---- the client ------------------------------------------------------------------------------

TEST(HttpClient, PostsJsonWithHeaders) {
  TestServer server([](int, const Request& req) { return Reply{Reply::Kind::answer, http_reply(200, req.body)}; });
  net::HttpOptions opt = quick_options();
  opt.bearer_token = "s3cret";
  const net::HttpResponse r = net::http_post_json(server.url(), R"({"x":1})", opt);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"x":1})");
  ASSERT_EQ(server.requests().size(), 1u);
  const std::string head = server.requests()[0].head;
  EXPECT_EQ(head.rfind("post /score http/1.1", 0), 0u) << head;
  EXPECT_NE(head.find("content-type: application/json"), std::string::npos) << head;
  EXPECT_NE(head.find("user-agent: reglage"), std::string::npos) << head;
  EXPECT_NE(head.find("host: 127.0.0.1:"), std::string::npos) << head;
  EXPECT_NE(head.find("authorization: bearer s3cret"), std::string::npos) << head;
}

TEST(HttpClient, GetReturnsNon2xxStatusWithoutThrowing) {
  TestServer server([](int, const Request&) { return Reply{Reply::Kind::answer, http_reply(404, "nope")}; });
  const net::HttpResponse r = net::http_get(server.url("/health"), quick_options());
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, "nope");
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(server.requests()[0].head.rfind("get /health http/1.1", 0), 0u);
  EXPECT_EQ(server.requests()[0].head.find("authorization"), std::string::npos);
}

TEST(HttpClient, RefusesHttpsAndBadUrls) {
  expect_error([] { net::http_post_json("https://example.com/x", "{}", quick_options()); },
               {"POST https://example.com/x", "https"});
  expect_error([] { net::http_get("ftp://example.com/x", quick_options()); }, {"GET ftp://example.com/x", "URL"});
  expect_error([] { net::http_get("http://127.0.0.1:99999/x", quick_options()); }, {"bad port"});
}

TEST(HttpClient, ConnectionRefused) {
  const std::string url = "http://127.0.0.1:" + std::to_string(free_port()) + "/score";
  expect_error([&] { net::http_post_json(url, "{}", quick_options()); }, {"POST " + url, "connection refused"});
}

TEST(HttpClient, TimesOutWhenTheServerStalls) {
  TestServer server([](int, const Request&) { return Reply{Reply::Kind::stall, ""}; });
  net::HttpOptions opt = quick_options();
  opt.timeout_s = 0.3;
  expect_error([&] { net::http_post_json(server.url(), "{}", opt); },
               {"POST " + server.url(), "timed out after 0.3s waiting for the response"});
}

TEST(HttpClient, ServerClosesImmediately) {
  TestServer server(nullptr, /*close_on_accept=*/true);
  expect_error([&] { net::http_post_json(server.url(), "{}", quick_options()); },
               {"POST " + server.url(), "server closed the connection before a full response"});
}

TEST(HttpClient, ResponseLargerThanTheLimit) {
  TestServer server([](int, const Request&) {
    return Reply{Reply::Kind::answer, http_reply(200, std::string(100, 'x'))};
  });
  net::HttpOptions opt = quick_options();
  opt.max_response_bytes = 16;
  expect_error([&] { net::http_post_json(server.url(), "{}", opt); }, {"response larger than 16 bytes"});
}

// ---- the reward source -------------------------------------------------------------------------

TEST(HttpReward, ScoresInOrderInChunksOfBatchSize) {
  TestServer server(echo_lengths);
  reward::HttpRewardConfig c = quick_config(server.url());
  c.batch_size = 2;
  c.token = "tok";
  auto source = reward::make_http_source(c);
  EXPECT_EQ(source->describe(), "http " + server.url());
  const std::vector<double> rewards = source->score(five_inputs());
  EXPECT_EQ(rewards, (std::vector<double>{2, 5, 4, 6, 10}));
  const std::vector<Request> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 3u);  // 2 + 2 + 1
  const json first = json::parse(reqs[0].body);
  EXPECT_EQ(first.at("query"), json({"ab", "cccdd"}));
  EXPECT_EQ(first.at("prompts"), json({"a", "ccc"}));
  EXPECT_FALSE(first.contains("references"));
  EXPECT_EQ(json::parse(reqs[2].body).at("query"), json({"ghhhhhhhhh"}));
  for (const Request& r : reqs) EXPECT_NE(r.head.find("authorization: bearer tok"), std::string::npos);
}

TEST(HttpReward, SendsReferencesWhenAnyIsSet) {
  TestServer server(echo_lengths);
  auto source = reward::make_http_source(quick_config(server.url()));
  EXPECT_EQ(source->score({{"p", "r", ""}, {"q", "s", "ref"}}), (std::vector<double>{2, 2}));
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(json::parse(server.requests()[0].body).at("references"), json({"", "ref"}));
}

TEST(HttpReward, RetriesServerErrorsThenSucceeds) {
  TestServer server([](int index, const Request& req) {
    if (index < 2) return Reply{Reply::Kind::answer, http_reply(500, "busy")};
    return echo_lengths(index, req);
  });
  auto source = reward::make_http_source(quick_config(server.url()));
  EXPECT_EQ(source->score({{"ab", "c", ""}}), (std::vector<double>{3}));
  EXPECT_EQ(server.requests().size(), 3u);  // two 500s, then the answer
}

TEST(HttpReward, RetriesTimeoutsAndGivesUp) {
  TestServer server([](int, const Request&) { return Reply{Reply::Kind::stall, ""}; });
  reward::HttpRewardConfig c = quick_config(server.url());
  c.timeout_s = 0.3;
  c.retries = 1;
  expect_error([&] { reward::make_http_source(c)->score({{"a", "b", ""}}); },
               {server.url(), "gave up after 2 attempt(s)", "timed out after 0.3s waiting for the response"});
  EXPECT_EQ(server.requests().size(), 2u);
}

TEST(HttpReward, DoesNotRetryClientErrors) {
  TestServer server([](int, const Request&) { return Reply{Reply::Kind::answer, http_reply(400, "bad input")}; });
  expect_error([&] { reward::make_http_source(quick_config(server.url()))->score({{"a", "b", ""}}); },
               {server.url(), "HTTP 400", "bad input"});
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(HttpReward, GarbageAnswerFailsAtOnce) {
  TestServer server([](int, const Request&) { return Reply{Reply::Kind::answer, http_reply(200, "<html>oops")}; });
  expect_error([&] { reward::make_http_source(quick_config(server.url()))->score({{"a", "b", ""}}); },
               {server.url(), "answer is not JSON: <html>oops"});
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(HttpReward, MissingOrNonNumericRewardsFailAtOnce) {
  TestServer server([](int index, const Request&) {
    return Reply{Reply::Kind::answer, http_reply(200, index == 0 ? R"({"scores":[1]})" : R"({"rewards":["x"]})")};
  });
  auto source = reward::make_http_source(quick_config(server.url()));
  expect_error([&] { source->score({{"a", "b", ""}}); }, {server.url(), "\"rewards\""});
  expect_error([&] { source->score({{"a", "b", ""}}); }, {server.url(), "rewards[0] is not a number"});
  EXPECT_EQ(server.requests().size(), 2u);
}

TEST(HttpReward, WrongNumberOfRewardsFailsAtOnce) {
  TestServer server([](int, const Request&) {
    return Reply{Reply::Kind::answer, http_reply(200, R"({"rewards":[1,2,3]})")};
  });
  std::vector<reward::RewardInput> four(4, reward::RewardInput{"p", "r", ""});
  expect_error([&] { reward::make_http_source(quick_config(server.url()))->score(four); },
               {server.url(), "answered 3 rewards for a batch of 4"});
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(HttpReward, ServerClosingIsRetried) {
  TestServer server(nullptr, /*close_on_accept=*/true);
  reward::HttpRewardConfig c = quick_config(server.url());
  c.retries = 2;
  expect_error([&] { reward::make_http_source(c)->score({{"a", "b", ""}}); },
               {server.url(), "gave up after 3 attempt(s)", "server closed the connection"});
  EXPECT_EQ(server.connections(), 3);
}

TEST(HttpReward, RefusedPortGivesUpAfterRetries) {
  const std::string url = "http://127.0.0.1:" + std::to_string(free_port()) + "/score";
  reward::HttpRewardConfig c = quick_config(url);
  c.retries = 2;
  expect_error([&] { reward::make_http_source(c)->score({{"a", "b", ""}}); },
               {"http reward " + url, "gave up after 3 attempt(s)", "connection refused"});
}

TEST(HttpReward, EmptyBatchSendsNothing) {
  const std::string url = "http://127.0.0.1:" + std::to_string(free_port()) + "/score";
  EXPECT_TRUE(reward::make_http_source(quick_config(url))->score({}).empty());
}

TEST(HttpReward, RejectsBadConfig) {
  reward::HttpRewardConfig c = quick_config("https://example.com/score");
  expect_error([&] { reward::make_http_source(c); }, {"https://example.com/score", "http://"});
  c = quick_config("http://127.0.0.1:1/score");
  c.batch_size = 0;
  expect_error([&] { reward::make_http_source(c); }, {"batch_size = 0"});
  c = quick_config("http://127.0.0.1:1/score");
  c.retries = -1;
  expect_error([&] { reward::make_http_source(c); }, {"retries = -1"});
  c = quick_config("http://127.0.0.1:1/score");
  c.timeout_s = 0;
  expect_error([&] { reward::make_http_source(c); }, {"timeout_s = 0"});
}

}  // namespace
}  // namespace reglage
