/* The thread pool for Halide's parallel loops, the allocator of the kernels' scratch buffers
 * (pool_malloc, pool_free) and the floating-point mode of the kernels.
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

/* Halide allocates its intermediate buffers on every call. Freed blocks are kept for reuse, so
 * that a training step does not page-fault fresh memory each time: the sizes repeat exactly. */
#define POOL_SLOTS 64
#define POOL_HEADER 128 /* keeps Halide's 128-byte alignment and remembers the size */
static struct { void *block; size_t size; } pool[POOL_SLOTS];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

/* A block of `size` bytes behind its header; its size, and its release to malloc. */
static void *pool_block(size_t size) {
  void *memory = NULL;
  if (posix_memalign(&memory, 128, size + POOL_HEADER) != 0) return NULL;
  *(size_t *)memory = size;
  return (char *)memory + POOL_HEADER;
}
static size_t pool_block_size(void *block) { return *(size_t *)((char *)block - POOL_HEADER); }
static void pool_block_free(void *block) { free((char *)block - POOL_HEADER); }

#define SMALL_MAX_BYTES (64 << 10) /* blocks up to this (per-task tiles) use the thread's own slots */

/* A task's small blocks (Winograd tiles, im2col panels) are allocated and freed once per task, by
 * the thread that runs it. Given back to malloc, they make glibc trim the worker's arena and
 * re-fault its pages on the next task, with TLB shootdowns across the cores: in some processes a
 * pooled Winograd kernel ran 4-6x slower. So each thread keeps its last few small blocks, by size,
 * with no lock and no scan beyond its own SMALL_SLOTS (a shared, locked pool cost a batch-256
 * resnet20 15-30%). A thread's blocks are freed when it exits, and every thread's when the
 * package is unloaded (its code must not be called at a later thread exit). */
#define SMALL_SLOTS 8
#define SMALL_GRAIN 4096 /* sizes rounded up to this, so that near sizes share blocks */
#define SMALL_THREADS 256
struct small_slot { void *block; size_t size; };
static __thread struct small_slot small_slots[SMALL_SLOTS];
static __thread unsigned small_evict; /* the next slot to give back to malloc when all are full */
static __thread int small_registered; /* 1: slots in use, -1: this thread frees its blocks at once */
static struct small_slot *small_threads[SMALL_THREADS]; /* registered threads' slots (pool_lock) */
static pthread_key_t small_key;
static int small_key_made;
static pthread_once_t small_once = PTHREAD_ONCE_INIT;

static void small_free_all(struct small_slot *slot) {
  for (int i = 0; i < SMALL_SLOTS; ++i)
    if (slot[i].block) {
      pool_block_free(slot[i].block);
      slot[i].block = NULL;
    }
}
/* At a thread's exit (the key's destructor). */
static void small_release(void *slots) {
  pthread_mutex_lock(&pool_lock);
  for (int t = 0; t < SMALL_THREADS; ++t)
    if (small_threads[t] == slots) {
      small_free_all(small_threads[t]);
      small_threads[t] = NULL;
    }
  pthread_mutex_unlock(&pool_lock);
}
static void small_make_key(void) { small_key_made = pthread_key_create(&small_key, small_release) == 0; }
static int small_register(void) {
  pthread_once(&small_once, small_make_key);
  if (!small_key_made) return -1;
  int registered = -1;
  pthread_mutex_lock(&pool_lock);
  for (int t = 0; t < SMALL_THREADS && registered < 0; ++t)
    if (!small_threads[t]) {
      small_threads[t] = small_slots;
      registered = 1;
    }
  pthread_mutex_unlock(&pool_lock);
  if (registered > 0 && pthread_setspecific(small_key, small_slots) != 0) {
    small_release(small_slots);
    registered = -1;
  }
  return registered;
}
__attribute__((destructor)) static void small_stop(void) {
  pthread_mutex_lock(&pool_lock);
  for (int t = 0; t < SMALL_THREADS; ++t)
    if (small_threads[t]) {
      small_free_all(small_threads[t]);
      small_threads[t] = NULL;
    }
  if (small_key_made) pthread_key_delete(small_key);
  small_key_made = 0;
  pthread_mutex_unlock(&pool_lock);
}

static void *pool_malloc(void *user_context, size_t size) {
  (void)user_context;
  if (size <= SMALL_MAX_BYTES) { /* still <= SMALL_MAX_BYTES rounded up: pool_free knows it as small */
    size = (size + SMALL_GRAIN - 1) / SMALL_GRAIN * SMALL_GRAIN;
    for (int i = 0; i < SMALL_SLOTS; ++i)
      if (small_slots[i].block && small_slots[i].size == size) {
        void *block = small_slots[i].block;
        small_slots[i].block = NULL;
        return block;
      }
    return pool_block(size);
  }
  pthread_mutex_lock(&pool_lock);
  for (int i = 0; i < POOL_SLOTS; ++i)
    if (pool[i].block && pool[i].size == size) {
      void *block = pool[i].block;
      pool[i].block = NULL;
      pthread_mutex_unlock(&pool_lock);
      return block;
    }
  pthread_mutex_unlock(&pool_lock);
  return pool_block(size);
}

static void pool_free(void *user_context, void *block) {
  (void)user_context;
  if (!block) return;
  size_t size = pool_block_size(block);
  if (size <= SMALL_MAX_BYTES) {
    if (!small_registered) small_registered = small_register();
    if (small_registered < 0 || !small_key_made) {
      pool_block_free(block);
      return;
    }
    for (int i = 0; i < SMALL_SLOTS; ++i)
      if (!small_slots[i].block) {
        small_slots[i].block = block;
        small_slots[i].size = size;
        return;
      }
    struct small_slot *slot = &small_slots[small_evict++ % SMALL_SLOTS]; /* all full: the oldest goes */
    pool_block_free(slot->block);
    slot->block = block;
    slot->size = size;
    return;
  }
  pthread_mutex_lock(&pool_lock);
  for (int i = 0; i < POOL_SLOTS; ++i)
    if (!pool[i].block) {
      pool[i].block = block;
      pool[i].size = size;
      pthread_mutex_unlock(&pool_lock);
      return;
    }
  pthread_mutex_unlock(&pool_lock);
  pool_block_free(block);
}
