/*
 * Tests for src/engine/kernels: every SIMD variant this CPU runs against the
 * scalar generic twin, on odd shapes (rows and tokens that leave partial
 * tiles, row lengths that leave vector tails), and the thread pool they run on.
 */
#include "test.h"

#include "base/pool.h"
#include "engine/kernels/kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

/* Each weight type's dtype, by ag_wtype. */
static const ag_dtype wdtype[AG_W_COUNT] = {
    AG_DTYPE_F32,  AG_DTYPE_F16,    AG_DTYPE_BF16, AG_DTYPE_Q8_0, AG_DTYPE_Q4_0, AG_DTYPE_Q4_1, AG_DTYPE_Q5_0,
    AG_DTYPE_Q5_1, AG_DTYPE_IQ4_NL, AG_DTYPE_Q2_K, AG_DTYPE_Q3_K, AG_DTYPE_Q4_K, AG_DTYPE_Q5_K, AG_DTYPE_Q6_K};
/*
 * The tolerance for every type, relative to sum |w_i * x_i| (the scale of the
 * rounding error): both sides compute on identical inputs (the same f16
 * values, bf16 values or int8 blocks), so they differ only in summation order.
 */
static const double tolerance = 1e-5;

static float frand(uint64_t *s) { return (float)((ag_test_rand(s) >> 40) * 0x1p-24 * 2.0 - 1.0); }

static const char *const variants[] = {"avx2", "avx512"};

/* sum |a_i * b_i|: the scale of a dot product's rounding error, which the tolerance is relative to. */
static double dot_mag(const float *a, const float *b, size_t n) {
    double mag = 0;
    for (size_t i = 0; i < n; i++) mag += fabs((double)a[i] * b[i]);
    return mag;
}

static void check_matmul(const ag_kernels *k, ag_wtype wt, size_t rows, size_t n, size_t T, uint64_t *seed) {
    const ag_kernels *g = &ag_kernels_generic;
    ag_dtype dt = wdtype[wt];
    uint64_t row_bytes;
    assert_true(ag_dtype_bytes(dt, n, &row_bytes));
    size_t xrb = ag_kern_act_row_bytes(wt, n);
    float *wf = malloc(rows * n * sizeof(float)), *xf = malloc(T * n * sizeof(float));
    float *wd = malloc(rows * n * sizeof(float)), *xd = malloc(T * n * sizeof(float));
    char *w = malloc(rows * row_bytes), *x = malloc(T * xrb);
    float *y0 = malloc(T * rows * sizeof(float)), *y1 = malloc(T * rows * sizeof(float));
    for (size_t i = 0; i < rows * n; i++) wf[i] = frand(seed);
    for (size_t i = 0; i < T * n; i++) xf[i] = frand(seed) * 3;
    for (size_t r = 0; r < rows; r++) {
        ag_dtype_from_f32(dt, wf + r * n, w + r * row_bytes, n);
        ag_dtype_to_f32(dt, w + r * row_bytes, wd + r * n, n);
    }
    for (size_t t = 0; t < T; t++) {
        ag_kern_act_prepare(g, wt, xf + t * n, x + t * xrb, n);
        ag_dtype_to_f32(ag_wtype_act(wt), x + t * xrb, xd + t * n, n);
    }
    /* the whole range, and a sub-range to check r0/r1 are honoured */
    g->matmul[wt](w, row_bytes, x, xrb, n, 0, rows, T, y0, rows);
    memset(y1, 0xff, T * rows * sizeof(float));
    k->matmul[wt](w, row_bytes, x, xrb, n, 0, rows, T, y1, rows);
    for (size_t t = 0; t < T; t++)
        for (size_t r = 0; r < rows; r++) {
            double mag = dot_mag(wd + r * n, xd + t * n, n);
            double err = fabs((double)y0[t * rows + r] - y1[t * rows + r]);
            if (!(err <= tolerance * mag + 1e-30))
                fail_msg("%s %s rows=%zu n=%zu T=%zu: y[%zu][%zu] %g vs generic %g (tolerance %g of %g)", k->name,
                         ag_dtype_name(dt), rows, n, T, t, r, y1[t * rows + r], y0[t * rows + r], tolerance, mag);
        }
    /* batch invariance: each token alone (the single-row path) gives the batched result's exact bits */
    for (size_t t = 0; t < T && T > 1 && rows <= 32; t++) {
        float alone[32];
        k->matmul[wt](w, row_bytes, x + t * xrb, xrb, n, 0, rows, 1, alone, rows);
        for (size_t r = 0; r < rows; r++)
            if (memcmp(&alone[r], &y1[t * rows + r], sizeof(float)) != 0)
                fail_msg("%s %s rows=%zu n=%zu T=%zu: token %zu row %zu alone %.9g, batched %.9g", k->name,
                         ag_dtype_name(dt), rows, n, T, t, r, alone[r], y1[t * rows + r]);
    }
    if (rows > 2) {
        memset(y1, 0, T * rows * sizeof(float));
        k->matmul[wt](w, row_bytes, x, xrb, n, 1, rows - 1, T, y1, rows);
        for (size_t t = 0; t < T; t++) {
            assert_true(y1[t * rows] == 0 && y1[t * rows + rows - 1] == 0);
            for (size_t r = 1; r + 1 < rows; r++) assert_true(fabsf(y1[t * rows + r] - y0[t * rows + r]) <= 1e-3f * (1 + fabsf(y0[t * rows + r])));
        }
    }
    free(wf), free(xf), free(wd), free(xd), free(w), free(x), free(y0), free(y1);
}

static void test_matmul_variants_match_generic(void **state) {
    (void)state;
    static const size_t rows_list[] = {1, 3, 4, 5, 9, 17};
    static const size_t T_list[] = {1, 2, 3, 4, 5, 7, 70}; /* 70 crosses a token block */
    static const size_t n_float[] = {1, 7, 8, 15, 16, 31, 33, 100, 257};
    static const size_t n_quant[] = {32, 64, 96, 288};
    static const size_t n_kquant[] = {256, 512, 768};
    int ran = 0;
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        const ag_kernels *k = ag_kernels_by_name(variants[v]);
        if (!k) {
            AG_TEST_NOTE("%s kernels not supported by this CPU or build: skipped", variants[v]);
            continue;
        }
        ran++;
        uint64_t seed = 42;
        for (int wt = 0; wt <= AG_W_Q6_K; wt++) { /* the file types; the repacked ones below */
            size_t be = ag_dtype_block_elems(wdtype[wt]);
            const size_t *ns = be == 256 ? n_kquant : be == 32 ? n_quant : n_float;
            size_t nn = be == 256  ? sizeof n_kquant / sizeof *n_kquant
                        : be == 32 ? sizeof n_quant / sizeof *n_quant
                                   : sizeof n_float / sizeof *n_float;
            for (size_t a = 0; a < sizeof rows_list / sizeof *rows_list; a++)
                for (size_t b = 0; b < sizeof T_list / sizeof *T_list; b++)
                    for (size_t c = 0; c < nn; c++) check_matmul(k, (ag_wtype)wt, rows_list[a], ns[c], T_list[b], &seed);
        }
    }
    if (!ran) AG_TEST_NOTE("only the generic kernels exist here");
}

/* The generic product is the plain definition, in double within float rounding. */
static void test_generic_matmul_is_the_definition(void **state) {
    (void)state;
    uint64_t seed = 7;
    const size_t rows = 5, n = 64, T = 3;
    float w[5 * 64], x[3 * 64], y[3 * 5];
    for (size_t i = 0; i < rows * n; i++) w[i] = frand(&seed);
    for (size_t i = 0; i < T * n; i++) x[i] = frand(&seed);
    ag_kernels_generic.matmul[AG_W_F32](w, n * 4, x, n * 4, n, 0, rows, T, y, rows);
    for (size_t t = 0; t < T; t++)
        for (size_t r = 0; r < rows; r++) {
            double s = 0;
            for (size_t i = 0; i < n; i++) s += (double)w[r * n + i] * x[t * n + i];
            assert_true(fabs(s - y[t * rows + r]) < 1e-5);
        }
}

/*
 * One row of 4096 against one activation row, every variant against the
 * value ggml's vec_dot gives for the same blocks (llama.cpp c392e509, the
 * inputs of ag_test_kquant_inputs): the dot products mean what ggml's mean.
 * Q4_1 and Q5_1 read Q8_1 activations in ggml, whose block sum is rounded
 * to fp16; ours sums Q8_0's bytes exactly, hence their looser bound.
 */
static void test_dots_match_ggml(void **state) {
    (void)state;
    enum { N = 4096 };
    static float x[N], a[N];
    static uint8_t w[N * 2], act[N * 2];
    ag_test_kquant_inputs(x, a, N);
    static const struct {
        ag_wtype wt;
        double ggml, tol;
    } cases[] = {{AG_W_Q4_1, -88.2046661, 3e-4}, {AG_W_Q5_0, -91.2583008, 2e-6}, {AG_W_Q5_1, -92.5797577, 3e-4},
                 {AG_W_Q4_K, -86.1018906, 2e-6}, {AG_W_Q5_K, -91.5367203, 2e-6}, {AG_W_Q6_K, -92.6443024, 2e-6},
                 {AG_W_Q2_K, -102.012741, 2e-6}, {AG_W_Q3_K, -93.5710983, 2e-6}, {AG_W_IQ4_NL, -93.3327408, 2e-6}};
    const char *names[] = {"generic", "avx2", "avx512"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ag_dtype_from_f32(wdtype[cases[c].wt], x, w, N);
        for (size_t v = 0; v < 3; v++) {
            const ag_kernels *k = ag_kernels_by_name(names[v]);
            if (!k) continue;
            ag_kern_act_prepare(k, cases[c].wt, a, act, N);
            float y = 0;
            k->matmul[cases[c].wt](w, 0, act, 0, N, 0, 1, 1, &y, 1);
            if (!(fabs(y - cases[c].ggml) <= cases[c].tol * fabs(cases[c].ggml)))
                fail_msg("%s %s: %.9g, ggml %.9g", names[v], ag_dtype_name(wdtype[cases[c].wt]), y, cases[c].ggml);
        }
    }
}

/*
 * The repacked products (repack.c): the generic twin agrees with the in-place
 * product within rounding (only the order of the float sums differs; the
 * tolerance relative to sum |w x|, as check_matmul's: relative to |y| it failed
 * on a Q5_K row whose terms cancel),
 * and every variant gives the generic twin's exact bits, batched or alone, on
 * groups cut by r0/r1.
 */
static void check_repacked(ag_wtype wt, size_t rows, size_t n, size_t T, uint64_t *seed) {
    const ag_kernels *g = &ag_kernels_generic;
    const ag_wtype rt = (ag_wtype)ag_wtype_repacked(wt);
    const ag_dtype dt = wdtype[wt];
    uint64_t rb;
    assert_true(ag_dtype_bytes(dt, n, &rb));
    size_t xrb = ag_kern_act_row_bytes(rt, n), gb = ag_kern_repack_group_bytes(rt, n);
    assert_int_equal(xrb, ag_kern_act_row_bytes(wt, n));
    float *f = malloc((rows > T ? rows : T) * n * sizeof(float));
    char *w = malloc(rows * rb), *x = malloc(T * xrb);
    void *p = aligned_alloc(64, rows / AG_REPACK_ROWS * gb);
    float *y0 = malloc(T * rows * sizeof(float)), *y1 = malloc(T * rows * sizeof(float)), *y2 = malloc(T * rows * sizeof(float));
    float *wd = malloc(rows * n * sizeof(float)), *xd = malloc(T * n * sizeof(float));
    for (size_t i = 0; i < rows * n; i++) f[i] = frand(seed);
    for (size_t r = 0; r < rows; r++) ag_dtype_from_f32(dt, f + r * n, w + r * rb, n);
    if (wt == AG_W_Q8_0) /* a file may hold -128, which ggml's quantizer never writes: stored 0 when repacked */
        for (size_t r = 0; r < rows; r++) ((ag_block_q8_0 *)(w + r * rb))[r % (n / 32)].qs[r % 32] = -128;
    for (size_t r = 0; r < rows; r++) ag_dtype_to_f32(dt, w + r * rb, wd + r * n, n);
    for (size_t i = 0; i < T * n; i++) f[i] = frand(seed) * 3;
    for (size_t t = 0; t < T; t++) {
        ag_kern_act_prepare(g, rt, f + t * n, x + t * xrb, n); /* with the sides */
        ag_dtype_to_f32(ag_wtype_act(rt), x + t * xrb, xd + t * n, n);
    }
    ag_kern_repack(wt, w, rb, rows, n, p);
    g->matmul[wt](w, rb, x, xrb, n, 0, rows, T, y0, rows);
    g->matmul[rt](p, gb, x, xrb, n, 0, rows, T, y1, rows);
    for (size_t i = 0; i < T * rows; i++) /* the same sum, rounded in another order */
        if (!(fabs((double)y0[i] - y1[i]) <= tolerance * dot_mag(wd + i % rows * n, xd + i / rows * n, n)))
            fail_msg("generic %s rows=%zu n=%zu T=%zu: [%zu] repacked %.9g, in place %.9g", ag_dtype_name(dt), rows, n, T,
                     i, y1[i], y0[i]);
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        const ag_kernels *k = ag_kernels_by_name(variants[v]);
        if (!k) continue;
        memset(y2, 0xff, T * rows * sizeof(float));
        k->matmul[rt](p, gb, x, xrb, n, 0, rows, T, y2, rows);
        if (memcmp(y1, y2, T * rows * sizeof(float)) != 0)
            fail_msg("%s %s repacked rows=%zu n=%zu T=%zu: not the generic twin's bits", k->name, ag_dtype_name(dt), rows,
                     n, T);
        for (size_t t = 0; t < T; t += 3) { /* alone */
            k->matmul[rt](p, gb, x + t * xrb, xrb, n, 0, rows, 1, y2, rows);
            if (memcmp(y2, y1 + t * rows, rows * sizeof(float)) != 0)
                fail_msg("%s %s repacked rows=%zu n=%zu: token %zu alone differs from batched", k->name,
                         ag_dtype_name(dt), rows, n, t);
        }
        if (rows >= 48) { /* the middle groups only */
            memset(y2, 0, T * rows * sizeof(float));
            k->matmul[rt](p, gb, x, xrb, n, 16, rows - 16, T, y2, rows);
            for (size_t t = 0; t < T; t++)
                for (size_t r = 0; r < rows; r++)
                    assert_true(r < 16 || r >= rows - 16 ? y2[t * rows + r] == 0 : y2[t * rows + r] == y1[t * rows + r]);
        }
    }
    free(f), free(w), free(x), free(p), free(y0), free(y1), free(y2), free(wd), free(xd);
}

static void test_repacked_match_generic(void **state) {
    (void)state;
    static const size_t rows_list[] = {16, 32, 48, 80}; /* 80: five groups, past the single-token path's 4 or 8 at once */
    static const size_t T_list[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 70};
    static const size_t n_list[] = {32, 64, 288}, nk_list[] = {256, 512, 768}; /* K-quants: whole super-blocks */
    static const ag_wtype types[] = {AG_W_Q8_0, AG_W_Q4_0, AG_W_F16, AG_W_Q2_K, AG_W_Q3_K, AG_W_Q4_K, AG_W_Q5_K, AG_W_Q6_K};
    uint64_t seed = 11;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        const size_t *ns = types[i] >= AG_W_Q2_K ? nk_list : n_list;
        assert_true(ag_kern_repack_group_bytes((ag_wtype)ag_wtype_repacked(types[i]), ns[0]) % 64 == 0);
        for (size_t a = 0; a < 4; a++)
            for (size_t b = 0; b < sizeof T_list / sizeof *T_list; b++)
                for (size_t c = 0; c < 3; c++) check_repacked(types[i], rows_list[a], ns[c], T_list[b], &seed);
    }
    assert_int_equal(ag_wtype_repacked(AG_W_BF16), -1);
    assert_int_equal(ag_wtype_repacked(AG_W_Q4_1), -1);
}

static void test_quantize_q8_0_same_bytes(void **state) {
    (void)state;
    uint64_t seed = 3;
    enum { N = 32 * 40 };
    float x[N];
    for (int i = 0; i < N; i++) x[i] = frand(&seed) * (float)(1 + i / 32);
    for (int i = 0; i < 32; i++) x[i] = 0;                               /* all-zero block */
    for (int i = 32; i < 64; i++) x[i] = (float)(i - 48) * 127.0f / 16; /* exact halves after scaling */
    x[64] = 1e-30f;                                                      /* tiny */
    ag_block_q8_0 a[N / 32], b[N / 32];
    ag_kernels_generic.quantize_q8_0(x, a, N);
    /* Q8_K (K-quant activations) likewise: ggml's reference bytes (scale sign, ties, the 127 cap, bsums) */
    enum { NK = 256 * 6 };
    static float xk[NK];
    for (int i = 0; i < NK; i++) xk[i] = frand(&seed) * (float)(1 + i / 256);
    for (int i = 0; i < 256; i++) xk[i] = 0;                        /* all zero */
    xk[300] = -40.0f, xk[400] = 40.0f;                              /* the first of two equal magnitudes sets the sign */
    for (int i = 512; i < 768; i++) xk[i] = (float)(i - 640) * 0.5f; /* exact halves after scaling */
    xk[800] = 1e-30f;
    static ag_block_q8_k ak[NK / 256], bk[NK / 256];
    ag_dtype_from_f32(AG_DTYPE_Q8_K, xk, ak, NK);
    assert_true(ak[1].d > 0); /* the first of largest magnitude is -40: iscale = -127 / -40, d = 1 / iscale > 0 */
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        const ag_kernels *k = ag_kernels_by_name(variants[v]);
        if (!k) continue;
        memset(b, 0x55, sizeof b);
        k->quantize_q8_0(x, b, N);
        assert_memory_equal(a, b, sizeof a);
        memset(bk, 0x55, sizeof bk);
        k->quantize_q8_k(xk, bk, NK);
        assert_memory_equal(ak, bk, sizeof ak);
    }
    /* and the blocks decode to within half a step of the input */
    float back[N];
    ag_dtype_to_f32(AG_DTYPE_Q8_0, a, back, N);
    for (int i = 0; i < N; i++) {
        float d = ag_f16_to_f32(a[i / 32].d);
        /* half a step, plus the f16 rounding of the scale times at most 127 steps */
        assert_true(fabsf(back[i] - x[i]) <= (0.5f + 127.0f * 0x1p-11f) * d + 1e-30f);
    }
}

/*
 * attn_pv and f16_to_f32 give the generic twin's exact bits: rows in and out
 * of 4-row blocks, head sizes with and without 16- and 8-column tails, key
 * counts that differ per row (the causal diagonal) and rows that see none;
 * attn_pv_f16 gives attn_pv's bits on the values it widens, in every variant.
 */
static void test_attention_helpers(void **state) {
    (void)state;
    enum { ROWS = 11, KEYS = 70, LD = 150 };
    static const size_t dims[] = {1, 8, 20, 64, 80, 128, 133};
    uint64_t seed = 5;
    float p[ROWS * KEYS], v[KEYS * 133], o0[ROWS * LD], o1[ROWS * LD], f0[133], f1[133];
    uint16_t h[133], hv[KEYS * LD];
    for (int i = 0; i < ROWS * KEYS; i++) p[i] = frand(&seed) + 1;
    for (int i = 0; i < KEYS * 133; i++) v[i] = frand(&seed);
    for (int i = 0; i < 133; i++) h[i] = ag_f32_to_f16(frand(&seed) * 1000);
    for (int i = 0; i < KEYS * LD; i++) hv[i] = ag_f32_to_f16(frand(&seed));
    for (size_t v_ = 0; v_ < sizeof variants / sizeof variants[0]; v_++) {
        const ag_kernels *k = ag_kernels_by_name(variants[v_]);
        if (!k) continue;
        for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
            for (size_t rows = 1; rows <= ROWS; rows += 3) {
                const size_t d = dims[di];
                int n[ROWS];
                for (size_t i = 0; i < rows; i++) n[i] = (int)((i * 37 + d) % (KEYS + 1)); /* 0..KEYS, unequal */
                for (int i = 0; i < ROWS * LD; i++) o0[i] = o1[i] = frand(&seed);
                ag_kernels_generic.attn_pv(o0, LD, p, KEYS, v, d, n, rows);
                k->attn_pv(o1, LD, p, KEYS, v, d, n, rows);
                if (memcmp(o0, o1, sizeof o0) != 0)
                    fail_msg("%s attn_pv d=%zu rows=%zu: not the generic twin's bits", k->name, d, rows);
            }
        for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) /* one row straight from halves ~ attn_pv widened */
            for (int n = 0; n <= KEYS; n += 23) {
                const size_t d = dims[di];
                for (int kk = 0; kk < n; kk++)
                    for (size_t j = 0; j < d; j++) v[(size_t)kk * d + j] = ag_f16_to_f32(hv[kk * LD + (int)j]);
                for (int i = 0; i < LD; i++) o0[i] = o1[i] = frand(&seed);
                ag_kernels_generic.attn_pv(o0, LD, p, KEYS, v, d, &n, 1);
                k->attn_pv_f16(o1, p, hv, LD * sizeof *hv, d, n);
                if (memcmp(o0, o1, LD * sizeof *o0) != 0)
                    fail_msg("%s attn_pv_f16 d=%zu n=%d: not attn_pv's bits on the widened values", k->name, d, n);
            }
        for (size_t n = 0; n <= 133; n += 7) {
            memset(f0, 0, sizeof f0), memset(f1, 0, sizeof f1);
            ag_kernels_generic.f16_to_f32(h, f0, n), k->f16_to_f32(h, f1, n);
            assert_memory_equal(f0, f1, sizeof f0);
        }
    }
}

/*
 * The softmax's exp: within 2 ulp of e^x over its range, 0 below it and for
 * NaN; and every variant's softmax_exp, silu_mul and f32_to_f16 give the
 * generic twin's bits (the exps, their sum, SiLU, fp16 at every rounding
 * boundary).
 */
static void test_exp_silu_and_f16_store(void **state) {
    (void)state;
    for (float x = -87.0f; x <= 88.0f; x += 0.000731f) {
        const double want = exp((double)x), got = ag_kern_exp(x);
        const double ulp = ldexp(1.0, ilogb(want) - 23);
        if (fabs(got - want) > 2 * ulp) fail_msg("ag_kern_exp(%.9g) = %.9g, e^x = %.9g", x, got, want);
    }
    for (float g = -100.0f; g <= 100.0f; g += 0.0371f) { /* SiLU: a few ulp, and ~0 where e^-g is clamped */
        float got = g, one = 1;
        ag_kernels_generic.silu_mul(&got, &one, 1);
        const double want = g / (1 + exp(-(double)g));
        if (fabs(got - want) > 4 * ldexp(1.0, ilogb(fabs(want)) - 23) + 1e-35)
            fail_msg("silu(%.9g) = %.9g, want %.9g", g, got, want);
    }
    assert_true(ag_kern_exp(0) == 1.0f);
    assert_true(ag_kern_exp(-87.5f) == 0 && ag_kern_exp(-INFINITY) == 0 && ag_kern_exp(NAN) == 0);
    enum { N = 75 };
    uint64_t seed = 9;
    float row[N], r0[N], r1[N];
    for (int i = 0; i < N; i++) row[i] = frand(&seed) * 40;
    row[3] = -INFINITY, row[10] = NAN, row[11] = -200; /* a masked key, a NaN, one under the range */
    float x16[5 * 8 + 7];
    uint16_t h0[sizeof x16 / sizeof *x16], h1[sizeof x16 / sizeof *x16];
    size_t nx = 0;
    /* the halfway points below and above each rounding, subnormal halves, overflow, NaN */
    static const uint32_t bits[] = {0x3f800000, 0x3f801000, 0x3f803000, 0x3f801001, 0x3f802fff, 0x477fe000,
                                    0x477ff000, 0x38800000, 0x33000000, 0x33000001, 0x387fc000, 0x7fc00001,
                                    0xff800000, 0x80000000, 0x00000001};
    for (size_t i = 0; i < sizeof bits / sizeof *bits; i++) memcpy(&x16[nx++], &bits[i], 4);
    while (nx < sizeof x16 / sizeof *x16) x16[nx++] = frand(&seed) * 70000;
    for (size_t v_ = 0; v_ < sizeof variants / sizeof variants[0]; v_++) {
        const ag_kernels *k = ag_kernels_by_name(variants[v_]);
        if (!k) continue;
        for (int n = 0; n <= N; n++) {
            memcpy(r0, row, sizeof row), memcpy(r1, row, sizeof row);
            const float s0 = ag_kernels_generic.softmax_exp(r0, n, 7.5f), s1 = k->softmax_exp(r1, n, 7.5f);
            if (memcmp(&s0, &s1, 4) != 0 || memcmp(r0, r1, sizeof r0) != 0)
                fail_msg("%s softmax_exp n=%d: not the generic twin's bits", k->name, n);
        }
        for (size_t n = 0; n <= nx; n++) { /* x16 also serves as SiLU's gates: large of both signs, NaN, inf */
            float g0[sizeof x16 / sizeof *x16], g1[sizeof x16 / sizeof *x16];
            memcpy(g0, x16, sizeof g0), memcpy(g1, x16, sizeof g1);
            ag_kernels_generic.silu_mul(g0, row, n), k->silu_mul(g1, row, n);
            if (memcmp(g0, g1, sizeof g0) != 0) fail_msg("%s silu_mul n=%zu: not the generic twin's bits", k->name, n);
            memset(h0, 0, sizeof h0), memset(h1, 0, sizeof h1);
            ag_kernels_generic.f32_to_f16(x16, h0, n), k->f32_to_f16(x16, h1, n);
            assert_memory_equal(h0, h1, sizeof h0);
        }
    }
    float r[N];
    memcpy(r, row, sizeof row);
    const float sum = ag_kernels_generic.softmax_exp(r, N, 7.5f);
    double want = 0;
    for (int i = 0; i < N; i++) want += r[i];
    assert_true(r[3] == 0 && r[10] == 0 && r[11] == 0 && fabs(sum - want) <= 1e-6 * want);
}

/*
 * Partial rotary embedding against the formula written out (GLM's fact
 * sheet, section 3.2): with head size d and R = n_rot rotated dimensions,
 * theta_i = pos * base^(-2i/R) for i < R/2; pair i is (2i, 2i+1) or, neox,
 * (i, i + R/2); dimensions R..d-1 are untouched.  Exponents over R, not d: a
 * GLM head rotated with head-size frequencies differs by O(1).
 */
static void test_rope_partial_matches_formula(void **state) {
    (void)state;
    enum { D = 16, HEADS = 3 };
    const double base = 10000.0;
    uint64_t seed = 11;
    for (int R = 2; R <= D; R += 2) {
        for (int neox = 0; neox <= 1; neox++) {
            for (int32_t pos = 0; pos < 4096; pos = pos * 3 + 1) {
                float v[HEADS * D], want[HEADS * D], inv_freq[D / 2], cs[D];
                for (int i = 0; i < HEADS * D; i++) v[i] = want[i] = frand(&seed);
                for (int h = 0; h < HEADS; h++) {
                    float *x = want + h * D;
                    for (int i = 0; i < R / 2; i++) {
                        double theta = pos * pow(base, -2.0 * i / R);
                        int a = neox ? i : 2 * i, b = neox ? i + R / 2 : 2 * i + 1;
                        double xa = x[a], xb = x[b];
                        x[a] = (float)(xa * cos(theta) - xb * sin(theta));
                        x[b] = (float)(xa * sin(theta) + xb * cos(theta));
                    }
                }
                ag_rope_freqs(R, (float)base, NULL, inv_freq);
                ag_rope_table(pos, inv_freq, R, cs);
                ag_rope_apply(v, HEADS, D, R, neox, cs);
                /* float angles: pos * inv_freq rounds to ~pos * 2^-24 radians */
                for (int i = 0; i < HEADS * D; i++) {
                    if (i % D >= R) assert_true(v[i] == want[i]); /* the unrotated tail is bit-exact */
                    else assert_true(fabsf(v[i] - want[i]) <= 1e-6f + (float)pos * 2e-7f);
                }
            }
        }
    }
    /* frequency factors divide (Llama 3.1's rope_freqs) */
    float f[4], plain[4], factors[4] = {1, 2, 4, 8};
    ag_rope_freqs(8, 500000.0f, factors, f);
    ag_rope_freqs(8, 500000.0f, NULL, plain);
    for (int i = 0; i < 4; i++) assert_true(fabsf(f[i] - plain[i] / factors[i]) <= 1e-7f * plain[i]);
}

static void test_selection(void **state) {
    (void)state;
    assert_non_null(ag_kernels_by_name("generic"));
    assert_null(ag_kernels_by_name("sse9"));
    const ag_kernels *k = ag_kernels_get();
    assert_non_null(k);
    for (int w = 0; w < AG_W_COUNT; w++) assert_non_null(k->matmul[w]);
    AG_TEST_NOTE("kernels chosen on this CPU: %s", k->name);
}

/* ---- the pool ------------------------------------------------------------ */

typedef struct pool_job {
    atomic_long sum;
    atomic_int calls;
    long n;
} pool_job;

static void add_share(void *ctx, int ith, int nth) {
    pool_job *j = ctx;
    long lo, hi, s = 0;
    ag_pool_split(j->n, ith, nth, 3, &lo, &hi);
    for (long i = lo; i < hi; i++) s += i;
    atomic_fetch_add(&j->sum, s);
    atomic_fetch_add(&j->calls, 1);
}

static void test_pool_runs_every_share_once(void **state) {
    (void)state;
    for (int nt = 1; nt <= 5; nt++) {
        ag_pool *p = NULL;
        ag_err err;
        assert_int_equal(ag_pool_create(nt, &p, &err), AG_OK);
        assert_int_equal(ag_pool_size(p), nt);
        for (int rep = 0; rep < 2000; rep++) {
            pool_job j = {.n = 1000 + rep};
            ag_pool_run(p, add_share, &j);
            assert_int_equal(atomic_load(&j.calls), nt);
            assert_int_equal(atomic_load(&j.sum), j.n * (j.n - 1) / 2);
        }
        ag_pool_destroy(p);
    }
    ag_pool *p = NULL;
    ag_err err;
    assert_int_equal(ag_pool_create(0, &p, &err), AG_EINVAL);
    assert_true(ag_cpu_physical_cores() >= 1);
}

static void test_pool_split_covers(void **state) {
    (void)state;
    for (long n = 0; n < 50; n++)
        for (int nth = 1; nth < 7; nth++)
            for (long align = 1; align < 5; align++) {
                long next = 0;
                for (int i = 0; i < nth; i++) {
                    long lo, hi;
                    ag_pool_split(n, i, nth, align, &lo, &hi);
                    assert_true(lo == next && hi >= lo && (lo % align == 0 || lo == n));
                    next = hi;
                }
                assert_int_equal(next, n);
            }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_variants_match_generic), cmocka_unit_test(test_repacked_match_generic),
        cmocka_unit_test(test_generic_matmul_is_the_definition),
        cmocka_unit_test(test_quantize_q8_0_same_bytes),      cmocka_unit_test(test_dots_match_ggml),      cmocka_unit_test(test_attention_helpers),
        cmocka_unit_test(test_exp_silu_and_f16_store),
        cmocka_unit_test(test_selection),                     cmocka_unit_test(test_pool_runs_every_share_once),
        cmocka_unit_test(test_pool_split_covers), cmocka_unit_test(test_rope_partial_matches_formula),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
