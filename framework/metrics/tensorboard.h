// TensorBoard event files without a protobuf dependency: `tensorboard --logdir DIR` reads what this writes.
// A file is a sequence of TFRecords, each holding one serialized tensorflow.Event:
//   uint64 length (little endian), uint32 masked_crc32c(length bytes), data, uint32 masked_crc32c(data)
// The first record carries file_version "brain.Event:2"; every add_scalar appends one record and flushes,
// so a crash loses at most the record being written (readers stop at a truncated last record). Like
// metrics.jsonl, the file is an append log, not written atomically.
#pragma once
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

namespace reglage::metrics {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78); crc32c("123456789", 9) == 0xE3069283.
uint32_t crc32c(const void* data, size_t size);

// The masked CRC that TFRecord stores: ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32).
uint32_t mask_crc32c(uint32_t crc);

class TensorBoardWriter {
 public:
  // Creates dir (and its parents) if missing, opens a new file
  // `<dir>/events.out.tfevents.<unix seconds>.<hostname>.<pid>` (".<n>" appended when that name is taken)
  // and writes the file_version record. Throws reglage::Error naming the path when it cannot.
  explicit TensorBoardWriter(const std::string& dir);

  // Appends Event{wall_time, step, summary{value{tag, simple_value}}} and flushes; throws naming the path.
  void add_scalar(const std::string& tag, int64_t step, float value);

  // Appends Event{wall_time, step, session_log{status: START}}: TensorBoard's event loader then drops the
  // points at steps >= step read from earlier files of the directory (a run resumed from a checkpoint).
  void add_session_start(int64_t step);

  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);  // frames one serialized Event and flushes

  std::string path_;
  std::ofstream out_;
};

}  // namespace reglage::metrics
