// Hostile input against both HTTP servers, the reward server (net/reward_server.h) and the launcher's status
// page (net/launch_monitor.h): a bounded, seeded fuzz run of random request lines, methods, paths with random
// bytes, headers (long, many, malformed), bodies, content lengths, chunked garbage and truncated requests; then
// each server must still answer a valid request. Plus the status page's own failure modes: a renderer that
// throws (with bytes that are not UTF-8 in its message), a bad status, bytes in every part of a request, and
// running out of descriptors. Loopback only; every wait is bounded (http_test_client.h); nothing is timed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "framework/net/launch_monitor.h"
#include "framework/net/reward_server.h"
#include "http_test_client.h"

namespace reglage::net {
namespace {

using json = nlohmann::json;

// Raw HTTP requests from a seeded generator: mostly almost-valid (so that they reach the handlers), some
// thoroughly broken. The same seed gives the same requests.
class RequestFuzzer {
 public:
  RequestFuzzer(uint32_t seed, std::vector<std::string> paths, std::string token)
      : rng_(seed), paths_(std::move(paths)), token_(std::move(token)) {}

  std::string next() {
    clean_ = chance(0.4);  // a well-formed request (any path, method and body): it reaches the handlers
    const std::string eol = broken(0.2) ? pick({"\n", "\r", ""}) : "\r\n";
    std::string body = clean_ && chance(0.6) ? score_body() : make_body();
    const bool chunked = chance(0.1);
    std::string head = method() + sep() + target() + sep() + version() + eol;
    head += "Host: 127.0.0.1" + eol;
    if (broken(0.4)) {  // random headers: a request that has them is likely broken somewhere
      const int n_headers = chance(0.1) ? range(50, 400) : range(1, 4);
      for (int i = 0; i < n_headers; ++i)
        head += (chance(0.5) ? "X-Fuzz-" + std::to_string(i) + ": " + text(range(0, 60)) : header(body)) + eol;
    }
    if (chunked) {
      head += "Transfer-Encoding: chunked" + eol;
      body = chunk(body);
    } else if (clean_ || chance(0.7)) {
      head += "Content-Length: " + std::to_string(body.size()) + eol;  // the right length, so bodies are read
    }
    if (!token_.empty() && chance(0.6)) head += "Authorization: Bearer " + token_ + eol;
    std::string request = head + eol + body;
    if (chance(0.1)) request += request;                                   // pipelined twice
    if (broken(0.25)) request.resize(size_t(range(0, int(request.size()))));  // truncated
    return request;
  }

 private:
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  bool broken(double p) { return !clean_ && chance(p); }  // a breakage, never in a clean request
  int range(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  std::string pick(std::initializer_list<const char*> options) {
    auto it = options.begin();
    std::advance(it, range(0, int(options.size()) - 1));
    return *it;
  }
  std::string bytes(int n) {  // any byte value
    std::string s;
    for (int i = 0; i < n; ++i) s += char(range(0, 255));
    return s;
  }
  std::string high(int n) {  // bytes 0x80..0xFF only
    std::string s;
    for (int i = 0; i < n; ++i) s += char(range(0x80, 0xFF));
    return s;
  }
  std::string pick3(std::string a, std::string b, std::string c) {
    const int i = range(0, 2);
    return i == 0 ? a : i == 1 ? b : c;
  }
  std::string text(int n) {  // printable ASCII, now and then a byte above 0x7F or a control byte
    std::string s;
    for (int i = 0; i < n; ++i) s += chance(0.05) ? char(range(0, 255)) : char(range(0x20, 0x7E));
    return s;
  }
  std::string sep() { return broken(0.1) ? pick({"", "  ", "\t", "\r\n"}) : " "; }
  std::string method() {
    if (!broken(0.3)) return pick({"GET", "GET", "POST", "POST", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"});
    return chance(0.5) ? text(range(0, 12)) : bytes(range(1, 8));
  }
  std::string target() {
    std::string t = !broken(0.4) ? paths_[size_t(range(0, int(paths_.size()) - 1))]
                                : pick({"/", "*", "http://127.0.0.1/score", "//score", "/score/", "/%ff", ""});
    // Path and query: bytes above 0x7F (legal in a request line, not UTF-8), any bytes, or mostly printable text.
    if (chance(0.3)) t += "/" + pick3(high(range(1, 8)), bytes(range(1, 20)), text(range(1, 40)));
    if (chance(0.2)) t += "?" + pick3(high(range(0, 8)), bytes(range(0, 20)), text(range(0, 40)));
    if (broken(0.05)) t += std::string(size_t(range(1000, 12000)), 'a');  // past Beast's 8 KiB header limit
    return t;
  }
  std::string version() {
    if (!broken(0.3)) return pick({"HTTP/1.1", "HTTP/1.1", "HTTP/1.0"});
    return chance(0.5) ? pick({"HTTP/2.0", "HTTP/1.x", "HTTP/", "http/1.1", ""}) : bytes(range(1, 10));
  }
  std::string header(const std::string& body) {
    switch (range(0, 9)) {
      case 0: return "Host: " + text(range(0, 20));
      case 1: return "Content-Length: " + pick({"0", "-1", "abc", "99999999999999999999", "1 2", "", "18446744073709551615"});
      case 2: return "Content-Length: " + std::to_string(int64_t(body.size()) + range(-5, 5));
      case 3: return "Transfer-Encoding: " + pick({"chunked", "gzip", "chunked, gzip", "identity", "\xff"});
      case 4: return "Connection: " + pick({"close", "keep-alive", "upgrade", "\x01"});
      case 5: return "Authorization: " + (chance(0.5) ? "Bearer " + text(range(0, 20)) : bytes(range(0, 30)));
      case 6: return "Expect: 100-continue";
      case 7: return text(range(1, 20)) + ": " + text(range(0, chance(0.1) ? 9000 : 40));  // long values too
      case 8: return bytes(range(1, 10)) + ": " + bytes(range(0, 30));
      default: return text(range(0, 30));  // no colon
    }
  }
  std::string make_body() {
    switch (range(0, 7)) {
      case 0: return "";
      case 1:
      case 2: return score_body();
      case 3: return "{\"query\": [\"" + bytes(range(0, 20)) + "\"]}";  // not UTF-8, raw control bytes
      case 4: return std::string(size_t(range(1, 3000)), '[') + std::string(size_t(range(0, 3000)), ']');
      case 5: return "{\"query\": " + pick({"null", "1e999", "[1, 2]", "{}", "[\"a\"], \"prompts\": 7", "[\"\\ud800\"]"}) + "}";
      case 6: return text(range(0, 2000));
      default: return bytes(range(0, 70000));  // past the status page's 64 KiB body limit now and then
    }
  }
  std::string score_body() {  // a valid score request: the scorer is called
    json q = json::array(), p = json::array();
    for (int i = range(0, 5); i > 0; --i) {
      q.push_back(text(range(0, 40)));
      p.push_back(text(range(0, 10)));
    }
    json j{{"query", q}};
    if (chance(0.5)) j["prompts"] = p;
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  std::string chunk(const std::string& body) {  // chunked encoding, right or broken
    if (!broken(0.6)) {
      char size[32];
      std::snprintf(size, sizeof(size), "%zx", body.size());
      return std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n";
    }
    return pick({"zz\r\n", "ffffffffffffffffff\r\n", "5\r\nab", "-1\r\n\r\n", "0\r\nX-Trailer\xff: 1\r\n\r\n"}) + bytes(range(0, 30));
  }

  std::mt19937 rng_;
  bool clean_ = false;  // this request is well-formed HTTP
  std::vector<std::string> paths_;
  std::string token_;
};

// Sends `count` fuzzed requests, four connections at a time; checks every answer that comes back.
// `allowed_500`: the status page's fuzz renderer fails on purpose; the reward server never should.
void fuzz_server(int port, RequestFuzzer& fuzzer, int count, bool allowed_500) {
  constexpr int kParallel = 4;
  int answered = 0, silent = 0, failures = 0;
  std::map<unsigned, int> statuses;  // how many answers had each status
  for (int done = 0; done < count; done += kParallel) {
    std::vector<std::unique_ptr<test::RawConnection>> conns;
    std::vector<std::string> requests;
    for (int i = 0; i < kParallel && done + i < count; ++i) {
      requests.push_back(fuzzer.next());
      conns.push_back(std::make_unique<test::RawConnection>(port, 60.0));
      conns.back()->send_all(requests.back());
      conns.back()->finish_sending();
    }
    for (size_t i = 0; i < conns.size(); ++i) {
      bool timed_out = false;
      const std::string raw = conns[i]->read_all(&timed_out);
      std::string problem;
      if (timed_out) {
        problem = "the server kept the connection open after the request ended";
      } else if (raw.empty()) {
        ++silent;  // closed without an answer: fine for a connection that was not HTTP
      } else {
        const test::Reply r = test::parse_reply(raw);
        if (!r.ok) {
          problem = "unparseable answer (" + r.error + ")";
        } else {
          ++answered;
          statuses[r.status]++;
          if (r.status < 200 || r.status > 599 || (r.status == 500 && !allowed_500))
            problem = "status " + std::to_string(r.status) + ": " + r.body;
          else if (r.content_type == "application/json" && json::parse(r.body, nullptr, false).is_discarded())
            problem = "body is not valid JSON (or not UTF-8): " + r.body.substr(0, 200);
        }
      }
      if (!problem.empty() && ++failures <= 5)
        ADD_FAILURE() << "request " << done + int(i) << ": " << problem << "\nrequest bytes (first 300, JSON-escaped): "
                      << json(requests[i].substr(0, 300)).dump(-1, ' ', true, json::error_handler_t::replace);
    }
  }
  EXPECT_EQ(failures, 0);
  std::cout << "[ info     ] " << count << " fuzzed requests: " << answered << " answered (";
  for (const auto& [status, n] : statuses) std::cout << n << " x " << status << " ";
  std::cout << "), " << silent << " closed without an answer\n";
}

BatchScorer length_scorer(std::atomic<int>& calls) {
  return [&calls](const std::vector<std::string>& q, const std::vector<std::string>&) {
    calls++;
    std::vector<double> r;
    for (const auto& s : q) r.push_back(double(s.size()));
    return r;
  };
}

TEST(HttpFuzz, RewardServer) {
  for (const std::string token : {"", "fuzz-token"}) {
    std::atomic<int> calls{0};
    RewardServerOptions opt;
    opt.read_timeout_s = 5;
    opt.max_body_bytes = 1 << 16;
    opt.max_queries = 4;
    opt.token = token;
    RewardServer server(length_scorer(calls), opt);
    server.start();
    RequestFuzzer fuzzer(token.empty() ? 14u : 15u, {"/score", "/", "/get_reward", "/health"}, token);
    fuzz_server(server.port(), fuzzer, 200, /*allowed_500=*/false);
    // Still serving, and correctly.
    test::Client c(server.port(), 60);
    auto res = c.request(boost::beast::http::verb::get, "/health", "");
    EXPECT_EQ(res.result_int(), 200u);
    res = c.request(boost::beast::http::verb::post, "/score", R"({"query": ["abc", "de"]})", token);
    ASSERT_EQ(res.result_int(), 200u) << res.body();
    EXPECT_EQ(json::parse(res.body())["rewards"], json::array({3.0, 2.0}));
    EXPECT_GT(calls, 1) << "no fuzzed request reached the scorer";
  }
}

// The status page's renderer for the tests: /status and /metrics as the launcher's, /echo puts the path in JSON
// with a plain dump() (throws on bytes that are not UTF-8), /boom throws with the path in the message.
HttpRenderer test_renderer() {
  return [](const std::string& path) -> HttpAnswer {
    if (path == "/status") return {200, "application/json", R"({"ok": true})"};
    if (path == "/metrics") return {200, "text/plain; version=0.0.4", "reglage_up 1\n"};
    if (path.rfind("/echo", 0) == 0) return {200, "application/json", json{{"path", path}}.dump()};
    if (path.rfind("/boom", 0) == 0) throw std::runtime_error("renderer failed on " + path);
    return {404, "application/json", R"({"error":"unknown path"})"};
  };
}

LaunchMonitorOptions status_on_any_port() {
  LaunchMonitorOptions o;
  o.status_port = 0;
  return o;
}

void expect_status_ok(int port) {
  const test::Reply r = test::exchange_raw(port, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(json::parse(r.body, nullptr, false), json::parse(R"({"ok": true})"));
}

TEST(HttpFuzz, LaunchMonitorStatusPage) {
  LaunchMonitor monitor(status_on_any_port(), test_renderer());
  RequestFuzzer fuzzer(16u, {"/status", "/metrics", "/echo", "/boom", "/nope"}, "");
  fuzz_server(monitor.status_port(), fuzzer, 250, /*allowed_500=*/true);
  expect_status_ok(monitor.status_port());
}

// Issue 14 (the status page's share of item 1): a renderer that throws used to have its message dumped into the
// 500 body with json::dump(), which throws again on bytes that are not UTF-8, out of the handler: the launcher
// aborted. A status Beast cannot write (over 999) threw the same way.
TEST(LaunchMonitorHttp, RendererFailuresBecome500) {
  LaunchMonitor monitor(status_on_any_port(), [](const std::string& path) -> HttpAnswer {
    if (path == "/bytes") throw std::runtime_error("bad \xff\xfe bytes");
    if (path == "/int") throw 7;
    if (path == "/status1000") return {1000, "application/json", "{}"};
    if (path == "/status42") return {42, "application/json", "{}"};
    return test_renderer()(path);
  });
  const int port = monitor.status_port();
  for (const char* path : {"/bytes", "/int", "/status1000", "/status42", "/boom\xff", "/echo\xff"}) {
    const test::Reply r = test::exchange_raw(port, std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(r.ok) << path << ": " << r.error;
    EXPECT_EQ(r.status, 500u) << path;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << path << ": " << r.body;
    EXPECT_NE(j["error"].get<std::string>().find("status page failed"), std::string::npos) << j;
  }
  expect_status_ok(port);
}

// Every byte above 0x7F and every control byte in each part of a request: answered or closed, never fatal.
TEST(LaunchMonitorHttp, HostileBytesNeverFatal) {
  LaunchMonitor monitor(status_on_any_port(), test_renderer());
  const int port = monitor.status_port();
  std::vector<int> bytes;
  for (int b = 0x80; b <= 0xFF; ++b) bytes.push_back(b);
  for (int b = 0x00; b < 0x20; ++b) bytes.push_back(b);
  bytes.push_back(0x7F);
  int failures = 0;
  for (int c : bytes) {
    const std::string b(1, char(c));
    for (const std::string& request : {"GET /echo" + b + " HTTP/1.1\r\nHost: x\r\n\r\n",
                                       "GET /boom" + b + " HTTP/1.1\r\nHost: x\r\n\r\n",
                                       "GET /status?" + b + " HTTP/1.1\r\nHost: x\r\n\r\n",
                                       "GET /status HTTP/1.1\r\nHost: x\r\nX-" + b + ": 1\r\n\r\n",
                                       "GET /status HTTP/1.1\r\nHost: x\r\nX-A: " + b + "\r\n\r\n",
                                       "G" + b + "T /status HTTP/1.1\r\nHost: x\r\n\r\n"}) {
      bool timed_out = false;
      test::RawConnection conn(port);
      conn.send_all(request);
      conn.finish_sending();
      const std::string raw = conn.read_all(&timed_out);
      const test::Reply r = test::parse_reply(raw);
      const bool good = !timed_out && (raw.empty() || (r.ok && (r.content_type != "application/json" ||
                                                                 !json::parse(r.body, nullptr, false).is_discarded())));
      if (!good && ++failures <= 5)
        ADD_FAILURE() << "byte " << c << ": " << (timed_out ? "kept open" : r.ok ? r.body : r.error);
    }
  }
  EXPECT_EQ(failures, 0);
  expect_status_ok(port);
}

// Issue 14 item 16 for the status page: its accept loop gave up for good on the first failed accept (EMFILE),
// so the page never answered again. Now it waits 100 ms and retries.
TEST(LaunchMonitorHttp, OutOfDescriptorsKeepsServing) {
  LaunchMonitor monitor(status_on_any_port(), test_renderer());
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  std::vector<int> fillers;
  struct Restore {  // runs on every exit path: the rest of the suite needs its descriptors
    rlimit old;
    std::vector<int>& fillers;
    ~Restore() {
      for (int fd : fillers) ::close(fd);
      fillers.clear();
      setrlimit(RLIMIT_NOFILE, &old);
    }
  } restore{old, fillers};
  int open_fds = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) (void)entry, ++open_fds;
  rlimit low = old;
  low.rlim_cur = std::min<rlim_t>(old.rlim_cur, rlim_t(open_fds + 64));
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  for (;;) {
    const int fd = ::open("/dev/null", O_RDONLY);
    if (fd < 0) {
      ASSERT_EQ(errno, EMFILE);
      break;
    }
    fillers.push_back(fd);
    ASSERT_LT(fillers.size(), 100000u);
  }
  ::close(fillers.back());  // one descriptor, for the client; the monitor's accept() finds none
  fillers.pop_back();
  const auto t0 = std::chrono::steady_clock::now();
  test::RawConnection client(monitor.status_port());
  const auto deadline = t0 + std::chrono::seconds(60);
  while (monitor.status_accept_errors() < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_GE(monitor.status_accept_errors(), 3);
  for (int fd : fillers) ::close(fd);
  fillers.clear();
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  client.send_all("GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
  bool timed_out = false;
  const test::Reply r = test::parse_reply(client.read_all(&timed_out));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.status, 200u);
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t errors = monitor.status_accept_errors();
  std::cout << "[ info     ] " << errors << " failed accepts in " << elapsed << " s while out of descriptors\n";
  EXPECT_LE(errors, 10 + int64_t(20 * elapsed)) << errors << " failed accepts in " << elapsed << " s: spinning";
  expect_status_ok(monitor.status_port());  // and new connections are served again
}

}  // namespace
}  // namespace reglage::net
