// The model a stage starts from, what it trains, and where its output goes.
// A stage's model is the pipeline's base model with the outputs of the stages it inits from applied:
// a LoRA stage's adapter is merged into the base (after that stage's own lineage), a fully trained stage's
// model directory replaces the base. Every final/ directory records its lineage (reglage_lineage.json), so
// an output can be loaded alone.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "framework/data/preference_data.h"
#include "framework/data/prompt_data.h"
#include "framework/data/sft_data.h"
#include "framework/io/lineage.h"
#include "framework/model/llama.h"
#include "framework/tokenizer/tokenizer.h"
#include "framework/train/adamw.h"
#include "trainers/stage.h"

namespace reglage::trainers {

using io::Lineage;

struct Policy {
  model::CausalLM model{nullptr};
  std::unique_ptr<tokenizer::Tokenizer> tok;
  Lineage lineage;  // of this stage's starting point
};

Policy load_policy(const StageContext& ctx);


// The trainable tensors of a stage: a LoRA adapter named after the stage (active in forward calls), or the
// base weights for full training; names are the PEFT / Hugging Face keys used in checkpoints.
struct Trainable {
  std::vector<torch::Tensor> params;
  std::vector<std::string> names;
  model::AdapterSet active;
};
Trainable setup_trainable(const StageContext& ctx, model::CausalLM& m);

train::AdamWConfig adamw_config(const config::StageConfig& st);
// max_steps, or ceil(rows * epochs / batch_size)
int64_t total_steps(const config::StageConfig& st, int64_t rows);

// Refuses, before the first batch, a micro-step whose activations cannot fit in this machine's memory:
// `sequences` rows per rank of up to `tokens` tokens through model `mc` (logits over the vocabulary and
// what each layer keeps for backward). Throws naming the stage, the estimate and the memory.
void check_step_memory(const StageContext& ctx, const model::ModelConfig& mc, int64_t sequences, int64_t tokens);
// The longest row of a data set in tokens (a preference pair: its longer side), for check_step_memory.
int64_t longest_sequence(const data::SftDataset& data);
int64_t longest_sequence(const data::PreferenceDataset& data);
int64_t longest_sequence(const data::PromptDataset& data);

// Rank 0 writes the stage output into final.tmp through `write`, adds reglage_lineage.json and, last,
// reglage_manifest.json (every file's size and checksum, checked by every reader), and renames it to final/;
// all ranks wait.
void publish_final(StageContext& ctx, const Lineage& lineage, const std::function<void(const std::string&)>& write);

// Threads per rank: the config's value, or cores / ranks on this host when it is 0.
int threads_per_rank(int64_t configured);

// CPUs this process may run on (its affinity mask): 1 when mpirun bound the rank to one core, which Open MPI
// does by default with 2 ranks or fewer. Falls back to the machine's count where the mask cannot be read.
int allowed_cpus();

// "" when `threads` fit the CPUs this rank may use, else a one-line warning saying how to launch instead.
std::string thread_binding_warning(int threads, int rank);

}  // namespace reglage::trainers
