// The `launch:` section's watchdog keys (startup_timeout_s, hang_timeout_s next to the heartbeat keys):
// defaults, the round trip through to_yaml, and mistakes reported with their file position and key.
#include <fstream>

#include "framework/config/config_error.h"
#include "framework/config/pipeline_config.h"
#include "config_test_util.h"
#include "test_util.h"

namespace reglage::config {
namespace {

using test::TempDir;

// A valid pipeline of 10 lines whose `launch:` section starts on line 11; `launch_lines` follow it.
std::string write_config(const TempDir& tmp, const std::string& launch_lines) {
  const std::string data = tmp.path("train.jsonl");
  std::ofstream(data) << "{\"text\": \"hi\"}\n";
  const std::string text = "run_dir: " + tmp.path("run") + "\n"  // 1
                           "model:\n"                            // 2
                           "  path: " + test::model_260k() + "\n"  // 3
                           "stages:\n"                           // 4
                           "  - name: sft\n"                     // 5
                           "    type: sft\n"                     // 6
                           "    data: " + data + "\n"            // 7
                           "    max_steps: 10\n"                 // 8
                           "    batch_size: 16\n"                // 9
                           "    lr: 0.001\n"                     // 10
                           "launch:\n" + launch_lines;           // 11
  const std::string path = tmp.path("c.yaml");
  std::ofstream(path) << text;
  return path;
}

std::vector<ConfigProblem> problems_of(const std::string& path) {
  try {
    test::load_checked(path, {}, 1);
  } catch (const ConfigError& e) {
    return e.problems();
  }
  ADD_FAILURE() << "no ConfigError for " << path;
  return {};
}

std::string dump(const std::vector<ConfigProblem>& problems) {
  std::string out;
  for (const ConfigProblem& p : problems)
    out += std::to_string(p.line) + ":" + std::to_string(p.column) + " " + p.key + ": " + p.message + "\n";
  return out;
}

void expect_problem(const std::vector<ConfigProblem>& problems, const std::string& key, int line, int column,
                    const std::string& text) {
  for (const ConfigProblem& p : problems) {
    if (p.key != key) continue;
    EXPECT_EQ(p.line, line) << dump(problems);
    EXPECT_EQ(p.column, column) << dump(problems);
    EXPECT_NE(p.message.find(text), std::string::npos) << dump(problems);
    return;
  }
  ADD_FAILURE() << "no problem on " << key << " among:\n" << dump(problems);
}

TEST(LaunchConfig, WatchdogDefaultsValuesAndRoundTrip) {
  TempDir tmp;
  PipelineConfig c = test::load_checked(write_config(tmp, "  np: 2\n"), {}, 2);
  EXPECT_EQ(c.launch.startup_timeout_s, 600);
  EXPECT_EQ(c.launch.hang_timeout_s, 1800);
  c = test::load_checked(write_config(tmp, "  startup_timeout_s: 42.5\n  hang_timeout_s: 90\n"), {}, 1);
  EXPECT_EQ(c.launch.startup_timeout_s, 42.5);
  EXPECT_EQ(c.launch.hang_timeout_s, 90);
  const std::string yaml = to_yaml(c);
  EXPECT_NE(yaml.find("startup_timeout_s: 42.5"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("hang_timeout_s: 90"), std::string::npos) << yaml;
  std::ofstream(tmp.path("again.yaml")) << yaml;
  const PipelineConfig again = test::load_checked(tmp.path("again.yaml"), {}, 1);
  EXPECT_EQ(again.launch.startup_timeout_s, 42.5);
  EXPECT_EQ(again.launch.hang_timeout_s, 90);
}

TEST(LaunchConfig, WatchdogMistakesAreLocatedAndNamed) {
  TempDir tmp;
  auto problems = problems_of(write_config(tmp, "  startup_timeout_s: 0\n  hang_timeout_s: 3\n  heartbeat_interval_s: 5\n"));
  ASSERT_EQ(problems.size(), 2u) << dump(problems);
  expect_problem(problems, "launch.startup_timeout_s", 12, 22, "= 0 (must be finite and > 0)");
  expect_problem(problems, "launch.hang_timeout_s", 13, 19, "= 3 (must be finite and > heartbeat_interval_s)");
  problems = problems_of(write_config(tmp, "  startup_timeout_s: soon\n  hang_timeout_s: [1]\n"));
  ASSERT_EQ(problems.size(), 2u) << dump(problems);
  expect_problem(problems, "launch.startup_timeout_s", 12, 22, "expected a number");
  expect_problem(problems, "launch.hang_timeout_s", 13, 19, "expected a number");
  problems = problems_of(write_config(tmp, "  startup_timeout_s: -1\n  hang_timeout_s: 1e400\n  hang_timout_s: 5\n"));
  expect_problem(problems, "launch.startup_timeout_s", 12, 22, "= -1 (must be finite and > 0)");
  expect_problem(problems, "launch.hang_timeout_s", 13, 19, "finite");  // inf passed "> 0" checks (issue 14)
  expect_problem(problems, "launch.hang_timout_s", 14, 3, "hang_timeout_s");
}

}  // namespace
}  // namespace reglage::config
