// A spinning thread pool for parallel loops, the C++ twin of the one every package's plan
// carries (compiler/codegen/package.cpp, kThreadPoolC): `cnnc tune` times JIT-compiled kernels
// on it so that they run as they will in a package. Workers spin for 0.5 ms after their last
// task before they sleep; a loop started inside a task, or while another thread's loop runs,
// runs serially on its caller.
#pragma once

#include <functional>

namespace cnnc {

// Threads, the caller included (0: HL_NUM_THREADS if set, else one per core).
void set_spin_pool_threads(int threads);

// Runs body(i) for i in [0, extent); returns the first nonzero result (later tasks are skipped).
int spin_parallel_for(int extent, const std::function<int(int)>& body);

// While alive, the calling thread flushes denormal floats to zero (the pool's workers always
// do), as the package's kernels run; the previous mode comes back on destruction.
class FlushDenormals {
 public:
  FlushDenormals();
  ~FlushDenormals();
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  unsigned long previous_ = 0;
};

}  // namespace cnnc
