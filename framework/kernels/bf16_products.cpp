#include "framework/kernels/bf16_products.h"

#include <atomic>
#include <cstdlib>

#include "framework/core/error.h"

namespace reglage::kernels {

namespace {

struct Choice {
  bool native = true;
  std::string why;
};

Choice from_cpu() {
#if defined(__x86_64__) || defined(__i386__)
  if (__builtin_cpu_supports("amx-bf16")) return {true, "amx_bf16: oneDNN's AMX kernels"};
  if (__builtin_cpu_supports("avx512bf16")) {
    if (__builtin_cpu_is("intel"))
      return {false, "Intel avx512_bf16 without AMX: vdpbf16ps retires half float32's FMA rate"};
    return {true, "avx512_bf16: vdpbf16ps retires twice float32's FMA rate"};
  }
  return {false, "no avx512_bf16 or amx_bf16: LibTorch's bfloat16 products run at a fraction of float32's"};
#else
  return {true, "not x86: LibTorch's bfloat16 products"};
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

// A ScopedBf16Products' setting: -1 none, 0 widened, 1 native.
std::atomic<int> scoped{-1};

}  // namespace

namespace detail {
bool parse_bf16_products(const std::string& value) {
  if (value == "native") return true;
  if (value == "widened") return false;
  fail("REGLAGE_BF16_PRODUCTS = '", value, "' (expected native or widened)");
}
}  // namespace detail

ScopedBf16Products::ScopedBf16Products(bool native) : saved_(scoped.exchange(native ? 1 : 0)) {}
ScopedBf16Products::~ScopedBf16Products() { scoped.store(saved_); }

bool bf16_products_native() {
  const int s = scoped.load();
  return s >= 0 ? s == 1 : choice().native;
}

std::string bf16_products_choice() {
  const std::string why = scoped.load() >= 0 ? "set for this measurement" : choice().why;
  return std::string(bf16_products_native() ? "native" : "widened to float32") + " (" + why + ")";
}

bool cpu_has_bf16_instructions() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
  return true;
#endif
}

bool widens_bf16(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == torch::kBFloat16 && b.scalar_type() == torch::kBFloat16 && a.device().is_cpu() &&
         b.device().is_cpu() && !bf16_products_native();
}

}  // namespace reglage::kernels
