// Data-parallel training on MPI (docs/distributed.md): `mpirun -np N cnnc train MODEL`. Only the
// driver links MPI; the trainer sees the rt::DataParallel interface.
#pragma once

#include <cstdint>
#include <memory>

#include "trainer.h"

namespace cnnc {

// Whether this process was started by an MPI launcher (mpirun, srun with PMIx): only then does
// cnnc call MPI at all, so that a plain `cnnc train` runs exactly as without MPI.
bool launched_by_mpi();

// MPI from MPI_Init to MPI_Finalize. abort() ends every rank of the job at once (an error on one
// rank must not leave the others waiting in a collective).
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Ranks on this machine, and this rank's index among them.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  // Waits until every rank on this machine has called it.
  void local_barrier() const;
  [[noreturn]] void abort(int status) const;

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  struct Local;  // the communicator of this machine's ranks
  std::unique_ptr<Local> local_;
};

// The gradients of `network` summed over the ranks of the session: parameters grouped into
// buckets of about bucket_bytes in backward order, each reduced as soon as its last gradient is
// final (non-blocking), by a reduce-scatter and an all-gather whose additions are done by cnnc
// in rank order (deterministic whatever order messages arrive in). bucket_bytes 0: one bucket,
// reduced after the whole backward (no overlap).
std::unique_ptr<rt::DataParallel> mpi_data_parallel(const MpiSession& session, rt::Network& network,
                                                    int64_t bucket_bytes);

}  // namespace cnnc
