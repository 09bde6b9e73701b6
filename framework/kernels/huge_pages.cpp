#include "framework/kernels/huge_pages.h"

#include <cstdlib>
#include <cstring>
#include <memory>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "framework/core/error.h"

namespace reglage::kernels {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kAlign = 4096;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

int64_t gather_on_huge_pages(const std::vector<torch::Tensor*>& tensors) {
  std::vector<torch::Tensor*> moving;
  size_t total = 0;
  for (auto* t : tensors)
    if (t != nullptr && t->defined() && t->device().is_cpu() && t->numel() > 0) {
      moving.push_back(t);
      total += round_up(t->nbytes(), kAlign);
    }
  if (total == 0) return 0;
  const size_t size = round_up(total, kHugePage);
  void* base = nullptr;
  if (posix_memalign(&base, kHugePage, size) != 0)
    fail("could not allocate ", size, " bytes to gather ", moving.size(), " frozen weights");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(base, size, MADV_HUGEPAGE);  // advice only: refused, the block keeps ordinary pages
#endif
  std::shared_ptr<void> block(base, std::free);
  torch::NoGradGuard no_grad;
  char* at = static_cast<char*>(base);
  for (auto* t : moving) {
    const auto src = t->contiguous();
    const size_t bytes = src.nbytes();
    std::memcpy(at, src.data_ptr(), bytes);
    t->set_data(torch::from_blob(at, src.sizes(), [block](void*) {}, src.options().requires_grad(false)));
    at += round_up(bytes, kAlign);
  }
  return int64_t(total);
}

}  // namespace reglage::kernels
