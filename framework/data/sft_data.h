// SFT data: JSONL rows tokenized with a loss mask, a seeded per-epoch shuffle that every rank computes
// identically, and batches padded for the model.
//   {"prompt": "...", "completion": "..."}                      loss on the completion tokens (+ EOS)
//   {"messages": [{"role": "system|user|assistant", "content": "..."}, ...]}
//                                                               rendered by the chat template (chat_format.h);
//                                                               loss on the assistant turns (+ their end marker)
//                                                               (an optional "tools" list reaches the template)
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "framework/tokenizer/tokenizer.h"

namespace reglage::data {

struct SftExample {
  std::vector<int64_t> ids;    // BOS + rendered prompt/turns (+ EOS after each completion)
  std::vector<uint8_t> loss;   // same length; 1 where the token is a completion/assistant token to predict
  int64_t line = 0;            // 1-based line in the file
};

struct SftDataOptions {
  std::string chat_template = "auto";   // for "messages" rows: auto | plain | chatml | llama2 | path.jinja
                                        // (chat_format.h)
  int64_t max_seq_len = 0;              // > 0; longer rows: error, or cut when truncate
  bool truncate = false;
  bool skip_bad_rows = false;           // malformed rows skipped and counted instead of an error
};

struct SftDataset {
  std::string path;
  std::vector<SftExample> rows;
  int64_t skipped = 0;     // malformed rows skipped (skip_bad_rows)
  int64_t truncated = 0;   // rows cut to max_seq_len (truncate)
};

// Reads and tokenizes every row. Errors name path:line and the problem (bad JSON, missing/mistyped
// fields, unknown role, no completion tokens, too long); an empty data set is an error naming the file.
SftDataset load_sft_jsonl(const std::string& path, const tokenizer::Tokenizer& tok, const SftDataOptions& opt);

// Renders chat messages with a built-in format (plain, chatml, llama2) to (text, is_assistant) segments in
// order; ChatFormat tokenizes them.
std::vector<std::pair<std::string, bool>> render_chat(const std::string& chat_template,
                                                      const std::vector<std::pair<std::string, std::string>>& messages);

// The order in which rows are visited: a permutation per epoch from (seed, epoch), identical on every rank.
// next_global_batch hands out `n` row indices, crossing into the next epoch when one ends.
class DataSampler {
 public:
  struct State {
    int64_t epoch = 0;   // current epoch
    int64_t offset = 0;  // rows of this epoch already handed out
  };
  DataSampler(int64_t rows, uint64_t seed);
  std::vector<int64_t> next_global_batch(int64_t n);
  State state() const { return state_; }
  void restore(const State& s);

 private:
  void shuffle_epoch();
  int64_t rows_;
  uint64_t seed_;
  State state_;
  std::vector<int64_t> order_;  // permutation of the current epoch
};

// This rank's rows of a global batch: a contiguous slice, no overlap, the union is the whole batch.
std::vector<int64_t> shard(const std::vector<int64_t>& global_batch, int rank, int world_size);

// Right-padded micro-batch of `indices`.
struct SftBatch {
  torch::Tensor ids;      // (B, T) int64, padded with pad_id
  torch::Tensor targets;  // (B, T) int64: targets[b][t] = ids[b][t+1] where that token has loss, else -100
  torch::Tensor valid;    // (B, T) bool, false on padding
  int64_t target_tokens = 0;  // number of targets != -100
  // Packed batches only (collate_packed); undefined otherwise:
  torch::Tensor positions;  // (B, T) int64: each packed row's positions start at 0
  torch::Tensor segments;   // (B, T) int64: which packed row a token belongs to (attention stays inside it)
};
SftBatch collate(const SftDataset& data, const std::vector<int64_t>& indices, int64_t pad_id);
// The same rows packed first-fit, in order, into as few sequences of at most `max_len` tokens as they fit:
// the same targets and loss, with less padding. A row longer than max_len fails (rows are cut at load).
SftBatch collate_packed(const SftDataset& data, const std::vector<int64_t>& indices, int64_t pad_id,
                        int64_t max_len);

// Number of loss tokens of the given rows (each rank can count the whole global batch without talking).
int64_t count_target_tokens(const SftDataset& data, const std::vector<int64_t>& indices);

}  // namespace reglage::data
