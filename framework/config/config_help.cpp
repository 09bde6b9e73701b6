// `reglage run --help-config`: every key of every section, generated from the key tables (config_fields.h),
// as text or as the markdown tables README.md holds between its config-keys markers.
#include <sstream>

#include "framework/config/config_fields.h"

namespace reglage::config {

namespace {

// "> 0, <= 1000000000", "[0, 1)", "" (no bound); integers print bounds in full, numbers shortest.
template <typename S>
std::string range_text(const Field<S>& f) {
  const Bounds& b = f.bounds;
  if (!b.any()) return "";
  auto bound = [&](double x) { return f.kind == Kind::kInt ? std::to_string(int64_t(x)) : format_double(x); };
  auto op = [](Bounds::Op o) {
    return o == Bounds::kGt ? "> " : o == Bounds::kGe ? ">= " : o == Bounds::kLt ? "< " : "<= ";
  };
  if (b.interval)
    return std::string(b.lo_op == Bounds::kGe ? "[" : "(") + bound(b.lo) + ", " + bound(b.hi) +
           (b.hi_op == Bounds::kLe ? "]" : ")");
  std::string out;
  if (b.lo_op != Bounds::kNone) out += op(b.lo_op) + bound(b.lo);
  if (b.hi_op != Bounds::kNone) out += (out.empty() ? "" : ", ") + std::string(op(b.hi_op)) + bound(b.hi);
  return out;
}

template <typename S>
std::string default_text(const Field<S>& f) {
  if (f.kind == Kind::kCustom) return "";
  const S defaults{};
  const std::string text = field_text(f, defaults);
  return f.kind == Kind::kString && text.empty() ? "\"\"" : text;
}

// The stage types of a stage key: "all" or "ppo, grpo"; with what the others use instead.
std::string stages_text(const Field<StageConfig>& f) {
  std::string out = f.stages == kAllStages ? "all" : stage_list(f.stages);
  for (const Hint& h : f.hints) out += std::string("; ") + to_string(h.type) + ": " + h.instead;
  return out;
}

std::string cell(const std::string& s) {  // a markdown table cell: '|' escaped
  std::string out;
  for (char c : s) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

template <typename S>
void section(std::ostringstream& out, bool markdown, const std::string& title, const std::string& prefix,
             const std::vector<Field<S>>& fields, bool stage_column) {
  if (markdown) {
    out << "#### " << title << "\n\n| key | type | default | range |" << (stage_column ? " stage types |" : "")
        << " what |\n| --- | --- | --- | --- |" << (stage_column ? " --- |" : "") << " --- |\n";
  } else {
    out << title << "\n";
  }
  for (const Field<S>& f : fields) {
    std::string stages;
    if constexpr (std::is_same_v<S, StageConfig>) stages = stages_text(f);
    const std::string range = range_text(f), def = default_text(f);
    if (markdown) {
      out << "| `" << f.name << "` | " << cell(field_type_name(f)) << " | " << (def.empty() ? "" : "`" + cell(def) + "`")
          << " | " << cell(range) << " |" << (stage_column ? " " + cell(stages) + " |" : "") << " " << cell(f.help)
          << " |\n";
    } else {
      out << "  " << prefix << f.name << "  (" << field_type_name(f);
      if (!def.empty()) out << ", default " << def;
      if (!range.empty()) out << ", " << range;
      out << ")" << (stage_column ? "  [" + stages + "]" : "") << "\n      " << f.help << "\n";
    }
  }
  out << "\n";
}

}  // namespace

std::string help_config(bool markdown) {
  std::ostringstream out;
  if (!markdown)
    out << "Pipeline keys (reglage run PIPELINE.yaml); each: (type, default, range) [stage types; what other types\n"
           "use instead], then what it does. A stage refuses the keys of other stage types.\n\n";
  section(out, markdown, "Top level", "", top_fields(), false);
  section(out, markdown, "model", "model.", model_fields(), false);
  section(out, markdown, "lora", "lora.", lora_fields(), false);
  section(out, markdown, "stages[]", "stages[].", stage_fields(), true);
  section(out, markdown, "launch (reglage launch only)", "launch.", launch_fields(), false);
  std::string text = out.str();
  text.pop_back();  // one newline at the end
  return text;
}

}  // namespace reglage::config
