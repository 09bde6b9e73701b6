// Shared pieces of the benchmarks: the machine's measured matmul peak, peak memory, JSON lines and a table.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace reglage::bench {

struct Measurement {
  std::string name;     // e.g. "generate"
  std::string shape;    // e.g. "stories260K batch=32 new=128"
  std::string dtype;    // float32 | bfloat16
  int threads = 1;
  int ranks = 1;
  double tokens_per_s = 0;
  double step_ms = 0;   // one step: a decode step for generation, an optimizer step for training
  double gflops = 0;    // achieved GFLOP/s by the benchmark's FLOP count (the peak itself for "peak")
  double mfu = 0;       // achieved FLOP/s over the measured matmul peak at the same dtype and threads
  double mfu_with_attention = 0;  // training: the same with attention's score and value products counted (PaLM's MFU)
  double peak_rss_mb = 0;
  double bw_fraction = 0;  // generation: weight bytes read per second over the measured read bandwidth
  std::pair<double, double> probe_gb_per_s = {0, 0};  // generation: the lowest and highest read probe beside the runs
  double copy_bw_fraction = 0;  // generation: the same over the measured copy bandwidth (STREAM's count)
  std::pair<double, double> copy_probe_gb_per_s = {0, 0};  // generation: the lowest and highest copy probe
  std::pair<double, double> peak_gflops = {0, 0};     // training: the matmul peak just before and just after the run
};

// Bytes per second of a multi-threaded sequential read of a buffer far larger than the caches (256 MiB), best
// of `repeats`, at the current thread count: the ceiling of a memory-bound decode step.
double measure_read_bandwidth(int repeats = 5);

// Bytes per second of a multi-threaded copy between two 256 MiB buffers, counted as STREAM's Copy counts them
// (bytes read plus bytes written), best of `repeats`: the machine's copy bandwidth. memcpy writes such sizes
// with non-temporal stores, so the bytes counted are the bytes that cross the memory bus.
double measure_copy_bandwidth(int repeats = 5);

// FLOP/s of square matrix products (n x n) in `dtype` at the current thread count: the ceiling that MFU is
// measured against. Runs for about `seconds` and returns the best window of a quarter second.
double measure_matmul_peak(torch::Dtype dtype, int64_t n = 1024, double seconds = 1.0);

// Peak resident set size of this process so far, in MiB.
double peak_rss_mb();

// One JSON object per line on stdout.
void print_json(const Measurement& m);
// A readable table of all measurements on stdout.
void print_table(const std::vector<Measurement>& ms);

}  // namespace reglage::bench
