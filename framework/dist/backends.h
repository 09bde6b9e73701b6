// Internal to dist/: the concrete backends behind make_communicator and the checks they share.
// Not for code outside framework/dist (use communicator.h).
#pragma once
#include "framework/dist/communicator.h"

#include <memory>
#include <string>

namespace reglage::dist::detail {

// A communicator whose ranks are exactly MPI_COMM_WORLD's (MPI and NCCL backends). The host-side helpers
// (scalar sum/max, broadcast_string) then go straight over MPI instead of through device tensors.
class WorldCommunicator : public Communicator {};

// MPI backend on MPI_COMM_WORLD for CPU tensors. Before dist::init (a plain single process, as in unit
// tests) it acts as one rank: every collective leaves its tensor as it is.
class MpiCommunicator final : public WorldCommunicator {
 public:
  MpiCommunicator();
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(torch::Tensor& t, const std::string& op) override;
  void broadcast(torch::Tensor& t, int root, const std::string& op) override;
  void barrier(const std::string& op) override;

 private:
  int rank_ = 0;
  int size_ = 1;
};

// True when MPI_Init has run and MPI_Finalize has not: MPI calls are allowed.
bool mpi_active();

// Throws reglage::Error "rank R: <call> failed in '<op>': <MPI_Error_string>" unless rc is MPI_SUCCESS.
void mpi_check(int rc, const char* call, const std::string& op);

#if defined(REGLAGE_WITH_NCCL)
// NCCL backend for one CUDA device (nccl_communicator.cpp); its unique id travels over MPI from rank 0.
std::unique_ptr<Communicator> make_nccl_communicator(const torch::Device& device);
#endif

}  // namespace reglage::dist::detail
