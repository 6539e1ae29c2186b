/*
 * pool.h - a persistent thread pool for data-parallel compute steps.
 *
 * The engine runs a few hundred short parallel steps per token (one per
 * matrix product, norm, attention), so threads are created once and a step
 * costs a generation-counter bump, not a pthread_create.  ag_pool_run(fn)
 * calls fn(ctx, ith, nth) on every thread, the caller being thread 0, and
 * returns when all have finished: the barrier between steps.  Idle workers
 * spin briefly (the next step usually comes within microseconds), then sleep
 * on a condition variable so an idle server burns no CPU.
 *
 * One thread at a time may call ag_pool_run on a given pool.
 */
#ifndef AG_BASE_POOL_H
#define AG_BASE_POOL_H

#include "autoglm/status.h"

typedef struct ag_pool ag_pool;
typedef void (*ag_pool_fn)(void *ctx, int ith, int nth);

/* n_threads >= 1, counting the caller.  The caller owns *out: ag_pool_destroy. */
ag_status ag_pool_create(int n_threads, ag_pool **out, ag_err *err);
void ag_pool_destroy(ag_pool *p);
int ag_pool_size(const ag_pool *p);
void ag_pool_run(ag_pool *p, ag_pool_fn fn, void *ctx);

/* Physical cores of this machine (SMT siblings counted once); at least 1. */
int ag_cpu_physical_cores(void);

/* The share [*lo, *hi) of n items for thread ith of nth, in whole units of `align` items. */
void ag_pool_split(long n, int ith, int nth, long align, long *lo, long *hi);

#endif
