// How this CPU runs bfloat16 matrix products: natively (oneDNN's bfloat16 kernels) or widened to float32.
// A CPU may have bfloat16 instructions and still multiply faster in float32: on an Intel Xeon (Emerald Rapids,
// AMX hidden by its VM) one core's vdpbf16ps retires 86 GFLOP/s against 175 for vfmadd231ps, so oneDNN's
// bfloat16 product ran at 157-174 GFLOP/s on 2 cores and the same operands widened to float32 for OpenBLAS at
// 241-285. On AMD's Zen 4 vdpbf16ps retires twice float32's rate, and AMX (amx_bf16) is faster again. Without
// either, LibTorch's bfloat16 product is many times slower than float32 (3.7 against 49 GFLOP/s on one AVX2
// machine). The choice depends on the CPU only (never on a timing), so a run's bits are the same every time.
#pragma once
#include <string>

#include <torch/torch.h>

namespace reglage::kernels {

// Whether bfloat16 products with a wide summed dimension run natively (true) or widened to float32 (false).
// REGLAGE_BF16_PRODUCTS=native|widened overrides the CPU's choice; another value is an error.
bool bf16_products_native();

// Whether the CPU has bfloat16 dot-product instructions (avx512_bf16 or amx_bf16; true off x86, where LibTorch
// decides). Without them every bfloat16 product LibTorch runs is a scalar loop, the narrow ones (LoRA's rank-r
// factors, which stay LibTorch's) included.
bool cpu_has_bf16_instructions();

// Sets the choice for this process while it lives, then restores the one before: a benchmark comparing both
// paths side by side, tests of either path on any CPU. Not for use while other threads multiply.
class ScopedBf16Products {
 public:
  explicit ScopedBf16Products(bool native);
  ~ScopedBf16Products();
  ScopedBf16Products(const ScopedBf16Products&) = delete;
  ScopedBf16Products& operator=(const ScopedBf16Products&) = delete;

 private:
  int saved_;
};

// The choice and why, for logs and benchmarks: e.g. "widened (Intel avx512_bf16 without AMX: ...)".
std::string bf16_products_choice();

// Whether a product of these operands takes the widened path: both bfloat16, on the CPU, and the CPU's choice
// is widened.
bool widens_bf16(const torch::Tensor& a, const torch::Tensor& b);

namespace detail {
// REGLAGE_BF16_PRODUCTS's value: true for "native", false for "widened"; throws naming the variable otherwise.
bool parse_bf16_products(const std::string& value);
}  // namespace detail

}  // namespace reglage::kernels
