// Prompt data for the reinforcement stages and for evaluation: JSONL rows the policy completes.
//   {"prompt": "Write a story about a cat named Dalu.", "reference": "Dalu"}
//   {"messages": [{"role": "user", "content": "..."}], "reference": "..."}    rendered by the chat template,
//                                                   ending with the assistant header the policy completes
// "reference" (optional string) is handed to rule rewards (exact_reference) and reward services.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "framework/data/sft_data.h"
#include "framework/tokenizer/tokenizer.h"

namespace reglage::data {

struct PromptExample {
  std::string text;            // the prompt as the policy sees it (chat rows: rendered)
  std::vector<int64_t> ids;    // BOS + tokens of text (chat rows: each segment encoded on its own, as SFT does)
  std::string reference;       // "" when the row has none
  int64_t line = 0;            // 1-based line in the file
};

struct PromptDataset {
  std::string path;
  std::vector<PromptExample> rows;
  int64_t skipped = 0;         // malformed rows skipped (skip_bad_rows)
};

// Reads and tokenizes every row. opt.max_seq_len > 0 bounds the prompt tokens (a longer prompt is an error
// naming path:line, or skipped with skip_bad_rows). Errors name path:line and the problem (bad JSON, missing
// or mistyped fields, both forms, unknown role, a chat ending with an assistant turn); no rows is an error.
PromptDataset load_prompt_jsonl(const std::string& path, const tokenizer::Tokenizer& tok, const SftDataOptions& opt);

}  // namespace reglage::data
