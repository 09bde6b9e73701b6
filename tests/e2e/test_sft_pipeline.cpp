// The SFT pipeline end to end through `reglage run` under mpiexec: exact resume after SIGKILL with 1 and 2
// ranks, the same result with 1 and 2 ranks, a truncated checkpoint skipped, finished stages skipped and a
// changed config refused, the progress output in a log and on a terminal, and mistakes reported before
// training starts.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <thread>
#include <nlohmann/json.hpp>
#include <sstream>

#include "framework/io/model_io.h"
#include "framework/io/safetensors.h"
#include "e2e_util.h"
#include "test_util.h"

namespace reglage {
namespace {

using test::source_path;

// A small SFT data set in the demo's shape, written by the test (prompt/completion rows).
void write_data(const std::string& path, int rows, int offset = 0) {
  static const char* names[] = {"Dalu", "Koti", "Mira", "Tobi", "Lena", "Rumi", "Sako", "Pela"};
  static const char* animals[] = {"cat", "dog", "bird", "fox", "frog", "duck"};
  std::ostringstream out;
  for (int i = 0; i < rows; ++i) {
    const std::string name = names[(i + offset) % 8], animal = animals[(i + offset) % 6];
    nlohmann::json row{{"prompt", "Write a story about a " + animal + " named " + name + "."},
                       {"completion", "Once upon a time, there was a " + animal + " named " + name + ". " + name +
                                          " liked to play in the park."}};
    out << row.dump() << "\n";
  }
  core::write_file_atomic(path, out.str());
}

std::string pipeline_yaml(const test::TempDir& tmp, const std::string& run_dir, const std::string& stage_extra = "") {
  return "run_dir: " + run_dir + "\nseed: 7\nthreads: 1\n"
         "model:\n  path: " + source_path("models/stories260K/stories260K.bin") + "\n"
         "lora: {rank: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj, o_proj, down_proj]}\n"
         "stages:\n"
         "  - name: sft\n    type: sft\n    data: " + tmp.path("train.jsonl") + "\n"
         "    eval_data: " + tmp.path("eval.jsonl") + "\n"
         "    max_steps: 8\n    batch_size: 4\n    grad_accum: 2\n    lr: 1.0e-3\n    warmup_steps: 2\n"
         "    checkpoint_every: 4\n    keep_checkpoints: 3\n    eval_every: 4\n" + stage_extra;
}

// Runs `reglage run` under mpiexec with `ranks` ranks; `env` is prepended (VAR=value ...).
test::CommandResult run_pipeline(int ranks, const std::string& yaml_path, const std::string& extra = "",
                                 const std::string& env = "") {
  test::TempDir out;
  const std::string cmd = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + env + " " +
                          std::string(REGLAGE_MPIEXEC) + " -n " + std::to_string(ranks) + " --oversubscribe " +
                          test::binary_for(env) + " run " + yaml_path + " " + extra + " > " +
                          out.path("o") + " 2> " + out.path("e");
  const int status = std::system(cmd.c_str());
  test::CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = core::read_file(out.path("o"));
  r.err = core::read_file(out.path("e"));
  return r;
}

std::map<std::string, torch::Tensor> final_adapter(const std::string& run_dir) {
  return io::read_safetensors(run_dir + "/sft/final/adapter_model.safetensors");
}

// metrics.jsonl without the timing fields, which differ between any two runs.
std::string metrics_without_timing(const std::string& run_dir) {
  std::istringstream in(core::read_file(run_dir + "/sft/metrics.jsonl"));
  std::string line, out;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    j.erase("tokens_per_s");
    out += j.dump() + "\n";
  }
  return out;
}

class SftPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    write_data(tmp_.path("train.jsonl"), 24);
    write_data(tmp_.path("eval.jsonl"), 6, 3);
  }
  std::string write_yaml(const std::string& name, const std::string& run_dir, const std::string& extra = "") {
    core::write_file_atomic(tmp_.path(name), pipeline_yaml(tmp_, run_dir, extra));
    return tmp_.path(name);
  }
  test::TempDir tmp_;
};

void expect_exact_resume(SftPipeline* t, test::TempDir& tmp, int ranks, const std::string& a_yaml,
                         const std::string& b_yaml, const std::string& a_dir, const std::string& b_dir) {
  auto whole = run_pipeline(ranks, a_yaml);
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  auto killed = run_pipeline(ranks, b_yaml, "", "REGLAGE_KILL_AFTER_CHECKPOINT=4");
  ASSERT_NE(killed.exit_code, 0) << "the kill hook did not fire";
  EXPECT_FALSE(core::file_exists(b_dir + "/sft/final"));
  auto resumed = run_pipeline(ranks, b_yaml);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resuming at step 4"), std::string::npos) << resumed.out;
  auto a = final_adapter(a_dir), b = final_adapter(b_dir);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  EXPECT_EQ(metrics_without_timing(a_dir), metrics_without_timing(b_dir));
}

TEST_F(SftPipeline, ExactResumeAfterSigkillOneRank) {
  expect_exact_resume(this, tmp_, 1, write_yaml("a.yaml", tmp_.path("a")), write_yaml("b.yaml", tmp_.path("b")),
                      tmp_.path("a"), tmp_.path("b"));
}

TEST_F(SftPipeline, ExactResumeAfterSigkillTwoRanks) {
  expect_exact_resume(this, tmp_, 2, write_yaml("a.yaml", tmp_.path("a")), write_yaml("b.yaml", tmp_.path("b")),
                      tmp_.path("a"), tmp_.path("b"));
}

// Largest per-tensor relative difference between two runs' final adapters.
double worst_relative_difference(const std::string& run_a, const std::string& run_b) {
  auto a = final_adapter(run_a), b = final_adapter(run_b);
  EXPECT_GT(a.size(), 0u);
  double worst = 0;
  for (const auto& [name, t] : a) {
    const double rel = (t - b.at(name)).abs().max().item<double>() / std::max(1e-12, t.abs().max().item<double>());
    worst = std::max(worst, rel);
  }
  return worst;
}

TEST_F(SftPipeline, OneAndTwoRanksComputeTheSame) {
  // 10 steps, global batch 4, dropout 0. One rank runs two micro-batches of 2 rows; two ranks run one
  // micro-batch of 2 rows each: the same micro-batches, summed by autograd in one case and by MPI in the other.
  const std::string common = "--set lora.dropout=0 --set stages.sft.max_steps=10";
  ASSERT_EQ(run_pipeline(1, write_yaml("one.yaml", tmp_.path("one")), common + " --set stages.sft.grad_accum=2").exit_code, 0);
  auto r = run_pipeline(2, write_yaml("two.yaml", tmp_.path("two")), common + " --set stages.sft.grad_accum=1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double worst = worst_relative_difference(tmp_.path("one"), tmp_.path("two"));
  std::printf("1 vs 2 ranks, matched micro-batches: %.3g relative\n", worst);
  EXPECT_LT(worst, 1e-5);
}

TEST_F(SftPipeline, OneAndTwoRanksWithTheSameConfigStayClose) {
  // Same config on both (grad_accum 2): the two ranks' micro-batches hold 1 row instead of 2, so padding and
  // matmul shapes differ and float32 rounding with them; Adam then amplifies the rounding of near-zero
  // gradients. Measured here: 1.7e-5 relative after 10 steps.
  const std::string common = "--set lora.dropout=0 --set stages.sft.max_steps=10";
  ASSERT_EQ(run_pipeline(1, write_yaml("one.yaml", tmp_.path("one")), common).exit_code, 0);
  auto r = run_pipeline(2, write_yaml("two.yaml", tmp_.path("two")), common);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double worst = worst_relative_difference(tmp_.path("one"), tmp_.path("two"));
  std::printf("1 vs 2 ranks, same config: %.3g relative\n", worst);
  EXPECT_LT(worst, 1e-4);
}

TEST_F(SftPipeline, TruncatedCheckpointIsSkipped) {
  auto yaml = write_yaml("p.yaml", tmp_.path("run"));
  ASSERT_NE(run_pipeline(1, yaml, "", "REGLAGE_KILL_AFTER_CHECKPOINT=8").exit_code, 0);
  // Cut the newest checkpoint's optimizer state in half: resume must fall back to step 4.
  const std::string victim = tmp_.path("run/sft/checkpoints/step-8/optimizer.safetensors");
  const std::string bytes = core::read_file(victim);
  std::ofstream(victim, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  auto r = run_pipeline(1, yaml);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("step-8 is incomplete or corrupt"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("resuming at step 4"), std::string::npos) << r.out;
  // and the result equals an undisturbed run
  auto ref_yaml = write_yaml("ref.yaml", tmp_.path("ref"));
  ASSERT_EQ(run_pipeline(1, ref_yaml).exit_code, 0);
  auto a = final_adapter(tmp_.path("ref")), b = final_adapter(tmp_.path("run"));
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
}

TEST_F(SftPipeline, DoneStagesAreSkippedAndChangesRefused) {
  auto yaml = write_yaml("p.yaml", tmp_.path("run"));
  ASSERT_EQ(run_pipeline(1, yaml).exit_code, 0);
  auto again = run_pipeline(1, yaml);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("done already, skipped"), std::string::npos) << again.out;
  auto changed = run_pipeline(1, yaml, "--set stages.sft.lr=2e-3");
  EXPECT_EQ(changed.exit_code, 1);
  EXPECT_NE(changed.err.find("different configuration"), std::string::npos) << changed.err;
  EXPECT_NE(changed.err.find("--restart-from sft"), std::string::npos) << changed.err;
  auto restarted = run_pipeline(1, yaml, "--set stages.sft.lr=2e-3 --restart-from sft");
  EXPECT_EQ(restarted.exit_code, 0) << restarted.err;
  auto status = test::run_reglage("status " + tmp_.path("run"));
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("sft (sft): done"), std::string::npos) << status.out;
}

TEST_F(SftPipeline, ProgressIsPlainLinesInALogAndOneRedrawnLineOnATerminal) {
  // Output to a file: plain lines at the log steps, with the ETA, and no carriage returns.
  auto piped = run_pipeline(2, write_yaml("p.yaml", tmp_.path("piped")), "--set stages.sft.log_every=4",
                            "REGLAGE_PROGRESS=auto");
  ASSERT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_NE(piped.out.find("[sft] step 4/8 (50%) loss "), std::string::npos) << piped.out;
  EXPECT_NE(piped.out.find(" tok/s | "), std::string::npos) << piped.out;
  EXPECT_NE(piped.out.find(" left\n"), std::string::npos) << piped.out;
  EXPECT_NE(piped.out.find("[sft] step 8/8 (100%) loss "), std::string::npos) << piped.out;
  EXPECT_EQ(piped.out.find("[sft] step 3/8"), std::string::npos) << piped.out;  // not a log step
  EXPECT_EQ(piped.out.find('\r'), std::string::npos) << piped.out;

  // mpiexec writing to a terminal (a pseudo-terminal from script(1)): the line is redrawn with "\r", the
  // eval message is printed above it, and the finished line is ended.
  test::TempDir out;
  const std::string inner = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 REGLAGE_PROGRESS=auto " +
                            std::string(REGLAGE_MPIEXEC) + " -n 2 --oversubscribe " + std::string(REGLAGE_BINARY) +
                            " run " + write_yaml("t.yaml", tmp_.path("tty"));
  const std::string cmd = "script -qec '" + inner + "' /dev/null > " + out.path("o") + " 2>&1 < /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << core::read_file(out.path("o"));
  const std::string tty = core::read_file(out.path("o"));
  EXPECT_NE(tty.find("\r[sft] 8/8 [####################] 100% | loss "), std::string::npos) << tty;
  EXPECT_NE(tty.find(" tok/s | done in "), std::string::npos) << tty;
  EXPECT_NE(tty.find("\r\x1b[K[sft] step 4 eval loss "), std::string::npos) << tty;
  EXPECT_EQ(tty.find("[sft] step 8/8"), std::string::npos) << tty;  // no plain lines on a terminal
  // Same computation either way.
  auto a = final_adapter(tmp_.path("piped")), b = final_adapter(tmp_.path("tty"));
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
}

TEST_F(SftPipeline, FullTrainingInBfloat16WritesAModelDirectory) {
  auto yaml = write_yaml("p.yaml", tmp_.path("run"));
  auto r = run_pipeline(2, yaml, "--set model.dtype=bfloat16 --set stages.sft.train=full_freeze_lower "
                                 "--set stages.sft.freeze_layers=2 --set stages.sft.max_steps=4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string out = tmp_.path("run/sft/final");
  ASSERT_TRUE(core::file_exists(out + "/config.json"));
  auto weights = io::read_safetensors(out + "/model.safetensors");
  EXPECT_EQ(weights.at("model.layers.4.mlp.down_proj.weight").scalar_type(), torch::kBFloat16);
  // frozen lower layers unchanged from the base model, upper ones trained
  auto m = io::load_model(source_path("models/stories260K/stories260K.bin"), torch::kBFloat16);
  auto params = m->named_parameters();
  EXPECT_TRUE(torch::equal(weights.at("model.layers.0.self_attn.q_proj.weight"),
                           *params.find("model.layers.0.self_attn.q_proj.weight")));
  EXPECT_FALSE(torch::equal(weights.at("model.layers.4.self_attn.q_proj.weight"),
                            *params.find("model.layers.4.self_attn.q_proj.weight")));
  // the output loads and generates like any model directory
  auto g = test::run_reglage("generate --model " + out + " --prompt 'Once upon a time' --max-new-tokens 5 --temperature 0");
  EXPECT_EQ(g.exit_code, 0) << g.err;
}

// Kills a run right after checkpoint 8 (step-4 and step-8 on disk), lets `damage` change step-8, resumes,
// and expects the warning naming step-8 and `problem`, a resume at step 4 and the final adapter of the
// undisturbed run in ref_dir.
void expect_fallback_to_step_4(SftPipeline* t, test::TempDir& tmp, const std::string& name,
                               const std::function<void(const std::string&)>& damage, const std::string& problem,
                               const std::string& ref_dir) {
  SCOPED_TRACE(name);
  core::write_file_atomic(tmp.path(name + ".yaml"), pipeline_yaml(tmp, tmp.path(name)));
  const std::string yaml = tmp.path(name + ".yaml");
  ASSERT_NE(run_pipeline(1, yaml, "", "REGLAGE_KILL_AFTER_CHECKPOINT=8").exit_code, 0);
  const std::string ckpts = tmp.path(name + "/sft/checkpoints");
  ASSERT_TRUE(core::file_exists(ckpts + "/step-4/manifest.json"));
  ASSERT_TRUE(core::file_exists(ckpts + "/step-8/manifest.json"));
  damage(ckpts);
  auto r = run_pipeline(1, yaml);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("step-8 is incomplete or corrupt (" + problem), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("resuming at step 4"), std::string::npos) << r.out;
  auto a = final_adapter(ref_dir), b = final_adapter(tmp.path(name));
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [key, tensor] : a) EXPECT_TRUE(torch::equal(tensor, b.at(key))) << key;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(core::read_file(path)); }
void write_json(const std::string& path, const nlohmann::json& j) { core::write_file_atomic(path, j.dump(2) + "\n"); }

TEST_F(SftPipeline, ACheckpointWithAnEmptiedManifestOrAMissingRequiredFileFallsBack) {
  ASSERT_EQ(run_pipeline(1, write_yaml("ref.yaml", tmp_.path("ref"))).exit_code, 0);
  // A damaged weights file behind a manifest that lists nothing: it used to resume at step 8 on those weights.
  expect_fallback_to_step_4(this, tmp_, "emptied", [](const std::string& ckpts) {
    const std::string victim = ckpts + "/step-8/trainable.safetensors";
    std::string bytes = core::read_file(victim);
    bytes[bytes.size() - 2] = char(bytes[bytes.size() - 2] ^ 0x10);  // tensor data, past the header
    std::ofstream(victim, std::ios::binary | std::ios::trunc) << bytes;
    auto m = read_json(ckpts + "/step-8/manifest.json");
    m["files"] = nlohmann::json::object();
    write_json(ckpts + "/step-8/manifest.json", m);
  }, "manifest.json lists no files", tmp_.path("ref"));
  // A file gone along with its entry: it used to stop the run instead of falling back.
  expect_fallback_to_step_4(this, tmp_, "dropped", [](const std::string& ckpts) {
    std::filesystem::remove(ckpts + "/step-8/optimizer.safetensors");
    auto m = read_json(ckpts + "/step-8/manifest.json");
    m["files"].erase("optimizer.safetensors");
    write_json(ckpts + "/step-8/manifest.json", m);
  }, "optimizer.safetensors is missing", tmp_.path("ref"));
}

TEST_F(SftPipeline, ACheckpointCopiedUnderANewerStepIsSkipped) {
  ASSERT_EQ(run_pipeline(1, write_yaml("ref.yaml", tmp_.path("ref"))).exit_code, 0);
  auto copy_4_as_8 = [](const std::string& ckpts) {
    std::filesystem::remove_all(ckpts + "/step-8");
    std::filesystem::copy(ckpts + "/step-4", ckpts + "/step-8");
  };
  expect_fallback_to_step_4(this, tmp_, "copied", copy_4_as_8, "manifest.json says step 4, the directory is step-8",
                            tmp_.path("ref"));
  // the copy's manifest edited to claim step 8: state.json still tells
  expect_fallback_to_step_4(this, tmp_, "relabelled", [&](const std::string& ckpts) {
    copy_4_as_8(ckpts);
    auto m = read_json(ckpts + "/step-8/manifest.json");
    m["step"] = 8;
    write_json(ckpts + "/step-8/manifest.json", m);
  }, "state.json says step 4, the directory is step-8", tmp_.path("ref"));
}

// A process started with /bin/sh -c in its own process group; killed with the group when the test ends.
class Spawned {
 public:
  explicit Spawned(const std::string& cmd) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~Spawned() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGKILL);
    wait_exit(120);
  }
  // Waits (bounded) for the shell to end; true when it did.
  bool wait_exit(int seconds) {
    for (int i = 0; i < seconds * 10; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

 private:
  pid_t pid_ = -1;
};

// The pid the run_dir lock file names, once it names one (0 when none within the bound).
long long wait_for_lock_holder(const std::string& lock_file) {
  for (int i = 0; i < 3000; ++i) {  // up to 5 minutes at 100 ms: a loaded machine starts ranks slowly
    if (core::file_exists(lock_file)) {
      try {
        const auto j = nlohmann::json::parse(core::read_file(lock_file));
        const long long pid = j.at("pid").get<long long>();
        if (::kill(pid_t(pid), 0) == 0) return pid;
      } catch (const std::exception&) {  // not written yet
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

// Waits (bounded, 5 minutes) until every path exists: a run takes its lock before it writes config.yaml and
// its stage directories.
bool wait_for_paths(const std::vector<std::string>& paths) {
  for (int i = 0; i < 3000; ++i) {
    bool all = true;
    for (const auto& p : paths) all = all && std::filesystem::exists(p);
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Waits (bounded) until process `pid` is stopped (state T in /proc/<pid>/stat).
bool wait_stopped(long long pid) {
  for (int i = 0; i < 1200; ++i) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t paren = stat.rfind(')');
    if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'T') return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST_F(SftPipeline, ASecondRunOnTheSameRunDirIsRefusedUntilTheFirstEnds) {
  const std::string yaml = write_yaml("p.yaml", tmp_.path("run"));
  const std::string run = tmp_.path("run");
  // The holder: a real run, long enough to be caught, stopped once it holds the lock.
  Spawned holder("env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + std::string(REGLAGE_MPIEXEC) +
                 " -n 1 --oversubscribe " + std::string(REGLAGE_BINARY) + " run " + yaml +
                 " --set stages.sft.max_steps=1000000 > " + tmp_.path("holder.out") + " 2>&1");
  const long long pid = wait_for_lock_holder(run + "/.reglage.lock");
  ASSERT_GT(pid, 0) << core::read_file(tmp_.path("holder.out"));
  struct KillAtEnd {  // the rank may sit in a process group of mpiexec's own: killed by pid, whatever happens
    pid_t pid;
    ~KillAtEnd() { ::kill(pid, SIGKILL); }
  } kill_at_end{pid_t(pid)};
  ASSERT_TRUE(wait_for_paths({run + "/config.yaml", run + "/sft"})) << core::read_file(tmp_.path("holder.out"));
  ASSERT_EQ(::kill(pid_t(pid), SIGSTOP), 0);
  ASSERT_TRUE(wait_stopped(pid));
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  const std::string names = "run_dir " + run + " is in use by another reglage run (pid " + std::to_string(pid) +
                            " on host " + host + ", since ";
  const std::string config_before = core::read_file(run + "/config.yaml");

  // One rank, two ranks, and a --restart-from that would have removed the holder's stage: all refused on
  // every rank with one line, nothing in run_dir touched.
  for (const auto& [ranks, extra] : std::vector<std::pair<int, std::string>>{
           {1, ""}, {2, ""}, {1, "--restart-from sft --set stages.sft.lr=2e-3"}}) {
    auto r = run_pipeline(ranks, yaml, extra);
    EXPECT_EQ(r.exit_code, 1) << ranks << " " << extra << ": " << r.err;
    EXPECT_NE(r.err.find("reglage run: error: " + names), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("wait for it to end or stop it\n"), std::string::npos) << r.err;
    size_t count = 0;
    for (size_t at = r.err.find(names); at != std::string::npos; at = r.err.find(names, at + 1)) ++count;
    EXPECT_EQ(count, 1u) << "printed by rank 0 only: " << r.err;
    EXPECT_EQ(r.out.find("training"), std::string::npos) << r.out;
  }
  EXPECT_EQ(core::read_file(run + "/config.yaml"), config_before);
  EXPECT_TRUE(core::is_directory(run + "/sft"));

  // The holder killed: the kernel dropped its lock; the file still names it, and that does not block.
  ASSERT_EQ(::kill(pid_t(pid), SIGKILL), 0);
  EXPECT_TRUE(holder.wait_exit(300));
  EXPECT_NE(core::read_file(run + "/.reglage.lock").find(std::to_string(pid)), std::string::npos);
  auto next = run_pipeline(1, yaml, "--restart-from sft");
  EXPECT_EQ(next.exit_code, 0) << next.err;
  EXPECT_TRUE(core::file_exists(run + "/sft/final/reglage_manifest.json"));
}

// A stage's init_from reads the earlier stage's final/ only as its manifest lists it.
TEST_F(SftPipeline, InitFromADamagedStageOutputIsRefused) {
  const std::string yaml = write_yaml("p.yaml", tmp_.path("run"));
  ASSERT_EQ(run_pipeline(1, yaml).exit_code, 0);
  const std::string victim = tmp_.path("run/sft/final/adapter_model.safetensors");
  std::string bytes = core::read_file(victim);
  bytes[bytes.size() - 3] = char(bytes[bytes.size() - 3] ^ 0x04);
  std::ofstream(victim, std::ios::binary | std::ios::trunc) << bytes;
  // the same pipeline with a second stage starting from sft's output
  core::write_file_atomic(tmp_.path("two.yaml"), core::read_file(yaml) +
                                                     "  - name: sft2\n    type: sft\n    init_from: sft\n"
                                                     "    data: " + tmp_.path("train.jsonl") + "\n    max_steps: 2\n"
                                                     "    batch_size: 4\n");
  auto r = run_pipeline(1, tmp_.path("two.yaml"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("done already, skipped"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find(tmp_.path("run/sft/final") + ": adapter_model.safetensors fails its checksum ("),
            std::string::npos) << r.err;
  EXPECT_FALSE(core::file_exists(tmp_.path("run/sft2/final")));
}

// Each mistake is reported (exit 1, the message names the problem) and no stage starts training.
TEST_F(SftPipeline, MistakesAreReportedBeforeTraining) {
  struct Case {
    std::string what, yaml_extra, set, data, expect;
  };
  const std::vector<Case> cases = {
      {"typo'd key", "    lrr: 1.0e-3\n", "", "", "did you mean 'lr'"},
      {"wrong type", "", "--set stages.sft.batch_size=lots", "", "batch_size"},
      {"negative lr", "", "--set stages.sft.lr=-0.1", "", "lr"},
      {"missing data file", "", "--set stages.sft.data=/nonexistent/d.jsonl", "", "/nonexistent/d.jsonl"},
      {"malformed JSON line", "", "", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": oops}\n", "train.jsonl:2"},
      {"empty data set", "", "", "\n", "train.jsonl"},
      {"row longer than the context", "", "--set stages.sft.max_seq_len=8", "", "train.jsonl:1"},
      {"batch not divisible", "", "--set stages.sft.batch_size=5", "", "batch_size"},
      {"unknown stage type", "", "--set stages.sft.type=dpo_magic", "", "dpo_magic"},
      {"init_from a later stage", "", "--set stages.sft.init_from=sft", "", "init_from"},
      {"bad override", "", "--set stages.nope.lr=1", "", "nope"},
      {"unwritable run_dir", "", "--set run_dir=/proc/reglage_cannot", "", "run_dir"},
  };
  for (const auto& c : cases) {
    test::TempDir tmp;
    write_data(tmp.path("train.jsonl"), 8);
    write_data(tmp.path("eval.jsonl"), 2);
    if (!c.data.empty()) core::write_file_atomic(tmp.path("train.jsonl"), c.data);
    core::write_file_atomic(tmp.path("p.yaml"), pipeline_yaml(tmp, tmp.path("run"), c.yaml_extra));
    auto r = run_pipeline(1, tmp.path("p.yaml"), c.set);
    EXPECT_EQ(r.exit_code, 1) << c.what << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.what << ": " << r.err;
    EXPECT_EQ(r.out.find("training"), std::string::npos) << c.what << ": training started: " << r.out;
  }
}

}  // namespace
}  // namespace reglage
