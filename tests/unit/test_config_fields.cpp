// The key tables (config_fields.h) drive the round trip and the docs: every field of every section survives
// to_yaml -> load_pipeline, README.md's key tables are the generated ones, loading creates nothing and the
// world-size checks run where the rank count is known.
#include <filesystem>
#include <fstream>

#include "framework/config/config_error.h"
#include "framework/config/config_fields.h"
#include "test_util.h"

namespace reglage::config {
namespace {

// Runs the test body in the source tree, where every_key.yaml's relative paths resolve.
struct InSourceDir {
  std::string before = std::filesystem::current_path().string();
  InSourceDir() { std::filesystem::current_path(REGLAGE_SOURCE_DIR); }
  ~InSourceDir() { std::filesystem::current_path(before); }
};

// Every field of `fields` whose text differs between a and b, as "prefix.key: a != b".
template <typename S>
std::string differences(const std::string& prefix, const std::vector<Field<S>>& fields, const S& a, const S& b,
                        unsigned mask = kAllStages) {
  std::string out;
  for (const Field<S>& f : fields)
    if ((f.stages & mask) && field_text(f, a) != field_text(f, b))
      out += prefix + f.name + ": " + field_text(f, a) + " != " + field_text(f, b) + "\n";
  return out;
}

// The fields of `fields` left at their default in every one of `sections` (that takes them).
template <typename S>
std::vector<std::string> left_at_default(const std::vector<Field<S>>& fields, const std::vector<const S*>& sections,
                                         std::function<unsigned(const S&)> mask_of) {
  const S defaults{};
  std::vector<std::string> names;
  for (const Field<S>& f : fields) {
    if (f.kind == Kind::kCustom) continue;  // reward, hosts: compared through their emitted YAML
    bool set = false;
    for (const S* s : sections) set = set || ((f.stages & mask_of(*s)) && field_text(f, *s) != field_text(f, defaults));
    if (!set) names.push_back(f.name);
  }
  return names;
}

// tests/data/config/every_key.yaml sets every key of every table (a new row that it does not set fails
// here), then emits it, reads the text back and compares every field of every table.
TEST(ConfigYaml, RoundTrip) {
  InSourceDir here;
  test::TempDir tmp;
  const PipelineConfig a = load_pipeline("tests/data/config/every_key.yaml", {}, DataFiles::may_be_missing);
  auto all = [](const auto&) { return kAllStages; };
  auto stage_mask = [](const StageConfig& s) { return stage_bit(s.type); };
  std::vector<const StageConfig*> stages;
  for (const StageConfig& s : a.stages) stages.push_back(&s);
  EXPECT_EQ(left_at_default<PipelineConfig>(top_fields(), {&a}, all), std::vector<std::string>{});
  EXPECT_EQ(left_at_default<ModelSection>(model_fields(), {&a.model}, all), std::vector<std::string>{});
  EXPECT_EQ(left_at_default<LoraSection>(lora_fields(), {&a.lora}, all), std::vector<std::string>{});
  EXPECT_EQ(left_at_default<StageConfig>(stage_fields(), stages, stage_mask), std::vector<std::string>{});
  // hostfile excludes hosts (which every_key.yaml sets); RoundTripHostfile covers it.
  EXPECT_EQ(left_at_default<LaunchSection>(launch_fields(), {&a.launch}, all), std::vector<std::string>{"hostfile"});

  const std::string yaml = to_yaml(a);
  const std::string again = tmp.path("again.yaml");
  std::ofstream(again) << yaml;
  const PipelineConfig b = load_pipeline(again, {}, DataFiles::may_be_missing);
  EXPECT_EQ(differences("", top_fields(), a, b), "");
  EXPECT_EQ(differences("model.", model_fields(), a.model, b.model), "");
  EXPECT_EQ(differences("lora.", lora_fields(), a.lora, b.lora), "");
  EXPECT_EQ(differences("launch.", launch_fields(), a.launch, b.launch), "");
  ASSERT_EQ(b.stages.size(), a.stages.size());
  for (size_t i = 0; i < a.stages.size(); ++i) {
    const std::string p = "stages[" + std::to_string(i) + "].";
    EXPECT_EQ(differences(p, stage_fields(), a.stages[i], b.stages[i], stage_bit(a.stages[i].type)), "");
    EXPECT_EQ(stage_yaml(b, b.stages[i]), stage_yaml(a, a.stages[i])) << p;  // the reward too
  }
  ASSERT_EQ(b.launch.hosts.size(), a.launch.hosts.size());
  for (size_t i = 0; i < a.launch.hosts.size(); ++i) {
    EXPECT_EQ(b.launch.hosts[i].host, a.launch.hosts[i].host);
    EXPECT_EQ(b.launch.hosts[i].slots, a.launch.hosts[i].slots);
  }
  EXPECT_EQ(to_yaml(b), yaml);
}

TEST(ConfigYaml, RoundTripHostfile) {
  InSourceDir here;
  test::TempDir tmp;
  const PipelineConfig a = load_pipeline("tests/data/config/every_key.yaml",
                                         {"launch.hosts=[]", "launch.hostfile=configs/demo.yaml"},
                                         DataFiles::may_be_missing);
  const std::string again = tmp.path("again.yaml");
  std::ofstream(again) << to_yaml(a);
  const PipelineConfig b = load_pipeline(again, {}, DataFiles::may_be_missing);
  EXPECT_EQ(b.launch.hostfile, "configs/demo.yaml");
  EXPECT_EQ(differences("launch.", launch_fields(), a.launch, b.launch), "");
}

// README.md's key tables are `reglage run --help-config markdown`, between its config-keys markers.
TEST(ConfigHelp, ReadmeKeyTablesAreGenerated) {
  const std::string readme = core::read_file(test::source_path("README.md"));
  const std::string begin = "<!-- config-keys:begin (generated: reglage run --help-config markdown) -->\n";
  const std::string end = "<!-- config-keys:end -->";
  const size_t from = readme.find(begin), to = readme.find(end);
  ASSERT_NE(from, std::string::npos) << "README.md lacks " << begin;
  ASSERT_NE(to, std::string::npos) << "README.md lacks " << end;
  EXPECT_EQ(readme.substr(from + begin.size(), to - from - begin.size()), help_config(true))
      << "README.md's key tables differ from `reglage run --help-config markdown`; paste its output between the markers";
}

TEST(ConfigHelp, TextNamesEveryKeyWithItsDefaultAndRange) {
  const std::string text = help_config(false);
  for (const Field<StageConfig>& f : stage_fields())
    EXPECT_NE(text.find(std::string("stages[].") + f.name + "  ("), std::string::npos) << f.name;
  EXPECT_NE(text.find("stages[].lr  (number, default 0.0003, > 0, <= 1)  [sft, reward_model and dpo; ppo: actor_lr "
                      "and critic_lr; grpo: actor_lr]"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("launch.status_port  (integer, default 8470, [0, 65535])"), std::string::npos) << text;
  EXPECT_NE(text.find("stages[].kl_estimator  (k1 | k3, default k1)"), std::string::npos) << text;
}

// Loading creates nothing; the world-size checks and the run_dir probe come after, with the same positions.
TEST(ConfigLoad, LoadingIsPureAndWorldSizeIsCheckedLater) {
  test::TempDir tmp;
  const std::string run_dir = tmp.path("run");
  const std::string data = tmp.path("d.jsonl");
  std::ofstream(data) << "{\"text\": \"hi\"}\n";
  const std::string path = tmp.path("c.yaml");
  std::ofstream(path) << "run_dir: " << run_dir << "\nmodel:\n  path: " << test::model_260k()
                      << "\nstages:\n  - name: sft\n    type: sft\n    data: " << data
                      << "\n    max_steps: 10\n    batch_size: 6\n    grad_accum: 2\n";
  const PipelineConfig c = load_pipeline(path, {});
  EXPECT_FALSE(std::filesystem::exists(run_dir));
  EXPECT_NO_THROW(check_world_size(c, 3));
  try {
    check_world_size(c, 2);
    FAIL() << "batch 6 over 2 ranks x grad_accum 2 accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "config error: " + path +
                                         ":9:17: stages[0].batch_size = 6 (must be divisible by world size 2 x "
                                         "grad_accum 2 = 4)");
  }
  prepare_run_dir(c);
  EXPECT_TRUE(std::filesystem::is_directory(run_dir));
  // An override keeps its name in the later checks' messages.
  const PipelineConfig o = load_pipeline(path, {"stages.sft.batch_size=10"});
  try {
    check_world_size(o, 4);
    FAIL() << "batch 10 over 4 ranks accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("(from override 'stages.sft.batch_size=10')"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace reglage::config
