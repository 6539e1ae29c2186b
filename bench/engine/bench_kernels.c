/*
 * bench_kernels - one thread's matrix products alone, repacked (16-row
 * groups, kernels/repack.c) beside in place, on the 219.7M model's shapes:
 * a 2816 x 1024 matrix (gate/up) and a 1024 x 2816 one (down), against 1,
 * 16 and 512 activation rows.  Prints multiply-adds per second (GMAC/s),
 * the best of REPS runs, for F16, Q8_0, Q4_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (both layouts)
 * with the kernels this CPU
 * picks (or AG_KERNELS), and each as a fraction of one thread's ceiling
 * measured in the same run: the FMA rate for F16, the int8 multiply-add
 * rate (vpmaddubsw, or vpdpbusd with VNNI) for the quantized types.  The
 * weights are random, quantized with our quantizers; the activations are
 * prepared as the forward pass prepares them.
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

/*
 * One thread's ceilings, measured in the same run: 12 independent chains of
 * the instruction the products are built on, so only its throughput limits
 * them.  FP: FMA, 8 or 16 multiply-adds.  int8: what the repacked Q8_0/Q4_0
 * tiles multiply with, vpmaddubsw on AVX2 (32 byte pairs a ymm) or
 * vpdpbusd on AVX-512 VNNI (64 a zmm).  The widest this build compiles for
 * (-march=native); 0 where it has neither.
 */
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#include <immintrin.h>
typedef __m512 fvec;
typedef __m512i ivec;
#define FSET1 _mm512_set1_ps
#define FMA(a, m, c) _mm512_fmadd_ps(a, m, c)
#define FLANES 16
#define ISET1 _mm512_set1_epi8
#define IMAC(a, w, x) _mm512_dpbusd_epi32(a, w, x)
#define IMACS 64
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 fvec;
typedef __m256i ivec;
#define FSET1 _mm256_set1_ps
#define FMA(a, m, c) _mm256_fmadd_ps(a, m, c)
#define FLANES 8
#define ISET1 _mm256_set1_epi8
#define IMAC(a, w, x) _mm256_maddubs_epi16(w, a) /* chained through the signed operand */
#define IMACS 32
#endif
enum { CEIL_ITERS = 4 << 20, FCHAINS = 12, ICHAINS = 12 }; /* enough chains to hide the latency */
static volatile unsigned char ceiling_sink; /* the chains' result goes somewhere, so they are computed */

/* Best GMAC/s of FMA (int8 = false) or int8 multiply-add chains over reps trials. */
static double ceiling(bool int8, int reps) {
    double best = 0;
#if defined(FLANES)
    for (int r = 0; r < reps; r++) {
        uint64_t t0 = ag_clock_mono_ns();
        if (int8) {
            ivec acc[ICHAINS], w = ISET1(1), x = ISET1(1);
            (void)x; /* AVX2 chains through the accumulator alone */
            for (int i = 0; i < ICHAINS; i++) acc[i] = ISET1((char)i);
            for (long it = 0; it < CEIL_ITERS; it++)
                for (int i = 0; i < ICHAINS; i++) {
                    acc[i] = IMAC(acc[i], w, x);
                    __asm__("" : "+x"(acc[i])); /* in a register: gcc 12 otherwise moves chains through memory */
                }
            for (int i = 1; i < ICHAINS; i++) acc[0] = IMAC(acc[0], acc[i], x);
            memcpy((void *)&ceiling_sink, &acc[0], 1);
        } else {
            fvec acc[FCHAINS], m = FSET1(0.999999f), a = FSET1(1e-7f);
            for (int i = 0; i < FCHAINS; i++) acc[i] = FSET1((float)i);
            for (long it = 0; it < CEIL_ITERS; it++)
                for (int i = 0; i < FCHAINS; i++) {
                    acc[i] = FMA(acc[i], m, a);
                    __asm__("" : "+x"(acc[i]));
                }
            for (int i = 1; i < FCHAINS; i++) acc[0] = FMA(acc[i], m, acc[0]);
            memcpy((void *)&ceiling_sink, &acc[0], 1);
        }
        double s = (double)(ag_clock_mono_ns() - t0) / 1e9;
        double g = (int8 ? (double)ICHAINS * IMACS : (double)FCHAINS * FLANES) * (double)CEIL_ITERS / s / 1e9;
        if (g > best) best = g;
    }
#else
    (void)int8, (void)reps;
#endif
    return best;
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
    static const ag_dtype types[] = {AG_DTYPE_F16, AG_DTYPE_Q8_0, AG_DTYPE_Q4_0, AG_DTYPE_Q2_K, AG_DTYPE_Q3_K, AG_DTYPE_Q4_K, AG_DTYPE_Q5_K, AG_DTYPE_Q6_K};
    const double fp_peak = ceiling(false, reps), int8_peak = ceiling(true, reps);
    printf("one thread, %s kernels, best of %d: GMAC/s; measured ceilings: FMA %.1f, int8 %.1f GMAC/s\n"
           "| weights | rows x n | tokens | repacked | in place | ratio | %% of peak (repacked, in place) |\n"
           "|---|---|--:|--:|--:|--:|--:|\n",
           k->name, reps, fp_peak, int8_peak);
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
            const double peak = dt == AG_DTYPE_F16 ? fp_peak : int8_peak;
            for (size_t j = 0; j < sizeof tokens / sizeof *tokens; j++) {
                double b = measure(k, wt, w, rb, x, xs, rows, n, tokens[j], y, reps);
                if (p) {
                    double a = measure(k, (ag_wtype)rt, p, gb, x, xs, rows, n, tokens[j], y, reps);
                    printf("| %s | %zu x %zu | %zu | %.1f | %.1f | %.2fx | %.0f%%, %.0f%% |\n", ag_dtype_name(dt), rows, n,
                           tokens[j], a, b, a / b, 100 * a / peak, 100 * b / peak);
                } else {
                    printf("| %s | %zu x %zu | %zu | - | %.1f | - | -, %.0f%% |\n", ag_dtype_name(dt), rows, n, tokens[j], b,
                           100 * b / peak);
                }
            }
            free(f), free(w), free(p), free(x), free(y);
        }
    return 0;
}
