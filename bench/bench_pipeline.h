// Benchmarks that run the real pipeline (`reglage run` under mpirun) and read its metrics.jsonl: the PPO
// iteration's time split, rank scaling, and peak memory per stage (see bench_pipeline.cpp).
#pragma once
#include <string>
#include <vector>

#include "bench/bench_util.h"

namespace reglage::bench {

struct PipelineOptions {
  std::string config = "configs/demo.yaml";  // the demo pipeline: its model, data and stage settings
  int cores = 2;                             // ranks x threads per rank
  int64_t sft_steps = 40;                    // scale: timed SFT steps (the first 5 are not counted)
  int64_t ppo_iterations = 8;                // ppo: iterations (the first is not counted)
};

// One PPO iteration of the demo's ppo stage on `cores` ranks (1 thread each): generate, score, reference
// and value forwards, train; tokens/s = (prompt + response tokens) / iteration.
std::vector<Measurement> bench_ppo(const PipelineOptions& opt);
// The demo's sft stage at the same global batch: 1 rank x `cores` threads against `cores` ranks x 1 thread.
std::vector<Measurement> bench_scale(const PipelineOptions& opt);
// Peak resident memory per rank of each demo stage, each stage in a process of its own, `cores` ranks.
std::vector<Measurement> bench_memory(const PipelineOptions& opt);

}  // namespace reglage::bench
