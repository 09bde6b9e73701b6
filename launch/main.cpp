// reglage: the command-line entry point.
//   reglage run PIPELINE.yaml [--set k=v] [--restart-from STAGE]   run or resume a pipeline (MPI ranks)
//   reglage status RUN_DIR                                           stages, their state, last metrics
//   reglage report RUN_DIR [--out FILE]                              an HTML page of a run (config, stages, plots)
//   reglage export RUN_DIR --stage NAME --format hf|peft --out DIR   a stage's policy as a HF model or PEFT adapter
//   reglage generate --model PATH --prompt TEXT [...]   sample continuations (see cmd_generate.cpp)
//   reglage logits --model PATH --ids "1 403 407" --out FILE   write raw logits for checking a model
//   reglage convert --model PATH --out DIR   save as a Hugging Face model directory
//   reglage tokenize --model PATH --text T | --decode "IDS"   text to ids and back with a model's tokenizer
// The subcommands live in cli.cpp and cmd_*.cpp.
#include "launch/commands.h"

int main(int argc, char** argv) { return reglage::launch::cli_main(argc, argv); }
