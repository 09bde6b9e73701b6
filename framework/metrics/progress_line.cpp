#include "framework/metrics/progress_line.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <ostream>

#include "framework/core/error.h"

namespace reglage::metrics {

namespace {

ProgressLine* g_active = nullptr;

// Whether what this process prints ends up on a terminal. An Open MPI rank's stdout is a pseudo-terminal
// that mpirun reads whatever mpirun writes to, so for a rank the parent's stdout is what counts.
bool output_is_terminal() {
  if (const char* term = std::getenv("TERM"); term && std::string(term) == "dumb") return false;
  if (!std::getenv("OMPI_COMM_WORLD_SIZE")) return ::isatty(STDOUT_FILENO) == 1;
  std::error_code ec;
  const auto target = std::filesystem::read_symlink("/proc/" + std::to_string(::getppid()) + "/fd/1", ec).string();
  return !ec && (target.rfind("/dev/pts/", 0) == 0 || target.rfind("/dev/tty", 0) == 0);
}

int terminal_width() {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    const int n = std::atoi(c);
    if (n >= 20) return n;
  }
  return 120;
}

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string format_value(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

ProgressMode progress_mode_from_env() {
  const char* v = std::getenv("REGLAGE_PROGRESS");
  const std::string s = v ? v : "";
  if (s == "line") return ProgressMode::line;
  if (s == "plain") return ProgressMode::plain;
  if (s == "off") return ProgressMode::off;
  if (!s.empty() && s != "auto") fail("REGLAGE_PROGRESS='", s, "': expected line, plain, off or auto");
  return output_is_terminal() ? ProgressMode::line : ProgressMode::plain;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = int64_t(std::llround(seconds));
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", (long long)s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else if (s < 86400) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else std::snprintf(buf, sizeof buf, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
  return buf;
}

std::string format_rate(double r) {
  char buf[32];
  if (r < 1e3) std::snprintf(buf, sizeof buf, "%.0f", r);
  else if (r < 1e6) std::snprintf(buf, sizeof buf, "%.1fk", r / 1e3);
  else std::snprintf(buf, sizeof buf, "%.2fM", r / 1e6);
  return buf;
}

std::string format_progress(const ProgressView& v, bool bar) {
  const double fraction = v.total > 0 ? std::clamp(double(v.step) / double(v.total), 0.0, 1.0) : 0.0;
  const int percent = int(std::floor(fraction * 100.0));
  std::string s = "[" + v.stage + "] ";
  const std::string count = std::to_string(v.step) + "/" + std::to_string(v.total);
  if (bar) {
    constexpr int kBar = 20;
    const int filled = int(std::floor(fraction * kBar));
    char pct[8];
    std::snprintf(pct, sizeof pct, "%3d%%", percent);
    s += count + " [" + std::string(filled, '#') + std::string(kBar - filled, '-') + "] " + pct;
  } else {
    s += v.unit + " " + count + " (" + std::to_string(percent) + "%)";
  }
  std::string numbers;
  for (const auto& [name, value] : v.values) numbers += (numbers.empty() ? "" : " ") + name + " " + format_value(value);
  if (!numbers.empty()) s += (bar ? " | " : " ") + numbers;
  if (v.tokens_per_s >= 0) s += " | " + format_rate(v.tokens_per_s) + " tok/s";
  if (v.eta_s >= 0) s += " | " + (v.step >= v.total ? "done in " + format_duration(v.eta_s) : format_duration(v.eta_s) + " left");
  return s;
}

ProgressLine::ProgressLine(std::string stage, std::string unit, int64_t total, int64_t start_step, ProgressMode mode,
                           std::ostream& out, Clock clock, int width)
    : stage_(std::move(stage)),
      unit_(std::move(unit)),
      total_(total),
      start_step_(start_step),
      step_(start_step),
      mode_(mode),
      out_(out),
      clock_(clock ? std::move(clock) : Clock(steady_seconds)),
      width_(width > 0 ? width : terminal_width()),
      started_(clock_()),
      updated_at_(started_),
      previous_active_(g_active) {
  g_active = this;
}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::finish() {
  if (finished_) return;
  finished_ = true;
  if (drawn_) out_ << "\n" << std::flush;
  drawn_ = false;
  if (g_active == this) g_active = previous_active_;
}

ProgressLine* ProgressLine::active() { return g_active; }

ProgressView ProgressLine::view() const {
  ProgressView v{stage_, unit_, step_, total_, values_};
  const double elapsed = updated_at_ - started_;  // as of the last step, also when redrawn later
  const int64_t done = step_ - start_step_;
  if (tokens_ > 0 && elapsed > 0) v.tokens_per_s = tokens_ / elapsed;
  // Steps left at the mean pace of the steps done in this process; at the end, the time this run took.
  if (done > 0) v.eta_s = step_ >= total_ ? elapsed : elapsed / double(done) * double(total_ - step_);
  return v;
}

void ProgressLine::draw() {
  std::string text = format_progress(view(), true);
  if (int(text.size()) > width_ - 1) text.resize(size_t(std::max(width_ - 1, 0)));
  out_ << "\r" << text << "\x1b[K" << std::flush;  // "\x1b[K": erase what a longer line left
  drawn_ = true;
}

void ProgressLine::update(int64_t step, std::vector<std::pair<std::string, double>> values, double tokens,
                          bool log_step) {
  if (finished_) return;
  step_ = step;
  updated_at_ = clock_();
  values_ = std::move(values);
  tokens_ += tokens;
  if (mode_ == ProgressMode::plain) {
    if (log_step || step == total_) out_ << format_progress(view(), false) << "\n" << std::flush;
  } else if (mode_ == ProgressMode::line) {
    if (step == total_ || last_draw_ < 0 || updated_at_ - last_draw_ >= 0.2) {
      draw();
      last_draw_ = updated_at_;
    }
  }
}

void ProgressLine::print_above(const std::string& text, std::ostream& to) {
  if (!drawn_) {
    to << text << std::endl;
    return;
  }
  out_ << "\r\x1b[K" << std::flush;
  to << text << std::endl;
  draw();
}

}  // namespace reglage::metrics
