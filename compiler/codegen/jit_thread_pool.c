/* The plan's thread pool and floating-point mode (plan_thread_pool.c) compiled into cnnc, for
 * `cnnc tune`'s JIT timing: the same code every package runs. */
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

unsigned cnnc_jit_flush_denormals(void) { return fp_flush_denormals(); }

void cnnc_jit_restore_fp(unsigned previous) { fp_restore(previous); }
