// Collectives between ranks. Only dist/ includes mpi.h and nccl.h.
//   MPI backend: CPU tensors, MPI_COMM_WORLD.
//   NCCL backend: CUDA tensors, built when REGLAGE_WITH_NCCL is on (a CUDA LibTorch); its unique id is
//   broadcast over MPI.
// Every call is checked: a failure throws reglage::Error naming the operation (the `op` label) and the rank
// after aborting the NCCL communicator, and callers at top level call abort_all() so no rank waits forever.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace reglage::dist {

// MPI_Init (thread level funneled) / MPI_Finalize. Safe to call when launched without mpirun (one rank).
void init(int* argc, char*** argv);
void finalize();
bool initialized();
int world_rank();   // 0 before init
int world_size();   // 1 before init
// MPI_Abort(MPI_COMM_WORLD, code): every rank stops. Use when one rank failed and others may be in a collective.
[[noreturn]] void abort_all(int code);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place. `op` names the operation in errors, e.g. "allreduce grads".
  virtual void all_reduce_sum(torch::Tensor& t, const std::string& op) = 0;
  virtual void broadcast(torch::Tensor& t, int root, const std::string& op) = 0;
  virtual void barrier(const std::string& op) = 0;
};

// MPI backend for CPU devices; NCCL for CUDA devices when built with it (else an error naming the option).
std::unique_ptr<Communicator> make_communicator(const torch::Device& device);

// Sums the .grad of every tensor across ranks, packed into flattened buckets of about bucket_bytes per
// dtype (one collective per bucket), and writes the sums back. Tensors without grad count as zeros.
void all_reduce_gradients(Communicator& comm, const std::vector<torch::Tensor>& params,
                          int64_t bucket_bytes = int64_t(32) << 20, const std::string& op = "allreduce grads");

// Copies rank root's values of every tensor to all ranks (bucketed the same way).
void broadcast_tensors(Communicator& comm, const std::vector<torch::Tensor>& tensors, int root,
                       const std::string& op = "broadcast weights");

// Sum / max of one number across ranks.
double all_reduce_sum(Communicator& comm, double x, const std::string& op);
double all_reduce_max(Communicator& comm, double x, const std::string& op);

// Every rank gets rank root's string (e.g. a config hash to check that all ranks agree).
std::string broadcast_string(Communicator& comm, const std::string& s, int root, const std::string& op);

}  // namespace reglage::dist
