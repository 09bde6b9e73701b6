// The fused elementwise kernels for AVX2 + FMA, 8 float lanes. Compiled with -mavx2 -mfma -O3
// (CMakeLists.txt) and without the precompiled header; used only when the CPU has these instructions.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "framework/kernels/elementwise_paths.h"

namespace reglage::kernels::detail {
namespace {

#include "framework/kernels/elementwise_simd.h"

}  // namespace

const ElementwiseKernels& elementwise_avx2() {
  static const ElementwiseKernels table = make_elementwise_kernels();
  return table;
}

}  // namespace reglage::kernels::detail
