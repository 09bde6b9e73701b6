// reglage_bench: performance measurements, printed as one JSON object per line and a table.
//   reglage_bench all                 everything below, one table (run from the repository root)
//   reglage_bench peak [--threads N]  the matmul ceiling MFU is measured against, fp32 and bf16; with
//                                     --model PATH [--batch B --seq T] also that model's training products
//                                     in both dtypes, alternating (bench_gemm.cpp)
//   reglage_bench train [...]         sft steps: full and LoRA, fp32 and bf16 (bench_train.cpp)
//   reglage_bench generate [...]      batched generation tokens/s (bench_generate.cpp)
//   reglage_bench ppo|scale|memory    through the real pipeline under mpirun (bench_pipeline.cpp)
//   reglage_bench tokenize [...]      encoding 100 KB and 1 MB rows, both tokenizers (bench_tokenize.cpp)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "bench/bench_gemm.h"
#include "bench/bench_generate.h"
#include "bench/bench_pipeline.h"
#include "bench/bench_tokenize.h"
#include "bench/bench_train.h"
#include "framework/core/blas_setup.h"
#include "framework/core/error.h"
#include "framework/kernels/bf16_products.h"

namespace {

using namespace reglage::bench;

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

long parse_long(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end) reglage::fail(flag, " = '", v, "' (expected an integer)");
  return x;
}

// A finite number >= 0 (a temperature).
double parse_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(x) || x < 0) reglage::fail(flag, " = '", v, "' (expected a number >= 0)");
  return x;
}

std::vector<Measurement> peak(int threads) {
  torch::set_num_threads(threads);
  std::vector<Measurement> out;
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    Measurement m;
    m.name = "peak";
    m.shape = "matmul 1024x1024x1024";
    if (dt == torch::kBFloat16)
      std::fprintf(stderr, "bfloat16 products: %s\n", reglage::kernels::bf16_products_choice().c_str());
    m.dtype = dt == torch::kFloat32 ? "float32" : "bfloat16";
    m.threads = threads;
    m.gflops = measure_matmul_peak(dt, 1024, 2.0) / 1e9;
    m.mfu = 1.0;
    m.peak_rss_mb = peak_rss_mb();
    print_json(m);
    out.push_back(m);
  }
  return out;
}

const char* kUsage =
    "usage: reglage_bench all|peak|train|generate|ppo|scale|memory|tokenize [options]\n"
    "  common:   --threads N (train, generate, peak; default 2)   --cores N (ppo, scale, memory; default 2)\n"
    "  peak:     --model PATH --batch B --seq T (that model's products at B x T rows, fp32 and bf16 alternating)\n"
    "  train:    --shapes stories260K,stories15M,model --modes full,lora --dtypes float32,bfloat16 --seq T --steps K\n"
    "            --model PATH --batch B (shape model) --storages auto,bfloat16,int8 --checkpointing 0|1\n"
    "            --interleave 0|1 (the dtypes' steps in turn, with the speed-up of each over the first per round)\n"
    "            --profile PREFIX (one more step per run under LibTorch's profiler: PREFIX-....json, a Chrome trace)\n"
    "  generate: --batches 1,8,32 --dtypes float32,bfloat16 --storages auto,bfloat16,int8 --new-tokens N\n"
    "            --decodes fused,ops --repeats R --model PATH --temperature T (default 1; 0 = greedy)\n"
    "  ppo:      --iterations N      scale: --steps N\n"
    "  tokenize: --sizes 100000,1000000 (bytes per row) --texts prose,word,repeat --repeats R\n";

}  // namespace

int main(int argc, char** argv) {
  reglage::core::ensure_blas_kernels(argv);
  try {
    const std::string what = argc > 1 ? argv[1] : "";
    const std::vector<std::string> known = {"all", "peak", "train", "generate", "ppo", "scale", "memory", "tokenize"};
    if (std::find(known.begin(), known.end(), what) == known.end()) {
      std::fprintf(stderr, "%s", kUsage);
      return 2;
    }
    GenerateOptions gen;
    TrainOptions train;
    PipelineOptions pipe;
    TokenizeOptions tokenize;
    int threads = 2;
    bool model_given = false;  // peak measures a model's own products only when asked to
    for (int i = 2; i < argc; ++i) {
      const std::string flag = argv[i];
      if (i + 1 >= argc) reglage::fail(flag, " needs a value");
      const std::string v = argv[++i];
      if (flag == "--threads") threads = int(parse_long(flag, v));
      else if (flag == "--cores") pipe.cores = int(parse_long(flag, v));
      else if (flag == "--model") gen.model_path = train.model_path = v, model_given = true;
      else if (flag == "--new-tokens") gen.new_tokens = parse_long(flag, v);
      else if (flag == "--temperature") gen.temperature = parse_double(flag, v);
      else if (flag == "--repeats") gen.repeats = tokenize.repeats = int(parse_long(flag, v));
      else if (flag == "--dtypes") gen.dtypes = train.dtypes = split_commas(v);
      else if (flag == "--storages") gen.storages = train.storages = split_commas(v);
      else if (flag == "--decodes") gen.decodes = split_commas(v);
      else if (flag == "--batch") train.batch_model = parse_long(flag, v);
      else if (flag == "--checkpointing") train.checkpointing = parse_long(flag, v) != 0;
      else if (flag == "--interleave") train.interleave = parse_long(flag, v) != 0;
      else if (flag == "--profile") train.profile = v;
      else if (flag == "--shapes") train.shapes = split_commas(v);
      else if (flag == "--modes") train.modes = split_commas(v);
      else if (flag == "--seq") train.seq = parse_long(flag, v);
      else if (flag == "--steps") train.steps = int(parse_long(flag, v)), pipe.sft_steps = parse_long(flag, v);
      else if (flag == "--iterations") pipe.ppo_iterations = parse_long(flag, v);
      else if (flag == "--texts") tokenize.texts = split_commas(v);
      else if (flag == "--sizes") {
        tokenize.sizes.clear();
        for (const auto& b : split_commas(v)) tokenize.sizes.push_back(parse_long(flag, b));
      } else if (flag == "--batches") {
        gen.batches.clear();
        for (const auto& b : split_commas(v)) gen.batches.push_back(parse_long(flag, b));
      } else reglage::fail("unknown option ", flag, "\n", kUsage);
    }
    if (threads < 1 || pipe.cores < 1) reglage::fail("--threads and --cores must be >= 1");
    if (train.steps < 1) reglage::fail("--steps = ", train.steps, " (expected >= 1: the timed steps)");
    if (train.batch_model < 1) reglage::fail("--batch = ", train.batch_model, " (expected >= 1: sequences per step)");
    if (train.seq < 1) reglage::fail("--seq = ", train.seq, " (expected >= 1: tokens per sequence)");
    gen.threads = train.threads = threads;

    std::vector<Measurement> all;
    auto add = [&all](const std::vector<Measurement>& ms) { all.insert(all.end(), ms.begin(), ms.end()); };
    if (what == "peak" || what == "all") add(peak(threads));
    if (what == "peak" && model_given) add(bench_model_gemm({train.model_path, train.batch_model * train.seq, 6, threads}));
    if (what == "train" || what == "all") add(bench_train(train));
    if (what == "generate" || what == "all") add(bench_generate(gen));
    if (what == "ppo" || what == "all") add(bench_ppo(pipe));
    if (what == "scale" || what == "all") add(bench_scale(pipe));
    if (what == "memory" || what == "all") add(bench_memory(pipe));
    if (what == "tokenize" || what == "all") add(bench_tokenize(tokenize));
    print_table(all);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reglage_bench: error: %s\n", e.what());
    return 1;
  }
}
