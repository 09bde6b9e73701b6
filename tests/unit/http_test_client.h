// Loopback HTTP clients for the server tests, every wait bounded:
//   - Client: Boost.Beast requests on a keep-alive connection (each call runs one async operation on a private
//     io_context with run_for, since Asio's sync calls would ignore SO_RCVTIMEO and wait forever);
//   - RawConnection: plain POSIX sockets for arbitrary bytes (malformed requests, fuzzing), with
//     SO_RCVTIMEO/SO_SNDTIMEO so a server that never answers or never closes cannot hang the test;
//   - parse_reply: the first HTTP response in a byte string.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

namespace reglage::test {

namespace http_client_detail {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
}  // namespace http_client_detail

struct Client {
  using tcp = http_client_detail::tcp;
  boost::asio::io_context ioc;
  tcp::socket socket{ioc};
  boost::beast::flat_buffer buffer;
  std::chrono::milliseconds timeout;

  explicit Client(int port, double timeout_s = 5.0) : timeout(int64_t(timeout_s * 1000)) {
    socket.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), uint16_t(port)));
  }

  // Runs the async operation started by `start(handler)`; returns its error, or timed_out.
  template <typename Start>
  boost::beast::error_code wait(Start start) {
    bool done = false;
    boost::beast::error_code result;
    ioc.restart();
    start([&](boost::beast::error_code ec, size_t) {
      done = true;
      result = ec;
    });
    ioc.run_for(timeout);
    if (!done) {
      boost::beast::error_code ignored;
      socket.close(ignored);  // cancels the operation
      ioc.restart();
      ioc.run_for(timeout);
      return boost::asio::error::timed_out;
    }
    return result;
  }

  void send(boost::beast::http::verb method, const std::string& target, const std::string& body,
            const std::string& token = "") {
    namespace http = boost::beast::http;
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    boost::beast::error_code ec = wait([&](auto handler) { http::async_write(socket, req, handler); });
    if (ec) throw std::runtime_error("client write: " + ec.message());
  }

  void send_raw(const std::string& bytes) {
    boost::beast::error_code ec =
        wait([&](auto handler) { boost::asio::async_write(socket, boost::asio::buffer(bytes), handler); });
    if (ec) throw std::runtime_error("client raw write: " + ec.message());
  }

  boost::beast::http::response<boost::beast::http::string_body> receive() {
    namespace http = boost::beast::http;
    http::response<http::string_body> res;
    boost::beast::error_code ec = wait([&](auto handler) { http::async_read(socket, buffer, res, handler); });
    if (ec) throw std::runtime_error("client read: " + ec.message());
    return res;
  }

  // Reads one byte: eof/reset when the server closed the connection, timed_out when it kept it open.
  boost::beast::error_code read_byte() {
    char byte = 0;
    return wait([&](auto handler) { socket.async_read_some(boost::asio::buffer(&byte, 1), handler); });
  }

  boost::beast::http::response<boost::beast::http::string_body> request(boost::beast::http::verb method,
                                                                         const std::string& target,
                                                                         const std::string& body,
                                                                         const std::string& token = "") {
    send(method, target, body, token);
    return receive();
  }
};

// A blocking loopback socket whose every send/recv gives up after timeout_s.
class RawConnection {
 public:
  explicit RawConnection(int port, double timeout_s = 60.0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket: " + std::string(strerror(errno)));
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_s);
    tv.tv_usec = static_cast<suseconds_t>((timeout_s - double(tv.tv_sec)) * 1e6);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      const int e = errno;
      ::close(fd_);
      throw std::runtime_error("connect: " + std::string(strerror(e)));
    }
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // Sends what the server takes; a server that closed early (it answered a bad request) ends the sending.
  // Returns false when not everything went out.
  bool send_all(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += size_t(n);
    }
    return true;
  }
  // No more requests: the server sees end of stream after what was sent.
  void finish_sending() { ::shutdown(fd_, SHUT_WR); }
  // Everything the server sends until it closes. *timed_out: a recv waited timeout_s (the server kept the
  // connection open).
  std::string read_all(bool* timed_out) {
    std::string out;
    char buf[4096];
    *timed_out = false;
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) {
        out.append(buf, size_t(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) *timed_out = true;
      return out;  // 0: closed; ECONNRESET: closed with unread data
    }
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

struct Reply {
  bool ok = false;  // a complete HTTP response was parsed
  unsigned status = 0;
  std::string content_type;
  std::string body;
  std::string error;  // why not ok
};

// The first HTTP response in `bytes`.
inline Reply parse_reply(const std::string& bytes) {
  namespace http = boost::beast::http;
  Reply r;
  http::response_parser<http::string_body> parser;
  parser.eager(true);
  parser.body_limit(64 << 20);
  boost::beast::error_code ec;
  size_t used = 0;
  while (!parser.is_done() && used < bytes.size()) {
    const size_t n = parser.put(boost::asio::buffer(bytes.data() + used, bytes.size() - used), ec);
    if (ec == http::error::need_more) ec = {};
    if (ec || n == 0) break;
    used += n;
  }
  if (!ec && !parser.is_done()) parser.put_eof(ec);
  if (ec || !parser.is_header_done() || !parser.is_done()) {
    r.error = ec ? ec.message() : bytes.empty() ? "no answer" : "incomplete response";
    return r;
  }
  const auto& res = parser.get();
  r.ok = true;
  r.status = res.result_int();
  r.content_type = std::string(res[http::field::content_type]);
  r.body = res.body();
  return r;
}

// One connection: sends `bytes`, ends the sending side, reads until the server closes, parses the first
// response. reply.error says "server kept the connection open" when it did not close within timeout_s.
inline Reply exchange_raw(int port, const std::string& bytes, double timeout_s = 60.0) {
  RawConnection c(port, timeout_s);
  c.send_all(bytes);
  c.finish_sending();
  bool timed_out = false;
  Reply r = parse_reply(c.read_all(&timed_out));
  if (timed_out) {
    r.ok = false;
    r.error = "server kept the connection open";
  }
  return r;
}

}  // namespace reglage::test
