// Stage checkpoints on disk: run_dir/<stage>/checkpoints/step-N/ holding named files and a manifest with
// each file's size and checksum. A checkpoint is written into a temporary directory and renamed into place,
// so a crash never leaves a directory named step-N that looks whole; on resume, one whose files do not
// match the manifest is reported and skipped.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace reglage::checkpoint {

// FNV-1a 64-bit hash of bytes, as 16 hex digits (detects truncation and corruption; not cryptographic).
std::string checksum(const std::string& bytes);

// Writes `files` (name -> bytes) and manifest.json (step, names, sizes, checksums, `meta`) as
// <dir>/step-<step>/, atomically. Replaces an existing checkpoint of the same step.
std::string write_checkpoint(const std::string& dir, int64_t step, const std::map<std::string, std::string>& files,
                             const std::map<std::string, std::string>& meta = {});

struct Checkpoint {
  std::string path;                          // .../step-N
  int64_t step = 0;
  std::map<std::string, std::string> meta;   // as written
};

// Steps of the directories named step-N under dir, ascending (valid or not).
std::vector<int64_t> list_steps(const std::string& dir);

// Checks a checkpoint directory against its manifest; returns the problem, or "" when whole.
std::string verify(const std::string& path);

// The newest checkpoint that verifies; each newer broken one is reported through `warn` and skipped.
std::optional<Checkpoint> latest_valid(const std::string& dir, const std::function<void(const std::string&)>& warn);

// Reads one file of a verified checkpoint.
std::string read_checkpoint_file(const Checkpoint& ckpt, const std::string& name);

// Deletes all but the newest `keep` checkpoints (and leftover temporary directories).
void prune(const std::string& dir, int64_t keep);

}  // namespace reglage::checkpoint
