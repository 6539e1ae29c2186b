/*
 * pool.c - see pool.h.  A step is published by storing fn/ctx and bumping
 * `gen`; workers compare it with the last generation they ran.  `pending`
 * counts workers still running the step; the caller spins until it is zero.
 * A worker about to sleep increments `n_sleeping` and re-checks `gen` under
 * the mutex, and the caller broadcasts under the mutex when anyone sleeps, so
 * a wake-up is never lost.
 */
#include "base/pool.h"

#include "base/alloc.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

enum { SPIN_ITERS = 1 << 16 };

struct ag_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ag_pool_fn fn;
    void *ctx;
    atomic_uint gen;
    atomic_int pending;
    atomic_int n_sleeping;
    atomic_bool stop;
};

typedef struct worker_arg {
    ag_pool *p;
    int ith;
} worker_arg;

static void *worker_main(void *varg) {
    worker_arg *a = varg;
    ag_pool *p = a->p;
    int ith = a->ith;
    free(a);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
            if (++spins < SPIN_ITERS) {
                CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        p->fn(p->ctx, ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
    }
}

ag_status ag_pool_create(int n_threads, ag_pool **out, ag_err *err) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024) return ag_err_set(err, AG_EINVAL, "threads must be 1..1024, not %d", n_threads);
    ag_pool *p = ag_xcalloc(1, sizeof *p);
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = ag_xcalloc((size_t)n_threads, sizeof *p->threads);
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = ag_xmalloc(sizeof *a);
        *a = (worker_arg){p, i};
        if (pthread_create(&p->threads[i], NULL, worker_main, a) != 0) {
            free(a);
            p->n = i; /* destroy joins the ones that started */
            ag_pool_destroy(p);
            return ag_err_set(err, AG_ERR, "cannot start thread %d of %d", i, n_threads);
        }
    }
    *out = p;
    return AG_OK;
}

void ag_pool_destroy(ag_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

int ag_pool_size(const ag_pool *p) { return p->n; }

void ag_pool_run(ag_pool *p, ag_pool_fn fn, void *ctx) {
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, p->n - 1);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: ordered before the n_sleeping read below */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) CPU_RELAX();
}

void ag_pool_split(long n, int ith, int nth, long align, long *lo, long *hi) {
    if (align < 1) align = 1;
    long units = (n + align - 1) / align;
    long per = units / nth, extra = units % nth;
    long u0 = ith * per + (ith < extra ? ith : extra);
    long u1 = u0 + per + (ith < extra ? 1 : 0);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}

int ag_cpu_physical_cores(void) {
    /* Count distinct (package, core) pairs; fall back to online CPUs. */
    long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (n_cpu < 1) n_cpu = 1;
    int n_core = 0;
    unsigned long seen[1024];
    for (long c = 0; c < n_cpu && c < 4096; c++) {
        char path[128];
        unsigned pkg = 0, core = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/physical_package_id", c);
        FILE *f = fopen(path, "r");
        if (!f) return (int)n_cpu;
        int ok = fscanf(f, "%u", &pkg) == 1;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%ld/topology/core_id", c);
        if (!ok || !(f = fopen(path, "r"))) return (int)n_cpu;
        ok = fscanf(f, "%u", &core) == 1;
        fclose(f);
        if (!ok) return (int)n_cpu;
        unsigned long key = (unsigned long)pkg << 32 | core;
        int dup = 0;
        for (int i = 0; i < n_core && !dup; i++) dup = seen[i] == key;
        if (!dup) {
            if (n_core == (int)(sizeof seen / sizeof seen[0])) return (int)n_cpu;
            seen[n_core++] = key;
        }
    }
    return n_core > 0 ? n_core : (int)n_cpu;
}
