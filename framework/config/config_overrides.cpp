// Command-line overrides ("stages.sft.lr=1e-4") applied to the YAML tree before it is read, so an
// overridden key is checked like one written in the file (its problems name the override).
#include <algorithm>

#include "framework/config/config_loader.h"

namespace reglage::config::detail {

// Applies "a.b.c=value" to the tree. A list element is addressed by index or by its `name`.
void Loader::apply_override(YAML::Node& root, const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    add_override_problem("", text, "expected path=value, e.g. stages.sft.lr=1e-4");
    return;
  }
  const std::string path = text.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    add_override_problem(path, text, "the value is not valid YAML (" + e.msg + ")");
    return;
  }
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (std::find(parts.begin(), parts.end(), "") != parts.end()) {
    add_override_problem(path, text, "empty component in the path");
    return;
  }
  YAML::Node cur;
  cur.reset(root);  // reset() rebinds; operator= would overwrite the node it refers to
  std::string key;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const bool last = i + 1 == parts.size();
    const YAML::Node& ccur = cur;  // const lookups never insert
    YAML::Node next;
    if (cur.IsSequence()) {
      size_t index = cur.size();
      int64_t n = -1;
      if (parse_int(part, n) && n >= 0) {
        if (size_t(n) >= cur.size()) {
          add_override_problem(path, text, "index " + part + " is out of range ('" + key + "' has " +
                                               std::to_string(cur.size()) + " entries)");
          return;
        }
        index = size_t(n);
      } else {
        std::vector<std::string> names;
        for (size_t j = 0; j < cur.size(); ++j) {
          const YAML::Node name = lookup(ccur[j], "name");
          if (name.IsDefined() && name.IsScalar()) {
            names.push_back(name.Scalar());
            if (name.Scalar() == part && index == cur.size()) index = j;
          }
        }
        if (index == cur.size()) {
          add_override_problem(path, text, "no entry named '" + part + "' in '" + key + "' (names: " +
                                               (names.empty() ? "none" : join(names, ", ")) + ")");
          return;
        }
      }
      key += "[" + std::to_string(index) + "]";
      if (last) {
        cur[index] = value;
        break;
      }
      next.reset(ccur[index]);
    } else if (cur.IsMap()) {
      key = child_key(key, part);
      if (last) {
        cur[part] = value;
        break;
      }
      const YAML::Node found = ccur[part];  // may be invalid (absent): reset() would throw on it
      if (found.IsDefined() && !found.IsNull()) {
        next.reset(found);
      } else {
        if (part == "stages") {  // stages are named in the file, never made up by an override
          add_override_problem(path, text, "the file has no stages");
          return;
        }
        cur[part] = YAML::Node(YAML::NodeType::Map);  // e.g. lora.rank=4 without a lora section
        next.reset(ccur[part]);
      }
    } else {
      add_override_problem(path, text, "'" + key + "' is a value, not a section");
      return;
    }
    cur.reset(next);
  }
  overrides_.emplace_back(key, text);
}

}  // namespace reglage::config::detail
