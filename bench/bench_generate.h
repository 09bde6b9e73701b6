// Generation throughput benchmark (see bench_generate.cpp).
#pragma once
#include <string>
#include <vector>

#include "bench/bench_util.h"

namespace reglage::bench {

struct GenerateOptions {
  std::string model_path = "models/stories260K/stories260K.bin";
  std::vector<int64_t> batches = {1, 8, 32};                 // sequences generated together
  std::vector<std::string> dtypes = {"float32", "bfloat16"};
  // Weight storage with float32 compute (framework/kernels/weight_only.h): auto = the dtype's own weights.
  std::vector<std::string> storages = {"auto"};
  // Decode steps: "fused" (framework/model/fused_decode.h, where it applies) or "ops" (the operator path).
  std::vector<std::string> decodes = {"fused"};
  int64_t new_tokens = 128;                                  // generated per sequence
  // 1 samples from the full softmax (the earlier tables); 0 is greedy, as the peer (bench/peer/hf_generate.py).
  double temperature = 1.0;
  int threads = 2;                                           // intra-op threads
  int repeats = 3;                                           // best of
};

std::vector<Measurement> bench_generate(const GenerateOptions& opt);

}  // namespace reglage::bench
