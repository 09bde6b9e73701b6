// reglage_bench: performance measurements, printed as one JSON object per line and a table.
//   reglage_bench generate [options]   batched generation tokens/s (see bench_generate.cpp)
//   reglage_bench peak [--threads N]   the matmul ceiling MFU is measured against, fp32 and bf16
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "bench/bench_generate.h"
#include "framework/core/blas_setup.h"
#include "framework/core/error.h"


namespace {

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

}  // namespace

int main(int argc, char** argv) {
  reglage::core::ensure_blas_kernels(argv);
  using namespace reglage::bench;
  try {
    const std::string what = argc > 1 ? argv[1] : "";
    if (what != "generate" && what != "peak") {
      std::fprintf(stderr, "usage: reglage_bench generate|peak [--threads N] [...]\n");
      return 2;
    }
    GenerateOptions opt;
    for (int i = 2; i < argc; ++i) {
      const std::string flag = argv[i];
      if (i + 1 >= argc) reglage::fail(flag, " needs a value");
      const std::string v = argv[++i];
      if (flag == "--threads") opt.threads = int(parse_long(flag, v));
      else if (flag == "--model" && what == "generate") opt.model_path = v;
      else if (flag == "--new-tokens" && what == "generate") opt.new_tokens = parse_long(flag, v);
      else if (flag == "--repeats" && what == "generate") opt.repeats = int(parse_long(flag, v));
      else if (flag == "--dtypes" && what == "generate") opt.dtypes = split_commas(v);
      else if (flag == "--batches" && what == "generate") {
        opt.batches.clear();
        for (const auto& b : split_commas(v)) opt.batches.push_back(parse_long(flag, b));
      } else reglage::fail("unknown option ", flag, " for '", what, "'");
    }
    if (opt.threads < 1) reglage::fail("--threads must be >= 1");
    if (what == "peak") {
      torch::set_num_threads(opt.threads);
      for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
        const double peak = measure_matmul_peak(dt, 1024, 2.0);
        std::printf("{\"name\": \"matmul_peak\", \"dtype\": \"%s\", \"threads\": %d, \"gflops\": %.1f}\n",
                    dt == torch::kFloat32 ? "float32" : "bfloat16", opt.threads, peak / 1e9);
      }
      return 0;
    }
    print_table(bench_generate(opt));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reglage_bench: error: %s\n", e.what());
    return 1;
  }
}
