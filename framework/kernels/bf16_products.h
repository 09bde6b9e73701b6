// How this CPU runs bfloat16 matrix products: natively (LibTorch's, oneDNN's bfloat16 kernels) or widened to
// float32. A CPU may have bfloat16 instructions and still multiply faster in float32: on an Intel Xeon (Emerald
// Rapids, AMX hidden by its VM) one core's vdpbf16ps retires 86 GFLOP/s against 175 for vfmadd231ps, so oneDNN's
// bfloat16 product ran at 157-174 GFLOP/s on 2 cores and the same operands widened to float32 for OpenBLAS at
// 241-285. On AMD's Zen 4 vdpbf16ps retires twice float32's rate, and AMX (amx_bf16) is faster again. Without
// either, LibTorch's bfloat16 product is a scalar loop, many times slower than float32 (3.7 against 49 GFLOP/s
// on one AVX2 machine). The choice depends on the CPU only (never on a timing), so a run's bits are the same
// every time.
#pragma once
#include <string>

#include <torch/torch.h>

namespace reglage::kernels {

enum class Bf16Products {
  kNative,      // every product LibTorch's own
  kWidened,     // products with a wide summed dimension widened; LoRA's narrow rank-r ones stay native
  kWidenedAll,  // every product widened (a CPU without bfloat16 instructions)
};

// This process's choice: REGLAGE_BF16_PRODUCTS=native|widened|widened-all, else from the CPU (AMX, or
// avx512_bf16 on a non-Intel CPU: native; avx512_bf16 on Intel without AMX: widened; no bfloat16 instructions:
// widened-all). Another value of the variable is an error.
Bf16Products bf16_products();
bool bf16_products_native();  // bf16_products() == kNative

// Sets the choice for this process while it lives, then restores the one before: a benchmark comparing the
// paths side by side, tests of each path on any CPU. Not for use while other threads multiply.
class ScopedBf16Products {
 public:
  explicit ScopedBf16Products(Bf16Products choice);
  ~ScopedBf16Products();
  ScopedBf16Products(const ScopedBf16Products&) = delete;
  ScopedBf16Products& operator=(const ScopedBf16Products&) = delete;

 private:
  int saved_;
};

// The choice and why, for logs and benchmarks: e.g. "widened to float32 (Intel avx512_bf16 without AMX: ...)".
std::string bf16_products_choice();

// Whether a product of these operands takes the widened path: both bfloat16, on the CPU, and the choice is
// kWidened or kWidenedAll.
bool widens_bf16(const torch::Tensor& a, const torch::Tensor& b);
// The same for a narrow product (LoRA's rank-r factors): only with kWidenedAll.
bool widens_bf16_narrow(const torch::Tensor& a, const torch::Tensor& b);

namespace detail {
// REGLAGE_BF16_PRODUCTS's value; throws naming the variable for anything but native, widened, widened-all.
Bf16Products parse_bf16_products(const std::string& value);
}  // namespace detail

}  // namespace reglage::kernels
