// MPI process setup (init/finalize/rank/abort) and the MPI backend on MPI_COMM_WORLD for CPU tensors.
// MPI_COMM_WORLD uses MPI_ERRORS_RETURN, so every failure comes back as a code that mpi_check turns into a
// reglage::Error naming the call, the op label and the rank.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

#include "framework/core/error.h"
#include "framework/core/progress.h"
#include "framework/dist/backends.h"
#include "framework/dist/communicator.h"

namespace reglage::dist {

namespace detail {

bool mpi_active() {
  int is_init = 0, is_final = 0;
  MPI_Initialized(&is_init);  // both may be called at any time, even before MPI_Init
  MPI_Finalized(&is_final);
  return is_init && !is_final;
}

void mpi_check(int rc, const char* call, const std::string& op) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  fail("rank ", world_rank(), ": ", call, " failed in '", op, "': ",
       len > 0 ? std::string(text, len) : "MPI error code " + std::to_string(rc));
}

namespace {

// MPI counts are int: larger tensors go in chunks of at most this many elements.
constexpr int64_t kMaxChunk = int64_t(1) << 30;

MPI_Datatype mpi_sum_type(torch::ScalarType type, const std::string& op) {
  switch (type) {
    case torch::kFloat: return MPI_FLOAT;
    case torch::kDouble: return MPI_DOUBLE;
    case torch::kLong: return MPI_INT64_T;
    case torch::kInt: return MPI_INT32_T;
    default:
      fail("rank ", world_rank(), ": all_reduce_sum in '", op, "': dtype ", c10::toString(type),
           " not supported by the MPI backend (float32, float64, bfloat16, float16, int32, int64)");
  }
}

void check_cpu(const torch::Tensor& t, const char* what, const std::string& op) {
  if (!t.defined()) fail("rank ", world_rank(), ": ", what, " in '", op, "': undefined tensor");
  if (!t.device().is_cpu())
    fail("rank ", world_rank(), ": ", what, " in '", op, "': the MPI backend needs CPU tensors, got ",
         t.device().str());
}

}  // namespace

MpiCommunicator::MpiCommunicator() {
  rank_ = world_rank();
  size_ = world_size();
}

void MpiCommunicator::all_reduce_sum(torch::Tensor& t, const std::string& op) {
  core::ProgressOp in_op(op);  // a rank stuck here is reported by the launcher with this name
  check_cpu(t, "all_reduce_sum", op);
  // bf16/f16 have no MPI type: sum in float32 (exact for the usual few ranks) and round once at the end.
  const bool widen = t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf;
  const MPI_Datatype type = mpi_sum_type(widen ? torch::kFloat : t.scalar_type(), op);  // checked with or without MPI
  if (!mpi_active() || t.numel() == 0) return;  // one rank without MPI: the sum is the tensor itself
  torch::NoGradGuard no_grad;
  torch::Tensor work = widen ? t.to(torch::kFloat).contiguous() : t.contiguous();  // same shape, contiguous
  const int64_t n = work.numel();
  const int64_t elem = work.element_size();
  char* data = static_cast<char*>(work.data_ptr());
  for (int64_t off = 0; off < n; off += kMaxChunk) {
    const int count = int(std::min(kMaxChunk, n - off));
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + off * elem, count, type, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce", op);
  }
  if (!work.is_same(t)) t.copy_(work);
}

void MpiCommunicator::broadcast(torch::Tensor& t, int root, const std::string& op) {
  core::ProgressOp in_op(op);
  check_cpu(t, "broadcast", op);
  if (root < 0 || root >= size_)
    fail("rank ", rank_, ": broadcast in '", op, "': root ", root, " (must be in [0, ", size_, "))");
  if (!mpi_active() || t.numel() == 0) return;
  torch::NoGradGuard no_grad;
  // A copy of bytes: every dtype (bf16 included) goes as MPI_BYTE, exactly.
  torch::Tensor work = t.contiguous();
  const int64_t n = work.numel() * int64_t(work.element_size());
  char* data = static_cast<char*>(work.data_ptr());
  for (int64_t off = 0; off < n; off += kMaxChunk) {
    const int count = int(std::min(kMaxChunk, n - off));
    mpi_check(MPI_Bcast(data + off, count, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast", op);
  }
  if (!work.is_same(t)) t.copy_(work);
}

void MpiCommunicator::barrier(const std::string& op) {
  core::ProgressOp in_op(op);
  if (!mpi_active()) return;
  mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier", op);
}

}  // namespace detail

void init(int* argc, char*** argv) {
  int is_init = 0;
  MPI_Initialized(&is_init);
  if (!is_init) {
    // Funneled: only the main thread calls MPI (data-loader threads never do).
    int provided = 0;
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) fail("rank ?: MPI_Init_thread failed in 'init' (MPI error code ", rc, ")");
    if (provided < MPI_THREAD_FUNNELED)
      fail("rank ", world_rank(), ": MPI_Init_thread in 'init': thread level ", provided,
           " provided, MPI_THREAD_FUNNELED (", MPI_THREAD_FUNNELED, ") needed");
  }
  // Errors come back as codes (checked by every call) instead of aborting inside MPI.
  detail::mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", "init");
}

void finalize() {
  if (!detail::mpi_active()) return;
  detail::mpi_check(MPI_Finalize(), "MPI_Finalize", "finalize");
}

bool initialized() { return detail::mpi_active(); }

int world_rank() {
  if (!detail::mpi_active()) return 0;
  int rank = 0;
  if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS) return 0;  // cannot fail on MPI_COMM_WORLD
  return rank;
}

int world_size() {
  if (!detail::mpi_active()) return 1;
  int size = 1;
  detail::mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size", "world_size");
  return size;
}

void abort_all(int code) {
  if (detail::mpi_active()) MPI_Abort(MPI_COMM_WORLD, code);  // stops every rank; does not return
  // Without MPI (or if MPI_Abort came back) this process is the only rank: stop it the same way.
  std::_Exit(code);
}

}  // namespace reglage::dist
