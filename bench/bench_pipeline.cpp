// Benchmarks through the real pipeline: `mpirun -np N reglage run configs/demo.yaml --set ...` in a
// temporary run directory, with short stages, then the numbers its metrics.jsonl holds.
//   reglage_bench ppo     the ppo stage's iteration time split (after a few sft and rm steps to start from)
//   reglage_bench scale   sft tokens/s: 1 rank x 2 threads against 2 ranks x 1 thread, same global batch
//   reglage_bench memory  peak RSS of the largest rank per stage, each stage in its own mpirun
// Timings are medians over the logged steps, the first ones (warm-up) left out.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "bench/bench_pipeline.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::bench {

namespace {

namespace fs = std::filesystem;

struct RunResult {
  double peak_rss_mb = 0;  // the largest VmHWM of the run's `reglage` processes (the ranks)
};

// VmHWM (peak resident set) in KiB of every process whose command line contains `marker`.
void sample_peaks(const std::string& marker, std::map<int, double>& peak_kib) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmdline(entry.path() / "cmdline");
    std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    if (args.rfind("mpirun", 0) == 0 || args.rfind("/bin/sh", 0) == 0 || args.find(marker) == std::string::npos) continue;
    std::ifstream status(entry.path() / "status");
    std::string line;
    while (std::getline(status, line))
      if (line.rfind("VmHWM:", 0) == 0) {
        const int pid = std::stoi(name);
        peak_kib[pid] = std::max(peak_kib[pid], std::atof(line.c_str() + 6));
      }
  }
}

// Runs `reglage run` under mpirun (output to run_dir/bench.log); fails with the log's tail when it fails.
RunResult run_reglage(const std::string& run_dir, int ranks, int threads, const std::string& config,
                      const std::vector<std::string>& sets) {
  const std::string binary = (fs::read_symlink("/proc/self/exe").parent_path() / "reglage").string();
  std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 REGLAGE_PROGRESS=off mpirun -np " +
                    std::to_string(ranks) + " --oversubscribe --bind-to none " + binary + " run " + config +
                    " --set run_dir=" + run_dir + " --set threads=" + std::to_string(threads);
  for (const auto& s : sets) cmd += " --set " + s;
  fs::create_directories(run_dir);
  const std::string log = run_dir + "/bench.log";
  cmd += " > " + log + " 2>&1";
  const pid_t pid = ::fork();
  if (pid < 0) fail("bench: cannot fork");
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  // The ranks' own high-water marks, read while they run (a forked child's rusage would count this
  // process's memory too). VmHWM only grows, so sampling every 20 ms misses at most the last 20 ms.
  int status = 0;
  std::map<int, double> peak_kib;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    sample_peaks(run_dir, peak_kib);
    ::usleep(20000);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string text = core::file_exists(log) ? core::read_file(log) : "";
    if (text.size() > 2000) text = text.substr(text.size() - 2000);
    fail("bench: '", cmd, "' failed:\n", text);
  }
  double peak = 0;
  for (const auto& [p, kib] : peak_kib) peak = std::max(peak, kib);
  return {peak / 1024.0};
}

// The "train" records of a stage's metrics.jsonl.
std::vector<nlohmann::json> train_records(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.value("split", "") == "train") out.push_back(j);
  }
  if (out.empty()) fail("bench: no train records in ", path);
  return out;
}

double median_of(const std::vector<nlohmann::json>& recs, const std::string& key, size_t skip) {
  std::vector<double> v;
  for (size_t i = std::min(skip, recs.size() - 1); i < recs.size(); ++i) v.push_back(recs[i].at(key).get<double>());
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string temp_dir(const std::string& what) {
  std::string tmpl = (fs::temp_directory_path() / ("reglage-bench-" + what + "-XXXXXX")).string();
  if (!::mkdtemp(tmpl.data())) fail("bench: cannot create a temporary directory");
  return tmpl;
}

// Short sft and rm stages, so that ppo has a policy and a reward model to start from.
std::vector<std::string> short_earlier_stages() {
  return {"stages.sft.max_steps=5", "stages.sft.eval_every=0", "stages.rm.max_steps=5", "stages.rm.eval_every=0"};
}

}  // namespace

std::vector<Measurement> bench_ppo(const PipelineOptions& opt) {
  const std::string dir = temp_dir("ppo");
  auto sets = short_earlier_stages();
  sets.insert(sets.end(), {"stages.ppo.max_iterations=" + std::to_string(opt.ppo_iterations),
                           "stages.ppo.log_every=1", "stages.ppo.eval_every=0",
                           "stages.ppo.checkpoint_every=" + std::to_string(opt.ppo_iterations)});
  const auto run = run_reglage(dir + "/run", opt.cores, 1, opt.config, sets);
  const auto recs = train_records(dir + "/run/ppo/metrics.jsonl");
  std::vector<Measurement> out;
  const double gen = median_of(recs, "time_generate_s", 1), score = median_of(recs, "time_score_s", 1);
  const double ref = median_of(recs, "time_reference_s", 1), train = median_of(recs, "time_train_s", 1);
  const double tokens_per_s = median_of(recs, "tokens_per_s", 1);
  const double gen_tokens_per_s = median_of(recs, "generate_tokens_per_s", 1);
  const std::vector<std::pair<std::string, double>> parts = {
      {"generate", gen}, {"score", score}, {"reference+values", ref}, {"train", train}};
  double total = 0;
  for (const auto& [name, s] : parts) total += s;
  for (const auto& [name, s] : parts) {
    Measurement m;
    m.name = "ppo";
    m.shape = "demo iteration: " + name;
    m.dtype = "float32";
    m.threads = 1;
    m.ranks = opt.cores;
    m.step_ms = 1000.0 * s;
    m.tokens_per_s = name == "generate" ? gen_tokens_per_s : 0;
    m.peak_rss_mb = run.peak_rss_mb;
    print_json(m);
    out.push_back(m);
  }
  Measurement whole;
  whole.name = "ppo";
  whole.shape = "demo iteration (all)";
  whole.dtype = "float32";
  whole.threads = 1;
  whole.ranks = opt.cores;
  whole.step_ms = 1000.0 * total;
  whole.tokens_per_s = tokens_per_s;
  whole.peak_rss_mb = run.peak_rss_mb;
  print_json(whole);
  out.push_back(whole);
  fs::remove_all(dir);
  return out;
}

std::vector<Measurement> bench_scale(const PipelineOptions& opt) {
  std::vector<Measurement> out;
  const std::string dir = temp_dir("scale");
  // Only the sft stage runs: a pipeline file written here from the demo config, cut after its sft stage.
  const std::string config = dir + "/sft_only.yaml";
  {
    std::ifstream in(opt.config);
    if (!in) fail("bench: cannot read ", opt.config);
    std::ofstream o(config);
    std::string line;
    bool after_sft = false;
    while (std::getline(in, line)) {
      if (line.rfind("  - name: ", 0) == 0 && line != "  - name: sft") after_sft = true;
      if (!after_sft) o << line << "\n";
    }
  }
  for (const auto& [ranks, threads] : std::vector<std::pair<int, int>>{{1, opt.cores}, {opt.cores, 1}}) {
    const std::string run_dir = dir + "/r" + std::to_string(ranks);
    const auto run = run_reglage(run_dir, ranks, threads, config,
                                 {"stages.sft.max_steps=" + std::to_string(opt.sft_steps), "stages.sft.log_every=1",
                                  "stages.sft.eval_every=0",
                                  "stages.sft.checkpoint_every=" + std::to_string(opt.sft_steps)});
    const auto recs = train_records(run_dir + "/sft/metrics.jsonl");
    Measurement m;
    m.name = "scale";
    m.shape = "demo sft batch=16 (" + std::to_string(ranks) + "x" + std::to_string(threads) + ")";
    m.dtype = "float32";
    m.threads = threads;
    m.ranks = ranks;
    m.tokens_per_s = median_of(recs, "tokens_per_s", 5);
    m.step_ms = 1000.0 * median_of(recs, "tokens", 5) / m.tokens_per_s;
    m.peak_rss_mb = run.peak_rss_mb;
    print_json(m);
    out.push_back(m);
  }
  fs::remove_all(dir);
  return out;
}

std::vector<Measurement> bench_memory(const PipelineOptions& opt) {
  // Each stage in a process of its own: each run gets the pipeline cut after the stage it measures, in the
  // same run directory, so it finds the earlier stages done (same settings) and runs that stage only.
  std::vector<Measurement> out;
  const std::string dir = temp_dir("memory");
  std::vector<std::string> lines;
  {
    std::ifstream in(opt.config);
    if (!in) fail("bench: cannot read ", opt.config);
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
  }
  auto sets = short_earlier_stages();
  sets.insert(sets.end(), {"stages.ppo.max_iterations=5", "stages.ppo.eval_every=0"});
  for (const std::string stage : {"sft", "rm", "ppo"}) {
    // The config up to and including `stage`.
    const std::string config = dir + "/upto_" + stage + ".yaml";
    std::ofstream o(config);
    bool past = false, in_stage = false;
    for (const auto& line : lines) {
      if (line.rfind("  - name: ", 0) == 0) {
        if (in_stage) past = true;
        in_stage = line == "  - name: " + stage;
      }
      if (!past) o << line << "\n";
    }
    o.close();
    std::vector<std::string> mine;
    for (const auto& s : sets)
      if (s.rfind("stages.sft.", 0) == 0 || (stage != "sft" && s.rfind("stages.rm.", 0) == 0) ||
          (stage == "ppo" && s.rfind("stages.ppo.", 0) == 0))
        mine.push_back(s);
    const auto run = run_reglage(dir + "/run", opt.cores, 1, config, mine);
    Measurement m;
    m.name = "memory";
    m.shape = "demo stage " + stage + " (own process)";
    m.dtype = "float32";
    m.threads = 1;
    m.ranks = opt.cores;
    m.peak_rss_mb = run.peak_rss_mb;
    print_json(m);
    out.push_back(m);
  }
  fs::remove_all(dir);
  return out;
}

}  // namespace reglage::bench
