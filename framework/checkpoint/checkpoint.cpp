#include "framework/checkpoint/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr const char* kPrefix = "step-";
constexpr const char* kManifest = "manifest.json";

std::string step_name(int64_t step) { return kPrefix + std::to_string(step); }

// "step-12" -> 12; anything else -> -1
int64_t parse_step(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0 || name.size() == 5) return -1;
  const std::string digits = name.substr(5);
  if (!std::all_of(digits.begin(), digits.end(), ::isdigit) || digits.size() > 15) return -1;
  return std::stoll(digits);
}
}  // namespace

std::string checksum(const std::string& bytes) {
  uint64_t h = 14695981039346656037ULL;  // FNV-1a 64 offset basis
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string write_checkpoint(const std::string& dir, int64_t step, const std::map<std::string, std::string>& files,
                             const std::map<std::string, std::string>& meta) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, ": cannot create checkpoint directory (", ec.message(), ")");
  const std::string final_path = core::path_join(dir, step_name(step));
  const std::string tmp = core::path_join(dir, ".tmp-" + step_name(step) + "-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) fail(tmp, ": cannot create (", ec.message(), ")");

  json manifest;
  manifest["step"] = step;
  manifest["meta"] = meta;
  manifest["files"] = json::object();
  for (const auto& [name, bytes] : files) {
    core::write_file_atomic(core::path_join(tmp, name), bytes);
    manifest["files"][name] = {{"size", bytes.size()}, {"checksum", checksum(bytes)}};
  }
  // The manifest last: a directory without one is never taken for a checkpoint.
  core::write_file_atomic(core::path_join(tmp, kManifest), manifest.dump(2) + "\n");
  if (fs::exists(final_path)) fs::remove_all(final_path, ec);
  fs::rename(tmp, final_path, ec);
  if (ec) fail(final_path, ": cannot rename checkpoint into place (", ec.message(), ")");
  return final_path;
}

std::vector<int64_t> list_steps(const std::string& dir) {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return steps;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const int64_t s = parse_step(entry.path().filename().string());
    if (s >= 0 && entry.is_directory()) steps.push_back(s);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::string verify(const std::string& path) {
  const std::string manifest_path = core::path_join(path, kManifest);
  if (!core::file_exists(manifest_path)) return "no manifest.json";
  json m;
  try {
    m = json::parse(core::read_file(manifest_path));
  } catch (const std::exception& e) {
    return std::string("manifest.json unreadable (") + e.what() + ")";
  }
  if (!m.contains("files") || !m["files"].is_object()) return "manifest.json lists no files";
  for (const auto& [name, info] : m["files"].items()) {
    const std::string file = core::path_join(path, name);
    if (!core::file_exists(file)) return name + " is missing";
    const std::string bytes = core::read_file(file);
    if (bytes.size() != info.value("size", uint64_t(0)))
      return name + " has " + std::to_string(bytes.size()) + " bytes, manifest says " +
             std::to_string(info.value("size", uint64_t(0)));
    if (checksum(bytes) != info.value("checksum", std::string())) return name + " fails its checksum";
  }
  return "";
}

std::optional<Checkpoint> latest_valid(const std::string& dir, const std::function<void(const std::string&)>& warn) {
  auto steps = list_steps(dir);
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const std::string path = core::path_join(dir, step_name(*it));
    const std::string problem = verify(path);
    if (!problem.empty()) {
      warn("checkpoint " + path + " is incomplete or corrupt (" + problem + "); using an older one");
      continue;
    }
    Checkpoint c;
    c.path = path;
    c.step = *it;
    const json m = json::parse(core::read_file(core::path_join(path, kManifest)));
    if (m.contains("meta") && m["meta"].is_object())
      for (const auto& [k, v] : m["meta"].items())
        if (v.is_string()) c.meta[k] = v.get<std::string>();
    return c;
  }
  return std::nullopt;
}

std::string read_checkpoint_file(const Checkpoint& ckpt, const std::string& name) {
  return core::read_file(core::path_join(ckpt.path, name));
}

void prune(const std::string& dir, int64_t keep) {
  std::error_code ec;
  auto steps = list_steps(dir);
  for (size_t i = 0; i + size_t(std::max<int64_t>(keep, 1)) < steps.size(); ++i)
    fs::remove_all(core::path_join(dir, step_name(steps[i])), ec);
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove_all(entry.path(), ec);
}

}  // namespace reglage::checkpoint
