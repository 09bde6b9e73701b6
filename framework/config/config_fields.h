// One declaration per config key: a table per section (top level, model, lora, stage, launch) whose rows name
// the key, the struct member it fills, its range, its help text and (stages) the stage types that take it.
// The reader (type checks, unknown keys, keys of another stage type), the range checks, the emitter (and so
// the stage hash), `reglage run --help-config` and the README's key tables are all generated from them.
// Cross-field rules (max_steps xor epochs, label_smoothing with cdpo, ...) are code in config_validate.cpp.
// YAML-free: tests and the help command use it too.
#pragma once
#include <cstdint>
#include <functional>
#include <type_traits>
#include <string>
#include <vector>

#include "framework/config/choices.h"
#include "framework/config/pipeline_config.h"

namespace reglage::config {

// The stage types a stage key applies to.
constexpr unsigned stage_bit(StageType t) { return 1u << unsigned(t); }
constexpr unsigned kSft = stage_bit(StageType::kSft);
constexpr unsigned kRm = stage_bit(StageType::kRewardModel);
constexpr unsigned kPpo = stage_bit(StageType::kPpo);
constexpr unsigned kDpo = stage_bit(StageType::kDpo);
constexpr unsigned kGrpo = stage_bit(StageType::kGrpo);
constexpr unsigned kAllStages = kSft | kRm | kPpo | kDpo | kGrpo;

// What a key holds. kCustom keys (a stage's reward, launch.hosts) are read and written by their own code.
enum class Kind { kInt, kUint, kDouble, kBool, kString, kChoice, kStrings, kCustom };

// A numeric key's allowed range; each check has its message ("must be > 0", "must be <= 1000 (why)").
struct Bounds {
  enum Op { kNone, kGt, kGe, kLt, kLe };
  Op lo_op = kNone;
  double lo = 0;
  Op hi_op = kNone;
  double hi = 0;
  bool interval = false;      // one check, "must be in [lo, hi)", instead of a lower and an upper one
  std::string lo_note;        // appended to the lower (or interval) message: "; 0 = off"
  std::string hi_note;        // appended to the upper message: " (a peak learning rate)"
  std::string lo_text;        // replaces the lower message when set ("must be finite and > 0")
  bool zero_unset = false;    // 0 = not given: validate reports it as required, the lower check skips it

  Bounds& le(double max, std::string note = "") { return hi_op = kLe, hi = max, hi_note = std::move(note), *this; }
  Bounds& lt(double max, std::string note = "") { return hi_op = kLt, hi = max, hi_note = std::move(note), *this; }
  Bounds& unset_if_zero() { return zero_unset = true, *this; }
  bool any() const { return lo_op != kNone || hi_op != kNone; }
};
inline Bounds any_value() { return {}; }
inline Bounds gt(double lo, std::string note = "") { Bounds b; b.lo_op = Bounds::kGt, b.lo = lo, b.lo_note = std::move(note); return b; }
inline Bounds ge(double lo, std::string note = "") { Bounds b; b.lo_op = Bounds::kGe, b.lo = lo, b.lo_note = std::move(note); return b; }
// in(0, 1, "[)"): lo <= v < hi, one message "must be in [0, 1)".
inline Bounds in(double lo, double hi, const char* brackets, std::string note = "") {
  Bounds b;
  b.lo_op = brackets[0] == '[' ? Bounds::kGe : Bounds::kGt, b.lo = lo;
  b.hi_op = brackets[1] == ']' ? Bounds::kLe : Bounds::kLt, b.hi = hi;
  b.interval = true, b.lo_note = std::move(note);
  return b;
}

// "not used by ppo stages (they use actor_lr and critic_lr)": what a stage type uses instead of the key.
struct Hint {
  StageType type;
  const char* instead;
};

template <typename S>
struct Field {
  const char* name;                       // the YAML key
  Kind kind;
  Bounds bounds;
  const char* help;
  unsigned stages = kAllStages;           // stage keys: the types that take it
  std::vector<Hint> hints;                // stage keys: for other types, what they use instead
  std::vector<std::string> choices;       // kChoice: its enum's names; kString: a fixed set, or empty = any
  bool custom_read = false;               // read by its own code (a stage's type, seed, lora.targets)
  std::function<void*(S&)> at;            // the member (int64_t, uint64_t, double, bool, std::string, ...)
  std::function<std::string(const void*)> choice_name;      // kChoice: the value's name
  std::function<bool(void*, const std::string&)> choice_parse;  // kChoice: false for another name

  template <typename T>
  const T& get(const S& s) const { return *static_cast<const T*>(at(const_cast<S&>(s))); }
  template <typename T>
  T& get(S& s) const { return *static_cast<T*>(at(s)); }
  bool takes(StageType t) const { return (stages & stage_bit(t)) != 0; }
  Field& one_of(std::vector<std::string> names) { return choices = std::move(names), *this; }
  Field& read_by_code() { return custom_read = true, *this; }
};

namespace detail {
template <typename T, typename = void>
struct HasChoices : std::false_type {};
template <typename T>
struct HasChoices<T, std::void_t<decltype(ChoiceTable<T>::entries)>> : std::true_type {};

template <typename T>
constexpr Kind kind_of() {
  if constexpr (std::is_same_v<T, int64_t>) return Kind::kInt;
  else if constexpr (std::is_same_v<T, uint64_t>) return Kind::kUint;
  else if constexpr (std::is_same_v<T, double>) return Kind::kDouble;
  else if constexpr (std::is_same_v<T, bool>) return Kind::kBool;
  else if constexpr (std::is_same_v<T, std::string>) return Kind::kString;
  else if constexpr (std::is_same_v<T, std::vector<std::string>>) return Kind::kStrings;
  else if constexpr (HasChoices<T>::value) return Kind::kChoice;
  else return Kind::kCustom;
}

template <typename S, typename T>
Field<S> make_field(const char* name, std::function<void*(S&)> at, Bounds bounds, const char* help, unsigned stages,
                    std::vector<Hint> hints) {
  Field<S> f{name, kind_of<T>(), std::move(bounds), help, stages, std::move(hints), {}, false, std::move(at), {}, {}};
  if constexpr (HasChoices<T>::value) {
    f.choices = choice_names<T>();
    f.choice_name = [](const void* p) { return std::string(to_string(*static_cast<const T*>(p))); };
    f.choice_parse = [](void* p, const std::string& text) { return parse_choice(text, *static_cast<T*>(p)); };
  }
  return f;
}
}  // namespace detail

// A row whose key fills s.*member ...
template <typename S, typename T>
Field<S> field(const char* name, T S::*member, Bounds bounds, const char* help, unsigned stages = kAllStages,
               std::vector<Hint> hints = {}) {
  return detail::make_field<S, T>(name, [member](S& s) -> void* { return &(s.*member); }, std::move(bounds), help,
                                  stages, std::move(hints));
}
// ... or (s.*nest).*member: a key of a settings struct written flat in the stage (PpoSettings::kl_coef).
template <typename S, typename N, typename T>
Field<S> field(const char* name, N S::*nest, T N::*member, Bounds bounds, const char* help,
               unsigned stages = kAllStages, std::vector<Hint> hints = {}) {
  return detail::make_field<S, T>(name, [nest, member](S& s) -> void* { return &((s.*nest).*member); },
                                  std::move(bounds), help, stages, std::move(hints));
}

// The tables, in emission order (config_fields.cpp).
const std::vector<Field<PipelineConfig>>& top_fields();  // the scalar top-level keys
const std::vector<Field<ModelSection>>& model_fields();
const std::vector<Field<LoraSection>>& lora_fields();
const std::vector<Field<StageConfig>>& stage_fields();
const std::vector<Field<LaunchSection>>& launch_fields();

// The top level's section keys, after its scalar keys.
inline const std::vector<std::string>& top_sections() {
  static const std::vector<std::string> names = {"model", "lora", "stages", "launch"};
  return names;
}

// A key's value as YAML text: integers in decimal, doubles as the shortest text that reads back exactly,
// true/false, strings as they are, choices by name, lists as "[a, b]"; "" for kCustom.
template <typename S>
std::string field_text(const Field<S>& f, const S& s);

// The shortest decimal text that reads back as exactly `v` ("0.0001", "1e-08").
std::string format_double(double v);

// "integer", "number", "true | false", "string", "a | b | c", "list of strings", ...: the help's type column.
template <typename S>
std::string field_type_name(const Field<S>& f);

// "ppo and grpo", "sft, reward_model and dpo": the stage types in `mask`.
std::string stage_list(unsigned mask);

}  // namespace reglage::config
