#include "bench/bench_util.h"

#include <ATen/Parallel.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/kernels/frozen_linear.h"

namespace reglage::bench {

double measure_matmul_peak(torch::Dtype dtype, int64_t n, double seconds) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  // The products the framework runs (kernels::matmul_2d): bfloat16 widened to float32 where this CPU multiplies
  // faster in float32 (kernels/bf16_products.h), so MFU is measured against the path the steps take.
  auto c = kernels::matmul_2d(a, b);  // warm-up: lets oneDNN/OpenBLAS pick kernels
  // The best of windows of about a quarter second: on a shared VM a neighbour's burst lowers one window, and a
  // ceiling is what the machine can do, not its average over the disturbances.
  const double window = std::min(seconds, 0.25);
  double best = 0, elapsed = 0;
  const auto start = std::chrono::steady_clock::now();
  while (elapsed < seconds) {
    int64_t reps = 0;
    const auto w0 = std::chrono::steady_clock::now();
    double w = 0;
    while (w < window) {
      c = kernels::matmul_2d(a, b);
      ++reps;
      w = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
    }
    best = std::max(best, 2.0 * double(n) * n * n * reps / w);
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return best;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

namespace {

// Sums of [b, e): a plain loop (the hardware prefetcher alone); the same prefetching 4 KiB ahead in software
// with the T2 hint, as the weight-only kernel does (on some VMs the hardware prefetcher alone reaches a
// fraction of what a core can read); and 32-byte loads into eight independent sums with that prefetch, so that
// neither the adds nor one dependency chain limit the reader (on the AVX2 EPYC VM: 15, 21-25 and 24-26 GB/s on
// 2 threads, with the non-temporal hint then).
constexpr int kReaders = 3;

// Built twice on x86-64 (AVX2 and the baseline), the loader picking the one this CPU runs.
#if defined(__x86_64__)
#define REGLAGE_WIDE_LOADS __attribute__((target_clones("avx2", "default")))
#else
#define REGLAGE_WIDE_LOADS
#endif
REGLAGE_WIDE_LOADS int64_t sum_range(const int64_t* p, int64_t b, int64_t e, int64_t n, int reader) {
  constexpr int64_t kLine = 8, kAhead = 512;  // int64 per 64-byte line; elements prefetched ahead (4 KiB)
  if (reader == 2) {
    int64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = b;
    for (; i + kLine <= e; i += kLine) {
      __builtin_prefetch(p + std::min(i + kAhead, n - 1), 0, 1);
      for (int j = 0; j < 8; ++j) acc[j] += p[i + j];  // vectorised by the compiler: whole-line loads
    }
    int64_t s = 0;
    for (int j = 0; j < 8; ++j) s += acc[j];
    for (; i < e; ++i) s += p[i];
    return s;
  }
  int64_t s = 0;
  for (int64_t i = b; i < e; i += kLine) {
    if (reader == 1) __builtin_prefetch(p + std::min(i + kAhead, n - 1), 0, 1);
    for (int64_t j = i; j < std::min(i + kLine, e); ++j) s += p[j];
  }
  return s;
}

}  // namespace

double measure_read_bandwidth(int repeats) {
  const int64_t n = int64_t(256) << 20 >> 3;  // 256 MiB of int64, far beyond the caches
  std::vector<int64_t> buf(size_t(n), 1);
  // Each thread sums its share; the best reader and repeat is the limit a decode step is held to.
  double best = 1e30;
  for (int r = 0; r < repeats; ++r)
    for (int reader = 0; reader < kReaders; ++reader) {
      std::atomic<int64_t> total{0};
      const auto t0 = std::chrono::steady_clock::now();
      at::parallel_for(0, n, n / 64, [&](int64_t b, int64_t e) { total += sum_range(buf.data(), b, e, n, reader); });
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      if (total.load() != n) fail("read bandwidth: summed ", total.load(), " of ", n);
    }
  return double(n) * 8.0 / best;
}

double measure_copy_bandwidth(int repeats) {
  const int64_t n = int64_t(256) << 20;  // bytes per buffer, far beyond the caches
  std::vector<char> from(size_t(n), 1), to(size_t(n), 0);
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    at::parallel_for(0, n, n / 64, [&](int64_t b, int64_t e) { std::memcpy(to.data() + b, from.data() + b, size_t(e - b)); });
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  if (to[size_t(n) - 1] != 1) fail("copy bandwidth: the last byte was not copied");
  return 2.0 * double(n) / best;  // read + written
}

void print_json(const Measurement& m) {
  nlohmann::json j{{"name", m.name},         {"shape", m.shape}, {"dtype", m.dtype},
                   {"threads", m.threads},   {"ranks", m.ranks}, {"tokens_per_s", m.tokens_per_s},
                   {"step_ms", m.step_ms},   {"gflops", m.gflops}, {"mfu", m.mfu},
                   {"peak_rss_mb", m.peak_rss_mb}};
  if (m.bw_fraction > 0) j["bw_fraction"] = m.bw_fraction;
  if (m.probe_gb_per_s.second > 0) j["probe_gb_per_s"] = {m.probe_gb_per_s.first, m.probe_gb_per_s.second};
  if (m.copy_bw_fraction > 0) j["copy_bw_fraction"] = m.copy_bw_fraction;
  if (m.copy_probe_gb_per_s.second > 0)
    j["copy_probe_gb_per_s"] = {m.copy_probe_gb_per_s.first, m.copy_probe_gb_per_s.second};
  if (m.peak_gflops.second > 0) j["peak_gflops"] = {m.peak_gflops.first, m.peak_gflops.second};
  if (m.mfu_with_attention > 0) j["mfu_with_attention"] = m.mfu_with_attention;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

void print_table(const std::vector<Measurement>& ms) {
  std::printf("\n%-8s %-40s %-14s %7s %5s %10s %9s %8s %6s %8s %6s %7s\n", "name", "shape", "dtype", "threads",
              "ranks", "tokens/s", "step ms", "GFLOP/s", "MFU %", "RSS MiB", "BW %", "cBW %");
  for (const auto& m : ms)
    std::printf("%-8s %-40s %-14s %7d %5d %10.0f %9.2f %8.1f %6.2f %8.1f %6.1f %7.1f\n", m.name.c_str(),
                m.shape.c_str(), m.dtype.c_str(), m.threads, m.ranks, m.tokens_per_s, m.step_ms, m.gflops,
                100.0 * m.mfu, m.peak_rss_mb, 100.0 * m.bw_fraction, 100.0 * m.copy_bw_fraction);
}

}  // namespace reglage::bench
