// Tokenizer throughput benchmark (see bench_tokenize.cpp).
#pragma once
#include <string>
#include <vector>

#include "bench/bench_util.h"

namespace reglage::bench {

struct TokenizeOptions {
  std::string llama2c_path = "models/stories260K/tok512.bin";  // the shipped SentencePiece-style tokenizer
  std::string gpt2_vocab = "tests/data/gpt2/encoder.json";    // GPT-2's byte-level BPE (with vocab.bpe beside)
  std::string gpt2_merges = "tests/data/gpt2/vocab.bpe";
  std::vector<int64_t> sizes = {100000, 1000000};              // bytes per row
  std::vector<std::string> texts = {"prose", "word", "repeat"};  // kinds of text (bench_tokenize.cpp)
  int repeats = 3;                                             // best of
};

std::vector<Measurement> bench_tokenize(const TokenizeOptions& opt);

}  // namespace reglage::bench
