// The frozen base's matrix products of a LoRA training step at a model's own shapes, float32 against bfloat16
// (see bench_gemm.cpp).
#pragma once
#include <string>
#include <vector>

#include "bench/bench_util.h"

namespace reglage::bench {

struct GemmOptions {
  std::string model_path;  // the model whose linear layers and LM head give the shapes
  int64_t rows = 2048;     // tokens per step (batch x sequence)
  int rounds = 6;          // alternating rounds of both dtypes
  int threads = 2;
};

std::vector<Measurement> bench_model_gemm(const GemmOptions& opt);

}  // namespace reglage::bench
