/*
 * bench_stream - decode's memory pattern alone: one token's product streamed
 * over more weights than the caches hold, the rows of each matrix split
 * between THREADS threads that meet at a barrier after it (as the forward
 * pass's pool does), for each type repacked, in place, and a plain read of
 * the repacked bytes (or, for a type without a repacked form, the file's;
 * 8-byte loads XORed together: what the memory gives when nothing is
 * computed).  Prints GB/s of weights read, the mean of
 * ROUNDS interleaved rounds after one uncounted (the three layouts take
 * turns within a round, so a drift of the machine's bandwidth hits them
 * alike), and each product's fraction of the plain read.  In cache a
 * product can be several times faster than the memory and still lose here:
 * decode needs the computing and the reading to overlap (bench_kernels
 * measures the products in cache).
 *
 * usage: bench_stream [ROUNDS [THREADS [MIB]]]   (default 10 2 96: MIB of weights per layout)
 */
#define _POSIX_C_SOURCE 200809L /* pthread barriers */
#include "base/clock.h"
#include "engine/dtype.h"
#include "engine/kernels/kernels.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ROWS = 2816, N = 1024, MAX_THREADS = 64 };

typedef enum { LAYOUT_REPACKED, LAYOUT_IN_PLACE, LAYOUT_READ, LAYOUT_COUNT } layout;

typedef struct {
    const ag_kernels *k;
    int threads, copies;
    layout mode;
    ag_wtype wt, rt;
    const char *w, *p;    /* copies of the matrix in place and repacked */
    size_t wsz, psz, rb, gb;
    const char *x, *xr; /* the token, prepared for the in-place and the repacked type */
    float *y;
    pthread_barrier_t start, step;
    volatile int quit;
} stream;

static volatile uint64_t read_sink;

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * 0x1p-24) - 0.5f;
}

/* The first n / 64 * 64 bytes at p XORed together, in 8 independent lanes the compiler may vectorize. */
static uint64_t read_bytes(const char *p, size_t n) {
    uint64_t acc[8] = {0};
    for (const uint64_t *q = (const uint64_t *)p, *e = q + n / 64 * 8; q < e; q += 8) {
        __builtin_prefetch(q + 8 * 32); /* 2 KiB on, as the products prefetch ahead */
        for (int i = 0; i < 8; i++) acc[i] ^= q[i];
    }
    return acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
}

/* Thread tid's share of every copy, in the current layout, with the barrier after each matrix. */
static void pass(stream *s, int tid) {
    const size_t groups = ROWS / AG_REPACK_ROWS, g0 = groups * tid / s->threads, g1 = groups * (tid + 1) / s->threads;
    const size_t r0 = g0 * AG_REPACK_ROWS, r1 = g1 * AG_REPACK_ROWS;
    uint64_t acc = 0;
    for (int c = 0; c < s->copies; c++) {
        if (s->mode == LAYOUT_REPACKED)
            s->k->matmul[s->rt](s->p + c * s->psz, s->gb, s->xr, 0, N, r0, r1, 1, s->y, ROWS);
        else if (s->mode == LAYOUT_IN_PLACE)
            s->k->matmul[s->wt](s->w + c * s->wsz, s->rb, s->x, 0, N, r0, r1, 1, s->y, ROWS);
        else if (s->p)
            acc ^= read_bytes(s->p + c * s->psz + g0 * s->gb, (g1 - g0) * s->gb);
        else
            acc ^= read_bytes(s->w + c * s->wsz + r0 * s->rb, (r1 - r0) * s->rb);
        pthread_barrier_wait(&s->step);
    }
    read_sink ^= acc;
}

typedef struct {
    stream *s;
    int tid;
} worker_arg;

static void *worker(void *a) {
    worker_arg *wa = a;
    for (;;) {
        pthread_barrier_wait(&wa->s->start);
        if (wa->s->quit) return NULL;
        pass(wa->s, wa->tid);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: bench_stream [ROUNDS [THREADS [MIB]]] (ROUNDS 1..1000, THREADS 1..%d, MIB 8..65536)\n",
            MAX_THREADS);
    exit(2);
}

static long parse(const char *a, long lo, long hi) {
    char *end;
    long v = strtol(a, &end, 10);
    if (*end || v < lo || v > hi) usage();
    return v;
}

int main(int argc, char **argv) {
    if (argc > 4) usage();
    const int rounds = argc > 1 ? (int)parse(argv[1], 1, 1000) : 10;
    const int threads = argc > 2 ? (int)parse(argv[2], 1, MAX_THREADS) : 2;
    const size_t mib = argc > 3 ? (size_t)parse(argv[3], 8, 65536) : 96;
    static const ag_dtype types[] = {AG_DTYPE_F16,  AG_DTYPE_Q8_0, AG_DTYPE_Q4_0, AG_DTYPE_Q2_K,
                                     AG_DTYPE_Q3_K, AG_DTYPE_Q4_K, AG_DTYPE_Q5_K, AG_DTYPE_Q6_K};
    stream s = {.k = ag_kernels_get(), .threads = threads};
    printf("%d threads, %s kernels, one token's product over about %zu MiB of %d x %d matrices, mean of %d rounds\n"
           "| weights | repacked GB/s | in place GB/s | plain read GB/s | repacked / read | in place / read |\n"
           "|---|--:|--:|--:|--:|--:|\n",
           threads, s.k->name, mib, ROWS, N, rounds);
    uint64_t seed = 1;
    float *f = malloc((size_t)ROWS * N * sizeof(float));
    s.y = malloc(ROWS * sizeof(float));
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const ag_dtype dt = types[ti];
        s.wt = (ag_wtype)ag_wtype_of(dt);
        const int rt = ag_wtype_repacked(s.wt); /* -1: no repacked form, in place only */
        s.rt = rt < 0 ? s.wt : (ag_wtype)rt;
        uint64_t rb;
        ag_dtype_bytes(dt, N, &rb);
        s.rb = rb, s.gb = rt < 0 ? 0 : ag_kern_repack_group_bytes(s.rt, N);
        s.wsz = ROWS * s.rb, s.psz = ROWS / AG_REPACK_ROWS * s.gb;
        s.copies = (int)((mib << 20) / s.wsz) + 1;
        for (size_t i = 0; i < (size_t)ROWS * N; i++) f[i] = frand(&seed);
        char *w = malloc(s.wsz * s.copies), *p = rt < 0 ? NULL : aligned_alloc(64, s.psz * s.copies);
        char *x = aligned_alloc(64, (ag_kern_act_row_bytes(s.wt, N) + 63) / 64 * 64);
        char *xr = aligned_alloc(64, (ag_kern_act_row_bytes(s.rt, N) + 63) / 64 * 64);
        if (!w || (rt >= 0 && !p) || !x || !xr) {
            fprintf(stderr, "bench_stream: out of memory\n");
            return 1;
        }
        for (size_t r = 0; r < ROWS; r++) ag_dtype_from_f32(dt, f + r * N, w + r * s.rb, N);
        if (p) ag_kern_repack(s.wt, w, s.rb, ROWS, N, p);
        for (int c = 1; c < s.copies; c++) {
            memcpy(w + c * s.wsz, w, s.wsz);
            if (p) memcpy(p + c * s.psz, p, s.psz);
        }
        ag_kern_act_prepare(s.k, s.wt, f, x, N), ag_kern_act_prepare(s.k, s.rt, f, xr, N);
        s.w = w, s.p = p, s.x = x, s.xr = xr;
        pthread_barrier_init(&s.start, NULL, (unsigned)threads), pthread_barrier_init(&s.step, NULL, (unsigned)threads);
        pthread_t th[MAX_THREADS];
        worker_arg wa[MAX_THREADS];
        for (int t = 1; t < threads; t++) {
            wa[t] = (worker_arg){&s, t};
            if (pthread_create(&th[t], NULL, worker, &wa[t]) != 0) {
                fprintf(stderr, "bench_stream: cannot start a thread\n");
                return 1;
            }
        }
        double sum[LAYOUT_COUNT] = {0};
        for (int r = -1; r < rounds; r++) /* round -1 warms up, uncounted */
            for (int m = 0; m < LAYOUT_COUNT; m++) {
                if (m == LAYOUT_REPACKED && !p) continue;
                s.mode = (layout)m;
                uint64_t t0 = ag_clock_mono_ns();
                pthread_barrier_wait(&s.start);
                pass(&s, 0);
                const size_t bytes = (m == LAYOUT_IN_PLACE || !p ? s.wsz : s.psz) * s.copies;
                if (r >= 0) sum[m] += (double)bytes / (double)(ag_clock_mono_ns() - t0);
            }
        s.quit = 1;
        pthread_barrier_wait(&s.start);
        for (int t = 1; t < threads; t++) pthread_join(th[t], NULL);
        s.quit = 0;
        pthread_barrier_destroy(&s.start), pthread_barrier_destroy(&s.step);
        const double a = sum[LAYOUT_REPACKED] / rounds, b = sum[LAYOUT_IN_PLACE] / rounds, c = sum[LAYOUT_READ] / rounds;
        if (p)
            printf("| %s | %.1f | %.1f | %.1f | %.0f%% | %.0f%% |\n", ag_dtype_name(dt), a, b, c, 100 * a / c, 100 * b / c);
        else
            printf("| %s | - | %.1f | %.1f | - | %.0f%% |\n", ag_dtype_name(dt), b, c, 100 * b / c);
        free(w), free(p), free(x), free(xr);
    }
    free(f), free(s.y);
    return 0;
}
