// Preference pairs for reward models (and later DPO): JSONL rows
//   {"prompt": "...", "chosen": "...", "rejected": "...", "margin": 0.0 (optional)}
//   {"messages": [...], "chosen": "..." | {"role": "assistant", "content": "..."}, "rejected": ...}
// Each side is tokenized as BOS + prompt + response + EOS; the prompt of a chat row is its rendered messages.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "framework/data/sft_data.h"
#include "framework/tokenizer/tokenizer.h"

namespace reglage::data {

struct PreferencePair {
  std::vector<int64_t> chosen;    // BOS + prompt + chosen + EOS
  std::vector<int64_t> rejected;  // BOS + prompt + rejected + EOS
  int64_t prompt_tokens = 0;      // BOS + prompt
  double margin = 0.0;            // required reward gap (Bradley-Terry with margin)
  int64_t line = 0;
};

struct PreferenceDataset {
  std::string path;
  std::vector<PreferencePair> pairs;
  int64_t skipped = 0;
  int64_t truncated = 0;
};

// Same options and error conventions as load_sft_jsonl (path:line: problem; empty set is an error).
// A pair whose two sides are identical is an error (it teaches nothing).
PreferenceDataset load_preference_jsonl(const std::string& path, const tokenizer::Tokenizer& tok,
                                        const SftDataOptions& opt);

// Right-padded batch of both sides of `indices`: rows 0..n-1 are the chosen sides, n..2n-1 the rejected.
struct PreferenceBatch {
  torch::Tensor ids;     // (2n, T) int64
  torch::Tensor valid;   // (2n, T) bool
  torch::Tensor margin;  // (n) float32
  torch::Tensor targets; // (2n, T) int64: the next token where it is a response token (EOS included), else -100
};
PreferenceBatch collate_pairs(const PreferenceDataset& data, const std::vector<int64_t>& indices, int64_t pad_id);

}  // namespace reglage::data
