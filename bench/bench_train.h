// Training-step throughput benchmark (see bench_train.cpp).
#pragma once
#include <string>
#include <vector>

#include "bench/bench_util.h"

namespace reglage::bench {

struct TrainOptions {
  std::vector<std::string> shapes = {"stories260K", "stories15M"};  // stories260K: the shipped weights
  std::vector<std::string> modes = {"full", "lora"};
  std::vector<std::string> dtypes = {"float32", "bfloat16"};
  int64_t batch_260k = 16, batch_15m = 8;  // sequences per step
  int64_t seq = 256;                       // tokens per sequence
  int threads = 2;
  int steps = 6;                           // timed steps (median), after 2 warm-up steps
  std::string model_path = "models/stories260K/stories260K.bin";
  int64_t batch_model = 8;                 // sequences per step for the shape "model" (--model PATH)
  std::vector<std::string> storages = {"auto"};  // LoRA only: the frozen base's storage (weight_only.h)
  bool checkpointing = false;              // activation checkpointing (recompute each layer in backward)
  bool interleave = false;                 // every dtype's steps in turn, with per-round speed-ups over the first
  std::string profile;                     // if set: one more step per run under LibTorch's profiler, its Chrome
                                           // trace written to <profile>-<shape>-<mode>-<dtype>-<storage>.json
};

std::vector<Measurement> bench_train(const TrainOptions& opt);

}  // namespace reglage::bench
