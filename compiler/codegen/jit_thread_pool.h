/* The plan's thread pool, scratch allocator and floating-point mode, for timing JIT-compiled
 * kernels as a package runs them (jit_thread_pool.c). Threads: HL_NUM_THREADS if set, else one
 * per usable core. */
#ifndef CNNC_JIT_THREAD_POOL_H
#define CNNC_JIT_THREAD_POOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* halide_do_par_for's contract: runs task(user_context, i, closure) for i in [min, min + extent),
 * returns the first nonzero result. */
int cnnc_jit_par_for(void *user_context, int (*task)(void *, int, uint8_t *), int min, int extent, uint8_t *closure);

/* The kernels' scratch blocks, allocated as a package allocates them (plan_thread_pool.c). */
void *cnnc_jit_malloc(size_t size);
void cnnc_jit_free(void *block);

/* Flushes denormals to zero on the calling thread; returns the previous mode for restore. */
unsigned cnnc_jit_flush_denormals(void);
void cnnc_jit_restore_fp(unsigned previous);

#ifdef __cplusplus
}
#endif

#endif
