// reglage report RUN_DIR [--out FILE]
// Writes one self-contained HTML page describing a run (config, stage table, metric plots as inline SVG;
// framework/metrics/report.h) to FILE, by default RUN_DIR/report.html. Reads only; safe while a run goes on.
#include <iostream>
#include <string>

#include "framework/checkpoint/run_layout.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/metrics/report.h"
#include "launch/commands.h"

namespace reglage::launch {

int cmd_report(int argc, char** argv) {
  if (argc >= 1 && (std::string(argv[0]) == "--help" || std::string(argv[0]) == "-h")) {
    std::cout << "usage: reglage report RUN_DIR [--out FILE]   (default FILE: RUN_DIR/report.html)\n";
    return 0;
  }
  if (argc < 1 || argv[0][0] == '-') fail("usage: reglage report RUN_DIR [--out FILE]");
  const std::string run_dir = argv[0];
  Args args(argc - 1, argv + 1, "report");
  const std::string out = args.str("out", checkpoint::RunLayout(run_dir).report_html());
  args.finish();

  const std::string page = metrics::render_report(run_dir);
  core::write_file_atomic(out, page);  // a browser tab reloading it never sees half a page
  std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace reglage::launch
