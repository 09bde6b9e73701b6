// HTTP/1.1 client over Boost.Beast: one connection per request, driven by a private io_context.
// Deadlines: connect_timeout_s for the TCP connect, then timeout_s for writing the request and reading the
// whole response (beast::tcp_stream::expires_after arms a timer that cancels the pending operation).
#include "framework/net/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <sstream>

#include "framework/core/error.h"

namespace reglage::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

struct Url {
  std::string host;
  std::string port = "80";
  std::string target = "/";
};

// http://host[:port][/path]; anything else (https included) is an error naming the URL.
Url parse_url(const std::string& what, const std::string& url) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) {
    if (url.compare(0, 8, "https://") == 0) fail(what, ": https is not supported (use an http:// URL)");
    fail(what, ": bad URL (expected http://host[:port]/path)");
  }
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  Url u;
  if (slash != std::string::npos) u.target = rest.substr(slash);
  const size_t colon = authority.rfind(':');
  u.host = authority.substr(0, colon);
  if (colon != std::string::npos) {
    u.port = authority.substr(colon + 1);
    bool digits = !u.port.empty() && u.port.size() <= 5;
    for (char c : u.port) digits = digits && c >= '0' && c <= '9';
    if (!digits || std::stoi(u.port) > 65535) fail(what, ": bad port '", u.port, "' in URL");
  }
  if (u.host.empty()) fail(what, ": bad URL (no host)");
  return u;
}

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

std::string format_seconds(double s) {
  std::ostringstream out;
  out << s << "s";
  return out.str();
}

bool is_closed_early(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted;
}

HttpResponse request(http::verb verb, const std::string& url, const std::string* body, const HttpOptions& opt) {
  const std::string what = std::string(verb == http::verb::post ? "POST " : "GET ") + url;
  if (!(opt.connect_timeout_s > 0) || !(opt.timeout_s > 0))
    fail(what, ": timeouts must be > 0 (connect ", opt.connect_timeout_s, ", request ", opt.timeout_s, ")");
  if (opt.max_response_bytes <= 0) fail(what, ": max_response_bytes must be > 0");
  const Url u = parse_url(what, url);

  http::request<http::string_body> req{verb, u.target, 11};
  req.set(http::field::host, u.port == "80" ? u.host : u.host + ":" + u.port);
  req.set(http::field::user_agent, "reglage");
  req.set(http::field::accept, "application/json");
  if (!opt.bearer_token.empty()) req.set(http::field::authorization, "Bearer " + opt.bearer_token);
  if (body) {
    req.set(http::field::content_type, "application/json");
    req.body() = *body;
  }
  req.keep_alive(false);  // one request per connection
  req.prepare_payload();

  asio::io_context io;
  tcp::resolver resolver(io);
  beast::error_code ec;
  const auto endpoints = resolver.resolve(u.host, u.port, ec);
  if (ec) fail(what, ": cannot resolve host '", u.host, "': ", ec.message());

  beast::tcp_stream stream(io);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(static_cast<std::uint64_t>(opt.max_response_bytes));
  parser.header_limit(64 * 1024);

  // The chain connect -> write -> read; the first error (or the end) is left in `result`.
  beast::error_code result;
  enum class Phase { connect, exchange } phase = Phase::connect;
  stream.expires_after(seconds(opt.connect_timeout_s));
  stream.async_connect(endpoints, [&](const beast::error_code& cec, const tcp::endpoint&) {
    if (cec) {
      result = cec;
      return;
    }
    phase = Phase::exchange;
    stream.expires_after(seconds(opt.timeout_s));  // one deadline for write + read
    http::async_write(stream, req, [&](const beast::error_code& wec, std::size_t) {
      if (wec) {
        result = wec;
        return;
      }
      // Headers first: Beast 1.74 does not apply body_limit to a Content-Length body, so check it here
      // (body_limit still bounds chunked bodies and bodies that run to the end of the connection).
      http::async_read_header(stream, buffer, parser, [&](const beast::error_code& hec, std::size_t) {
        if (hec || parser.is_done()) {
          result = hec;
          return;
        }
        const auto length = parser.content_length();
        if (length && *length > static_cast<std::uint64_t>(opt.max_response_bytes)) {
          result = http::error::body_limit;
          return;
        }
        http::async_read(stream, buffer, parser, [&](const beast::error_code& rec, std::size_t) { result = rec; });
      });
    });
  });
  io.run();

  if (result) {
    if (result == beast::error::timeout) {
      if (phase == Phase::connect) fail(what, ": connect timed out after ", format_seconds(opt.connect_timeout_s));
      fail(what, ": timed out after ", format_seconds(opt.timeout_s), " waiting for the response");
    }
    if (result == asio::error::connection_refused) fail(what, ": connection refused");
    if (result == http::error::body_limit) fail(what, ": response larger than ", opt.max_response_bytes, " bytes");
    if (is_closed_early(result)) fail(what, ": server closed the connection before a full response");
    fail(what, ": ", result.message());
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);

  HttpResponse response;
  response.status = static_cast<int>(parser.get().result_int());
  response.body = std::move(parser.get().body());
  return response;
}

}  // namespace

HttpResponse http_post_json(const std::string& url, const std::string& body, const HttpOptions& opt) {
  return request(http::verb::post, url, &body, opt);
}

HttpResponse http_get(const std::string& url, const HttpOptions& opt) {
  return request(http::verb::get, url, nullptr, opt);
}

}  // namespace reglage::net
