// NCCL backend for CUDA tensors (built only with REGLAGE_WITH_NCCL, against a CUDA LibTorch). One
// communicator per process on one device; its ranks are MPI_COMM_WORLD's, and rank 0's ncclUniqueId
// reaches the others by MPI_Bcast. Collectives run on the current CUDA stream of the device, so they are
// ordered with the kernels that produced the tensors; the host does not wait for them (barrier does).
// Every ncclResult_t is checked: on failure the communicator is aborted (peers stuck in the collective
// see an error instead of hanging) and a reglage::Error names the call, the op label and the rank.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <mpi.h>
#include <nccl.h>

#include "framework/core/error.h"
#include "framework/dist/backends.h"
#include "framework/dist/communicator.h"

namespace reglage::dist::detail {

namespace {

ncclDataType_t nccl_type(torch::ScalarType type, int rank, const std::string& op) {
  switch (type) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
#if NCCL_MAJOR > 2 || (NCCL_MAJOR == 2 && NCCL_MINOR >= 10)
    case torch::kBFloat16: return ncclBfloat16;
#endif
    case torch::kLong: return ncclInt64;
    case torch::kInt: return ncclInt32;
    case torch::kChar: return ncclInt8;
    case torch::kByte: return ncclUint8;
    default:
      fail("rank ", rank, ": all_reduce_sum in '", op, "': dtype ", c10::toString(type),
           " not supported by the NCCL backend");
  }
}

class NcclCommunicator final : public WorldCommunicator {
 public:
  explicit NcclCommunicator(const torch::Device& device)
      : rank_(world_rank()), size_(world_size()),
        device_(torch::kCUDA, device.has_index() ? device.index() : c10::cuda::current_device()) {
    if (size_ > 1 && !mpi_active())
      fail("rank ", rank_, ": NCCL communicator: dist::init must run first (the unique id goes over MPI)");
    c10::cuda::CUDAGuard guard(device_);
    ncclUniqueId id;
    if (rank_ == 0) check_init(ncclGetUniqueId(&id), "ncclGetUniqueId");
    if (size_ > 1)  // rank 0's id to every rank; all ranks then join the same clique
      mpi_check(MPI_Bcast(&id, int(sizeof(id)), MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast", "nccl unique id");
    check_init(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }

  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);  // result ignored: destructors must not throw
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(torch::Tensor& t, const std::string& op) override {
    check_tensor(t, "all_reduce_sum", op);
    if (t.numel() == 0) return;
    torch::NoGradGuard no_grad;
    c10::cuda::CUDAGuard guard(device_);
    torch::Tensor work = t.contiguous();
    const ncclDataType_t type = nccl_type(work.scalar_type(), rank_, op);
    check(ncclAllReduce(work.data_ptr(), work.data_ptr(), size_t(work.numel()), type, ncclSum, live(op),
                        c10::cuda::getCurrentCUDAStream(device_.index()).stream()),
          "ncclAllReduce", op);
    if (!work.is_same(t)) t.copy_(work);  // same stream: ordered after the collective
  }

  void broadcast(torch::Tensor& t, int root, const std::string& op) override {
    check_tensor(t, "broadcast", op);
    if (root < 0 || root >= size_)
      fail("rank ", rank_, ": broadcast in '", op, "': root ", root, " (must be in [0, ", size_, "))");
    if (t.numel() == 0) return;
    torch::NoGradGuard no_grad;
    c10::cuda::CUDAGuard guard(device_);
    torch::Tensor work = t.contiguous();
    // A copy of bytes: every dtype goes as ncclUint8, exactly.
    check(ncclBroadcast(work.data_ptr(), work.data_ptr(), size_t(work.numel()) * work.element_size(), ncclUint8,
                        root, live(op), c10::cuda::getCurrentCUDAStream(device_.index()).stream()),
          "ncclBroadcast", op);
    if (!work.is_same(t)) t.copy_(work);
  }

  // NCCL has no barrier: a one-element all-reduce, then the host waits for the stream and checks for
  // errors the asynchronous collectives may have hit.
  void barrier(const std::string& op) override {
    c10::cuda::CUDAGuard guard(device_);
    torch::Tensor one = torch::ones({1}, torch::TensorOptions(torch::kFloat).device(device_));  // (1)
    all_reduce_sum(one, op);
    c10::cuda::getCurrentCUDAStream(device_.index()).synchronize();
    ncclResult_t async_error = ncclSuccess;
    check(ncclCommGetAsyncError(live(op), &async_error), "ncclCommGetAsyncError", op);
    check(async_error, "an earlier collective (async error)", op);
  }

 private:
  ncclComm_t live(const std::string& op) const {
    if (comm_ == nullptr) fail("rank ", rank_, ": NCCL communicator used in '", op, "' after it was aborted");
    return comm_;
  }

  // During init there is no communicator to abort yet.
  void check_init(ncclResult_t rc, const char* call) {
    if (rc != ncclSuccess)
      fail("rank ", rank_, ": ", call, " failed in 'nccl init' on ", device_.str(), ": ", ncclGetErrorString(rc));
  }

  void check(ncclResult_t rc, const char* call, const std::string& op) {
    if (rc == ncclSuccess) return;
    std::string detail = ncclGetErrorString(rc);
    const char* last = ncclGetLastError(comm_);
    if (last != nullptr && *last != '\0') detail += std::string(" (") + last + ")";
    ncclCommAbort(comm_);  // peers blocked in this collective get an error, not a hang
    comm_ = nullptr;
    fail("rank ", rank_, ": ", call, " failed in '", op, "': ", detail);
  }

  void check_tensor(const torch::Tensor& t, const char* what, const std::string& op) const {
    if (!t.defined()) fail("rank ", rank_, ": ", what, " in '", op, "': undefined tensor");
    if (t.device() != device_)
      fail("rank ", rank_, ": ", what, " in '", op, "': the NCCL communicator is on ", device_.str(), ", tensor on ",
           t.device().str());
  }

  int rank_;
  int size_;
  torch::Device device_;     // cuda:<index> this communicator's collectives run on
  ncclComm_t comm_ = nullptr;  // null after an abort
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const torch::Device& device) {
  return std::make_unique<NcclCommunicator>(device);
}

}  // namespace reglage::dist::detail
