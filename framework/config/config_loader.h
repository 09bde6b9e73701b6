// The pipeline loader, internal to config/: YAML tree -> PipelineConfig through the key tables
// (config_reader.cpp), then the range checks of the tables and the cross-field rules (config_validate.cpp).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "framework/config/config_fields.h"
#include "framework/config/yaml_reader.h"

namespace reglage::config::detail {

class Loader : public YamlReader {
 public:
  bool check_data_files = true;  // stages' data / eval_data must exist (not for export, eval)

  // Applies "a.b.c=value" to the tree. A list element is addressed by index or by its `name`
  // (config_overrides.cpp).
  void apply_override(YAML::Node& root, const std::string& text);

  // Reads every section, then validates (config_validate.cpp).
  PipelineConfig convert(const YAML::Node& root);

  // The checks that need the world size; problems go to `problems` (config_validate.cpp).
  void check_world_size(const PipelineConfig& c, int world_size);
  // Creates run_dir and proves it writable (config_validate.cpp).
  void check_run_dir(const std::string& run_dir);

  // A stage's type as read: none when absent or unknown.
  std::optional<StageType> type_of(const std::string& p) const;

 private:
  std::set<std::string> stage_bad_;                // stages that are not mappings
  std::map<std::string, std::string> type_texts_;  // "stages[i]" -> its type as written ("" = absent)

  // config_reader.cpp
  template <typename S>
  void read_fields(const YAML::Node& map, const std::string& prefix, const std::vector<Field<S>>& fields, S& out,
                   unsigned stage_mask = kAllStages);
  void read_seed(const YAML::Node& root, uint64_t& out);
  void read_targets(const YAML::Node& lora, std::vector<std::string>& out);
  bool read_string_list(const YAML::Node& map, const std::string& prefix, const std::string& name,
                        std::vector<std::string>& out);
  void read_hosts(const YAML::Node& launch, LaunchSection& l);
  StageConfig read_stage(const YAML::Node& node, const std::string& p);
  void check_stage_type_keys(const YAML::Node& node, const std::string& p, const std::string& type, unsigned mask);

  // config_validate.cpp
  template <typename S>
  void check_bounds(const std::string& prefix, const std::vector<Field<S>>& fields, const S& s,
                    unsigned stage_mask = kAllStages);
  void validate(const PipelineConfig& c);
  void validate_launch(const LaunchSection& l);
  void validate_stage(const PipelineConfig& c, size_t index, const std::string& p);
  void validate_rollouts(const StageConfig& s, const std::string& p, StageType type);
};

// The types a stage's keys are read and checked for: its own, or sft's (the common keys) when it has none.
inline unsigned stage_mask(std::optional<StageType> type) { return stage_bit(type.value_or(StageType::kSft)); }

}  // namespace reglage::config::detail
