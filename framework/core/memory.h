// Allocation estimates checked against the machine's physical memory before the allocation is tried, so
// that an absurd size (a config.json dimension, batch_size x seq x vocab) ends in one clear line instead of
// std::bad_alloc or an allocator backtrace.
#pragma once
#include <cstdint>
#include <string>

namespace reglage::core {

// Physical memory of this machine in bytes (sysconf), or the address-space limit (ulimit -v) when lower;
// 0 when unknown (then nothing is refused).
uint64_t physical_memory_bytes();

// "1.5 GiB", "312 MiB", "4 KiB", "17 B"
std::string format_bytes(double bytes);

// a * b, or false when the product overflows int64 (or either factor is negative).
bool checked_mul(int64_t a, int64_t b, int64_t& out);

// Throws "`what` needs about X, more than this machine's Y of memory; `hint`" when `bytes` exceeds the
// physical memory. `bytes` is a double so that estimates past 2^63 stay comparable.
void check_fits_in_memory(double bytes, const std::string& what, const std::string& hint);

}  // namespace reglage::core
