#include "framework/checkpoint/manifest.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <vector>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kFnvOffset = 14695981039346656037ULL;  // FNV-1a 64 offset basis
constexpr uint64_t kFnvPrime = 1099511628211ULL;
constexpr size_t kChunk = size_t(1) << 20;  // bytes read at a time by record_file

uint64_t fnv1a(uint64_t h, const char* data, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= kFnvPrime;
  }
  return h;
}

std::string hex16(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// A name a manifest may list: relative, no empty, "." or ".." parts (so it cannot point outside the
// directory), and with nested = false a plain file name.
bool plain_relative(const std::string& name, bool nested) {
  if (name.empty() || name.find('\0') != std::string::npos) return false;
  if (!nested && name.find('/') != std::string::npos) return false;
  size_t start = 0;
  while (true) {
    const size_t end = name.find('/', start);
    const std::string part = name.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (end == std::string::npos) return true;
    start = end + 1;
  }
}

// Every file under dir (with nested, in subdirectories too), relative and '/'-separated; directories are
// not listed. With nested = false a subdirectory is returned as itself with a trailing '/'.
std::vector<std::string> files_under(const std::string& dir, bool nested) {
  std::vector<std::string> out;
  std::error_code ec;
  if (nested) {
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (it->is_directory(ec)) continue;
      out.push_back(it->path().lexically_relative(dir).generic_string());
    }
  } else {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      out.push_back(entry.is_directory(ec) ? name + "/" : name);
    }
  }
  if (ec) fail(dir, ": cannot list (", ec.message(), ")");
  return out;
}

// "sft/final" -> "re-run stage 'sft' (reglage run ... --restart-from sft)"; other directories: write it again.
std::string rerun_hint(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p.filename() == "final" && !p.parent_path().filename().empty()) {
    const std::string stage = p.parent_path().filename().string();
    return "re-run stage '" + stage + "' (reglage run PIPELINE.yaml --restart-from " + stage + ")";
  }
  return "write it again";
}

void warn_stderr(const std::string& message) { std::cerr << "warning: " << message << std::endl; }

// The manifest's text with every listed file's size and modification time: when it is unchanged since a
// directory verified, its files are as they were (a loader that meets the same earlier output twice reads
// its bytes once). "" when a listed file cannot be stat'ed.
std::string fingerprint(const std::string& dir, const std::string& manifest_text, const json& files) {
  std::string out = manifest_text;
  if (!files.is_object()) return "";
  for (const auto& [name, info] : files.items()) {
    std::error_code ec;
    const std::string path = core::path_join(dir, name);
    const auto size = fs::file_size(path, ec);
    if (ec) return "";
    const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
    if (ec) return "";
    out += "\n" + name + " " + std::to_string(size) + " " + std::to_string(mtime);
  }
  return out;
}

}  // namespace

std::string checksum(const std::string& bytes) { return hex16(fnv1a(kFnvOffset, bytes.data(), bytes.size())); }

FileRecord record_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open to checksum it");
  std::vector<char> buf(kChunk);
  uint64_t h = kFnvOffset;
  FileRecord r;
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    const auto n = size_t(in.gcount());
    h = fnv1a(h, buf.data(), n);
    r.size += n;
  }
  if (in.bad()) fail(path, ": read error while checksumming it");
  r.checksum = hex16(h);
  return r;
}

json files_json(const std::map<std::string, FileRecord>& files) {
  json out = json::object();
  for (const auto& [name, rec] : files) out[name] = {{"size", rec.size}, {"checksum", rec.checksum}};
  return out;
}

std::string check_files(const std::string& dir, const json& files, const std::string& manifest_name, bool nested) {
  if (!files.is_object()) return manifest_name + " has no \"files\" object";
  if (files.empty()) return manifest_name + " lists no files";
  // Names, entries and sizes first (cheap), then files nobody listed, then the checksums (every byte read).
  for (const auto& [name, info] : files.items()) {
    if (!plain_relative(name, nested))
      return manifest_name + " lists '" + name + "' (expected a " + (nested ? "relative path" : "file name") +
             " inside the directory)";
    if (!info.is_object() || !info.contains("size") || !info["size"].is_number_unsigned() ||
        !info.contains("checksum") || !info["checksum"].is_string())
      return manifest_name + " entry for " + name + " is malformed (expected {\"size\": bytes, \"checksum\": hex})";
    const std::string path = core::path_join(dir, name);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) return name + " is missing";
    const uint64_t on_disk = fs::file_size(path, ec);
    const uint64_t listed = info["size"].get<uint64_t>();
    if (ec) return name + " is unreadable (" + ec.message() + ")";
    if (on_disk != listed)
      return name + " has " + std::to_string(on_disk) + " bytes, " + manifest_name + " says " + std::to_string(listed);
  }
  for (const auto& name : files_under(dir, nested)) {
    if (name == manifest_name) continue;
    if (!name.empty() && name.back() == '/') return "unexpected directory " + name + " (not part of a checkpoint)";
    if (!files.contains(name)) return name + " is in the directory but not listed in " + manifest_name;
  }
  for (const auto& [name, info] : files.items()) {
    const std::string expected = info["checksum"].get<std::string>();
    const std::string actual = record_file(core::path_join(dir, name)).checksum;
    if (actual != expected)
      return name + " fails its checksum (" + actual + " on disk, " + manifest_name + " says " + expected + ")";
  }
  return "";
}

void write_output_manifest(const std::string& dir) {
  std::map<std::string, FileRecord> files;
  for (const auto& name : files_under(dir, /*nested=*/true))
    if (name != kOutputManifest) files[name] = record_file(core::path_join(dir, name));
  const json m{{"algorithm", kChecksumAlgorithm}, {"files", files_json(files)}};
  core::write_file_atomic(core::path_join(dir, kOutputManifest), m.dump(2) + "\n");
}

void verify_output(const std::string& dir, const Warn& warn) {
  const std::string path = core::path_join(dir, kOutputManifest);
  if (!core::file_exists(path)) {
    // Each directory once: a lineage names the same earlier outputs to several loaders.
    static std::mutex mutex;
    static std::set<std::string> warned;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!warned.insert(fs::path(dir).lexically_normal().string()).second) return;
    }
    warn(dir + ": no " + kOutputManifest + " (written by a reglage from before stage outputs had one), so its files "
         "are not checked; " + rerun_hint(dir) + " to add one");
    return;
  }
  const std::string text = core::read_file(path);
  json m;
  try {
    m = json::parse(text);
  } catch (const std::exception& e) {
    fail(path, ": unreadable (", e.what(), "); ", rerun_hint(dir));
  }
  if (!m.is_object() || !m.contains("algorithm") || m["algorithm"] != kChecksumAlgorithm)
    fail(path, ": no \"algorithm\": \"", kChecksumAlgorithm, "\" (not a manifest this reglage reads); ", rerun_hint(dir));
  const json files = m.contains("files") ? m["files"] : json();
  static std::mutex mutex;
  static std::map<std::string, std::string> verified;  // directory -> fingerprint when it verified
  const std::string key = fs::absolute(dir).lexically_normal().string();
  const std::string print = fingerprint(dir, text, files);
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = verified.find(key);
    if (!print.empty() && it != verified.end() && it->second == print) return;
  }
  const std::string problem = check_files(dir, files, kOutputManifest, true);
  if (!problem.empty())
    fail(dir, ": ", problem, "; the stage output changed after it was written: ", rerun_hint(dir));
  std::lock_guard<std::mutex> lock(mutex);
  if (!print.empty()) verified[key] = print;
}

void verify_output(const std::string& dir) { verify_output(dir, warn_stderr); }

bool is_stage_output(const std::string& path) {
  return core::is_directory(path) && (core::file_exists(core::path_join(path, kOutputManifest)) ||
                                      core::file_exists(core::path_join(path, "reglage_lineage.json")));
}

}  // namespace reglage::checkpoint
