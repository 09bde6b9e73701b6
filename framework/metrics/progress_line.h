// The progress line rank 0 shows for a stage: step/total, the step's headline numbers (loss, reward, ...),
// tokens/s and the time left.
//   terminal: one line redrawn in place with "\r" (at most 5 times a second, and at the last step):
//     [sft] 120/600 [#####---------------]  20% | loss 1.0234 lr 0.0003 | 31.2k tok/s | 2m05s left
//   otherwise: the same text as a plain line at the trainer's log steps, so log files get no "\r".
// REGLAGE_PROGRESS=line|plain|off chooses; unset (or auto), a terminal on stdout picks "line". Under mpirun
// a rank's stdout is always Open MPI's pseudo-terminal, so there the stdout of the rank's parent (mpirun,
// or `reglage launch` before it) decides.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace reglage::metrics {

enum class ProgressMode { line, plain, off };

// REGLAGE_PROGRESS, or the terminal test above. A value other than line|plain|off|auto is an error.
ProgressMode progress_mode_from_env();

// "45s", "4m05s", "1h02m", "3d04h"; "?" for a negative or non-finite time.
std::string format_duration(double seconds);
// "950", "31.2k", "1.25M".
std::string format_rate(double per_second);

// What one line shows. tokens_per_s < 0 or eta_s < 0: not shown (no tokens counted yet / no step done yet).
struct ProgressView {
  std::string stage;
  std::string unit;  // "step" or "iteration", for the plain line
  int64_t step = 0;
  int64_t total = 0;
  std::vector<std::pair<std::string, double>> values;  // in display order
  double tokens_per_s = -1;
  double eta_s = -1;
};

// The terminal form (with the bar) or the plain form:
//   bar:   "[sft] 120/600 [#####---------------]  20% | loss 1.0234 | 31.2k tok/s | 2m05s left"
//   plain: "[sft] step 120/600 (20%) loss 1.0234 | 31.2k tok/s | 2m05s left"
std::string format_progress(const ProgressView& view, bool bar);

class ProgressLine {
 public:
  using Clock = std::function<double()>;  // seconds, monotonic; steady_clock unless a test gives one

  // A stage resumed at start_step counts its rate and ETA from there. width: the terminal's columns (lines
  // are cut to width - 1 so that "\r" redraws never wrap); 0 asks the terminal (COLUMNS, else 120).
  ProgressLine(std::string stage, std::string unit, int64_t total, int64_t start_step, ProgressMode mode,
               std::ostream& out, Clock clock = {}, int width = 0);
  ~ProgressLine();  // finish()
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // After each step: the steps done, the step's numbers, the tokens it processed (summed over ranks),
  // and whether it is one of the trainer's log steps (the plain mode prints those).
  void update(int64_t step, std::vector<std::pair<std::string, double>> values, double tokens, bool log_step);

  // Ends a drawn line with its newline and stops being active(); later updates are ignored.
  void finish();

  // Prints a whole line of other output; on a terminal the progress line is cleared first and redrawn
  // below it. StageContext::log/warn use it through active().
  void print_above(const std::string& text, std::ostream& to);

  // The line of the stage running in this process, or nullptr.
  static ProgressLine* active();

 private:
  ProgressView view() const;
  void draw();

  std::string stage_, unit_;
  int64_t total_, start_step_, step_;
  ProgressMode mode_;
  std::ostream& out_;
  Clock clock_;
  int width_;
  double started_, updated_at_, last_draw_ = -1;
  double tokens_ = 0;
  std::vector<std::pair<std::string, double>> values_;
  bool drawn_ = false;  // a line is on the terminal without its newline
  bool finished_ = false;
  ProgressLine* previous_active_;
};

}  // namespace reglage::metrics
