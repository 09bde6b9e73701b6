#include "framework/metrics/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/run_layout.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::metrics {

namespace {

using nlohmann::json;

struct Point {
  double step;
  double value;
};

// One stage's metrics.jsonl: records in file order, split into train and eval.
struct StageMetrics {
  std::vector<json> records;
  std::map<std::string, json> last;  // split -> its last record
};

const char* const kTrainColor = "#1f6fd1";
const char* const kEvalColor = "#d9480f";

std::string fmt(const char* pattern, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), pattern, v);
  return buf;
}

// Every non-empty line must be a JSON object with a numeric "step"; anything else names file:line.
StageMetrics read_stage_metrics(const std::string& path) {
  StageMetrics m;
  if (!core::file_exists(path)) return m;
  std::istringstream in(core::read_file(path));
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception& e) {
      fail(path, ":", line_no, ": not valid JSON (", e.what(), "); expected one metrics record per line");
    }
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number() || j["step"].is_boolean())
      fail(path, ":", line_no, ": expected a JSON object with a numeric \"step\"");
    const std::string split = j.contains("split") && j["split"].is_string() ? j["split"].get<std::string>() : "train";
    m.last[split] = j;
    m.records.push_back(std::move(j));
  }
  return m;
}

// The finite numeric values of `name` in records of `split`, by step.
std::vector<Point> series(const StageMetrics& m, const std::string& split, const std::string& name) {
  std::vector<Point> out;
  for (const json& r : m.records) {
    const std::string s = r.contains("split") && r["split"].is_string() ? r["split"].get<std::string>() : "train";
    if (s != split || !r.contains(name) || !r[name].is_number()) continue;  // is_number(): false for bools
    const double v = r[name].get<double>();
    if (std::isfinite(v)) out.push_back({r["step"].get<double>(), v});
  }
  return out;
}

// "step 40: loss=1.234, lr=0.003" for the stage table.
std::string record_summary(const json& r) {
  std::string out = "step " + r["step"].dump();
  bool first = true;
  for (const auto& [key, value] : r.items()) {
    if (key == "step" || key == "split") continue;
    out += first ? ": " : ", ";
    first = false;
    out += key + "=" + (value.is_number_float() ? fmt("%.4g", value.get<double>()) : value.dump());
  }
  return html_escape(out);
}

std::string svg_text(double x, double y, const std::string& anchor, const std::string& text,
                     const std::string& extra = "") {
  return "<text x=\"" + fmt("%.1f", x) + "\" y=\"" + fmt("%.1f", y) + "\" text-anchor=\"" + anchor + "\"" + extra +
         ">" + html_escape(text) + "</text>";
}

// One <svg>: axes, min/max tick labels on both axes, "step" under the x axis, the title, one polyline per
// split that has points, and a legend naming each drawn split.
std::string render_plot(const std::string& name, const std::vector<Point>& train, const std::vector<Point>& eval) {
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const auto* pts : {&train, &eval})
    for (const Point& p : *pts) {
      x_lo = std::min(x_lo, p.step), x_hi = std::max(x_hi, p.step);
      y_lo = std::min(y_lo, p.value), y_hi = std::max(y_hi, p.value);
    }
  const auto xr = plot_range(x_lo, x_hi), yr = plot_range(y_lo, y_hi);
  const double left = kPlotLeft, right = kPlotWidth - kPlotRight;
  const double top = kPlotTop, bottom = kPlotHeight - kPlotBottom;

  std::ostringstream s;
  s << "<svg class=\"plot\" width=\"" << kPlotWidth << "\" height=\"" << kPlotHeight << "\" viewBox=\"0 0 "
    << kPlotWidth << " " << kPlotHeight << "\" role=\"img\" aria-label=\"" << html_escape(name) << "\">\n";
  s << svg_text(kPlotWidth / 2, 18, "middle", name, " class=\"title\"") << "\n";
  // Axes: left and bottom edges of the plot area, plus a light frame.
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << right - left << "\" height=\"" << bottom - top
    << "\" class=\"frame\"/>\n";
  s << "<path d=\"M" << left << " " << top << " V" << bottom << " H" << right << "\" class=\"axis\"/>\n";
  // Tick marks and labels at the ends of each axis.
  s << "<path d=\"M" << left - 4 << " " << top << " H" << left << " M" << left - 4 << " " << bottom << " H" << left
    << " M" << left << " " << bottom << " V" << bottom + 4 << " M" << right << " " << bottom << " V" << bottom + 4
    << "\" class=\"axis\"/>\n";
  s << svg_text(left - 6, top + 4, "end", fmt("%.4g", yr.second)) << "\n";
  s << svg_text(left - 6, bottom + 4, "end", fmt("%.4g", yr.first)) << "\n";
  s << svg_text(left, bottom + 16, "middle", fmt("%.6g", xr.first)) << "\n";
  s << svg_text(right, bottom + 16, "middle", fmt("%.6g", xr.second)) << "\n";
  s << svg_text((left + right) / 2, bottom + 30, "middle", "step", " class=\"xlabel\"") << "\n";

  double legend_y = top + 12;
  for (const auto& [split, pts, color] : {std::make_tuple("train", &train, kTrainColor),
                                          std::make_tuple("eval", &eval, kEvalColor)}) {
    if (pts->empty()) continue;
    s << "<polyline class=\"" << split << "\" fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\"";
    for (size_t i = 0; i < pts->size(); ++i) {
      const auto [px, py] = plot_point((*pts)[i].step, (*pts)[i].value, xr, yr);
      s << (i ? " " : "") << fmt("%.2f", px) << "," << fmt("%.2f", py);
    }
    s << "\"/>\n";
    if (pts->size() == 1) {  // a single point draws no line: mark it
      const auto [px, py] = plot_point(pts->front().step, pts->front().value, xr, yr);
      s << "<circle cx=\"" << fmt("%.2f", px) << "\" cy=\"" << fmt("%.2f", py) << "\" r=\"3\" fill=\"" << color
        << "\"/>\n";
    }
    // Legend entry, top right inside the frame.
    s << "<path d=\"M" << right - 62 << " " << legend_y - 4 << " h16\" stroke=\"" << color
      << "\" stroke-width=\"2\"/>" << svg_text(right - 42, legend_y, "start", split) << "\n";
    legend_y += 14;
  }
  s << "</svg>\n";
  return s.str();
}

// Stage names in the order config.yaml lists them (its "stages:" sequence, as config::to_yaml writes it:
// "  - name: X"), then those only pipeline.json knows, in its order.
std::vector<std::string> stage_order(const std::string& config_text, const nlohmann::ordered_json& stages) {
  std::vector<std::string> order;
  std::istringstream in(config_text);
  std::string line;
  const std::string prefix = "  - name: ";
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0) {
      std::string name = line.substr(prefix.size());
      while (!name.empty() && (name.back() == ' ' || name.back() == '\r')) name.pop_back();
      if (stages.contains(name) && std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
    }
  for (const auto& [name, entry] : stages.items())
    if (std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
  return order;
}

std::string now_text() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %z", &tm);
  return buf;
}

const char* const kStyle = R"css(
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }
.meta { color: #555; font-size: 13px; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 8px; font-size: 12px; max-height: 420px; overflow: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eee; }
td.metrics { font-family: monospace; font-size: 12px; max-width: 420px; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; }
svg.plot { border: 1px solid #ddd; background: #fff; }
svg.plot text { font-size: 11px; fill: #333; }
svg.plot text.title { font-size: 13px; font-weight: bold; }
svg.plot .frame { fill: none; stroke: #eee; }
svg.plot .axis { fill: none; stroke: #444; stroke-width: 1; }
)css";

}  // namespace

const std::vector<std::string>& report_metric_names() {
  static const std::vector<std::string> names = {
      "loss", "accuracy", "reward_mean", "kl", "kl_coef", "entropy", "value_loss", "policy_loss",
      "response_length", "tokens_per_s", "pairs_per_s", "explained_variance", "lr"};
  return names;
}

std::pair<double, double> plot_range(double lo, double hi) {
  if (lo != hi) return {lo, hi};
  const double pad = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
  return {lo - pad, hi + pad};
}

std::pair<double, double> plot_point(double x, double y, std::pair<double, double> x_range,
                                     std::pair<double, double> y_range) {
  const double w = kPlotWidth - kPlotLeft - kPlotRight, h = kPlotHeight - kPlotTop - kPlotBottom;
  return {kPlotLeft + (x - x_range.first) / (x_range.second - x_range.first) * w,
          kPlotHeight - kPlotBottom - (y - y_range.first) / (y_range.second - y_range.first) * h};
}

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string render_report(const std::string& run_dir, const std::string& generated_at) {
  if (!core::is_directory(run_dir)) fail(run_dir, ": not a directory (expected the run_dir of a pipeline)");
  const checkpoint::RunLayout layout(run_dir);
  const std::string pipeline_path = layout.pipeline_json();
  if (!core::file_exists(pipeline_path))
    fail(pipeline_path, ": not found (expected a run directory written by `reglage run`)");
  nlohmann::ordered_json pipeline;
  try {
    pipeline = nlohmann::ordered_json::parse(core::read_file(pipeline_path));
  } catch (const std::exception& e) {
    fail(pipeline_path, ": not valid JSON (", e.what(), ")");
  }
  if (!pipeline.is_object() || !pipeline.contains("stages") || !pipeline["stages"].is_object())
    fail(pipeline_path, ": expected an object with a \"stages\" object");
  const auto& stages = pipeline["stages"];

  const std::string config_path = layout.config_yaml();
  const bool has_config = core::file_exists(config_path);
  const std::string config_text = has_config ? core::read_file(config_path) : "";
  const std::vector<std::string> order = stage_order(config_text, stages);

  // Read every stage's metrics first, so a malformed file fails before any output.
  std::map<std::string, StageMetrics> metrics;
  for (const std::string& name : order)
    metrics[name] = read_stage_metrics(layout.metrics(name));

  std::ostringstream page;
  page << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>reglage report: "
       << html_escape(run_dir) << "</title>\n<style>" << kStyle << "</style>\n</head>\n<body>\n";
  page << "<h1>reglage run report</h1>\n<p class=\"meta\">run dir: <code>" << html_escape(run_dir)
       << "</code><br>generated: " << html_escape(generated_at.empty() ? now_text() : generated_at) << "</p>\n";

  // The resolved config, as `reglage run` wrote it.
  page << "<h2>Config</h2>\n";
  if (has_config)
    page << "<p class=\"meta\">" << html_escape(config_path) << "</p>\n<pre>" << html_escape(config_text)
         << "</pre>\n";
  else
    page << "<p class=\"meta\">no config.yaml in the run directory</p>\n";

  // The stage table: one row per stage.
  page << "<h2>Stages</h2>\n<table class=\"stages\">\n<tr><th>stage</th><th>type</th><th>state</th>"
          "<th>last checkpoint</th><th>last train</th><th>last eval</th></tr>\n";
  for (const std::string& name : order) {
    const auto& entry = stages[name];
    const auto text = [&](const char* key) {
      return entry.is_object() && entry.contains(key) && entry[key].is_string() ? entry[key].get<std::string>()
                                                                                 : std::string("?");
    };
    const auto steps = checkpoint::list_steps(layout.checkpoints(name));
    const auto& last = metrics[name].last;
    page << "<tr><td>" << html_escape(name) << "</td><td>" << html_escape(text("type")) << "</td><td>"
         << html_escape(text("state")) << "</td><td>" << (steps.empty() ? "-" : "step " + std::to_string(steps.back()))
         << "</td><td class=\"metrics\">" << (last.count("train") ? record_summary(last.at("train")) : "-")
         << "</td><td class=\"metrics\">" << (last.count("eval") ? record_summary(last.at("eval")) : "-")
         << "</td></tr>\n";
  }
  page << "</table>\n";

  // Per stage: one plot per known metric present in its metrics.jsonl.
  for (const std::string& name : order) {
    page << "<h2>Stage " << html_escape(name) << "</h2>\n";
    std::string plots;
    for (const std::string& metric : report_metric_names()) {
      const auto train = series(metrics[name], "train", metric);
      const auto eval = series(metrics[name], "eval", metric);
      if (!train.empty() || !eval.empty()) plots += render_plot(metric, train, eval);
    }
    page << (plots.empty() ? "<p class=\"meta\">no metrics</p>\n" : "<div class=\"plots\">\n" + plots + "</div>\n");
  }

  page << "</body>\n</html>\n";
  return page.str();
}

}  // namespace reglage::metrics
