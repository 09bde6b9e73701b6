// reglage report: the HTML page of a fake run directory (config.yaml, pipeline.json as trainers/pipeline.cpp
// writes it, two stages with train and eval metrics): self-contained, one <svg> per plotted metric, polyline
// coordinates recomputed here from the documented scaling, config text escaped, the stage table's rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "framework/core/file_util.h"
#include "framework/metrics/report.h"
#include "test_util.h"

namespace reglage {
namespace {

namespace fs = std::filesystem;

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// The text between the first `from` at or after `start` and the next `to`.
std::string between(const std::string& text, size_t start, const std::string& from, const std::string& to) {
  const size_t a = text.find(from, start);
  if (a == std::string::npos) return "";
  const size_t b = text.find(to, a + from.size());
  return b == std::string::npos ? "" : text.substr(a + from.size(), b - a - from.size());
}

// "x1,y1 x2,y2 ..." as pairs.
std::vector<std::pair<double, double>> parse_points(const std::string& points) {
  std::vector<std::pair<double, double>> out;
  std::istringstream in(points);
  std::string pair;
  while (in >> pair) {
    const size_t comma = pair.find(',');
    out.push_back({std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1))});
  }
  return out;
}

// A run directory as `reglage run` leaves it: sft done (checkpoints 20 and 40), rm still running.
void write_fake_run(const std::string& dir) {
  fs::create_directories(dir + "/sft/checkpoints/step-20");
  fs::create_directories(dir + "/sft/checkpoints/step-40");
  fs::create_directories(dir + "/rm");
  core::write_file_atomic(dir + "/config.yaml",
                          "run_dir: " + dir + "\nseed: 1\nmodel:\n  path: m<script>alert(1)</script>.bin\n"
                          "stages:\n  - name: sft\n    type: sft\n  - name: rm\n    type: reward_model\n");
  // nlohmann::json writes keys sorted, so rm comes first in the file; the page follows config.yaml.
  core::write_file_atomic(dir + "/pipeline.json", R"({
  "stages": {
    "rm": {"config_hash": "b2", "state": "running", "type": "reward_model"},
    "sft": {"config_hash": "a1", "output": ")" + dir + R"(/sft/final", "state": "done", "type": "sft"}
  }
})");
  // sft: loss (train and eval), lr (constant), tokens_per_s; grad_norm is not a plotted metric.
  core::write_file_atomic(dir + "/sft/metrics.jsonl",
      "{\"step\":10,\"split\":\"train\",\"loss\":4.0,\"lr\":0.003,\"grad_norm\":1.5,\"tokens_per_s\":1000}\n"
      "{\"step\":20,\"split\":\"train\",\"loss\":3.0,\"lr\":0.003,\"grad_norm\":1.2,\"tokens_per_s\":1100}\n"
      "{\"step\":20,\"split\":\"eval\",\"loss\":3.5}\n"
      "{\"step\":30,\"split\":\"train\",\"loss\":2.5,\"lr\":0.003,\"grad_norm\":1.0,\"tokens_per_s\":1050}\n"
      "{\"step\":40,\"split\":\"train\",\"loss\":2.0,\"lr\":0.003,\"grad_norm\":0.9,\"tokens_per_s\":1200}\n"
      "{\"step\":40,\"split\":\"eval\",\"loss\":2.25}\n");
  // rm: loss, accuracy, pairs_per_s; entropy is a string and kl a boolean here, so neither is plotted.
  core::write_file_atomic(dir + "/rm/metrics.jsonl",
      "{\"step\":5,\"split\":\"train\",\"loss\":0.69,\"accuracy\":0.5,\"pairs_per_s\":80,\"entropy\":\"n/a\",\"kl\":true}\n"
      "\n"
      "{\"step\":10,\"split\":\"train\",\"loss\":0.6,\"accuracy\":0.6,\"pairs_per_s\":82}\n"
      "{\"step\":10,\"split\":\"eval\",\"loss\":0.65,\"accuracy\":0.55}\n");
}

TEST(Report, PageOfAFakeRun) {
  test::TempDir tmp;
  const std::string dir = tmp.path("run");
  write_fake_run(dir);
  const std::string page = metrics::render_report(dir, "2024-01-02 03:04:05");

  // Self-contained: no references outside the page.
  EXPECT_EQ(page.find("http://"), std::string::npos);
  EXPECT_EQ(page.find("https://"), std::string::npos);
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(page.find("<img"), std::string::npos);
  EXPECT_EQ(page.find("<link"), std::string::npos);
  EXPECT_NE(page.find("2024-01-02 03:04:05"), std::string::npos);

  // The config value with <script> is shown escaped inside the <pre>.
  const std::string pre = between(page, 0, "<pre>", "</pre>");
  EXPECT_NE(pre.find("path: m&lt;script&gt;alert(1)&lt;/script&gt;.bin"), std::string::npos) << pre;

  // Stage table: a header row and one row per stage, in config.yaml's order.
  EXPECT_EQ(count(page, "<tr>"), 3u);
  const size_t sft_row = page.find("<tr><td>sft</td><td>sft</td><td>done</td><td>step 40</td>");
  const size_t rm_row = page.find("<tr><td>rm</td><td>reward_model</td><td>running</td><td>-</td>");
  ASSERT_NE(sft_row, std::string::npos);
  ASSERT_NE(rm_row, std::string::npos);
  EXPECT_LT(sft_row, rm_row);
  // Last train and eval records in the rows.
  EXPECT_NE(page.find("step 40: grad_norm=0.9, loss=2, lr=0.003, tokens_per_s=1200", sft_row), std::string::npos);
  EXPECT_NE(page.find("step 40: loss=2.25</td>", sft_row), std::string::npos);
  EXPECT_NE(page.find("step 10: accuracy=0.55, loss=0.65</td>", rm_row), std::string::npos);

  // One <svg> per plotted metric: sft loss, tokens_per_s, lr; rm loss, accuracy, pairs_per_s.
  EXPECT_EQ(count(page, "<svg"), 6u);
  const size_t sft_at = page.find("<h2>Stage sft</h2>"), rm_at = page.find("<h2>Stage rm</h2>");
  ASSERT_NE(sft_at, std::string::npos);
  ASSERT_NE(rm_at, std::string::npos);
  const std::string sft_part = page.substr(sft_at, rm_at - sft_at), rm_part = page.substr(rm_at);
  EXPECT_EQ(count(sft_part, "<svg"), 3u);
  EXPECT_EQ(count(rm_part, "<svg"), 3u);
  for (const char* m : {"\"loss\"", "\"lr\"", "\"tokens_per_s\""}) EXPECT_NE(sft_part.find(m), std::string::npos) << m;
  for (const char* m : {"\"loss\"", "\"accuracy\"", "\"pairs_per_s\""}) EXPECT_NE(rm_part.find(m), std::string::npos) << m;
  EXPECT_EQ(rm_part.find("aria-label=\"entropy\""), std::string::npos);
  EXPECT_EQ(rm_part.find("aria-label=\"kl\""), std::string::npos);
  EXPECT_EQ(page.find("aria-label=\"grad_norm\""), std::string::npos);

  // sft loss: train has 4 points, eval 2; both share x in [10, 40] and y in [2.0, 4.0].
  const size_t loss_svg = page.find("aria-label=\"loss\"", sft_at);
  const std::string svg = between(page, loss_svg, "", "</svg>");
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_NE(svg.find(">train</text>"), std::string::npos);  // the legend
  EXPECT_NE(svg.find(">eval</text>"), std::string::npos);
  const auto train_pts = parse_points(between(svg, svg.find("class=\"train\""), "points=\"", "\""));
  const auto eval_pts = parse_points(between(svg, svg.find("class=\"eval\""), "points=\"", "\""));
  ASSERT_EQ(train_pts.size(), 4u);
  ASSERT_EQ(eval_pts.size(), 2u);
  const double w = metrics::kPlotWidth - metrics::kPlotLeft - metrics::kPlotRight;
  const double h = metrics::kPlotHeight - metrics::kPlotTop - metrics::kPlotBottom;
  const auto px = [&](double step) { return metrics::kPlotLeft + (step - 10) / 30 * w; };
  const auto py = [&](double v) { return metrics::kPlotHeight - metrics::kPlotBottom - (v - 2.0) / 2.0 * h; };
  EXPECT_NEAR(train_pts.front().first, px(10), 0.006);  // = kPlotLeft
  EXPECT_NEAR(train_pts.front().second, py(4.0), 0.006);  // = kPlotTop
  EXPECT_NEAR(train_pts.back().first, px(40), 0.006);  // = right edge
  EXPECT_NEAR(train_pts.back().second, py(2.0), 0.006);  // = bottom edge
  EXPECT_NEAR(train_pts[1].second, py(3.0), 0.006);
  EXPECT_NEAR(eval_pts.front().first, px(20), 0.006);
  EXPECT_NEAR(eval_pts.front().second, py(3.5), 0.006);
  EXPECT_NEAR(eval_pts.back().second, py(2.25), 0.006);
  // Min/max tick labels and the x label.
  for (const char* label : {">4</text>", ">2</text>", ">10</text>", ">40</text>", ">step</text>"})
    EXPECT_NE(svg.find(label), std::string::npos) << label;

  // lr is constant: the range is widened by 10% each side, so every point sits on the middle line.
  const auto range = metrics::plot_range(0.003, 0.003);
  EXPECT_DOUBLE_EQ(range.first, 0.003 - 0.0003);
  EXPECT_DOUBLE_EQ(range.second, 0.003 + 0.0003);
  const size_t lr_svg = page.find("aria-label=\"lr\"", sft_at);
  const auto lr_pts = parse_points(between(page, page.find("class=\"train\"", lr_svg), "points=\"", "\""));
  ASSERT_EQ(lr_pts.size(), 4u);
  for (const auto& p : lr_pts) EXPECT_NEAR(p.second, metrics::kPlotTop + h / 2, 0.006);
  EXPECT_EQ(count(between(page, lr_svg, "", "</svg>"), "<polyline"), 1u);  // no eval lr
}

TEST(Report, MalformedMetricsLineIsNamedWithFileAndLine) {
  test::TempDir tmp;
  const std::string dir = tmp.path("run");
  write_fake_run(dir);
  core::write_file_atomic(dir + "/rm/metrics.jsonl",
                          "{\"step\":5,\"loss\":0.7}\n{\"step\":10,\"loss\":0.6}\n{\"step\":15,\"loss\":0.\n");
  test::expect_error([&] { metrics::render_report(dir); }, {dir + "/rm/metrics.jsonl:3:", "not valid JSON"});
  core::write_file_atomic(dir + "/rm/metrics.jsonl", "{\"step\":5,\"loss\":0.7}\n[1, 2]\n");
  test::expect_error([&] { metrics::render_report(dir); }, {dir + "/rm/metrics.jsonl:2:", "numeric \"step\""});
}

TEST(Report, MissingRunDirOrPipelineJson) {
  test::TempDir tmp;
  test::expect_error([&] { metrics::render_report(tmp.path("nowhere")); }, {tmp.path("nowhere"), "not a directory"});
  test::expect_error([&] { metrics::render_report(tmp.path()); }, {tmp.path("pipeline.json"), "not found"});
}

TEST(Report, CommandWritesThePage) {
  test::TempDir tmp;
  const std::string dir = tmp.path("run");
  write_fake_run(dir);
  auto r = test::run_reglage("report " + dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(core::read_file(dir + "/report.html").find("<h2>Stage sft</h2>"), std::string::npos);
  r = test::run_reglage("report " + dir + " --out " + tmp.path("other.html"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(core::file_exists(tmp.path("other.html")));
  r = test::run_reglage("report " + dir + " --outt x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
  r = test::run_reglage("report " + tmp.path("nowhere"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;  // one line
  EXPECT_NE(r.err.find("reglage report: error: " + tmp.path("nowhere")), std::string::npos) << r.err;
}

}  // namespace
}  // namespace reglage
