#include "framework/core/memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

#include <cstdio>

#include "framework/core/error.h"

namespace reglage::core {

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGE_SIZE);
  uint64_t total = pages > 0 && page_size > 0 ? uint64_t(pages) * uint64_t(page_size) : 0;
  // An address-space limit (ulimit -v) is lower still: allocations past it fail the same way.
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
    total = total == 0 ? uint64_t(limit.rlim_cur) : std::min<uint64_t>(total, uint64_t(limit.rlim_cur));
  return total;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) bytes /= 1024, ++u;
  char text[64];
  if (u == 6 && bytes >= 1024)
    std::snprintf(text, sizeof(text), "%.3g %s", bytes, units[u]);
  else
    std::snprintf(text, sizeof(text), u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return text;
}

bool checked_mul(int64_t a, int64_t b, int64_t& out) {
  if (a < 0 || b < 0) return false;
  return !__builtin_mul_overflow(a, b, &out);
}

void check_fits_in_memory(double bytes, const std::string& what, const std::string& hint) {
  const uint64_t total = physical_memory_bytes();
  if (total == 0 || bytes <= double(total)) return;
  fail(what, " needs about ", format_bytes(bytes), ", more than this machine's ", format_bytes(double(total)),
       " of memory", hint.empty() ? "" : "; ", hint);
}

}  // namespace reglage::core
