// One self-contained HTML page describing a run directory (for `reglage report`): the resolved config,
// a table of the stages in pipeline.json with their last train and eval metrics, and per stage an inline
// SVG line plot of every known metric its metrics.jsonl holds. No scripts, fonts, images or links: the page
// reads the same offline, attached to a mail or opened from a copied run directory.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace reglage::metrics {

// Plot geometry in SVG user units. The plot area is x in [kPlotLeft, kPlotWidth - kPlotRight],
// y in [kPlotTop, kPlotHeight - kPlotBottom]; titles, tick labels and the legend sit in the margins.
constexpr double kPlotWidth = 460;
constexpr double kPlotHeight = 230;
constexpr double kPlotLeft = 72;
constexpr double kPlotRight = 16;
constexpr double kPlotTop = 30;
constexpr double kPlotBottom = 40;

// The metrics that get a plot, in page order. Other fields appear only in the stage table.
const std::vector<std::string>& report_metric_names();

// The axis range shown for data spanning [lo, hi]: [lo, hi] itself, or when lo == hi, lo widened by
// 10% of |lo| on each side (by 1 when lo == 0), so a constant series is drawn as a centred line.
std::pair<double, double> plot_range(double lo, double hi);

// Where (x, y) lands, given the axis ranges from plot_range:
//   px = kPlotLeft + (x - x0) / (x1 - x0) * (kPlotWidth - kPlotLeft - kPlotRight)
//   py = kPlotHeight - kPlotBottom - (y - y0) / (y1 - y0) * (kPlotHeight - kPlotTop - kPlotBottom)
// Polylines write each point as "%.2f,%.2f" of (px, py). x and y ranges are shared by both splits.
std::pair<double, double> plot_point(double x, double y, std::pair<double, double> x_range,
                                     std::pair<double, double> y_range);

// Text made safe inside HTML elements and attribute values (& < > " ').
std::string html_escape(const std::string& text);

// The page for run_dir. Reads run_dir/pipeline.json (required), run_dir/config.yaml (shown when present),
// run_dir/<stage>/metrics.jsonl and run_dir/<stage>/checkpoints/step-N. Stages are listed in the order of
// config.yaml's stages, then any others in pipeline.json order. Per stage, one <svg> per metric of
// report_metric_names() that has at least one finite numeric value; "train" and "eval" records (a record
// without "split" counts as train) are drawn as two polylines when both have the metric.
// generated_at is the time shown in the header; empty means now (local time).
// Throws reglage::Error naming run_dir when it is not a directory or has no pipeline.json, naming the file
// when pipeline.json is malformed, and naming file:line for a metrics line that is not a JSON object with
// a numeric "step".
std::string render_report(const std::string& run_dir, const std::string& generated_at = "");

}  // namespace reglage::metrics
