#include "framework/kernels/bf16_products.h"

#include <atomic>
#include <cstdlib>

#include "framework/core/error.h"

namespace reglage::kernels {

namespace {

struct Choice {
  Bf16Products products = Bf16Products::kNative;
  std::string why;
};

Choice from_cpu() {
#if defined(__x86_64__) || defined(__i386__)
  if (__builtin_cpu_supports("amx-bf16")) return {Bf16Products::kNative, "amx_bf16: oneDNN's AMX kernels"};
  if (__builtin_cpu_supports("avx512bf16")) {
    if (__builtin_cpu_is("intel"))
      return {Bf16Products::kWidened, "Intel avx512_bf16 without AMX: vdpbf16ps retires half float32's FMA rate"};
    return {Bf16Products::kNative, "avx512_bf16: vdpbf16ps retires twice float32's FMA rate"};
  }
  return {Bf16Products::kWidenedAll, "no avx512_bf16 or amx_bf16: LibTorch's bfloat16 products are scalar loops"};
#else
  return {Bf16Products::kNative, "not x86: LibTorch's bfloat16 products"};
#endif
}

Choice decide() {
  const char* forced = std::getenv("REGLAGE_BF16_PRODUCTS");
  if (forced == nullptr) return from_cpu();
  return {detail::parse_bf16_products(forced), std::string("REGLAGE_BF16_PRODUCTS=") + forced};
}

const Choice& choice() {
  static const Choice c = decide();
  return c;
}

// A ScopedBf16Products' setting: -1 none, else the Bf16Products value.
std::atomic<int> scoped{-1};

bool cpu_tensors(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == torch::kBFloat16 && b.scalar_type() == torch::kBFloat16 && a.device().is_cpu() &&
         b.device().is_cpu();
}

}  // namespace

namespace detail {
Bf16Products parse_bf16_products(const std::string& value) {
  if (value == "native") return Bf16Products::kNative;
  if (value == "widened") return Bf16Products::kWidened;
  if (value == "widened-all") return Bf16Products::kWidenedAll;
  fail("REGLAGE_BF16_PRODUCTS = '", value, "' (expected native, widened or widened-all)");
}
}  // namespace detail

ScopedBf16Products::ScopedBf16Products(Bf16Products choice) : saved_(scoped.exchange(int(choice))) {}
ScopedBf16Products::~ScopedBf16Products() { scoped.store(saved_); }

Bf16Products bf16_products() {
  const int s = scoped.load();
  return s >= 0 ? Bf16Products(s) : choice().products;
}

bool bf16_products_native() { return bf16_products() == Bf16Products::kNative; }

std::string bf16_products_choice() {
  const std::string why = scoped.load() >= 0 ? "set for this measurement" : choice().why;
  static const char* names[] = {"native", "widened to float32", "widened to float32, the narrow ones too"};
  return std::string(names[int(bf16_products())]) + " (" + why + ")";
}

bool widens_bf16(const torch::Tensor& a, const torch::Tensor& b) {
  return cpu_tensors(a, b) && bf16_products() != Bf16Products::kNative;
}

bool widens_bf16_narrow(const torch::Tensor& a, const torch::Tensor& b) {
  return cpu_tensors(a, b) && bf16_products() == Bf16Products::kWidenedAll;
}

}  // namespace reglage::kernels
