#include "trainers/pipeline.h"

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/run_lock.h"
#include "framework/config/config_error.h"
#include "framework/config/pipeline_config.h"
#include "framework/io/model_io.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/metrics/metrics_log.h"
#include "trainers/policy_setup.h"
#include "trainers/stage_traits.h"

namespace reglage::trainers {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {
void print_line(const std::string& text, std::ostream& to) {
  if (auto* line = metrics::ProgressLine::active()) line->print_above(text, to);
  else to << text << std::endl;
}
}  // namespace

void StageContext::log(const std::string& message) const {
  if (is_root()) print_line("[" + stage.name + "] " + message, std::cout);
}

void StageContext::warn(const std::string& message) const {
  if (is_root()) print_line("[" + stage.name + "] warning: " + message, std::cerr);
}

metrics::ProgressMode StageContext::progress_mode() const {
  const auto mode = metrics::progress_mode_from_env();  // every rank: a bad value fails everywhere alike
  return is_root() ? mode : metrics::ProgressMode::off;
}

namespace {

json read_pipeline_json(const checkpoint::RunLayout& layout) {
  const std::string path = layout.pipeline_json();
  if (!core::file_exists(path)) return json{{"stages", json::object()}};
  try {
    auto j = json::parse(core::read_file(path));
    if (!j.contains("stages") || !j["stages"].is_object()) fail("no 'stages' object");
    return j;
  } catch (const std::exception& e) {
    fail(path, ": unreadable (", e.what(), "); remove it to start the run over");
  }
}

// What decides a stage's result: its settings (with model and LoRA), its data files' contents, and the
// hash of the stage it starts from.
std::string stage_hash(const config::PipelineConfig& cfg, const config::StageConfig& st,
                       const std::map<std::string, std::string>& earlier) {
  std::string material = config::stage_yaml(cfg, st);
  for (const auto& file : {st.data, st.eval_data})
    if (!file.empty()) material += "\n" + checkpoint::checksum(core::read_file(file));
  if (!st.init_from.empty()) material += "\ninit_from:" + earlier.at(st.init_from);
  return checkpoint::checksum(material);
}

// Reads every stage's data before any stage runs, so a bad row in the last stage's file is reported before
// hours of training in the first. Problems become one ConfigError naming the stage key.
void validate_stage_inputs(const config::PipelineConfig& cfg) {
  std::vector<config::ConfigProblem> problems;
  const auto model_cfg = io::read_model_config(cfg.model.path);
  std::unique_ptr<tokenizer::Tokenizer> tok;
  try {
    tok = io::load_model_tokenizer(cfg.model.path, cfg.model.tokenizer, model_cfg.vocab_size);
  } catch (const Error& e) {
    problems.push_back({0, 0, "model.tokenizer", e.what()});
    throw config::ConfigError(cfg.source, problems);
  }
  for (size_t i = 0; i < cfg.stages.size(); ++i)
    validate_inputs(cfg.stages[i], "stages[" + std::to_string(i) + "].", model_cfg.max_seq_len, *tok, problems);
  if (!problems.empty()) throw config::ConfigError(cfg.source, problems);
}

// Under `reglage launch`, attempts after the first are restarts: the previous attempt's rank 0 may still be
// exiting (on another host, say), so its lock is waited out for a while instead of refused at once.
constexpr double kRestartLockWaitS = 60.0;
// Rank 0 creates run_dir and proves it writable; a failure is thrown on every rank alike (its problems
// broadcast as JSON), so no rank goes on alone.
void prepare_run_dir_on_root(const config::PipelineConfig& cfg, dist::Communicator& comm) {
  json problems = json::array();
  if (comm.rank() == 0) {
    try {
      config::prepare_run_dir(cfg);
    } catch (const config::ConfigError& e) {
      for (const auto& p : e.problems()) problems.push_back({p.line, p.column, p.key, p.message});
    }
  }
  problems = json::parse(dist::broadcast_string(comm, problems.dump(), 0, "broadcast run_dir check"));
  if (problems.empty()) return;
  std::vector<config::ConfigProblem> list;
  for (const auto& p : problems) list.push_back({p[0].get<int>(), p[1].get<int>(), p[2].get<std::string>(), p[3].get<std::string>()});
  throw config::ConfigError(cfg.source, list);
}

bool launcher_restart() {
  const char* attempt = std::getenv("REGLAGE_ATTEMPT");
  return attempt != nullptr && std::atoi(attempt) > 0;
}

}  // namespace

void run_pipeline(const RunOptions& opt, dist::Communicator& comm) {
  const auto cfg = config::load_pipeline(opt.config_path, opt.overrides);
  config::check_world_size(cfg, comm.size());  // every rank: the same config, the same error
  prepare_run_dir_on_root(cfg, comm);
  const int threads = threads_per_rank(cfg.threads);
  torch::set_num_threads(threads);
  const bool root = comm.rank() == 0;
  if (const auto w = thread_binding_warning(threads, comm.rank()); !w.empty() && (root || comm.size() <= 8))
    print_line("[reglage] warning: " + w, std::cerr);
  const checkpoint::RunLayout layout(cfg.run_dir);

  // One run per run_dir (a second one would double the metrics and, with --restart-from, leave config.yaml
  // disagreeing with the weights). Rank 0 takes the lock and holds it until this function ends; every rank
  // learns the outcome from it, so a refused run stops on all ranks at once. Other ranks never touch the
  // lock: on other hosts sharing run_dir they would contend with their own rank 0.
  checkpoint::RunLock run_lock;
  std::string refused;
  if (root) {
    try {
      refused = run_lock.try_acquire(cfg.run_dir, launcher_restart() ? kRestartLockWaitS : 0.0);
    } catch (const Error& e) {
      refused = e.what();
    }
  }
  refused = dist::broadcast_string(comm, refused, 0, "broadcast run_dir lock");
  if (!refused.empty()) throw checkpoint::RunRefused(refused);

  if (!opt.restart_from.empty() && cfg.find_stage(opt.restart_from) == nullptr)
    throw config::ConfigError(opt.config_path, {{0, 0, "--restart-from", opt.restart_from + ": no stage of that name"}});
  validate_stage_inputs(cfg);

  // Rank 0 reads the record and everyone works from its copy.
  json record = json::parse(dist::broadcast_string(
      comm, root ? read_pipeline_json(layout).dump() : std::string(), 0, "broadcast pipeline.json"));
  auto save_record = [&] {
    if (root) core::write_file_atomic(layout.pipeline_json(), record.dump(2) + "\n");
  };
  if (root) core::write_file_atomic(layout.config_yaml(), config::to_yaml(cfg));

  std::map<std::string, std::string> hashes;
  bool restarting = false;
  for (const auto& st : cfg.stages) {
    const std::string hash = stage_hash(cfg, st, hashes);
    hashes[st.name] = hash;
    StageContext ctx{cfg, st, comm, layout, hash};
    json& entry = record["stages"][st.name];
    restarting = restarting || st.name == opt.restart_from;
    if (restarting && !entry.is_null()) {
      // Start over: this stage's checkpoints, metrics and output go.
      if (root) fs::remove_all(ctx.stage_dir());
      entry = json();
      comm.barrier("restart stage");
    }
    const std::string state = entry.is_object() ? entry.value("state", "pending") : "pending";
    if (state == "done" || state == "running") {
      if (entry.value("config_hash", "") != hash)
        fail("stage '", st.name, "' ", state == "done" ? "already finished" : "was started",
             " with a different configuration (", layout.pipeline_json(),
             "); use a new run_dir or --restart-from ", st.name);
      if (state == "done") {
        ctx.log("done already, skipped (output in " + ctx.final_dir() + ")");
        continue;
      }
    }
    entry = {{"type", config::to_string(st.type)}, {"state", "running"}, {"config_hash", hash}};
    save_record();
    if (root) fs::create_directories(ctx.stage_dir());
    comm.barrier("stage start");
    stage_traits(st.type).run(ctx);
    entry = {{"type", config::to_string(st.type)}, {"state", "done"}, {"config_hash", hash},
             {"output", ctx.final_dir()}};
    save_record();
  }
  comm.barrier("pipeline end");
}

void print_status(const std::string& run_dir) {
  const checkpoint::RunLayout layout(run_dir);
  const json record = read_pipeline_json(layout);
  if (record["stages"].empty()) fail(run_dir, ": no pipeline has run here (no pipeline.json)");
  for (const auto& [name, entry] : record["stages"].items()) {
    const auto steps = checkpoint::list_steps(layout.checkpoints(name));
    std::cout << name << " (" << entry.value("type", "?") << "): " << entry.value("state", "pending");
    if (!steps.empty()) std::cout << ", last checkpoint step " << steps.back();
    std::cout << "\n";
    for (const auto& [split, last] : metrics::last_records(layout.metrics(name)))
      std::cout << "  last " << split << ": " << last.dump() << "\n";
  }
}

}  // namespace reglage::trainers
