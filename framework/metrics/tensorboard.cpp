#include "framework/metrics/tensorboard.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::metrics {
namespace {

// table[b] = CRC of the single byte b (reflected, so the low bit is processed first).
std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    table[b] = crc;
  }
  return table;
}

// ---- protobuf wire format: only what Event, Summary, Summary.Value and SessionLog need -------------
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(uint8_t(v)));
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (uint64_t(field) << 3) | type); }

void put_little_endian(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(char(uint8_t(v >> (8 * i))));
}

void put_double(std::string& out, uint32_t field, double v) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, 8);
  put_key(out, field, kFixed64);
  put_little_endian(out, bits, 8);
}

void put_float(std::string& out, uint32_t field, float v) {
  uint32_t bits = 0;
  std::memcpy(&bits, &v, 4);
  put_key(out, field, kFixed32);
  put_little_endian(out, bits, 4);
}

// int64 fields are varints of the two's complement value (a negative step takes 10 bytes).
void put_int64(std::string& out, uint32_t field, int64_t v) {
  put_key(out, field, kVarint);
  put_varint(out, uint64_t(v));
}

// strings and embedded messages alike: key, byte length, bytes
void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// tensorflow.Event field numbers (4 graph_def and 6 log_message are not written)
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5,
                   kEventSessionLog = 7;
constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2;
constexpr uint32_t kSessionLogStatus = 1, kSessionLogStart = 1;

double wall_time_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// The event header every record starts with: wall_time and step.
std::string event_head(int64_t step) {
  std::string event;
  put_double(event, kEventWallTime, wall_time_now());
  put_int64(event, kEventStep, step);
  return event;
}

std::string events_file_name() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::strcpy(host, "localhost");
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  return "events.out.tfevents." + std::to_string(seconds.count()) + "." + host + "." + std::to_string(::getpid());
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !core::is_directory(dir)) fail(dir, ": cannot create TensorBoard directory (", ec.message(), ")");
  // A second writer in the same second and process (a resume in a test) gets a distinct, later-sorting name.
  const std::string base = core::path_join(dir, events_file_name());
  path_ = base;
  for (int n = 1; core::file_exists(path_); ++n) path_ = base + "." + std::to_string(n);
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) fail(path_, ": cannot create TensorBoard event file (", std::strerror(errno), ")");

  std::string event;
  put_double(event, kEventWallTime, wall_time_now());
  put_bytes(event, kEventFileVersion, "brain.Event:2");
  write_record(event);
}

void TensorBoardWriter::add_scalar(const std::string& tag, int64_t step, float value) {
  std::string summary_value;  // Summary.Value{tag, simple_value}
  put_bytes(summary_value, kValueTag, tag);
  put_float(summary_value, kValueSimpleValue, value);
  std::string summary;  // Summary{value: [summary_value]}
  put_bytes(summary, kSummaryValue, summary_value);
  std::string event = event_head(step);
  put_bytes(event, kEventSummary, summary);
  write_record(event);
}

void TensorBoardWriter::add_session_start(int64_t step) {
  std::string session_log;  // SessionLog{status: START}
  put_key(session_log, kSessionLogStatus, kVarint);
  put_varint(session_log, kSessionLogStart);
  std::string event = event_head(step);
  put_bytes(event, kEventSessionLog, session_log);
  write_record(event);
}

void TensorBoardWriter::write_record(const std::string& event) {
  std::string header;
  put_little_endian(header, event.size(), 8);
  const uint32_t header_crc = mask_crc32c(crc32c(header.data(), header.size()));
  put_little_endian(header, header_crc, 4);
  std::string footer;
  put_little_endian(footer, mask_crc32c(crc32c(event.data(), event.size())), 4);
  out_ << header << event << footer;
  out_.flush();
  if (!out_) fail(path_, ": cannot write TensorBoard event (", std::strerror(errno), ")");
}

}  // namespace reglage::metrics
