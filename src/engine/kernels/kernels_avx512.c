/*
 * kernels_avx512.c - the AVX-512 variant for CPUs with VNNI and BF16 dot
 * products (Zen 4, Sapphire Rapids and later); compiled with those flags for
 * this file only and used after CPUID says so.
 *
 * Float types: 16-lane FMA tiles of up to 4 rows x 4 tokens (16 of the 32
 * zmm registers hold accumulators).  BF16: vdpbf16ps, 32 products per
 * instruction.  Quantized types: one vpdpbusd per 32-element block in its
 * unsigned x signed form (see act_side below), 256-bit so a 34- or 18-byte
 * block is one load.  Single-token products read rows one at a time as one
 * sequential stream (tile.h says why).  The K-quants are kernels_x86.h's
 * 256-bit kernels with 4-token tiles; Q4_1 and Q5_1 take the generic product.
 */
#include "engine/kernels/kernels_x86.h"


AG_INLINE __m512 load_f32(const float *p) { return _mm512_loadu_ps(p); }
AG_INLINE __m512 load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
AG_INLINE __m512 fma_ps(__m512 acc, __m512 w, __m512 x) { return _mm512_fmadd_ps(w, x, acc); }
AG_INLINE __m512i load_bf16x32(const uint16_t *p) { return _mm512_loadu_si512(p); }
AG_INLINE __m512 dot_bf16(__m512 acc, __m512i w, __m512i x) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x); }


#define ACC __m512
#define ACC_ZERO _mm512_setzero_ps
#define ACC_ADD _mm512_add_ps
#define ACC_SUM _mm512_reduce_add_ps

AG_X86_FLOAT_TILE(tile_f32, float, float, __m512, 16, load_f32, load_f32, fma_ps, f32, f32)
AG_X86_FLOAT_TILE(tile_bf16, uint16_t, uint16_t, __m512i, 32, load_bf16x32, load_bf16x32, dot_bf16, bf16, bf16)




AG_X86_FLOAT_ROW(row_f32, float, float, __m512, 16, load_f32, load_f32, fma_ps, f32, f32)
AG_X86_FLOAT_ROW(row_f16, uint16_t, float, __m512, 16, load_f16, load_f32, fma_ps, f16, f32)
AG_X86_FLOAT_ROW(row_bf16, uint16_t, uint16_t, __m512i, 32, load_bf16x32, load_bf16x32, dot_bf16, bf16, bf16)

/* One quantized row against one token: two blocks a step into two accumulators. */
/*
 * Single-token quantized rows use vpdpbusd in its native unsigned x signed
 * form: a Q8_0 weight w becomes the byte w + 128 (an xor), a Q4_0 nibble q
 * is already 0..15 for q - 8, so each block is one dpbusd whose accumulator
 * starts at -offset * (the activation's 4-byte lane sums).  Those sums and
 * the activation scales as floats are computed once per call, not per row.
 */
typedef struct act_side {
    __m256i neg_lane_sums; /* -offset * sum of x's bytes per int32 lane */
    float d;               /* x's scale */
} act_side;

static void prepare_side(const ag_block_q8_0 *x, size_t nb, int log2_offset, act_side *s) {
    for (size_t b = 0; b < nb; b++) {
        __m256i sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), load_q8_0(&x[b]));
        s[b].neg_lane_sums = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sums, log2_offset));
        s[b].d = f16(x[b].d);
    }
}

AG_INLINE __m256i q8_0_unsigned(const ag_block_q8_0 *b) { return _mm256_xor_si256(load_q8_0(b), _mm256_set1_epi8(-128)); }
AG_INLINE __m256i iq4_nl_unsigned(const ag_block_iq4_nl *b) { return _mm256_xor_si256(iq4_nl_values(b), _mm256_set1_epi8(-128)); }
AG_INLINE __m256i q4_0_unsigned(const ag_block_q4_0 *b) {
    __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(15));
}

#define QUANT_ROWS(NAME, WB, UNSIGNED, LOG2_OFFSET, QK)                                                                \
    /* acc + d_w * d_x * (w . x) over one block */                                                                    \
    AG_INLINE __m256 NAME##_block(__m256 acc, const WB *w, const ag_block_q8_0 *x, const act_side *s) {               \
        __m256i p = _mm256_dpbusd_epi32(s->neg_lane_sums, UNSIGNED(w), load_q8_0(x));                                  \
        __m256 dw = _mm256_cvtph_ps(_mm_set1_epi16((short)w->d));                                                      \
        return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s->d)), dw, acc);                  \
    }                                                                                                                  \
    static void NAME(const void *wv, size_t ws, const void *xv, size_t n, size_t r0, size_t r1, float *y) {           \
        const ag_block_q8_0 *x = xv;                                                                                   \
        const size_t nb = n / (QK);                                                                                    \
        act_side *s = ag_kern_scratch(nb * sizeof *s);                                                                 \
        prepare_side(x, nb, LOG2_OFFSET, s);                                                                           \
        for (size_t r = r0; r < r1; r++) { /* one accumulator: the tiles' order, so batching never changes bits */     \
            const WB *w = (const WB *)((const char *)wv + r * ws);                                                     \
            __m256 acc = _mm256_setzero_ps();                                                                          \
            for (size_t b = 0; b < nb; b++) acc = NAME##_block(acc, &w[b], &x[b], &s[b]);                              \
            y[r] = hsum256(acc);                                                                                       \
        }                                                                                                              \
    }

QUANT_ROWS(rows_q8_0, ag_block_q8_0, q8_0_unsigned, 7, AG_QK8_0)
QUANT_ROWS(rows_q4_0, ag_block_q4_0, q4_0_unsigned, 3, AG_QK4_0)
QUANT_ROWS(rows_q5_0, ag_block_q5_0, q5_0_levels, 4, 32)
QUANT_ROWS(rows_iq4_nl, ag_block_iq4_nl, iq4_nl_unsigned, 7, 32)

/* R rows x C tokens of the same: per pair and block one dpbusd, one convert, one multiply, one FMA. */
#define QUANT_TILE(NAME, WB, UNSIGNED)                                                                                 \
    AG_INLINE void NAME(const char *w, size_t ws, const char *x, size_t xs, size_t nb, const act_side *side,          \
                        float *y, size_t ldy, const int R, const int C) {                                              \
        __m256 acc[4][4];                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();                                               \
        for (size_t b = 0; b < nb; b++) {                                                                              \
            __m256i xq[4];                                                                                             \
            for (int c = 0; c < C; c++) xq[c] = load_q8_0((const ag_block_q8_0 *)(x + c * xs) + b);                    \
            for (int r = 0; r < R; r++) {                                                                              \
                const WB *wb = (const WB *)(w + r * ws) + b;                                                           \
                __m256i wu = UNSIGNED(wb);                                                                             \
                __m256 dw = _mm256_cvtph_ps(_mm_set1_epi16((short)wb->d));                                             \
                for (int c = 0; c < C; c++) {                                                                          \
                    const act_side *sc = side + c * nb + b;                                                            \
                    __m256i p = _mm256_dpbusd_epi32(sc->neg_lane_sums, wu, xq[c]);                                     \
                    acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(sc->d)), dw,       \
                                                acc[r][c]);                                                            \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) y[c * ldy + r] = hsum256(acc[r][c]);                                           \
    }

QUANT_TILE(tile_q8_0, ag_block_q8_0, q8_0_unsigned)
QUANT_TILE(tile_q4_0, ag_block_q4_0, q4_0_unsigned)
QUANT_TILE(tile_q5_0, ag_block_q5_0, q5_0_levels)
QUANT_TILE(tile_iq4_nl, ag_block_iq4_nl, iq4_nl_unsigned)

/* The tiles' extra arguments come from the walk below: this token tile's activation sums and scales. */
#define TILE_Q8_0(wp, ws, xp, xs, n, yp, ldy, R, C) tile_q8_0(wp, ws, xp, xs, nb, side + (t - t0) * nb, yp, ldy, R, C)
#define TILE_Q4_0(wp, ws, xp, xs, n, yp, ldy, R, C) tile_q4_0(wp, ws, xp, xs, nb, side + (t - t0) * nb, yp, ldy, R, C)
#define TILE_Q5_0(wp, ws, xp, xs, n, yp, ldy, R, C) tile_q5_0(wp, ws, xp, xs, nb, side + (t - t0) * nb, yp, ldy, R, C)
#define TILE_IQ4_NL(wp, ws, xp, xs, n, yp, ldy, R, C) tile_iq4_nl(wp, ws, xp, xs, nb, side + (t - t0) * nb, yp, ldy, R, C)

/* Each token block's activation sums and scales, prepared once for all its row tiles. */
#define PREPARE_SIDE(LOG2_OFFSET, QK)                                                                                  \
    const size_t nb = n / (QK);                                                                                        \
    act_side *side = ag_kern_scratch(AG_TILE_TOKEN_BLOCK * nb * sizeof *side);                                         \
    for (size_t t = t0; t < t1; t++)                                                                                   \
        prepare_side((const ag_block_q8_0 *)((const char *)x + t * xs), nb, LOG2_OFFSET, side + (t - t0) * nb)
#define QUANT_MATMUL(NAME, TILE, ROWS, LOG2_OFFSET, QK)                                                                \
    AG_MATMUL_WALK(NAME, TILE, ROWS, 4, 4, PREPARE_SIDE(LOG2_OFFSET, QK), (void)0)

QUANT_MATMUL(matmul_q8_0, TILE_Q8_0, rows_q8_0, 7, AG_QK8_0)
QUANT_MATMUL(matmul_q4_0, TILE_Q4_0, rows_q4_0, 3, AG_QK4_0)
QUANT_MATMUL(matmul_q5_0, TILE_Q5_0, rows_q5_0, 4, 32)
QUANT_MATMUL(matmul_iq4_nl, TILE_IQ4_NL, rows_iq4_nl, 7, 32)
AG_KQ_MATMULS(4)

/*
 * The repacked products (repack.c): per block of a 16-row group, the int32
 * lanes of one zmm are the 16 rows.  Each lane starts at -offset * sum(x)
 * and gains unsigned level x signed activation through vpdpbusd, 4 bytes a
 * lane, the activation's 4 bytes broadcast from memory; then one convert,
 * one multiply by the rows' scales x the token's, one FMA.  C tokens share
 * each weight load; 2C + 5 of the 32 registers are live.
 */
#define AG_R16_CMAX 8
AG_INLINE void r16_tile_q8_0(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,
                         const int first) {
    (void)first; /* no prefetch: these tiles have never run on a machine to measure it */
    const size_t nb = n / 32;
    __m512 acc[AG_R16_CMAX];
    for (int c = 0; c < C; c++) acc[c] = _mm512_setzero_ps();
    const uint16_t *d = (const uint16_t *)(g + nb * 512);
    for (size_t b = 0; b < nb; b++) {
        __m512i isum[AG_R16_CMAX];
        for (int c = 0; c < C; c++) isum[c] = _mm512_set1_epi32(-128 * AG_R16_SIDE(c, b).sum);
        for (int k = 0; k < 8; k++) {
            __m512i v = _mm512_load_si512(g + (b * 8 + k) * 64);
            for (int c = 0; c < C; c++) {
                const int8_t *xq = ((const ag_block_q8_0 *)(x + c * xs))[b].qs;
                isum[c] = _mm512_dpbusd_epi32(isum[c], v, _mm512_set1_epi32(load_i32(xq + 4 * k)));
            }
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(d + b * 16)));
        for (int c = 0; c < C; c++)
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[c]), _mm512_mul_ps(dw, _mm512_set1_ps(AG_R16_SIDE(c, b).d)),
                                     acc[c]);
    }
    for (int c = 0; c < C; c++) _mm512_storeu_ps(y + c * ldy, acc[c]);
}

AG_INLINE void r16_tile_q4_0(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,
                         const int first) {
    (void)first; /* no prefetch: these tiles have never run on a machine to measure it */
    const size_t nb = n / 32;
    __m512 acc[AG_R16_CMAX];
    for (int c = 0; c < C; c++) acc[c] = _mm512_setzero_ps();
    const uint16_t *d = (const uint16_t *)(g + nb * 256);
    const __m512i lo4 = _mm512_set1_epi8(15);
    for (size_t b = 0; b < nb; b++) {
        __m512i isum[AG_R16_CMAX];
        for (int c = 0; c < C; c++) isum[c] = _mm512_set1_epi32(-8 * AG_R16_SIDE(c, b).sum);
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_load_si512(g + (b * 4 + k) * 64);
            __m512i lo = _mm512_and_si512(v, lo4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
            for (int c = 0; c < C; c++) {
                const int8_t *xq = ((const ag_block_q8_0 *)(x + c * xs))[b].qs;
                isum[c] = _mm512_dpbusd_epi32(isum[c], lo, _mm512_set1_epi32(load_i32(xq + 4 * k)));
                isum[c] = _mm512_dpbusd_epi32(isum[c], hi, _mm512_set1_epi32(load_i32(xq + 16 + 4 * k)));
            }
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(d + b * 16)));
        for (int c = 0; c < C; c++)
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[c]), _mm512_mul_ps(dw, _mm512_set1_ps(AG_R16_SIDE(c, b).d)),
                                     acc[c]);
    }
    for (int c = 0; c < C; c++) _mm512_storeu_ps(y + c * ldy, acc[c]);
}

AG_R16_WALK(matmul_q8_0_r16, r16_tile_q8_0, AG_R16_CMAX, AG_R16_CASES_8, (void)0)
AG_R16_WALK(matmul_q4_0_r16, r16_tile_q4_0, AG_R16_CMAX, AG_R16_CASES_8, (void)0)

/*
 * Repacked F16 (repack.c): one zmm converts element k of the 16 rows, and
 * C <= 12 tokens' x[k] are broadcast FMAs into it; a single token takes 8
 * groups at once for 8 independent FMA chains.  Every row's sum runs over
 * k in order either way (the generic twin's bits).
 */
#define AG_R16F_CMAX 12
AG_INLINE void r16_tile_f16(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,
                         const int first) {
    (void)first; /* no prefetch: these tiles have never run on a machine to measure it */
    __m512 acc[AG_R16F_CMAX];
    for (int c = 0; c < C; c++) acc[c] = _mm512_setzero_ps();
    const uint16_t *G = (const uint16_t *)g;
    for (size_t k = 0; k < n; k++) {
        __m512 wv = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(G + k * 16)));
        for (int c = 0; c < C; c++) acc[c] = _mm512_fmadd_ps(wv, _mm512_set1_ps(((const float *)(x + c * xs))[k]), acc[c]);
    }
    for (int c = 0; c < C; c++) _mm512_storeu_ps(y + c * ldy, acc[c]);
}

AG_INLINE void r16_groups_f16(const char *w, size_t gs, const float *x, size_t n, float *y, const int NG) {
    __m512 acc[8];
    for (int j = 0; j < NG; j++) acc[j] = _mm512_setzero_ps();
    for (size_t k = 0; k < n; k++) {
        __m512 xb = _mm512_set1_ps(x[k]);
        for (int j = 0; j < NG; j++)
            acc[j] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_load_si256((const __m256i *)((const uint16_t *)(w + j * gs) + k * 16))),
                                     xb, acc[j]);
    }
    for (int j = 0; j < NG; j++) _mm512_storeu_ps(y + j * 16, acc[j]);
}

AG_R16_ROWS_F16(r16_rows_f16, r16_groups_f16, 8)

AG_R16_WALK(matmul_f16_r16, r16_tile_f16, AG_R16F_CMAX, AG_R16_CASES_12, AG_R16_SINGLE(r16_rows_f16))

AG_ROWS_OF(rows_f32, row_f32)
AG_ROWS_OF(rows_f16, row_f16)
AG_ROWS_OF(rows_bf16, row_bf16)

AG_TILED_MATMUL(matmul_f32, tile_f32, rows_f32, 4, 4)
AG_WIDEN_F16(widen_f16, 16, load_f16, _mm512_storeu_ps, f16)

AG_TILED_MATMUL_WIDEN(matmul_f16, tile_f32, rows_f16, widen_f16, 4, 4)
AG_TILED_MATMUL(matmul_bf16, tile_bf16, rows_bf16, 4, 4)

const ag_kernels ag_kernels_avx512 = {
    .name = "avx512",
    .matmul = {matmul_f32, matmul_f16, matmul_bf16, matmul_q8_0, matmul_q4_0, ag_kern_matmul_q4_1_generic, matmul_q5_0,
               ag_kern_matmul_q5_1_generic, matmul_iq4_nl, matmul_q2_k, matmul_q3_k, matmul_q4_k, matmul_q5_k,
               matmul_q6_k, matmul_q8_0_r16, matmul_q4_0_r16, matmul_f16_r16, ag_kern_matmul_q4_k_r16_avx2,
               ag_kern_matmul_q6_k_r16_avx2, ag_kern_matmul_q5_k_r16_avx2, ag_kern_matmul_q3_k_r16_avx2,
               ag_kern_matmul_q2_k_r16_avx2},
    .quantize_q8_0 = ag_kern_quantize_q8_0_avx2,
    .quantize_q8_k = ag_kern_quantize_q8_k_avx2,
    .attn_pv = ag_kern_attn_pv_avx2,
    .attn_pv_f16 = ag_kern_attn_pv_f16_avx2,
    .f16_to_f32 = widen_f16,
    .f32_to_f16 = ag_kern_f32_to_f16_avx2,
    .softmax_exp = ag_kern_softmax_exp_avx2,
    .silu_mul = ag_kern_silu_mul_avx2,
};
