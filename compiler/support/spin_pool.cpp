#include "support/spin_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <thread>
#include <new>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace cnnc {

namespace {

unsigned long flush_denormals() {
#if defined(__x86_64__)
  unsigned previous = _mm_getcsr();
  _mm_setcsr(previous | 0x8040);  // FTZ and DAZ
  return previous;
#elif defined(__aarch64__)
  unsigned long previous;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(previous));
  __asm__ __volatile__("msr fpcr, %0" : : "r"(previous | (1UL << 24)));  // FZ
  return previous;
#else
  return 0;
#endif
}

void restore_fp(unsigned long previous) {
#if defined(__x86_64__)
  _mm_setcsr(unsigned(previous));
#elif defined(__aarch64__)
  __asm__ __volatile__("msr fpcr, %0" : : "r"(previous));
#else
  (void)previous;
#endif
}

void pause() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

thread_local bool inside_task = false;

void pool_after_fork();

class Pool {
 public:
  Pool() {
    // A fork()ed child has the calling thread alone: it forgets the workers (their handles are
    // leaked on purpose; joining or detaching threads that do not exist is undefined).
    pthread_atfork(nullptr, nullptr, [] { pool_after_fork(); });
  }

  void forget_workers_after_fork() {
    new (&workers_) std::vector<std::thread>();  // the old vector's storage is leaked
    checked_in_.store(0);
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

  void set_threads(int threads) {
    std::lock_guard<std::mutex> busy(busy_);
    threads_ = std::max(0, threads);
  }

  int run(int extent, const std::function<int(int)>& body) {
    if (extent <= 1 || inside_task) return serial(extent, body);
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return serial(extent, body);
    int wanted = threads_;
    if (wanted <= 0) {
      const char* text = std::getenv("HL_NUM_THREADS");
      wanted = text ? std::atoi(text) : 0;
    }
    cpu_set_t allowed;  // the cores this process may run on (taskset, containers)
    if (wanted <= 0 && sched_getaffinity(0, sizeof allowed, &allowed) == 0) wanted = CPU_COUNT(&allowed);
    if (wanted <= 0) wanted = int(std::max(1u, std::thread::hardware_concurrency()));
    wanted = std::min(wanted, 256);
    int participants = std::min(wanted - 1, extent - 1);
    while (int(workers_.size()) < participants) {
      unsigned start = generation_.load(std::memory_order_relaxed);
      int index = int(workers_.size());
      try {
        workers_.emplace_back([this, index, start] { work(index, start); });
      } catch (const std::system_error&) {
        break;  // no more threads: go on with fewer
      }
    }
    participants = std::min(participants, int(workers_.size()));
    if (participants <= 0) return serial(extent, body);
    body_ = &body;
    extent_ = extent;
    participants_ = participants;
    next_.store(0, std::memory_order_relaxed);
    result_.store(0, std::memory_order_relaxed);
    checked_in_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);  // publishes the loop
    }
    wake_.notify_all();
    inside_task = true;
    run_tasks();
    inside_task = false;
    // Every worker checks in before the loop's fields may change.
    for (int spins = 1; checked_in_.load(std::memory_order_acquire) < int(workers_.size()); ++spins) {
      pause();
      if (spins % 1024 == 0) std::this_thread::yield();  // a worker may be waiting for a core
    }
    return result_.load(std::memory_order_relaxed);
  }

 private:
  static int serial(int extent, const std::function<int(int)>& body) {
    for (int i = 0; i < extent; ++i)
      if (int result = body(i)) return result;
    return 0;
  }

  // Guided chunks, as in the plan's pool: a share of what is left, at least one task.
  void run_tasks() {
    int shares = 2 * (participants_ + 1);
    for (;;) {
      int start = next_.load(std::memory_order_relaxed), count;
      do {
        if (start >= extent_) return;
        count = std::max(1, (extent_ - start) / shares);
      } while (!next_.compare_exchange_weak(start, start + count, std::memory_order_relaxed));
      for (int i = start; i < start + count; ++i) {
        if (result_.load(std::memory_order_relaxed)) return;
        int result;
        try {
          result = (*body_)(i);
        } catch (...) {
          result = -1;  // (JIT code does not throw; a throwing body must not skip the check-ins)
        }
        int none = 0;  // keep the first failure
        if (result) result_.compare_exchange_strong(none, result, std::memory_order_relaxed);
      }
    }
  }

  void work(int index, unsigned seen) {
    inside_task = true;
    flush_denormals();
    for (;;) {
      auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(500);
      for (int spins = 1; generation_.load(std::memory_order_acquire) == seen; ++spins) {
        pause();
        if (spins % 256 == 0 && std::chrono::steady_clock::now() > spin_until) {
          std::unique_lock<std::mutex> lock(mutex_);
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        }
      }
      seen = generation_.load(std::memory_order_acquire);
      if (quit_) return;  // (the destructor's own generation: no loop is published after it)
      if (index < participants_) run_tasks();
      checked_in_.fetch_add(1, std::memory_order_release);
    }
  }

  std::mutex busy_;  // one loop at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  std::atomic<unsigned> generation_{0};
  bool quit_ = false;
  int threads_ = 0;
  const std::function<int(int)>* body_ = nullptr;
  int extent_ = 0, participants_ = 0;
  std::atomic<int> next_{0}, result_{0}, checked_in_{0};
};

Pool& pool() {
  static Pool instance;
  return instance;
}

void pool_after_fork() { pool().forget_workers_after_fork(); }

}  // namespace

void set_spin_pool_threads(int threads) { pool().set_threads(threads); }

int spin_parallel_for(int extent, const std::function<int(int)>& body) { return pool().run(extent, body); }

FlushDenormals::FlushDenormals() : previous_(flush_denormals()) {}
FlushDenormals::~FlushDenormals() { restore_fp(previous_); }

}  // namespace cnnc
