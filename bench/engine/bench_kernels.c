/*
 * bench_kernels - one thread's matrix products alone, repacked (16-row
 * groups, kernels/repack.c) beside in place, on the 219.7M model's shapes:
 * a 2816 x 1024 matrix (gate/up) and a 1024 x 2816 one (down), against 1,
 * 16 and 512 activation rows.  Prints multiply-adds per second (GMAC/s),
 * the best of REPS runs, for F16, Q8_0 and Q4_0 (both layouts) and Q4_K,
 * Q6_K (in place: they have no repacked form) with the kernels this CPU
 * picks (or AG_KERNELS).  The weights are random, quantized with our
 * quantizers; the activations are prepared as the forward pass prepares
 * them.  Divide by bench_engine's one-thread FMA ceiling (x 2 FLOPs) for
 * the fraction of the float peak.
 *
 * usage: bench_kernels [REPS]
 */
#include "base/clock.h"
#include "engine/dtype.h"
#include "engine/kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * 0x1p-24) - 0.5f;
}

/* Best GMAC/s of reps products of rows x n by T. */
static double measure(const ag_kernels *k, ag_wtype wt, const void *w, size_t stride, const char *x, size_t xs,
                      size_t rows, size_t n, size_t T, float *y, int reps) {
    double best = 0;
    for (int r = 0; r < reps; r++) {
        uint64_t t0 = ag_clock_mono_ns();
        k->matmul[wt](w, stride, x, xs, n, 0, rows, T, y, rows);
        double s = (double)(ag_clock_mono_ns() - t0) / 1e9, g = (double)rows * (double)n * (double)T / s / 1e9;
        if (g > best) best = g;
    }
    return best;
}

/* REPS from argv, or 5; anything but a positive number is refused. */
static int parse_reps(int argc, char **argv) {
    if (argc < 2) return 5;
    char *end;
    long v = strtol(argv[1], &end, 10);
    if (argc > 2 || *end || v < 1 || v > 100000) {
        fprintf(stderr, "usage: bench_kernels [REPS] (REPS 1..100000)\n");
        exit(2);
    }
    return (int)v;
}

int main(int argc, char **argv) {
    const int reps = parse_reps(argc, argv);
    const ag_kernels *k = ag_kernels_get();
    static const size_t shapes[][2] = {{2816, 1024}, {1024, 2816}};
    static const size_t tokens[] = {1, 16, 512};
    static const ag_dtype types[] = {AG_DTYPE_F16, AG_DTYPE_Q8_0, AG_DTYPE_Q4_0, AG_DTYPE_Q4_K, AG_DTYPE_Q6_K};
    printf("one thread, %s kernels, best of %d: GMAC/s\n| weights | rows x n | tokens | repacked | in place | ratio |\n"
           "|---|---|--:|--:|--:|--:|\n",
           k->name, reps);
    uint64_t seed = 1;
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (size_t si = 0; si < 2; si++) {
            const ag_dtype dt = types[ti];
            const ag_wtype wt = (ag_wtype)ag_wtype_of(dt);
            const int rt = ag_wtype_repacked(wt); /* -1: no repacked form, in place only */
            const size_t rows = shapes[si][0], n = shapes[si][1], T = tokens[sizeof tokens / sizeof *tokens - 1];
            uint64_t rb;
            ag_dtype_bytes(dt, n, &rb);
            float *f = malloc((rows > T ? rows : T) * n * sizeof(float));
            char *w = malloc(rows * rb);
            for (size_t i = 0; i < rows * n; i++) f[i] = frand(&seed);
            for (size_t r = 0; r < rows; r++) ag_dtype_from_f32(dt, f + r * n, w + r * rb, n);
            const size_t gb = rt < 0 ? 0 : ag_kern_repack_group_bytes((ag_wtype)rt, n);
            void *p = rt < 0 ? NULL : aligned_alloc(64, rows / AG_REPACK_ROWS * gb);
            if (p) ag_kern_repack(wt, w, rb, rows, n, p);
            const ag_wtype at = rt < 0 ? wt : (ag_wtype)rt; /* prepared for the repacked type: with the sides */
            const size_t xs = (ag_kern_act_row_bytes(at, n) + 63) / 64 * 64;
            char *x = aligned_alloc(64, T * xs);
            for (size_t t = 0; t < T; t++) ag_kern_act_prepare(k, at, f + t * n, x + t * xs, n);
            float *y = malloc(T * rows * sizeof(float));
            for (size_t j = 0; j < sizeof tokens / sizeof *tokens; j++) {
                double b = measure(k, wt, w, rb, x, xs, rows, n, tokens[j], y, reps);
                if (p) {
                    double a = measure(k, (ag_wtype)rt, p, gb, x, xs, rows, n, tokens[j], y, reps);
                    printf("| %s | %zu x %zu | %zu | %.1f | %.1f | %.2fx |\n", ag_dtype_name(dt), rows, n, tokens[j], a, b,
                           a / b);
                } else {
                    printf("| %s | %zu x %zu | %zu | - | %.1f | - |\n", ag_dtype_name(dt), rows, n, tokens[j], b);
                }
            }
            free(f), free(w), free(p), free(x), free(y);
        }
    return 0;
}
