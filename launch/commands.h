// The subcommands of the reglage executable, and the flag parser they share.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

namespace reglage::launch {

// "--name value" and "--flag" arguments. Every flag a command reads must be declared; anything left
// over is an error naming it, with the closest known flag suggested.
class Args {
 public:
  Args(int argc, char** argv, std::string command);
  std::string str(const std::string& name, const std::string& fallback = "");
  std::string required(const std::string& name);
  long long integer(const std::string& name, long long fallback);
  double number(const std::string& name, double fallback);
  bool flag(const std::string& name);  // a flag without a value
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  // Throws on any flag given but not read by the command.
  void finish() const;

 private:
  std::string command_;
  std::map<std::string, std::string> values_;
  std::set<std::string> bare_;      // given without a value
  std::set<std::string> known_;     // read by the command
};

int cmd_generate(Args& args);
int cmd_logits(Args& args);
int cmd_convert(Args& args);
int cmd_tokenize(Args& args);
int cmd_render_chat(Args& args);
int cmd_eval(Args& args);
int cmd_eval_stage(Args& args);  // eval --config ... --stage ...
int cmd_serve_reward(Args& args);
int cmd_run(int argc, char** argv);  // its own parsing: repeated --set
int cmd_launch(int argc, char** argv);  // the same flags as run

// The whole command line (argv[1] is the subcommand); returns the exit code. main.cpp's body, and that of
// the test build with fault points (tests/support/fault_main.cpp).
int cli_main(int argc, char** argv);
int cmd_status(const std::string& run_dir);
int cmd_report(int argc, char** argv);  // RUN_DIR [--out FILE]: a positional argument first
int cmd_export(int argc, char** argv);  // RUN_DIR --stage --format --out: a positional argument first

}  // namespace reglage::launch
