// Manifests: a JSON record of every file of a directory (path, size, checksum) that readers check before
// they trust the bytes. Checkpoints (run_dir/<stage>/checkpoints/step-N/manifest.json, see checkpoint.h) and
// stage outputs (run_dir/<stage>/final/reglage_manifest.json) share the "files" record:
//   {"algorithm": "fnv1a64",
//    "files": {"adapter_model.safetensors": {"size": 8712, "checksum": "3f0c9a1e5b7d2c44"},
//              "critic/adapter_config.json": {...}, ...}, ...}
// Paths are relative to the directory, '/'-separated. The checksum detects damage (a flipped byte, a
// truncated or swapped file); it is not a signature.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace reglage::checkpoint {

constexpr const char* kChecksumAlgorithm = "fnv1a64";
constexpr const char* kOutputManifest = "reglage_manifest.json";  // in every stage's final/

// FNV-1a 64-bit hash of bytes, as 16 hex digits (detects truncation and corruption; not cryptographic).
std::string checksum(const std::string& bytes);

struct FileRecord {
  uint64_t size = 0;
  std::string checksum;  // checksum() of the file's bytes
};

// Size and checksum of a file, read in chunks (a model file is never held in memory for this).
FileRecord record_file(const std::string& path);

// {"size": .., "checksum": ..} entries by name, as a manifest's "files" object.
nlohmann::json files_json(const std::map<std::string, FileRecord>& files);

// Checks the files of `dir` against a manifest's "files" object: the list is not empty; every name is a
// plain relative path (no "..", no leading '/'; with nested = false no '/' at all); every listed file exists
// with its size and checksum; and no file other than `manifest_name` is in the directory unlisted.
// Returns the problem, naming the file ("adapter_model.safetensors fails its checksum (...)"), or "".
std::string check_files(const std::string& dir, const nlohmann::json& files, const std::string& manifest_name,
                        bool nested);

// Writes dir/reglage_manifest.json listing every file under dir (subdirectories included) with its size and
// checksum, atomically. Call it last, when every other file of the directory is written.
void write_output_manifest(const std::string& dir);

// Checks a stage output directory against its reglage_manifest.json; throws one line naming the directory,
// the file and what mismatched. A directory without a manifest (a final/ of a reglage from before
// manifests) is accepted unchecked: `warn` hears about it once per directory in this process. A directory
// that verified is not read again in this process while its manifest and its files' sizes and modification
// times are unchanged (a lineage names the same output to several loaders).
using Warn = std::function<void(const std::string&)>;
void verify_output(const std::string& dir, const Warn& warn);
void verify_output(const std::string& dir);  // warnings go to stderr

// True when `path` is a directory reglage wrote as a stage output (it holds reglage_manifest.json or
// reglage_lineage.json), as opposed to a model from elsewhere.
bool is_stage_output(const std::string& path);

}  // namespace reglage::checkpoint
