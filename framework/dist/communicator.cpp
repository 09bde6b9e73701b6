// make_communicator: picks the backend for a device. REGLAGE_WITH_NCCL is defined for this file (and the
// NCCL sources) only, by CMake, when the NCCL backend is built.
#include "framework/core/error.h"
#include "framework/dist/backends.h"
#include "framework/dist/communicator.h"

namespace reglage::dist {

std::unique_ptr<Communicator> make_communicator(const torch::Device& device) {
  if (device.is_cpu()) return std::make_unique<detail::MpiCommunicator>();
  if (device.is_cuda()) {
#if defined(REGLAGE_WITH_NCCL)
    return detail::make_nccl_communicator(device);
#else
    fail("rank ", world_rank(), ": make_communicator: CUDA device ", device.str(),
         " needs a build with REGLAGE_WITH_NCCL=ON (a CUDA LibTorch and NCCL)");
#endif
  }
  fail("rank ", world_rank(), ": make_communicator: no backend for device ", device.str(), " (expected cpu or cuda)");
}

}  // namespace reglage::dist
