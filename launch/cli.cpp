// reglage's command line: the subcommands and the one error handler (main.cpp calls cli_main).
//   reglage run PIPELINE.yaml [--set k=v] [--restart-from STAGE]   run or resume a pipeline (MPI ranks)
//   reglage status RUN_DIR                                           stages, their state, last metrics
//   reglage report RUN_DIR [--out FILE]                              an HTML page of a run (config, stages, plots)
//   reglage export RUN_DIR --stage NAME --format hf|peft --out DIR   a stage's policy as a HF model or PEFT adapter
//   reglage generate --model PATH --prompt TEXT [...]   sample continuations (see cmd_generate.cpp)
//   reglage logits --model PATH --ids "1 403 407" --out FILE   write raw logits for checking a model
//   reglage convert --model PATH --out DIR   save as a Hugging Face model directory
//   reglage tokenize --model PATH --text T | --decode "IDS"   text to ids and back with a model's tokenizer
//   reglage render-chat --model PATH --messages FILE.json   a conversation rendered by the model's chat template
// Parse the subcommand, run it; any exception becomes one line on stderr and exit code 1.
#include <cstdio>
#include <iostream>
#include <string>

#include "framework/core/blas_setup.h"
#include "framework/core/error.h"
#include "launch/commands.h"
#include "framework/core/error_line.h"

namespace {

void print_usage() {
  std::cout << "usage: reglage <command> [options]\n"
               "commands:\n"
               "  run        run a pipeline (SFT, ...) as MPI ranks: mpirun -np N reglage run pipeline.yaml\n"
               "  launch     run a pipeline under mpirun with a watchdog that restarts dead or hung ranks\n"
               "  status     show the stages of a run directory: reglage status RUN_DIR\n"
               "  report     write an HTML page of a run (config, stages, metric plots): reglage report RUN_DIR [--out FILE]\n"
               "  export     write a stage's policy as a Hugging Face model or PEFT adapter:\n"
               "             reglage export RUN_DIR --stage NAME --format hf|peft --out DIR [--merge-weight W]\n"
               "  eval       a stage's policy on prompts: mean reward, pass rate, KL (--config --stage), or the demo task (--model)\n"
               "  serve-reward  serve a trained reward model over HTTP (OpenRLHF remote reward protocol)\n"
               "  generate   sample continuations of prompts from a model (optionally with a LoRA adapter)\n"
               "  logits     write a model's logits for given token ids (int32 T, int32 V, float32[T][V], int32[T])\n"
               "  convert    write a model (llama2.c or Hugging Face) as a Hugging Face model directory\n"
               "  tokenize   text to token ids, or ids to text, with a model's tokenizer (GGUF, Hugging Face, llama2.c)\n"
               "  render-chat  a conversation rendered by a model's chat template (or a .jinja file), as transformers does\n"
               "run 'reglage <command> --help' for a command's options\n";
}

// The command's own work; every exception goes up to main's one handler.
int dispatch(const std::string& command, int argc, char** argv) {
  if (command == "run") return reglage::launch::cmd_run(argc - 2, argv + 2);
  if (command == "launch") return reglage::launch::cmd_launch(argc - 2, argv + 2);
  if (command == "status") {
    if (argc != 3 || argv[2][0] == '-') reglage::fail("usage: reglage status RUN_DIR");
    return reglage::launch::cmd_status(argv[2]);
  }
  if (command == "report") return reglage::launch::cmd_report(argc - 2, argv + 2);
  if (command == "export") return reglage::launch::cmd_export(argc - 2, argv + 2);
  reglage::launch::Args args(argc - 2, argv + 2, command);
  if (command == "generate") return reglage::launch::cmd_generate(args);
  if (command == "logits") return reglage::launch::cmd_logits(args);
  if (command == "convert") return reglage::launch::cmd_convert(args);
  if (command == "tokenize") return reglage::launch::cmd_tokenize(args);
  if (command == "render-chat") return reglage::launch::cmd_render_chat(args);
  if (command == "eval") return reglage::launch::cmd_eval(args);
  if (command == "serve-reward") return reglage::launch::cmd_serve_reward(args);
  reglage::fail("unknown command '", command, "' (expected run, launch, status, report, export, eval, serve-reward, generate, logits, convert, tokenize or render-chat)");
}

}  // namespace

namespace reglage::launch {

int cli_main(int argc, char** argv) {
  reglage::core::ensure_blas_kernels(argv);
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    return dispatch(command, argc, argv);
  } catch (...) {
    // One line whatever escaped: a reglage error as written, LibTorch's without its backtrace, bad_alloc
    // as a sentence (error_line.h). `run` reports errors after MPI starts itself, with the rank.
    std::fprintf(stderr, "reglage %s: error: %s\n", command.c_str(), reglage::core::current_error_line().c_str());
    return 1;
  }
}

}  // namespace reglage::launch
