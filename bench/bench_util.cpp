#include "bench/bench_util.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace reglage::bench {

double measure_matmul_peak(torch::Dtype dtype, int64_t n, double seconds) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  auto c = torch::matmul(a, b);  // warm-up: lets oneDNN/OpenBLAS pick kernels
  int64_t reps = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    c = torch::matmul(a, b);
    ++reps;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return 2.0 * double(n) * n * n * reps / elapsed;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

void print_json(const Measurement& m) {
  nlohmann::json j{{"name", m.name},         {"shape", m.shape}, {"dtype", m.dtype},
                   {"threads", m.threads},   {"ranks", m.ranks}, {"tokens_per_s", m.tokens_per_s},
                   {"step_ms", m.step_ms},   {"gflops", m.gflops}, {"mfu", m.mfu},
                   {"peak_rss_mb", m.peak_rss_mb}};
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

void print_table(const std::vector<Measurement>& ms) {
  std::printf("\n%-8s %-40s %-9s %7s %5s %10s %9s %8s %6s %8s\n", "name", "shape", "dtype", "threads", "ranks",
              "tokens/s", "step ms", "GFLOP/s", "MFU %", "RSS MiB");
  for (const auto& m : ms)
    std::printf("%-8s %-40s %-9s %7d %5d %10.0f %9.2f %8.1f %6.2f %8.1f\n", m.name.c_str(), m.shape.c_str(),
                m.dtype.c_str(), m.threads, m.ranks, m.tokens_per_s, m.step_ms, m.gflops, 100.0 * m.mfu,
                m.peak_rss_mb);
}

}  // namespace reglage::bench
