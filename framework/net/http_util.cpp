// Never-throwing JSON bodies and the backing-off accept loop shared by the HTTP servers. See http_util.h.
#include "framework/net/http_util.h"

namespace reglage::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

namespace {
// What a body becomes when even the replacing dump fails (out of memory): fixed bytes, no allocation to fail.
constexpr const char* kFallbackBody = R"({"error":"internal error: the response could not be encoded"})";
}  // namespace

std::string safe_dump(const json& j, int indent) noexcept {
  try {
    return j.dump(indent, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
  } catch (...) {
    try {
      return kFallbackBody;
    } catch (...) {
      return {};
    }
  }
}

std::string json_error_body(std::string_view reason) noexcept {
  try {
    return safe_dump(json{{"error", std::string(reason.substr(0, kMaxReasonBytes))}});
  } catch (...) {
    return safe_dump(json());  // "null": only when memory ran out building the object
  }
}

std::string clip(std::string_view text, size_t n) {
  if (text.size() <= n) return std::string(text);
  return std::string(text.substr(0, n)) + "...";
}

bool equal_constant_time(std::string_view a, std::string_view b) noexcept {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

AcceptLoop::AcceptLoop(tcp::acceptor& acceptor, std::function<void(tcp::socket)> on_socket)
    : acceptor_(acceptor), backoff_(acceptor.get_executor()), on_socket_(std::move(on_socket)) {}

void AcceptLoop::start() { accept(); }

void AcceptLoop::accept() {
  acceptor_.async_accept([self = shared_from_this()](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !self->acceptor_.is_open()) return;  // the listener closed
    if (ec) {
      // EMFILE/ENFILE (out of descriptors), ENOBUFS, ...: the connection waits in the backlog, so retrying at
      // once fails again at once. Wait, then retry; a freed descriptor lets the next attempt through.
      self->errors_++;
      self->backoff_.expires_after(kAcceptBackoff);
      self->backoff_.async_wait([self](boost::system::error_code wait_ec) {
        if (wait_ec == asio::error::operation_aborted || !self->acceptor_.is_open()) return;
        self->accept();
      });
      return;
    }
    try {
      self->on_socket_(std::move(socket));
    } catch (...) {
      // A connection that could not be set up (out of memory) is dropped with its socket; others go on.
    }
    self->accept();
  });
}

}  // namespace reglage::net
