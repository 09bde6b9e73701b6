// TensorBoard event files: CRC32C against the standard check value, and files read back by a small reader
// written here independently (its own bitwise CRC32C and protobuf decoding), compared exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "framework/core/file_util.h"
#include "framework/metrics/metrics_log.h"
#include "framework/metrics/tensorboard.h"
#include "test_util.h"

namespace reglage {
namespace {

// ---- an independent reader ------------------------------------------------------------------------

// Bit by bit, no table: CRC-32C, reflected polynomial 0x82F63B78.
uint32_t bitwise_crc32c(const std::string& bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : bytes) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
  }
  return ~crc;
}
uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

uint64_t little_endian(const std::string& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(b.at(at + i))) << (8 * i);
  return v;
}

// The data of each TFRecord, both CRCs checked.
std::vector<std::string> read_records(const std::string& path) {
  const std::string b = core::read_file(path);
  std::vector<std::string> records;
  size_t at = 0;
  while (at < b.size()) {
    EXPECT_LE(at + 12, b.size()) << path << ": truncated header at byte " << at;
    const uint64_t length = little_endian(b, at, 8);
    EXPECT_EQ(uint32_t(little_endian(b, at + 8, 4)), masked(bitwise_crc32c(b.substr(at, 8)))) << "at " << at;
    EXPECT_LE(at + 12 + length + 4, b.size()) << path << ": truncated record at byte " << at;
    const std::string data = b.substr(at + 12, length);
    EXPECT_EQ(uint32_t(little_endian(b, at + 12 + length, 4)), masked(bitwise_crc32c(data))) << "at " << at;
    records.push_back(data);
    at += 12 + length + 4;
  }
  return records;
}

struct Field {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t scalar = 0;  // varint, fixed64 or fixed32 bits
  std::string bytes;    // length-delimited
};

uint64_t read_varint(const std::string& b, size_t& at) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    const uint8_t byte = uint8_t(b.at(at++));
    v |= uint64_t(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return v;
  }
}

std::vector<Field> read_message(const std::string& b) {
  std::vector<Field> fields;
  size_t at = 0;
  while (at < b.size()) {
    const uint64_t key = read_varint(b, at);
    Field f;
    f.number = uint32_t(key >> 3);
    f.wire_type = uint32_t(key & 7);
    if (f.wire_type == 0) {
      f.scalar = read_varint(b, at);
    } else if (f.wire_type == 1) {
      f.scalar = little_endian(b, at, 8), at += 8;
    } else if (f.wire_type == 5) {
      f.scalar = little_endian(b, at, 4), at += 4;
    } else if (f.wire_type == 2) {
      const uint64_t n = read_varint(b, at);
      f.bytes = b.substr(at, n), at += n;
    } else {
      ADD_FAILURE() << "unexpected wire type " << f.wire_type;
      break;
    }
    fields.push_back(f);
  }
  return fields;
}

struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<std::pair<std::string, float>> scalars;  // (tag, simple_value)
  int64_t session_status = -1;                         // SessionLog.status, -1 when absent
};

Event decode_event(const std::string& data) {
  Event e;
  for (const Field& f : read_message(data)) {
    if (f.number == 1 && f.wire_type == 1) {
      std::memcpy(&e.wall_time, &f.scalar, 8);
    } else if (f.number == 2 && f.wire_type == 0) {
      e.step = int64_t(f.scalar);
    } else if (f.number == 3 && f.wire_type == 2) {
      e.file_version = f.bytes;
    } else if (f.number == 5 && f.wire_type == 2) {
      for (const Field& v : read_message(f.bytes)) {
        EXPECT_EQ(v.number, 1u);
        std::string tag;
        float value = 0;
        for (const Field& g : read_message(v.bytes)) {
          if (g.number == 1 && g.wire_type == 2) tag = g.bytes;
          else if (g.number == 2 && g.wire_type == 5) {
            const uint32_t bits = uint32_t(g.scalar);
            std::memcpy(&value, &bits, 4);
          } else ADD_FAILURE() << "unexpected Summary.Value field " << g.number;
        }
        e.scalars.emplace_back(tag, value);
      }
    } else if (f.number == 7 && f.wire_type == 2) {  // session_log (6 is log_message)
      for (const Field& g : read_message(f.bytes))
        if (g.number == 1 && g.wire_type == 0) e.session_status = int64_t(g.scalar);
    } else {
      ADD_FAILURE() << "unexpected Event field " << f.number << " wire type " << f.wire_type;
    }
  }
  return e;
}

std::vector<Event> read_events(const std::string& path) {
  std::vector<Event> events;
  for (const auto& r : read_records(path)) events.push_back(decode_event(r));
  return events;
}

// Event files in dir, sorted by name (the order TensorBoard reads them).
std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// ---- tests ----------------------------------------------------------------------------------------

TEST(TensorBoard, Crc32cCheckValue) {
  EXPECT_EQ(metrics::crc32c("123456789", 9), 0xE3069283u);  // the standard CRC-32C check value
  EXPECT_EQ(metrics::crc32c("", 0), 0u);
  const std::string text = "reglage writes TensorBoard events";
  EXPECT_EQ(metrics::crc32c(text.data(), text.size()), bitwise_crc32c(text));
}

TEST(TensorBoard, MaskedCrc) {
  // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8 mod 2^32:
  //   0x0001C60D | 0x25060000 = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5
  EXPECT_EQ(metrics::mask_crc32c(0xE3069283u), 0xC78AB0E5u);
  EXPECT_EQ(metrics::mask_crc32c(0u), 0xa282ead8u);
}

TEST(TensorBoard, ScalarsReadBackExactly) {
  test::TempDir tmp;
  const std::string dir = tmp.path("nested/tb");  // created by the writer
  const std::string long_tag = "train/" + std::string(200, 'x');  // a two-byte length varint
  std::string path;
  {
    metrics::TensorBoardWriter tb(dir);
    path = tb.path();
    tb.add_scalar("train/loss", 0, 1.5f);
    tb.add_scalar("eval/loss", int64_t(1) << 40, -0.25f);
    tb.add_scalar(long_tag, 7, 3.0e-4f);
  }
  ASSERT_EQ(event_files(dir), std::vector<std::string>{path});
  EXPECT_EQ(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u) << path;

  const auto events = read_events(path);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_GT(events[0].wall_time, 0.0);
  EXPECT_TRUE(events[0].scalars.empty());
  const std::vector<std::pair<std::string, float>> want[] = {
      {{"train/loss", 1.5f}}, {{"eval/loss", -0.25f}}, {{long_tag, 3.0e-4f}}};
  const int64_t want_steps[] = {0, int64_t(1) << 40, 7};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(events[i + 1].step, want_steps[i]);
    EXPECT_EQ(events[i + 1].scalars, want[i]);  // exact float equality
    EXPECT_TRUE(events[i + 1].file_version.empty());
  }
}

TEST(TensorBoard, UncreatableDirectoryNamesThePath) {
  test::TempDir tmp;
  core::write_file_atomic(tmp.path("plain_file"), "x");
  const std::string dir = tmp.path("plain_file/tb");
  try {
    metrics::TensorBoardWriter tb(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
}

TEST(Metrics, TensorBoardScalarsFromRecords) {
  test::TempDir tmp;
  {
    metrics::MetricsLog log(tmp.path("metrics.jsonl"), 0);
    log.write({{"step", 3}, {"split", "train"}, {"loss", 1.5}, {"note", "x"}});
    log.write({{"step", 4}, {"lr", 0.5}, {"done", true}});  // no split: "train"; booleans skipped
    log.write({{"split", "eval"}, {"loss", 2.0}});           // no step: no scalars
  }
  const auto files = event_files(tmp.path("tensorboard"));
  ASSERT_EQ(files.size(), 1u);
  const auto events = read_events(files[0]);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_EQ(events[1].step, 3);
  EXPECT_EQ(events[1].scalars, (std::vector<std::pair<std::string, float>>{{"train/loss", 1.5f}}));
  EXPECT_EQ(events[2].step, 4);
  EXPECT_EQ(events[2].scalars, (std::vector<std::pair<std::string, float>>{{"train/lr", 0.5f}}));
}

TEST(Metrics, ResumeStartsANewEventsFile) {
  test::TempDir tmp;
  {
    metrics::MetricsLog log(tmp.path("metrics.jsonl"), 0);
    log.write({{"step", 1}, {"loss", 2.0}});
    log.write({{"step", 2}, {"loss", 1.0}});
  }
  metrics::MetricsLog resumed(tmp.path("metrics.jsonl"), 1);
  resumed.write({{"step", 2}, {"loss", 0.5}});
  const auto files = event_files(tmp.path("tensorboard"));
  ASSERT_EQ(files.size(), 2u);
  const auto first = read_events(files[0]);
  ASSERT_EQ(first.size(), 3u);
  EXPECT_EQ(first[2].scalars, (std::vector<std::pair<std::string, float>>{{"train/loss", 1.0f}}));
  // The resumed file: file_version, SessionLog START at keep_up_to_step + 1, then the new point.
  const auto second = read_events(files[1]);
  ASSERT_EQ(second.size(), 3u);
  EXPECT_EQ(second[0].file_version, "brain.Event:2");
  EXPECT_EQ(second[1].session_status, 1);
  EXPECT_EQ(second[1].step, 2);
  EXPECT_EQ(second[2].step, 2);
  EXPECT_EQ(second[2].scalars, (std::vector<std::pair<std::string, float>>{{"train/loss", 0.5f}}));
}

TEST(Metrics, DefaultConstructedLogWritesNothing) {
  metrics::MetricsLog log;  // ranks other than 0
  log.write({{"step", 1}, {"loss", 1.0}});
  EXPECT_TRUE(log.path().empty());
}

}  // namespace
}  // namespace reglage
