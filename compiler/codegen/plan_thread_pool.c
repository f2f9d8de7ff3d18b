/* The thread pool for Halide's parallel loops and the floating-point mode of the kernels.
 * One source, two users: every package's plan.c carries it verbatim (cnnc embeds this file's
 * text when it is built; see CMakeLists.txt), and jit_thread_pool.c compiles it into cnnc so that
 * `cnnc tune` times JIT kernels the way a package runs them. It expects <stdint.h>, <stdlib.h>,
 * <time.h>, <pthread.h>, <sched.h> (with _GNU_SOURCE) and HalideRuntime.h to be included. */

/* Halide's parallel loops run on this pool instead of Halide's own. A training step calls
 * ~10 kernels back to back, each a few parallel loops of 0.01-0.5 ms; Halide's workers go to
 * sleep between them and every wake-up costs tens of microseconds (more in a virtual machine).
 * These workers spin for PAR_SPIN_NS after their last task before they sleep, so a step keeps
 * them awake. A parallel loop started from inside a task (nested parallelism) or from a second
 * application thread while one runs is executed serially by its caller. */
#include <unistd.h>

/* Kernels run with denormal floats flushed to zero (as TensorFlow runs its CPU kernels): on x86
 * each operation on a denormal takes a microcode assist of ~100 cycles, and Adam's moments of
 * vanishing gradients are denormal often enough to slow a step by a fifth. The caller's own
 * floating-point mode is restored after each kernel. */
static unsigned fp_flush_denormals(void) {
#if defined(__x86_64__)
  unsigned previous = __builtin_ia32_stmxcsr();
  __builtin_ia32_ldmxcsr(previous | 0x8040); /* FTZ and DAZ */
  return previous;
#elif defined(__aarch64__)
  unsigned long previous;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(previous));
  __asm__ __volatile__("msr fpcr, %0" : : "r"(previous | (1UL << 24)) : "memory"); /* FZ */
  return (unsigned)previous;
#else
  return 0;
#endif
}

static void fp_restore(unsigned previous) {
#if defined(__x86_64__)
  __builtin_ia32_ldmxcsr(previous);
#elif defined(__aarch64__)
  unsigned long value = previous;
  __asm__ __volatile__("msr fpcr, %0" : : "r"(value) : "memory");
#else
  (void)previous;
#endif
}

#define run_flushing_denormals(call) \
  __extension__({ unsigned fp_saved_ = fp_flush_denormals(); int result_ = (call); fp_restore(fp_saved_); result_; })

#define PAR_MAX_WORKERS 255
#define PAR_SPIN_NS 500000L /* 0.5 ms */
static struct {
  pthread_mutex_t lock;      /* guards sleeping workers and the thread count */
  pthread_cond_t wake;
  pthread_mutex_t busy;      /* one parallel loop at a time */
  int threads;               /* wanted, the caller included; 0 = not set yet */
  int started;               /* workers running */
  int quit;
  pthread_t worker[PAR_MAX_WORKERS];
  unsigned generation;       /* bumped by each loop (atomic) */
  unsigned start_generation; /* the generation when the newest worker was created */
  int participants;          /* workers that take tasks in this loop (the others only check in) */
  int checked_in;            /* workers done with this loop (atomic); all of them check in to
                                every loop, so none can read the fields of the next one early */
  halide_task_t task;
  void *user_context;
  uint8_t *closure;
  int min, extent;
  int next, result;          /* atomic */
} par = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .busy = PTHREAD_MUTEX_INITIALIZER};
static __thread int par_inside; /* this thread is running a task */

static void par_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static long par_now_ns(void) {
  struct timespec time;
  clock_gettime(CLOCK_MONOTONIC, &time);
  return (long)time.tv_sec * 1000000000L + time.tv_nsec;
}

/* Tasks are claimed in guided chunks (a share of what is left, never less than one), so that
 * loops of many tiny tasks do not pay a contended atomic per task, and the last tasks still
 * balance. Tasks are independent: which thread runs which changes no result. */
static void par_run_tasks(void) {
  int shares = 2 * (par.participants + 1);
  for (;;) {
    int start = __atomic_load_n(&par.next, __ATOMIC_RELAXED), count;
    do {
      if (start >= par.extent) return;
      count = (par.extent - start) / shares;
      if (count < 1) count = 1;
    } while (!__atomic_compare_exchange_n(&par.next, &start, start + count, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    for (int i = start; i < start + count; ++i) {
      if (__atomic_load_n(&par.result, __ATOMIC_RELAXED)) return; /* an earlier task failed */
      int result = par.task(par.user_context, par.min + i, par.closure);
      int none = 0; /* keep the first failure */
      if (result) __atomic_compare_exchange_n(&par.result, &none, result, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    }
  }
}

static void *par_worker(void *argument) {
  int index = (int)(intptr_t)argument;
  unsigned seen = par.start_generation;
  par_inside = 1;
  fp_flush_denormals();
  for (;;) {
    /* Spin, then sleep, until the next loop. */
    long spin_until = par_now_ns() + PAR_SPIN_NS;
    int spins = 0;
    while (__atomic_load_n(&par.generation, __ATOMIC_ACQUIRE) == seen && !__atomic_load_n(&par.quit, __ATOMIC_RELAXED)) {
      par_pause();
      if (++spins % 256 == 0 && par_now_ns() > spin_until) {
        pthread_mutex_lock(&par.lock);
        while (__atomic_load_n(&par.generation, __ATOMIC_ACQUIRE) == seen && !par.quit) pthread_cond_wait(&par.wake, &par.lock);
        pthread_mutex_unlock(&par.lock);
      }
    }
    /* A loop published as the program exits is still done (its caller waits for it). */
    if (__atomic_load_n(&par.quit, __ATOMIC_RELAXED) && __atomic_load_n(&par.generation, __ATOMIC_ACQUIRE) == seen)
      return NULL;
    seen = __atomic_load_n(&par.generation, __ATOMIC_ACQUIRE);
    if (index < par.participants) par_run_tasks();
    __atomic_fetch_add(&par.checked_in, 1, __ATOMIC_RELEASE);
  }
}

/* Called with par.busy held, by every parallel loop: the default is worked out once (it reads
 * the environment and asks the kernel for the CPU affinity). */
static int par_wanted_threads(void) {
  static int default_threads;
  if (par.threads > 0) return par.threads;
  if (default_threads > 0) return default_threads;
  const char *text = getenv("HL_NUM_THREADS");
  int threads = text ? atoi(text) : 0;
  cpu_set_t allowed; /* the cores this process may run on (taskset, containers) */
  if (threads <= 0 && sched_getaffinity(0, sizeof allowed, &allowed) == 0) threads = CPU_COUNT(&allowed);
  if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  default_threads = threads < 1 ? 1 : threads > PAR_MAX_WORKERS + 1 ? PAR_MAX_WORKERS + 1 : threads;
  return default_threads;
}

static int par_serial(void *user_context, halide_task_t task, int min, int extent, uint8_t *closure) {
  for (int i = min; i < min + extent; ++i) {
    int result = task(user_context, i, closure);
    if (result) return result;
  }
  return 0;
}

static void par_after_fork_in_child(void) {
  /* The child has this thread alone: start over without workers. */
  pthread_mutex_init(&par.lock, NULL);
  pthread_mutex_init(&par.busy, NULL);
  pthread_cond_init(&par.wake, NULL);
  par.started = 0;
}

static int par_for(void *user_context, halide_task_t task, int min, int extent, uint8_t *closure) {
  if (extent <= 1 || par_inside || __atomic_load_n(&par.quit, __ATOMIC_RELAXED)) return par_serial(user_context, task, min, extent, closure);
  if (pthread_mutex_trylock(&par.busy) != 0) return par_serial(user_context, task, min, extent, closure);
  int workers = par_wanted_threads() - 1;
  if (workers > extent - 1) workers = extent - 1;
  if (workers > par.started) {
    static int fork_handler;
    if (!fork_handler) fork_handler = pthread_atfork(NULL, NULL, par_after_fork_in_child) == 0;
    pthread_mutex_lock(&par.lock);
    par.start_generation = __atomic_load_n(&par.generation, __ATOMIC_RELAXED);
    while (par.started < workers &&
           pthread_create(&par.worker[par.started], NULL, par_worker, (void *)(intptr_t)par.started) == 0)
      par.started += 1;
    pthread_mutex_unlock(&par.lock);
    if (workers > par.started) workers = par.started;
  }
  if (workers <= 0) {
    pthread_mutex_unlock(&par.busy);
    return par_serial(user_context, task, min, extent, closure);
  }
  par.task = task;
  par.user_context = user_context;
  par.closure = closure;
  par.min = min;
  par.extent = extent;
  par.participants = workers;
  __atomic_store_n(&par.next, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&par.result, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&par.checked_in, 0, __ATOMIC_RELAXED);
  pthread_mutex_lock(&par.lock);
  __atomic_fetch_add(&par.generation, 1, __ATOMIC_RELEASE); /* publishes the loop */
  pthread_cond_broadcast(&par.wake);
  pthread_mutex_unlock(&par.lock);
  par_inside = 1;
  par_run_tasks();
  par_inside = 0;
  /* Every worker checks in before the loop's fields may change. */
  for (int spins = 1; __atomic_load_n(&par.checked_in, __ATOMIC_ACQUIRE) < par.started; ++spins) {
    par_pause();
    if (spins % 1024 == 0) sched_yield(); /* a worker may be waiting for a core */
  }
  int result = __atomic_load_n(&par.result, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&par.busy);
  return result;
}

static void par_set_threads(int threads) {
  pthread_mutex_lock(&par.busy);
  par.threads = threads < 0 ? 0 : threads > PAR_MAX_WORKERS + 1 ? PAR_MAX_WORKERS + 1 : threads;
  pthread_mutex_unlock(&par.busy);
}

/* Runs when the program exits or the shared library is unloaded: no worker may outlive the code. */
__attribute__((destructor)) static void par_stop(void) {
  pthread_mutex_lock(&par.lock);
  __atomic_store_n(&par.quit, 1, __ATOMIC_RELAXED);
  pthread_cond_broadcast(&par.wake);
  pthread_mutex_unlock(&par.lock);
  for (int i = 0; i < par.started; ++i) pthread_join(par.worker[i], NULL);
  par.started = 0;
}
