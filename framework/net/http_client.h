// A small HTTP/1.1 client (Boost.Beast) for JSON POSTs with connect and read timeouts. Only net/ sees
// Boost.Asio.
#pragma once
#include <cstdint>
#include <string>

namespace reglage::net {

struct HttpResponse {
  int status = 0;
  std::string body;
};

struct HttpOptions {
  double connect_timeout_s = 5.0;   // TCP connect
  double timeout_s = 30.0;          // the whole request: write + read of the full response
  std::string bearer_token;         // "" = no Authorization header
  int64_t max_response_bytes = 64 << 20;
};

// POSTs `body` (application/json) to `url` (http://host:port/path; https is refused with a clear error).
// Throws reglage::Error naming the URL and the cause: refused, timed out (connect or read), closed early,
// response too large, bad URL.
HttpResponse http_post_json(const std::string& url, const std::string& body, const HttpOptions& opt);
HttpResponse http_get(const std::string& url, const HttpOptions& opt);

}  // namespace reglage::net
