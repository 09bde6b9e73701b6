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
  std::map<std::string, FileRecord> records;
  for (const auto& [name, bytes] : files) {
    core::write_file_atomic(core::path_join(tmp, name), bytes);
    records[name] = {bytes.size(), checksum(bytes)};
  }
  manifest["step"] = step;
  manifest["meta"] = meta;
  manifest["algorithm"] = kChecksumAlgorithm;
  manifest["files"] = files_json(records);
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

std::string verify(const std::string& path, const std::vector<std::string>& required) {
  const std::string manifest_path = core::path_join(path, kManifest);
  if (!core::file_exists(manifest_path)) return "no manifest.json";
  json m;
  try {
    m = json::parse(core::read_file(manifest_path));
  } catch (const std::exception& e) {
    return std::string("manifest.json unreadable (") + e.what() + ")";
  }
  if (!m.is_object()) return "manifest.json is not a JSON object";
  // The step it was written at is the step its directory names: a copy of step-4 renamed step-8 would
  // otherwise resume 4 steps of training as done.
  const int64_t dir_step = parse_step(fs::path(path).lexically_normal().filename().string());
  if (!m.contains("step") || !m["step"].is_number_integer()) return "manifest.json records no step";
  if (m["step"].get<int64_t>() != dir_step)
    return "manifest.json says step " + std::to_string(m["step"].get<int64_t>()) + ", the directory is step-" +
           std::to_string(dir_step);
  if (m.contains("algorithm") && m["algorithm"] != kChecksumAlgorithm)
    return "manifest.json uses checksum algorithm " + m["algorithm"].dump() + " (expected \"" + kChecksumAlgorithm + "\")";
  const json files = m.contains("files") ? m["files"] : json();
  // Files the trainer reads back must be listed: a manifest that dropped one entry along with its file
  // is otherwise whole.
  if (files.is_object() && !files.empty())  // (an empty list is reported as such below)
    for (const auto& name : required)
      if (!files.contains(name)) return name + " is missing (the trainer needs it; manifest.json does not list it)";
  return check_files(path, files, kManifest, /*nested=*/false);
}

std::optional<Checkpoint> latest_valid(const std::string& dir, const std::function<void(const std::string&)>& warn,
                                       const Expectation& expect) {
  auto steps = list_steps(dir);
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const std::string path = core::path_join(dir, step_name(*it));
    std::string problem = verify(path, expect.required);
    Checkpoint c;
    c.path = path;
    c.step = *it;
    if (problem.empty()) {
      const json m = json::parse(core::read_file(core::path_join(path, kManifest)));
      if (m.contains("meta") && m["meta"].is_object())
        for (const auto& [k, v] : m["meta"].items())
          if (v.is_string()) c.meta[k] = v.get<std::string>();
      if (expect.check) problem = expect.check(c);
    }
    if (!problem.empty()) {
      warn("checkpoint " + path + " is incomplete or corrupt (" + problem + "); using an older one");
      continue;
    }
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
