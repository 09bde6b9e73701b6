// Fast BLAS kernels whatever OpenBLAS detects.
// Debian's OpenBLAS picks its kernels from the CPU model at load time and falls back to a generic SSE3
// ("Prescott") kernel on CPUs it does not know, as on this project's Xeon VMs: 31 GFLOP/s per core in
// float32 instead of 140 with its AVX-512 kernels. OpenBLAS reads OPENBLAS_CORETYPE only while loading, so
// when it reports a weak core on a CPU with AVX-512 (or AVX2), we set the variable and re-execute.
#pragma once

namespace reglage::core {

// Call first thing in main(). Re-executes the program (same argv, same PID) at most once; does nothing
// when OPENBLAS_CORETYPE is already set, when OpenBLAS is not loaded, or when its kernels already match.
void ensure_blas_kernels(char** argv);

}  // namespace reglage::core
