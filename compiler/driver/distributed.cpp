// Data-parallel training on MPI: the session, and the gradient reduction behind rt::DataParallel.
//
// A bucket's reduction, for N ranks and a bucket of L floats cut into N segments (L/N each, rounded):
//   1. MPI_Ialltoallv: rank r receives segment r of every rank's bucket (a reduce-scatter's traffic);
//   2. rank r adds them itself, in rank order, each times its rank's share of the batch, in double;
//   3. MPI_Iallgatherv: every rank receives every reduced segment.
// A bucket is a range of the gradient block, sent from and gathered into where the gradients lie:
// the only copies are the segments each rank receives. MPI only moves the data, so the sums do
// not depend on the algorithm MPI picks or on the order messages arrive in; the traffic is that
// of a ring all-reduce, 2 (N-1)/N * L floats per rank. Buckets are started in index order
// (bucket 0 holds the last layers' parameters, whose gradients backward finishes first), their
// all-gathers too, each kind on its own communicator, so that every rank issues the same
// collectives in the same order while backward goes on.
#include "driver/distributed.h"

// MPI's C API only (OpenMPI's mpi.h pulls in its deprecated C++ bindings otherwise).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "support/diagnostics.h"

namespace cnnc {

namespace {

void check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw UserError(SourceLoc{"mpi", 0, 0}, fmt::format("{} failed: {}", what, std::string(text, size_t(length))));
}

MPI_Comm duplicate(MPI_Comm comm) {
  MPI_Comm copy = MPI_COMM_NULL;
  check(MPI_Comm_dup(comm, &copy), "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(copy, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  return copy;
}

class MpiDataParallel final : public rt::DataParallel {
 public:
  MpiDataParallel(const MpiSession& session, rt::Network& network, int64_t bucket_bytes)
      : network_(network), rank_(session.rank()), size_(session.size()) {
    scatter_ = duplicate(MPI_COMM_WORLD);
    gather_ = duplicate(MPI_COMM_WORLD);
    other_ = duplicate(MPI_COMM_WORLD);
    // Trainable parameters from the last to the first (the order backward finishes them), a new
    // bucket once one holds bucket_bytes: each a range of the parameter block, reduced where the
    // gradients lie (a non-trainable parameter inside the range has a zero gradient there). The
    // non-trainable ones (moving statistics, final after the forward pass) are copied into a
    // bucket of their own, reduced last.
    const std::vector<rt::TensorInfo>& params = network.package().params();
    bucket_of_.assign(params.size(), -1);
    Bucket state;
    state.state = true;
    for (int p = int(params.size()) - 1; p >= 0; --p) {
      const rt::TensorInfo& info = params[size_t(p)];
      if (info.elements() == 0) continue;
      if (!info.trainable) {
        state.pieces.push_back({info.offset, info.elements()});
        state.floats += info.elements();
        continue;
      }
      if (buckets_.empty() || (bucket_bytes > 0 && buckets_.back().floats * 4 >= bucket_bytes)) {
        buckets_.emplace_back();
        buckets_.back().end = info.offset + info.elements();
      }
      Bucket& bucket = buckets_.back();
      bucket.first = info.offset;  // (descending: the range grows downwards)
      bucket.floats = bucket.end - bucket.first;
      ++bucket.params;
      bucket_of_[size_t(p)] = int(buckets_.size()) - 1;
    }
    if (state.floats > 0) {
      state.staging.resize(size_t(state.floats));
      buckets_.push_back(std::move(state));
    }
    for (Bucket& bucket : buckets_) {
      // (MPI counts and displacements are ints.)
      if (bucket.floats >= (int64_t(1) << 31))
        throw UserError(SourceLoc{"mpi", 0, 0}, fmt::format("a parameter range of {} floats exceeds what one MPI call "
                                                            "moves (2^31); cnnc does not split a tensor across buckets",
                                                            bucket.floats));
      // Segment r: [floats * r / N, floats * (r + 1) / N).
      for (int r = 0; r < size_; ++r) {
        bucket.displacements.push_back(int(bucket.floats * r / size_));
        bucket.counts.push_back(int(bucket.floats * (r + 1) / size_) - bucket.displacements.back());
      }
      const int mine = bucket.counts[size_t(rank_)];
      for (int r = 0; r < size_; ++r) {
        bucket.received_counts.push_back(mine);
        bucket.received_displacements.push_back(r * mine);
      }
      bucket.received.resize(size_t(mine) * size_t(size_));
    }
    int64_t largest = 0;
    for (const Bucket& bucket : buckets_) largest = std::max<int64_t>(largest, bucket.counts[size_t(rank_)]);
    total_.resize(size_t(largest));
    // Every rank must cut the same buckets (the same model and --bucket-kib), or the collectives
    // would not match.
    long long layout[2] = {static_cast<long long>(buckets_.size()), bucket_bytes}, lowest[2], highest[2];
    check(MPI_Allreduce(layout, lowest, 2, MPI_LONG_LONG, MPI_MIN, other_), "MPI_Allreduce");
    check(MPI_Allreduce(layout, highest, 2, MPI_LONG_LONG, MPI_MAX, other_), "MPI_Allreduce");
    if (lowest[0] != highest[0] || lowest[1] != highest[1])
      throw UserError(SourceLoc{"mpi", 0, 0}, fmt::format("the ranks cut the gradients into {} to {} buckets (--bucket-kib "
                                                          "{} to {}): give every rank the same model and options",
                                                          lowest[0], highest[0], lowest[1] / 1024, highest[1] / 1024));
  }

  ~MpiDataParallel() override {
    // (An error in the middle of a step ends the job by MPI_Abort before the network and this
    // object are destroyed: train_action catches it there, so no reduction still running can
    // write into freed memory.)
    for (MPI_Comm* comm : {&scatter_, &gather_, &other_})
      if (*comm != MPI_COMM_NULL) MPI_Comm_free(comm);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void begin_step(const std::vector<double>& shares) override {
    if (int(shares.size()) != size_) throw InternalError("begin_step: one share per rank expected");
    shares_ = shares;
    for (Bucket& bucket : buckets_) {
      if (bucket.request != MPI_REQUEST_NULL) throw InternalError("begin_step: the previous step's reduction is running");
      bucket.ready = 0;
    }
    launched_ = gathering_ = done_ = 0;
  }

  void gradient_ready(int param) override {
    if (param >= 0 && size_t(param) < bucket_of_.size() && bucket_of_[size_t(param)] >= 0)
      ++buckets_[size_t(bucket_of_[size_t(param)])].ready;
    // Buckets start in index order, each once all its gradients are final.
    while (launched_ < buckets_.size() && buckets_[launched_].params > 0 &&
           buckets_[launched_].ready == buckets_[launched_].params)
      launch(buckets_[launched_++]);
    advance(false);
  }

  void finish_step() override {
    // What backward did not announce (a parameter no gradient reaches, the moving statistics).
    while (launched_ < buckets_.size()) launch(buckets_[launched_++]);
    advance(true);
  }

  void sum(std::vector<double>& values) override {
    std::vector<double> all(values.size() * size_t(size_));
    check(MPI_Allgather(values.data(), int(values.size()), MPI_DOUBLE, all.data(), int(values.size()), MPI_DOUBLE, other_),
          "MPI_Allgather");
    for (size_t k = 0; k < values.size(); ++k) {
      double total = 0;
      for (int r = 0; r < size_; ++r) total += all[size_t(r) * values.size() + k];
      values[k] = total;
    }
  }

  void broadcast(float* data, int64_t count) override {
    for (int64_t done = 0; done < count;) {
      int chunk = int(std::min<int64_t>(count - done, int64_t(1) << 30));
      check(MPI_Bcast(data + done, chunk, MPI_FLOAT, 0, other_), "MPI_Bcast");
      done += chunk;
    }
  }

  void broadcast(std::vector<double>& values) override {
    check(MPI_Bcast(values.data(), int(values.size()), MPI_DOUBLE, 0, other_), "MPI_Bcast");
  }

 private:
  struct Piece {
    int64_t offset, elements;
  };
  struct Bucket {
    bool state = false;          // the moving statistics: values averaged, gathered in `staging`
    int64_t first = 0, end = 0, floats = 0;  // gradients: the range [first, end) of the block
    std::vector<Piece> pieces;   // state: where its values come from and go back to
    std::vector<float> staging;
    int params = 0, ready = 0;   // trainable parameters, and those whose gradient is final
    std::vector<int> counts, displacements;                    // each rank's segment
    std::vector<int> received_counts, received_displacements;  // this rank's segment from each
    std::vector<float> received;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  float* data(Bucket& bucket) { return bucket.state ? bucket.staging.data() : network_.mutable_param_grads() + bucket.first; }

  void launch(Bucket& bucket) {
    if (bucket.state) {
      float* to = bucket.staging.data();
      for (const Piece& piece : bucket.pieces) to = std::copy(network_.params() + piece.offset,
                                                              network_.params() + piece.offset + piece.elements, to);
    }
    check(MPI_Ialltoallv(data(bucket), bucket.counts.data(), bucket.displacements.data(), MPI_FLOAT,
                         bucket.received.data(), bucket.received_counts.data(), bucket.received_displacements.data(),
                         MPI_FLOAT, scatter_, &bucket.request),
          "MPI_Ialltoallv");
  }

  // This rank's segment: every rank's, times its share, added in rank order in double (one rank
  // at a time over the segment, so that the loops vectorize; the same additions in the same
  // order), written in place; then every rank's segments to every rank.
  void reduce(Bucket& bucket) {
    const size_t count = size_t(bucket.counts[size_t(rank_)]);
    double* total = total_.data();
    const float* received = bucket.received.data();
    const double first_share = shares_[0];
    for (size_t i = 0; i < count; ++i) total[i] = first_share * double(received[i]);
    for (int r = 1; r < size_; ++r) {
      const double share = shares_[size_t(r)];
      const float* from = received + size_t(r) * count;
      for (size_t i = 0; i < count; ++i) total[i] += share * double(from[i]);
    }
    float* mine = data(bucket) + bucket.displacements[size_t(rank_)];
    for (size_t i = 0; i < count; ++i) mine[i] = float(total[i]);
    check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data(bucket), bucket.counts.data(),
                          bucket.displacements.data(), MPI_FLOAT, gather_, &bucket.request),
          "MPI_Iallgatherv");
  }

  void unpack(Bucket& bucket) {
    if (!bucket.state) return;  // (gathered in place)
    const float* from = bucket.staging.data();
    for (const Piece& piece : bucket.pieces) {
      std::copy(from, from + piece.elements, network_.params() + piece.offset);
      from += piece.elements;
    }
  }

  // Whether a bucket's running collective has finished (`wait`: once it has).
  bool finished(Bucket& bucket, bool wait, const char* what) {
    int flag = 1;
    if (wait)
      check(MPI_Wait(&bucket.request, MPI_STATUS_IGNORE), what);
    else
      check(MPI_Test(&bucket.request, &flag, MPI_STATUS_IGNORE), what);
    return flag != 0;
  }

  // Moves the launched buckets on, each kind in index order: a scattered bucket is reduced and
  // its gather started, a gathered one unpacked. `wait`: until every launched bucket is done.
  void advance(bool wait) {
    while (done_ < launched_) {
      bool moved = false;
      if (gathering_ < launched_ && finished(buckets_[gathering_], wait, "MPI_Ialltoallv")) {
        reduce(buckets_[gathering_++]);
        moved = true;
      }
      if (done_ < gathering_ && (wait ? gathering_ == launched_ : true) &&
          finished(buckets_[done_], wait, "MPI_Iallgatherv")) {
        unpack(buckets_[done_++]);
        moved = true;
      }
      if (!moved && !wait) return;
    }
  }

  rt::Network& network_;
  int rank_, size_;
  MPI_Comm scatter_ = MPI_COMM_NULL, gather_ = MPI_COMM_NULL, other_ = MPI_COMM_NULL;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;  // by parameter index; -1: in no gradient bucket
  std::vector<double> shares_;
  std::vector<double> total_;  // reduce()'s sums
  // Buckets launched, gathering or past it, and done; each count includes the next.
  size_t launched_ = 0, gathering_ = 0, done_ = 0;
};

}  // namespace

bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(name)) return true;
  return false;
}

struct MpiSession::Local {
  MPI_Comm comm = MPI_COMM_NULL;
};

MpiSession::MpiSession() : local_(std::make_unique<Local>()) {
  int provided = 0;
  // Only the thread that trains calls MPI (the kernels' threads never do).
  check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local_->comm),
        "MPI_Comm_split_type");
  MPI_Comm_rank(local_->comm, &local_rank_);
  MPI_Comm_size(local_->comm, &local_size_);
  // A launcher of another MPI (MPICH's mpiexec, srun without PMIx) starts each process as a job
  // of its own: N trainings writing the same files. Its environment tells.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* value = std::getenv(name);
    if (size_ == 1 && value && std::atoi(value) > 1)
      throw UserError(SourceLoc{"mpi", 0, 0},
                      fmt::format("the launcher started {} processes ({}={}), but MPI sees this one alone: start cnnc "
                                  "with the mpirun of the MPI it was built with (OpenMPI)",
                                  value, name, value));
  }
}

MpiSession::~MpiSession() {
  if (local_->comm != MPI_COMM_NULL) MPI_Comm_free(&local_->comm);
  MPI_Finalize();
}

void MpiSession::local_barrier() const {
  // Polled with a pause, not MPI_Barrier's busy wait: the ranks waiting here would take the cores
  // from the one compiling the package.
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ibarrier(local_->comm, &request), "MPI_Ibarrier");
  for (int done = 0;;) {
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void MpiSession::abort(int status) const {
  MPI_Abort(MPI_COMM_WORLD, status);
  std::_Exit(status);
}

std::unique_ptr<rt::DataParallel> mpi_data_parallel(const MpiSession& session, rt::Network& network,
                                                    int64_t bucket_bytes) {
  return std::make_unique<MpiDataParallel>(session, network, bucket_bytes);
}

}  // namespace cnnc
