/* The plan's thread pool, scratch allocator and floating-point mode (plan_thread_pool.c) compiled
 * into cnnc, for `cnnc tune`'s JIT timing: the same code every package runs. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <pthread.h>

#include "HalideRuntime.h"

/* The thread count comes from HL_NUM_THREADS here (cnnc tune --threads sets it). */
static void par_set_threads(int threads) __attribute__((unused));
#include "plan_thread_pool.c"

#include "codegen/jit_thread_pool.h"

int cnnc_jit_par_for(void *user_context, halide_task_t task, int min, int extent, uint8_t *closure) {
  return par_for(user_context, task, min, extent, closure);
}

/* Small blocks as a package allocates them (each thread's own slots); large ones are not pooled
 * here: a package's sizes repeat from call to call, a tuning run's candidates' do not. */
void *cnnc_jit_malloc(size_t size) { return size <= SMALL_MAX_BYTES ? pool_malloc(NULL, size) : pool_block(size); }

void cnnc_jit_free(void *block) {
  if (!block) return;
  if (pool_block_size(block) <= SMALL_MAX_BYTES) pool_free(NULL, block);
  else pool_block_free(block);
}

unsigned cnnc_jit_flush_denormals(void) { return fp_flush_denormals(); }

void cnnc_jit_restore_fp(unsigned previous) { fp_restore(previous); }
