// Pieces shared by the two HTTP servers (the reward server and the launcher's status page), internal to net/:
//   - JSON bodies that can always be built: a reason holding bytes that are not UTF-8 (a path from the request
//     line, an exception's message) must never make dump() throw inside an Asio handler;
//   - an accept loop that backs off when accept() fails (EMFILE, ENFILE, ENOBUFS) instead of retrying at once:
//     the pending connection stays in the backlog, so an immediate retry fails again and spins a core.
#pragma once
#include <boost/asio.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace reglage::net {

// json::dump() that never throws: invalid UTF-8 becomes U+FFFD; should anything else fail (memory), a fixed
// {"error": ...} body comes back instead.
std::string safe_dump(const nlohmann::json& j, int indent = -1) noexcept;

// {"error": "<reason>"}, never throws. The reason is cut to kMaxReasonBytes (it may echo client bytes).
constexpr size_t kMaxReasonBytes = 1024;
std::string json_error_body(std::string_view reason) noexcept;

// At most `n` bytes of client text for an error message, marked "..." when cut.
std::string clip(std::string_view text, size_t n = 256);

// Compares a secret without an early exit at the first differing byte.
bool equal_constant_time(std::string_view a, std::string_view b) noexcept;

// Accepts connections on `acceptor` forever, handing each socket to `on_socket` (on the acceptor's executor).
// When accept fails for any reason other than the listener closing, the next attempt waits kAcceptBackoff.
// Create with std::make_shared and call start(); the loop keeps itself alive through its pending handlers and
// ends when the acceptor is closed (or its io_context stops). `acceptor` must outlive every handler run.
class AcceptLoop : public std::enable_shared_from_this<AcceptLoop> {
 public:
  static constexpr std::chrono::milliseconds kAcceptBackoff{100};

  AcceptLoop(boost::asio::ip::tcp::acceptor& acceptor, std::function<void(boost::asio::ip::tcp::socket)> on_socket);
  void start();
  // accept() calls that failed so far (each one followed by a kAcceptBackoff pause); readable from any thread.
  int64_t errors() const { return errors_.load(); }

 private:
  void accept();

  boost::asio::ip::tcp::acceptor& acceptor_;
  boost::asio::steady_timer backoff_;
  std::function<void(boost::asio::ip::tcp::socket)> on_socket_;  // must not throw (caught and dropped if it does)
  std::atomic<int64_t> errors_{0};
};

}  // namespace reglage::net
