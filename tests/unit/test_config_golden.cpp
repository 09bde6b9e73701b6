// The emitter's output (run_dir/config.yaml and the stage YAML whose hash decides whether a finished stage
// must rerun) compared byte for byte with goldens saved before the config layer was rebuilt from field
// tables: a change here would make every existing run's finished stages look stale. The goldens are in
// tests/data/config/golden/ (one file per config: to_yaml, then each stage's stage_yaml); to write them
// again run this test with REGLAGE_WRITE_GOLDENS=1 (only when the emitted text is meant to change).
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "framework/config/pipeline_config.h"
#include "test_util.h"

namespace reglage::config {
namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

// Runs the test body in the source tree, where the configs' relative paths resolve.
struct InSourceDir {
  std::string before = std::filesystem::current_path().string();
  InSourceDir() { std::filesystem::current_path(REGLAGE_SOURCE_DIR); }
  ~InSourceDir() { std::filesystem::current_path(before); }
};

// to_yaml of the config, then "# stage_yaml NAME" and that stage's YAML for every stage.
std::string emitted(const std::string& path) {
  const PipelineConfig c = load_pipeline(path, {}, DataFiles::may_be_missing);
  std::string out = to_yaml(c);
  for (const StageConfig& s : c.stages) out += "# stage_yaml " + s.name + "\n" + stage_yaml(c, s);
  return out;
}

void expect_golden(const std::string& name, const std::string& text) {
  const std::string path = test::source_path("tests/data/config/golden/" + name + ".yaml");
  if (const char* write = std::getenv("REGLAGE_WRITE_GOLDENS"); write != nullptr && std::string(write) == "1") {
    std::ofstream(path, std::ios::binary) << text;
    return;
  }
  EXPECT_EQ(text, core::read_file(path)) << "the emitted YAML of " << name << " changed (" << path << ")";
}

TEST(ConfigGolden, ShippedConfigsEmitAsBefore) {
  InSourceDir here;
  for (const std::string name : {"demo", "demo_dpo", "demo_grpo"}) expect_golden(name, emitted("configs/" + name + ".yaml"));
}

TEST(ConfigGolden, EveryKeySetEmitsAsBefore) {
  InSourceDir here;
  expect_golden("every_key", emitted("tests/data/config/every_key.yaml"));
}

// tests/data/config/full.yaml with its placeholders filled by paths of the source tree.
TEST(ConfigGolden, FullConfigEmitsAsBefore) {
  InSourceDir here;
  test::TempDir tmp;
  std::string text = core::read_file("tests/data/config/full.yaml");
  text = replace_all(text, "@RUN_DIR@", "runs/full");
  text = replace_all(text, "@MODEL@", "models/stories260K/stories260K.bin");
  text = replace_all(text, "@TOKENIZER@", "models/stories260K/tok512.bin");
  text = replace_all(text, "@DATA@", "data/demo/sft_train.jsonl");
  text = replace_all(text, "@EVAL@", "data/demo/sft_eval.jsonl");
  const std::string path = tmp.path("full.yaml");
  std::ofstream(path) << text;
  expect_golden("full", emitted(path));
}

}  // namespace
}  // namespace reglage::config
