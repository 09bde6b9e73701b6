// The stage progress line: its text (bar and plain forms, durations, rates), the ETA from a test clock,
// redraw throttling, messages printed above it, and REGLAGE_PROGRESS.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "framework/metrics/progress_line.h"

namespace reglage {
namespace {

using metrics::ProgressLine;
using metrics::ProgressMode;

TEST(ProgressLine, DurationsAndRates) {
  EXPECT_EQ(metrics::format_duration(0), "0s");
  EXPECT_EQ(metrics::format_duration(59.4), "59s");
  EXPECT_EQ(metrics::format_duration(60), "1m00s");
  EXPECT_EQ(metrics::format_duration(125), "2m05s");
  EXPECT_EQ(metrics::format_duration(3725), "1h02m");      // 1 h 2 min 5 s
  EXPECT_EQ(metrics::format_duration(90061), "1d01h");     // 1 d 1 h 1 min 1 s
  EXPECT_EQ(metrics::format_duration(-1), "?");
  EXPECT_EQ(metrics::format_rate(950), "950");
  EXPECT_EQ(metrics::format_rate(31234), "31.2k");
  EXPECT_EQ(metrics::format_rate(1250000), "1.25M");
}

TEST(ProgressLine, BarAndPlainText) {
  metrics::ProgressView v{"sft", "step", 120, 600, {{"loss", 1.0234}, {"lr", 0.0003}}, 31234, 125};
  // 120/600 = 20%: 4 of 20 bar cells.
  EXPECT_EQ(metrics::format_progress(v, true),
            "[sft] 120/600 [####----------------]  20% | loss 1.023 lr 0.0003 | 31.2k tok/s | 2m05s left");
  EXPECT_EQ(metrics::format_progress(v, false),
            "[sft] step 120/600 (20%) loss 1.023 lr 0.0003 | 31.2k tok/s | 2m05s left");
  // Nothing measured yet: no rate, no ETA.
  metrics::ProgressView first{"ppo", "iteration", 0, 50, {}, -1, -1};
  EXPECT_EQ(metrics::format_progress(first, false), "[ppo] iteration 0/50 (0%)");
  EXPECT_EQ(metrics::format_progress(first, true), "[ppo] 0/50 [--------------------]   0%");
}

// A clock the test moves by hand.
struct FakeClock {
  double now = 100.0;
  ProgressLine::Clock fn() {
    return [this] { return now; };
  }
};

TEST(ProgressLine, TerminalLineIsRedrawnInPlaceWithTheEta) {
  FakeClock clock;
  std::ostringstream out;
  {
    ProgressLine line("rm", "step", 4, 0, ProgressMode::line, out, clock.fn(), 200);
    clock.now = 101;  // step 1 took 1 s: 3 steps left at 1 s each
    line.update(1, {{"loss", 0.5}}, 1000, false);
    EXPECT_EQ(out.str(), "\r[rm] 1/4 [#####---------------]  25% | loss 0.5 | 1.0k tok/s | 3s left\x1b[K");
    out.str("");
    clock.now = 101.1;  // within 0.2 s of the last draw: not redrawn
    line.update(2, {{"loss", 0.4}}, 1000, true);
    EXPECT_EQ(out.str(), "");
    clock.now = 104;  // the last step is always drawn; the ETA becomes the time the stage took
    line.update(4, {{"loss", 0.25}}, 2000, false);
    EXPECT_EQ(out.str(), "\r[rm] 4/4 [####################] 100% | loss 0.25 | 1.0k tok/s | done in 4s\x1b[K");
    out.str("");
    line.finish();
    EXPECT_EQ(out.str(), "\n");
    out.str("");
    line.update(4, {}, 0, true);  // after finish: nothing
  }
  EXPECT_EQ(out.str(), "");  // finish() already ended the line
}

TEST(ProgressLine, PlainLinesAtLogStepsOnly) {
  FakeClock clock;
  std::ostringstream out;
  ProgressLine line("sft", "step", 10, 0, ProgressMode::plain, out, clock.fn(), 40);  // width ignored: plain
  for (int step = 1; step <= 10; ++step) {
    clock.now += 2;
    line.update(step, {{"loss", 2.0 / step}}, 500, step % 5 == 0);
  }
  EXPECT_EQ(out.str(),
            "[sft] step 5/10 (50%) loss 0.4 | 250 tok/s | 10s left\n"
            "[sft] step 10/10 (100%) loss 0.2 | 250 tok/s | done in 20s\n");
  EXPECT_EQ(out.str().find('\r'), std::string::npos);
}

TEST(ProgressLine, ResumedStageCountsItsPaceFromTheResumeStep) {
  FakeClock clock;
  std::ostringstream out;
  ProgressLine line("ppo", "iteration", 100, 50, ProgressMode::plain, out, clock.fn());
  clock.now += 10;  // 10 iterations in 10 s, 40 left
  line.update(60, {{"reward", 1.5}}, 0, true);
  EXPECT_EQ(out.str(), "[ppo] iteration 60/100 (60%) reward 1.5 | 40s left\n");
}

TEST(ProgressLine, MessagesGoAboveTheLineWhichIsRedrawn) {
  FakeClock clock;
  std::ostringstream out;
  ProgressLine line("sft", "step", 8, 0, ProgressMode::line, out, clock.fn(), 200);
  EXPECT_EQ(ProgressLine::active(), &line);
  line.print_above("[sft] before any step", out);  // nothing drawn yet: a plain line
  EXPECT_EQ(out.str(), "[sft] before any step\n");
  out.str("");
  clock.now += 1;
  line.update(4, {{"loss", 1.0}}, 0, false);
  out.str("");
  line.print_above("[sft] step 4 eval loss 0.9", out);
  EXPECT_EQ(out.str(), "\r\x1b[K[sft] step 4 eval loss 0.9\n"
                       "\r[sft] 4/8 [##########----------]  50% | loss 1 | 1s left\x1b[K");
  line.finish();
  EXPECT_EQ(ProgressLine::active(), nullptr);
}

TEST(ProgressLine, LongLinesAreCutToTheTerminalWidth) {
  FakeClock clock;
  std::ostringstream out;
  ProgressLine line("sft", "step", 8, 0, ProgressMode::line, out, clock.fn(), 30);
  clock.now += 1;
  line.update(1, {{"loss", 1.0}, {"lr", 0.001}}, 100, false);
  EXPECT_EQ(out.str(), "\r[sft] 1/8 [##----------------\x1b[K");  // 29 characters of text
}

TEST(ProgressLine, OffPrintsNothing) {
  FakeClock clock;
  std::ostringstream out;
  ProgressLine line("sft", "step", 2, 0, ProgressMode::off, out, clock.fn());
  clock.now += 1;
  line.update(1, {{"loss", 1.0}}, 10, true);
  line.update(2, {{"loss", 1.0}}, 10, true);
  line.finish();
  EXPECT_EQ(out.str(), "");
}

TEST(ProgressLine, ModeFromTheEnvironment) {
  const char* saved = std::getenv("REGLAGE_PROGRESS");
  const std::string keep = saved ? saved : "";
  ::setenv("REGLAGE_PROGRESS", "plain", 1);
  EXPECT_EQ(metrics::progress_mode_from_env(), ProgressMode::plain);
  ::setenv("REGLAGE_PROGRESS", "line", 1);
  EXPECT_EQ(metrics::progress_mode_from_env(), ProgressMode::line);
  ::setenv("REGLAGE_PROGRESS", "off", 1);
  EXPECT_EQ(metrics::progress_mode_from_env(), ProgressMode::off);
  ::setenv("REGLAGE_PROGRESS", "fancy", 1);
  try {
    metrics::progress_mode_from_env();
    ADD_FAILURE() << "no error for REGLAGE_PROGRESS=fancy";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("REGLAGE_PROGRESS='fancy': expected line, plain, off or auto"),
              std::string::npos)
        << e.what();
  }
  if (saved) ::setenv("REGLAGE_PROGRESS", keep.c_str(), 1);
  else ::unsetenv("REGLAGE_PROGRESS");
}

}  // namespace
}  // namespace reglage
