// `reglage export` end to end on a tiny run (one rank): stages sft (LoRA), sft2 (LoRA, init_from sft, so its
// lineage has sft's adapter baked in), full (full training, init_from sft) and rm (reward_model).
//   hf:   W = 1 loads back and matches the adapter model's logits, W = 0 is the original base bit for bit,
//         W = 0.5 is the midpoint of the weights; a fully trained stage and --dtype bfloat16 as well.
//   peft: loads back with lora::load_peft and gives identical logits; W scales lora_B; the note on stderr.
//   eval --merge-weight: W = 0 generates as the base, W = 1 is the default.
//   mistakes: one line on stderr naming the problem, exit 1, nothing written.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <sstream>

#include "e2e_util.h"
#include "framework/io/lineage.h"
#include "framework/io/model_io.h"
#include "framework/io/safetensors.h"
#include "framework/lora/adapter.h"
#include "test_util.h"

namespace reglage {
namespace {

const char* kNames[] = {"Dalu", "Koti", "Mira", "Tobi", "Lena", "Rumi", "Sako", "Pela"};

void write_data(const test::TempDir& tmp) {
  std::ostringstream sft, pairs, prompts;
  for (int i = 0; i < 16; ++i) {
    const std::string name = kNames[i % 8], other = kNames[(i + 3) % 8];
    sft << nlohmann::json{{"prompt", "Write a story about a cat named " + name + "."},
                          {"completion", "Once upon a time, there was a cat named " + name + ". " + name +
                                             " liked to play."}}
               .dump()
        << "\n";
    pairs << nlohmann::json{{"prompt", "Write a story about a dog named " + name + "."},
                            {"chosen", "Once upon a time, there was a dog named " + name + "."},
                            {"rejected", "Once upon a time, there was a dog named " + other + "."}}
                 .dump()
          << "\n";
  }
  for (int i = 0; i < 2; ++i) prompts << nlohmann::json{{"prompt", std::string("Once upon a time, ") + kNames[i]}}.dump() << "\n";
  core::write_file_atomic(tmp.path("sft.jsonl"), sft.str());
  core::write_file_atomic(tmp.path("pairs.jsonl"), pairs.str());
  core::write_file_atomic(tmp.path("prompts.jsonl"), prompts.str());
}

std::string pipeline_yaml(const test::TempDir& tmp) {
  const std::string common = ", batch_size: 4, lr: 1.0e-2}\n";
  return "run_dir: " + tmp.path("run") + "\nseed: 5\nthreads: 1\n"
         "model:\n  path: " + test::model_260k() + "\n"
         "lora: {rank: 4, alpha: 8, dropout: 0.0, targets: [q_proj, v_proj, o_proj, down_proj]}\n"
         "stages:\n"
         "  - {name: sft, type: sft, data: " + tmp.path("sft.jsonl") + ", max_steps: 4" + common +
         "  - {name: sft2, type: sft, init_from: sft, data: " + tmp.path("sft.jsonl") + ", max_steps: 4" + common +
         "  - {name: full, type: sft, train: full, init_from: sft, data: " + tmp.path("sft.jsonl") +
         ", max_steps: 2, lr: 1.0e-3, batch_size: 4}\n"
         "  - {name: rm, type: reward_model, init_from: sft, data: " + tmp.path("pairs.jsonl") + ", max_steps: 2" +
         common;
}

// Logits of three fixed token sequences: (3, 8, V).
torch::Tensor logits_of(model::CausalLM& m, const model::AdapterSet& adapters = {}) {
  torch::NoGradGuard no_grad;
  m->eval();
  const auto ids = torch::tensor({1, 403, 407, 280, 32, 99, 5, 260,       //
                                  1, 17, 300, 401, 2, 88, 120, 450,       //
                                  1, 270, 271, 272, 500, 3, 64, 128},
                                 torch::kInt64)
                       .view({3, 8});  // (3, 8)
  return m->forward({ids, {}, {}, nullptr, adapters});
}

std::map<std::string, torch::Tensor> weights_of(model::CausalLM& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : m->named_parameters(/*recurse=*/true)) out[item.key()] = item.value();
  return out;
}

// One run of the pipeline shared by every test in this process (ctest runs each test as its own process).
class Export : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    write_data(*tmp_);
    core::write_file_atomic(tmp_->path("p.yaml"), pipeline_yaml(*tmp_));
    run_status_ = test::run_pipeline(1, tmp_->path("p.yaml"));
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }
  void SetUp() override { ASSERT_EQ(run_status_, 0) << "reglage run failed on " << tmp_->path("p.yaml"); }

  static std::string run_dir() { return tmp_->path("run"); }
  static std::string out(const std::string& name) { return tmp_->path(name); }
  static test::CommandResult export_(const std::string& args) { return test::run_reglage("export " + args); }

  static test::TempDir* tmp_;
  static int run_status_;
};
test::TempDir* Export::tmp_ = nullptr;
int Export::run_status_ = -1;

TEST_F(Export, HfInterpolatesBetweenTheBaseAndTheFineTunedPolicy) {
  for (const std::string w : {"1", "0", "0.5"}) {
    auto r = export_(run_dir() + " --stage sft2 --format hf --out " + out("hf_" + w) + " --merge-weight " + w);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("wrote " + out("hf_" + w)), std::string::npos) << r.out;
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"})
      EXPECT_TRUE(core::file_exists(out("hf_" + w + "/" + f))) << w << ": " << f;
  }
  auto ft = io::load_model(out("hf_1")), zero = io::load_model(out("hf_0")), half = io::load_model(out("hf_0.5"));
  auto base = io::load_model(test::model_260k());

  // W = 1: the stage's policy as training saw it, the lineage with sft2's adapter active and unmerged.
  // Compared in float64, so that what differs is the export (its weights rounded to float32 once), not the
  // float32 rounding of two different orders of summation in the forward pass (printed too).
  const std::string final_dir = run_dir() + "/sft2/final";
  const io::Lineage lineage = io::read_lineage(final_dir);
  ASSERT_EQ(lineage.adapters.size(), 1u);  // sft's adapter baked in
  auto policy = io::load_lineage(lineage, torch::kFloat32);
  lora::load_peft(policy, "policy", final_dir);
  auto policy64 = io::load_lineage(lineage, torch::kFloat64);
  lora::load_peft(policy64, "policy", final_dir);
  auto ft64 = io::load_model(out("hf_1"), torch::kFloat64);
  const double diff64 = test::max_abs_diff(logits_of(ft64), logits_of(policy64, {"policy"}));
  const double diff32 = test::max_abs_diff(logits_of(ft), logits_of(policy, {"policy"}));
  const double moved = test::max_abs_diff(logits_of(base), logits_of(policy, {"policy"}));
  const double scale = logits_of(policy, {"policy"}).abs().max().item<double>();
  std::printf("W=1 export vs adapter model: max |logit diff| %.3g in float64, %.3g in float32 (logits up to %.3g; "
              "fine-tuning moved them by up to %.3g)\n", diff64, diff32, scale, moved);
  EXPECT_LT(diff64, 1e-5);
  EXPECT_LT(diff32, 1e-6 * scale * 10);  // float32: a few ulps of the largest logit
  EXPECT_GT(moved, 1e-3);  // the comparison above is not between two copies of the base

  // W = 0: the original base, bit for bit; W = 0.5: the midpoint of every weight.
  auto w_base = weights_of(base), w_ft = weights_of(ft), w_zero = weights_of(zero), w_half = weights_of(half);
  ASSERT_EQ(w_zero.size(), w_base.size());
  double worst_half = 0;
  for (const auto& [name, t0] : w_base) {
    EXPECT_TRUE(torch::equal(w_zero.at(name), t0)) << name;
    const auto mid = t0.to(torch::kFloat64) + 0.5 * (w_ft.at(name).to(torch::kFloat64) - t0.to(torch::kFloat64));
    worst_half = std::max(worst_half, test::max_abs_diff(w_half.at(name), mid));
  }
  EXPECT_TRUE(torch::equal(logits_of(zero), logits_of(base)));
  std::printf("W=0.5 export vs theta0 + 0.5 (theta1 - theta0): max |diff| %.3g\n", worst_half);
  EXPECT_LT(worst_half, 1e-6);
  const double half_to_base = test::max_abs_diff(logits_of(half), logits_of(base));
  EXPECT_GT(half_to_base, 0);
  EXPECT_LT(half_to_base, moved);
}

TEST_F(Export, HfOfAFullyTrainedStageAndInBfloat16) {
  auto r = export_(run_dir() + " --stage full --format hf --out " + out("full"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto exported = io::load_model(out("full")), trained = io::load_model(run_dir() + "/full/final");
  auto w_exported = weights_of(exported), w_trained = weights_of(trained);
  for (const auto& [name, t] : w_trained) EXPECT_TRUE(torch::equal(w_exported.at(name), t)) << name;

  r = export_(run_dir() + " --stage full --format hf --merge-weight 0 --out " + out("full_0"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto zero = io::load_model(out("full_0")), base = io::load_model(test::model_260k());
  EXPECT_TRUE(torch::equal(logits_of(zero), logits_of(base)));

  r = export_(run_dir() + " --stage full --format hf --dtype bfloat16 --out " + out("full_bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto bf16 = io::read_safetensors(out("full_bf16/model.safetensors"));
  for (const auto& [name, t] : w_trained) {
    ASSERT_EQ(bf16.at(name).scalar_type(), torch::kBFloat16) << name;
    EXPECT_TRUE(torch::equal(bf16.at(name), t.to(torch::kBFloat16))) << name;
  }

  // Between the ends: interpolated in float64 and rounded once to bfloat16.
  r = export_(run_dir() + " --stage full --format hf --merge-weight 0.5 --dtype bfloat16 --out " + out("half_bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto half = io::read_safetensors(out("half_bf16/model.safetensors"));
  auto w_base = weights_of(base);
  for (const auto& [name, t] : w_trained) {
    const auto mid = w_base.at(name).to(torch::kFloat64) * 0.5 + t.to(torch::kFloat64) * 0.5;
    EXPECT_TRUE(torch::equal(half.at(name), mid.to(torch::kBFloat16))) << name;
  }
}

// A finished run is exported (and evaluated) where its training data no longer is.
TEST_F(Export, NeedsTheModelButNotTheTrainingData) {
  const std::string data = tmp_->path("sft.jsonl"), moved = tmp_->path("sft.jsonl.moved");
  ASSERT_EQ(std::rename(data.c_str(), moved.c_str()), 0);
  auto r = export_(run_dir() + " --stage sft --format peft --out " + out("peft-no-data"));
  auto e = test::run_reglage("eval --config " + run_dir() + "/config.yaml --stage sft --prompts " +
                             tmp_->path("prompts.jsonl") + " --max-new-tokens 4");
  ASSERT_EQ(std::rename(moved.c_str(), data.c_str()), 0);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(core::file_exists(out("peft-no-data/adapter_model.safetensors")));
  EXPECT_EQ(e.exit_code, 0) << e.err;
}

TEST_F(Export, PeftLoadsBackAsTheStagesOwnAdapter) {
  const std::string final_dir = run_dir() + "/sft2/final";
  auto r = export_(run_dir() + " --stage sft2 --format peft --out " + out("peft"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // sft2 sits on sft's merged model: one note naming it and the command that exports it.
  EXPECT_NE(r.err.find("note: this adapter applies to stage sft's merged model"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("reglage export " + run_dir() + " --stage sft --format hf"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  const io::Lineage lineage = io::read_lineage(final_dir);
  const io::Lineage copied = io::read_lineage(out("peft"));
  EXPECT_EQ(copied.base_model, lineage.base_model);
  EXPECT_EQ(copied.adapters, lineage.adapters);

  // Identical tensors, and identical logits on the lineage model.
  auto own = io::read_safetensors(final_dir + "/adapter_model.safetensors");
  auto exported = io::read_safetensors(out("peft/adapter_model.safetensors"));
  ASSERT_EQ(own.size(), exported.size());
  for (const auto& [name, t] : own) EXPECT_TRUE(torch::equal(exported.at(name), t)) << name;
  auto m = io::load_lineage(lineage, torch::kFloat32);
  lora::load_peft(m, "own", final_dir);
  lora::load_peft(m, "exported", out("peft"));
  EXPECT_TRUE(torch::equal(logits_of(m, {"exported"}), logits_of(m, {"own"})));

  // W scales lora_B and leaves lora_A.
  r = export_(run_dir() + " --stage sft2 --format peft --merge-weight 0.25 --out " + out("peft_quarter"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto quarter = io::read_safetensors(out("peft_quarter/adapter_model.safetensors"));
  for (const auto& [name, t] : own) {
    const bool is_b = name.find(".lora_B.") != std::string::npos;
    EXPECT_TRUE(torch::equal(quarter.at(name), is_b ? t * 0.25 : t)) << name;
  }

  // sft sits on the base: no note, and adapter_config.json names the base.
  r = export_(run_dir() + " --stage sft --format peft --out " + out("peft_sft"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const auto cfg = nlohmann::json::parse(core::read_file(out("peft_sft/adapter_config.json")));
  EXPECT_EQ(cfg.at("base_model_name_or_path"), test::model_260k());
}

TEST_F(Export, EvalMergeWeightUsesTheInterpolatedPolicy) {
  const std::string eval = "eval --config " + run_dir() + "/config.yaml --prompts " + out("prompts.jsonl") +
                           " --max-new-tokens 8 --show 2 --threads 1";
  auto base = test::run_reglage(eval + " --stage base");
  auto zero = test::run_reglage(eval + " --stage sft2 --merge-weight 0");
  ASSERT_EQ(base.exit_code, 0) << base.err;
  ASSERT_EQ(zero.exit_code, 0) << zero.err;
  EXPECT_EQ(zero.err, base.err);  // the same greedy responses: W = 0 is the base
  auto dflt = test::run_reglage(eval + " --stage sft2");
  auto one = test::run_reglage(eval + " --stage sft2 --merge-weight 1");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out, dflt.out);
  EXPECT_EQ(one.err, dflt.err);
  auto half = test::run_reglage(eval + " --stage sft2 --merge-weight 0.5");
  EXPECT_EQ(half.exit_code, 0) << half.err;
  auto bad = test::run_reglage(eval + " --stage sft2 --merge-weight 2");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--merge-weight = 2 (must be in [0, 1])"), std::string::npos) << bad.err;
}

TEST_F(Export, MistakesAreOneLineErrors) {
  struct Case {
    std::string what, args, expect;
  };
  const std::string run = run_dir(), to = " --out " + out("never");
  const std::vector<Case> cases = {
      {"weight above 1", run + " --stage sft --format hf --merge-weight 1.5" + to, "--merge-weight = 1.5 (must be in [0, 1])"},
      {"negative weight", run + " --stage sft --format hf --merge-weight -0.1" + to, "--merge-weight = -0.1 (must be in [0, 1])"},
      {"weight not a number", run + " --stage sft --format peft --merge-weight half" + to, "--merge-weight = 'half' (expected a number)"},
      {"unknown stage", run + " --stage sfft --format hf" + to, "--stage sfft: no such stage"},
      {"reward model", run + " --stage rm --format hf" + to, "--stage rm: its type is reward_model"},
      {"peft of a full stage", run + " --stage full --format peft" + to, "use --format hf"},
      {"missing run dir", out("nowhere") + " --stage sft --format hf" + to, out("nowhere") + ": no such run directory"},
      {"no run dir", "--stage sft --format hf" + to, "usage: reglage export RUN_DIR"},
      {"unknown format", run + " --stage sft --format onnx" + to, "--format = 'onnx' (expected hf or peft)"},
      {"unknown dtype", run + " --stage sft --format hf --dtype float64" + to, "--dtype = 'float64'"},
      {"dtype with peft", run + " --stage sft --format peft --dtype bfloat16" + to, "--dtype applies to --format hf"},
      {"out not empty", run + " --stage sft --format hf --out " + run, "already exists and is not empty"},
      {"typo'd flag", run + " --stage sft --format hf --merge-wieght 0.5" + to, "did you mean --merge-weight"},
      {"missing flag", run + " --stage sft" + to, "missing required option --format"},
  };
  for (const auto& c : cases) {
    auto r = export_(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.what << ": " << r.err;
    EXPECT_EQ(r.err.rfind("reglage export: error: ", 0), 0u) << c.what << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.what << ": " << r.err;
    EXPECT_FALSE(core::file_exists(out("never"))) << c.what;
  }
}

// A copy of the shared run whose stage outputs can be damaged without touching the other tests' run; its
// config.yaml names the copy as run_dir.
std::string copy_of_run(const std::string& from, const std::string& to) {
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
  std::string config = core::read_file(to + "/config.yaml");
  const std::string line = "run_dir: " + from + "\n";
  const size_t at = config.find(line);
  EXPECT_NE(at, std::string::npos) << config;
  if (at != std::string::npos) config.replace(at, line.size(), "run_dir: " + to + "\n");
  core::write_file_atomic(to + "/config.yaml", config);
  return to;
}

void flip_byte(const std::string& path, size_t from_end) {
  std::string bytes = core::read_file(path);
  ASSERT_GT(bytes.size(), from_end) << path;
  char& b = bytes[bytes.size() - 1 - from_end];  // in the tensor data, past the safetensors header
  b = char(b ^ 0x01);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// `reglage args` under timeout(1): a serve-reward that accepted a damaged output would serve until stopped.
test::CommandResult run_bounded(const std::string& args) {
  test::TempDir tmp;
  const std::string cmd = "timeout 300 " + std::string(REGLAGE_BINARY) + " " + args + " > " + tmp.path("out") +
                          " 2> " + tmp.path("err");
  const int status = std::system(cmd.c_str());
  test::CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = core::read_file(tmp.path("out"));
  r.err = core::read_file(tmp.path("err"));
  return r;
}

TEST_F(Export, EveryStageOutputCarriesAManifest) {
  for (const std::string stage : {"sft", "sft2", "full", "rm"}) {
    const std::string dir = run_dir() + "/" + stage + "/final";
    ASSERT_TRUE(core::file_exists(dir + "/reglage_manifest.json")) << dir;
    const auto m = nlohmann::json::parse(core::read_file(dir + "/reglage_manifest.json"));
    size_t files = 0;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
      if (entry.is_regular_file() && entry.path().filename() != "reglage_manifest.json") ++files;
    EXPECT_EQ(m.at("files").size(), files) << dir;
  }
}

TEST_F(Export, AFlippedByteInAStageOutputIsRefusedByEveryReader) {
  const std::string run = copy_of_run(run_dir(), out("tampered"));
  flip_byte(run + "/sft/final/adapter_model.safetensors", 3);
  flip_byte(run + "/rm/final/reward_head.safetensors", 1);
  flip_byte(run + "/full/final/model.safetensors", 5);
  struct Case {
    std::string what, command, expect;
  };
  const std::string prompts = out("prompts.jsonl");
  const std::vector<Case> cases = {
      {"export peft", "export " + run + " --stage sft --format peft --out " + out("never"),
       run + "/sft/final: adapter_model.safetensors fails its checksum ("},
      {"export hf", "export " + run + " --stage sft --format hf --out " + out("never"),
       run + "/sft/final: adapter_model.safetensors fails its checksum ("},
      {"export of a full stage", "export " + run + " --stage full --format hf --out " + out("never"),
       run + "/full/final: model.safetensors fails its checksum ("},
      {"eval", "eval --config " + run + "/config.yaml --stage sft --prompts " + prompts,
       run + "/sft/final: adapter_model.safetensors fails its checksum ("},
      {"serve-reward", "serve-reward --adapter " + run + "/rm/final --port 0",
       run + "/rm/final: reward_head.safetensors fails its checksum ("},
  };
  for (const auto& c : cases) {
    auto r = run_bounded(c.command);
    EXPECT_EQ(r.exit_code, 1) << c.what << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.what << ": " << r.err;
    EXPECT_NE(r.err.find("re-run stage '"), std::string::npos) << c.what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.what << ": " << r.err;
    EXPECT_FALSE(core::file_exists(out("never"))) << c.what;
  }
  // the untouched stage of the same copy still exports
  auto ok = export_(run + " --stage sft2 --format peft --out " + out("sft2_peft"));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST_F(Export, AStageOutputFromBeforeManifestsExportsWithAWarning) {
  const std::string run = copy_of_run(run_dir(), out("old"));
  std::filesystem::remove(run + "/sft/final/reglage_manifest.json");
  auto r = export_(run + " --stage sft --format peft --out " + out("old_peft"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: " + run + "/sft/final: no reglage_manifest.json"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace reglage
