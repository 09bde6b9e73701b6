// Collectives built on a Communicator: bucketed gradient all-reduce and weight broadcast, plus host-side
// numbers and strings. Every rank must call these with the same tensor shapes and dtypes in the same
// order: the buckets depend only on those, so all ranks issue the same sequence of collectives.
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "framework/core/error.h"
#include "framework/dist/backends.h"
#include "framework/dist/communicator.h"

namespace reglage::dist {

namespace {

// Indices of `tensors` grouped into buckets: same dtype, about bucket_bytes each (a tensor larger than
// bucket_bytes gets a bucket of its own). Dtypes in order of first appearance, tensors in their order.
std::vector<std::vector<size_t>> make_buckets(const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<torch::ScalarType> dtypes;
  for (const auto& t : tensors)
    if (std::find(dtypes.begin(), dtypes.end(), t.scalar_type()) == dtypes.end()) dtypes.push_back(t.scalar_type());
  std::vector<std::vector<size_t>> buckets;
  for (auto dtype : dtypes) {
    std::vector<size_t> bucket;
    int64_t bytes = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].scalar_type() != dtype) continue;
      bucket.push_back(i);
      bytes += tensors[i].numel() * int64_t(tensors[i].element_size());
      if (bytes >= bucket_bytes) {
        buckets.push_back(std::move(bucket));
        bucket.clear();
        bytes = 0;
      }
    }
    if (!bucket.empty()) buckets.push_back(std::move(bucket));
  }
  return buckets;
}

void check_tensors(const std::vector<torch::Tensor>& tensors, const char* what, const std::string& op) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].defined()) fail("rank ", world_rank(), ": ", what, " in '", op, "': tensor ", i, " is undefined");
    if (tensors[i].device() != tensors[0].device())
      fail("rank ", world_rank(), ": ", what, " in '", op, "': tensor ", i, " is on ", tensors[i].device().str(),
           ", tensor 0 on ", tensors[0].device().str(), " (all must share one device)");
  }
}

// MPI and NCCL communicators span MPI_COMM_WORLD: host values can go over MPI directly.
bool over_mpi(const Communicator& comm) {
  return dynamic_cast<const detail::WorldCommunicator*>(&comm) != nullptr && detail::mpi_active();
}

}  // namespace

void all_reduce_gradients(Communicator& comm, const std::vector<torch::Tensor>& params, int64_t bucket_bytes,
                          const std::string& op) {
  check_tensors(params, "all_reduce_gradients", op);
  if (bucket_bytes <= 0)
    fail("rank ", comm.rank(), ": all_reduce_gradients in '", op, "': bucket_bytes = ", bucket_bytes, " (must be > 0)");
  torch::NoGradGuard no_grad;
  // Buckets follow the params' dtypes (not the grads'), so a rank missing a grad packs the same buckets.
  for (const auto& bucket : make_buckets(params, bucket_bytes)) {
    std::vector<torch::Tensor> flats;  // each (numel_i) in the param's dtype
    for (size_t i : bucket) {
      const auto& p = params[i];
      const auto& g = p.grad();
      flats.push_back(g.defined() ? g.reshape(-1).to(p.scalar_type()) : torch::zeros({p.numel()}, p.options()));
    }
    torch::Tensor flat = torch::cat(flats);  // (sum numel_i): a fresh buffer, one collective for the bucket
    comm.all_reduce_sum(flat, op);
    int64_t offset = 0;
    for (size_t i : bucket) {
      torch::Tensor p = params[i];  // shares the TensorImpl: setting its grad sets the caller's
      torch::Tensor sum = flat.narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
      if (p.grad().defined())
        p.mutable_grad().copy_(sum);
      else
        p.mutable_grad() = sum.clone();  // own storage, not a view into the bucket
    }
  }
}

void broadcast_tensors(Communicator& comm, const std::vector<torch::Tensor>& tensors, int root, const std::string& op) {
  check_tensors(tensors, "broadcast_tensors", op);
  torch::NoGradGuard no_grad;
  for (const auto& bucket : make_buckets(tensors, int64_t(32) << 20)) {
    std::vector<torch::Tensor> flats;
    for (size_t i : bucket) flats.push_back(tensors[i].reshape(-1));
    torch::Tensor flat = torch::cat(flats);  // (sum numel_i)
    comm.broadcast(flat, root, op);
    if (comm.rank() == root) continue;  // root's tensors already hold the values
    int64_t offset = 0;
    for (size_t i : bucket) {
      torch::Tensor t = tensors[i];
      t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

double all_reduce_sum(Communicator& comm, double x, const std::string& op) {
  if (over_mpi(comm)) {
    detail::mpi_check(MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce", op);
    return x;
  }
  torch::Tensor t = torch::full({1}, x, torch::kDouble);  // (1) any other communicator: through a tensor
  comm.all_reduce_sum(t, op);
  return t.item<double>();
}

double all_reduce_max(Communicator& comm, double x, const std::string& op) {
  if (over_mpi(comm)) {
    detail::mpi_check(MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce", op);
    return x;
  }
  // Any other communicator only sums: every rank writes its value in its own slot, then take the max.
  torch::Tensor slots = torch::zeros({comm.size()}, torch::kDouble);  // (world size)
  slots[comm.rank()] = x;
  comm.all_reduce_sum(slots, op);
  return slots.max().item<double>();
}

std::string broadcast_string(Communicator& comm, const std::string& s, int root, const std::string& op) {
  if (over_mpi(comm)) {
    // Length first, then the bytes; every rank passes its own buffer of that length.
    uint64_t length = s.size();
    detail::mpi_check(MPI_Bcast(&length, 1, MPI_UINT64_T, root, MPI_COMM_WORLD), "MPI_Bcast", op + " (length)");
    if (length > uint64_t(std::numeric_limits<int>::max()))
      fail("rank ", comm.rank(), ": broadcast_string in '", op, "': ", length, " bytes (at most 2^31-1)");
    std::string out = comm.rank() == root ? s : std::string(length, '\0');
    if (length > 0)
      detail::mpi_check(MPI_Bcast(out.data(), int(length), MPI_CHAR, root, MPI_COMM_WORLD), "MPI_Bcast", op);
    return out;
  }
  torch::Tensor length = torch::full({1}, int64_t(s.size()), torch::kLong);  // (1)
  comm.broadcast(length, root, op + " (length)");
  torch::Tensor bytes = torch::zeros({length.item<int64_t>()}, torch::kUInt8);  // (length)
  if (comm.rank() == root) std::memcpy(bytes.data_ptr(), s.data(), s.size());
  comm.broadcast(bytes, root, op);
  return std::string(static_cast<const char*>(bytes.data_ptr()), size_t(bytes.numel()));
}

}  // namespace reglage::dist
