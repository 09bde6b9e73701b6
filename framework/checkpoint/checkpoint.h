// Stage checkpoints on disk: run_dir/<stage>/checkpoints/step-N/ holding named files and manifest.json:
//   {"step": N, "meta": {"config_hash": ...}, "algorithm": "fnv1a64",
//    "files": {"trainable.safetensors": {"size": .., "checksum": ..}, ...}}   (manifest.h)
// A checkpoint is written into a temporary directory and renamed into place, so a crash never leaves a
// directory named step-N that looks whole; on resume, one that does not verify is reported and skipped.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "framework/checkpoint/manifest.h"

namespace reglage::checkpoint {

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

// Checks a checkpoint directory (.../step-N) against its manifest; returns the problem, or "" when whole.
// Whole means: the manifest records step N; it lists at least one file and every file of the directory;
// every file in `required` is listed; every listed file has its size and checksum.
std::string verify(const std::string& path, const std::vector<std::string>& required = {});

// What a reader needs of a checkpoint beyond verify().
struct Expectation {
  std::vector<std::string> required;                      // files it reads back
  std::function<std::string(const Checkpoint&)> check;    // more checks of a verified one: the problem or ""
};

// The newest checkpoint that verifies and passes `expect.check`; each newer one that does not is reported
// through `warn` and skipped.
std::optional<Checkpoint> latest_valid(const std::string& dir, const std::function<void(const std::string&)>& warn,
                                       const Expectation& expect = {});

// Reads one file of a verified checkpoint.
std::string read_checkpoint_file(const Checkpoint& ckpt, const std::string& name);

// Deletes all but the newest `keep` checkpoints (and leftover temporary directories).
void prune(const std::string& dir, int64_t keep);

}  // namespace reglage::checkpoint
