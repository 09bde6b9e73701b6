#include "framework/metrics/metrics_log.h"

#include <fstream>
#include <sstream>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::metrics {

MetricsLog::MetricsLog(const std::string& path, int64_t keep_up_to_step)
    : path_(path),
      tensorboard_(std::make_unique<TensorBoardWriter>(core::path_join(core::parent_dir(path), "tensorboard"))) {
  if (!core::file_exists(path)) {
    core::write_file_atomic(path, "");
    return;
  }
  // Resuming: TensorBoard forgets the earlier files' points at steps past the checkpoint.
  tensorboard_->add_session_start(keep_up_to_step + 1);
  std::istringstream in(core::read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) > keep_up_to_step) continue;
    } catch (const std::exception&) {
      continue;  // a line cut short by a crash
    }
    kept += line + "\n";
  }
  core::write_file_atomic(path, kept);
}

void MetricsLog::write(const nlohmann::json& record) {
  if (path_.empty()) return;
  std::ofstream out(path_, std::ios::app);
  if (!out) fail(path_, ": cannot append metrics");
  out << record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  out.flush();
  if (!out) fail(path_, ": cannot append metrics");

  if (!tensorboard_ || !record.is_object() || !record.contains("step") || !record["step"].is_number_integer()) return;
  const int64_t step = record["step"].get<int64_t>();
  const auto split_it = record.find("split");
  const std::string split =
      (split_it != record.end() && split_it->is_string()) ? split_it->get<std::string>() : std::string("train");
  for (const auto& [key, value] : record.items()) {
    if (key == "step" || !value.is_number()) continue;  // is_number() is false for booleans and strings
    tensorboard_->add_scalar(split + "/" + key, step, float(value.get<double>()));
  }
}

std::map<std::string, nlohmann::json> last_records(const std::string& path) {
  std::map<std::string, nlohmann::json> out;
  if (!core::file_exists(path)) return out;
  std::istringstream in(core::read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      out[j.value("split", std::string("train"))] = j;
    } catch (const std::exception&) {
    }
  }
  return out;
}

}  // namespace reglage::metrics
