/*
 * kernels_avx2.c - the AVX2 + FMA + F16C variant (compiled with those flags
 * for this file only; used after CPUID says the CPU has them).
 *
 * Float types: 8-lane FMA tiles of up to 4 rows x 2 tokens (8 accumulators
 * plus operands fit the 16 ymm registers).  Quantized types: per 32-element
 * block, the sign trick turns the signed x signed byte product into
 * maddubs(|w|, sign(x, w)), then madd with ones sums pairs to int32, scaled by
 * d_w * d_x into a float accumulator.  Tails shorter than a vector are scalar.
 * The K-quants are kernels_x86.h's; Q4_1 and Q5_1 take the generic product.
 */
#include "engine/kernels/kernels_x86.h"

#include <math.h>


AG_INLINE __m256 load_f32(const float *p) { return _mm256_loadu_ps(p); }
AG_INLINE __m256 load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
AG_INLINE __m256 load_bf16(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}


#define ACC __m256
#define ACC_ZERO _mm256_setzero_ps
#define ACC_ADD _mm256_add_ps
#define ACC_SUM hsum256
AG_INLINE __m256 fma_ps(__m256 acc, __m256 w, __m256 x) { return _mm256_fmadd_ps(w, x, acc); }

AG_X86_FLOAT_TILE(tile_f32, float, float, __m256, 8, load_f32, load_f32, fma_ps, f32, f32)
AG_X86_FLOAT_TILE(tile_bf16, uint16_t, uint16_t, __m256, 8, load_bf16, load_bf16, fma_ps, bf16, bf16)
AG_X86_FLOAT_TILE(tile_f16, uint16_t, float, __m256, 8, load_f16, load_f32, fma_ps, f16, f32)

AG_INLINE __m256i unpack_q4_0(const ag_block_q4_0 *b) {
    __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q); /* elements 16..31 are the high nibbles */
    return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(15)), _mm256_set1_epi8(8));
}

/* Sum of a[i] * b[i] over 32 signed bytes in int32 lanes, a = |w| and b = sign(x, w). */
AG_INLINE __m256i dot_i8(__m256i aw, __m256i sx) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1));
}

#define QUANT_TILE(NAME, WB, LOADW, QK)                                                                                \
    AG_INLINE void NAME(const char *w, size_t ws, const char *x, size_t xs, size_t n, float *y, size_t ldy,            \
                        const int R, const int C) {                                                                    \
        __m256 acc[4][4];                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();                                               \
        for (size_t b = 0; b < n / (QK); b++) {                                                                        \
            __m256i xq[4];                                                                                             \
            float dx[4];                                                                                               \
            for (int c = 0; c < C; c++) {                                                                              \
                const ag_block_q8_0 *xb = (const ag_block_q8_0 *)(x + c * xs) + b;                                     \
                xq[c] = load_q8_0(xb);                                                                                 \
                dx[c] = f16(xb->d);                                                                                    \
            }                                                                                                          \
            for (int r = 0; r < R; r++) {                                                                              \
                const WB *wb = (const WB *)(w + r * ws) + b;                                                           \
                __m256i wq = LOADW(wb), aw = _mm256_sign_epi8(wq, wq);                                                 \
                float dw = f16(wb->d);                                                                                 \
                for (int c = 0; c < C; c++) {                                                                          \
                    __m256 p = _mm256_cvtepi32_ps(dot_i8(aw, _mm256_sign_epi8(xq[c], wq)));                            \
                    acc[r][c] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * dx[c]), acc[r][c]);                             \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) y[c * ldy + r] = hsum256(acc[r][c]);                                           \
    }

AG_INLINE __m256i unpack_q5_0(const ag_block_q5_0 *b) { return _mm256_sub_epi8(q5_0_levels(b), _mm256_set1_epi8(16)); }

QUANT_TILE(tile_q8_0, ag_block_q8_0, load_q8_0, AG_QK8_0)
QUANT_TILE(tile_q4_0, ag_block_q4_0, unpack_q4_0, AG_QK4_0)
QUANT_TILE(tile_q5_0, ag_block_q5_0, unpack_q5_0, 32)
QUANT_TILE(tile_iq4_nl, ag_block_iq4_nl, iq4_nl_values, 32)


AG_X86_FLOAT_ROW(row_f32, float, float, __m256, 8, load_f32, load_f32, fma_ps, f32, f32)
AG_X86_FLOAT_ROW(row_f16, uint16_t, float, __m256, 8, load_f16, load_f32, fma_ps, f16, f32)
AG_X86_FLOAT_ROW(row_bf16, uint16_t, uint16_t, __m256, 8, load_bf16, load_bf16, fma_ps, bf16, bf16)

/* One quantized row against one token: the tiles' per-pair formula and order, so batching never changes bits. */
#define QUANT_ROW(NAME, WB, LOADW, QK)                                                                                 \
    static float NAME(const void *wv, const void *xv, size_t n) {                                                     \
        const WB *w = wv;                                                                                              \
        const ag_block_q8_0 *x = xv;                                                                                   \
        __m256 acc = _mm256_setzero_ps();                                                                              \
        for (size_t b = 0; b < n / (QK); b++) {                                                                        \
            __m256i wq = LOADW(&w[b]);                                                                                 \
            __m256 p = _mm256_cvtepi32_ps(dot_i8(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(load_q8_0(&x[b]), wq)));   \
            acc = _mm256_fmadd_ps(p, _mm256_set1_ps(f16(w[b].d) * f16(x[b].d)), acc);                                  \
        }                                                                                                              \
        return hsum256(acc);                                                                                           \
    }

QUANT_ROW(row_q8_0, ag_block_q8_0, load_q8_0, AG_QK8_0)
QUANT_ROW(row_q4_0, ag_block_q4_0, unpack_q4_0, AG_QK4_0)
QUANT_ROW(row_q5_0, ag_block_q5_0, unpack_q5_0, 32)
QUANT_ROW(row_iq4_nl, ag_block_iq4_nl, iq4_nl_values, 32)

AG_ROWS_OF_SHORT4(rows_f32, row_f32, tile_f32, float)
AG_ROWS_OF_SHORT4(rows_f16, row_f16, tile_f16, uint16_t)
AG_ROWS_OF(rows_bf16, row_bf16)
AG_ROWS_OF(rows_q8_0, row_q8_0)
AG_ROWS_OF(rows_q4_0, row_q4_0)
AG_ROWS_OF(rows_q5_0, row_q5_0)
AG_ROWS_OF(rows_iq4_nl, row_iq4_nl)

AG_TILED_MATMUL(matmul_f32, tile_f32, rows_f32, 4, 2)
AG_WIDEN_F16(widen_f16, 8, load_f16, _mm256_storeu_ps, f16)

AG_TILED_MATMUL_WIDEN(matmul_f16, tile_f32, rows_f16, widen_f16, 4, 2)
AG_TILED_MATMUL(matmul_bf16, tile_bf16, rows_bf16, 4, 2)
AG_TILED_MATMUL(matmul_q8_0, tile_q8_0, rows_q8_0, 4, 2)
AG_TILED_MATMUL(matmul_q4_0, tile_q4_0, rows_q4_0, 4, 2)
AG_TILED_MATMUL(matmul_q5_0, tile_q5_0, rows_q5_0, 4, 2)
AG_TILED_MATMUL(matmul_iq4_nl, tile_iq4_nl, rows_iq4_nl, 4, 2)
AG_KQ_MATMULS(2)

void ag_kern_quantize_q8_0_avx2(const float *x, ag_block_q8_0 *y, size_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (size_t b = 0; b < n / AG_QK8_0; b++, x += AG_QK8_0) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(x + 8 * i);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float d = _mm_cvtss_f32(h) / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = ag_f32_to_f16(d);
        __m256i q[4];
        for (int i = 0; i < 4; i++)
            q[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], _mm256_set1_ps(id)),
                                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, p);
    }
}

/*
 * ggml's quantize_row_q8_K_ref, vectorized to the same bytes: the scale from
 * the first element of largest magnitude (its sign kept), iscale * x rounded
 * half to even (cvtps's default, as ggml's nearest_int), capped at 127.
 */
void ag_kern_quantize_q8_k_avx2(const float *x, ag_block_q8_k *y, size_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (size_t b = 0; b < n / AG_QK_K; b++, x += AG_QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < AG_QK_K; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        memset(&y[b], 0, sizeof y[b]);
        if (!amax) continue;
        int first = 0;
        while (fabsf(x[first]) != amax) first++;
        const float iscale = -127.f / x[first];
        const __m256 is = _mm256_set1_ps(iscale);
        for (int i = 0; i < AG_QK_K; i += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(is, _mm256_loadu_ps(x + i + 8 * k))),
                                        _mm256_set1_epi32(127));
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(y[b].qs + i), p);
            /* the two 16-element sums of these 32 bytes: lane j of s4 sums bytes 4j .. 4j+3 */
            __m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), p), _mm256_set1_epi16(1));
            int32_t t[8];
            _mm256_storeu_si256((__m256i *)t, s4);
            y[b].bsums[i / 16] = (int16_t)(t[0] + t[1] + t[2] + t[3]);
            y[b].bsums[i / 16 + 1] = (int16_t)(t[4] + t[5] + t[6] + t[7]);
        }
        y[b].d = 1 / iscale;
    }
}

/* F16C's rounding is ag_f32_to_f16's: to nearest even, NaN kept quiet with its top mantissa bits. */
void ag_kern_f32_to_f16_avx2(const float *x, void *y, size_t n) {
    uint16_t *h = y;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) h[i] = ag_f32_to_f16(x[i]);
}

/* ag_kern_exp (kernels.h) on 8 lanes: the same steps, so the same bits. */
AG_INLINE __m256 exp8(__m256 x) {
    const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps((float)AG_KERN_EXP_LO), _CMP_GE_OQ); /* false for NaN */
    x = _mm256_min_ps(x, _mm256_set1_ps((float)AG_KERN_EXP_HI));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(AG_KERN_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-AG_KERN_LN2_HI), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-AG_KERN_LN2_LO), r);
    __m256 p = _mm256_set1_ps(ag_kern_exp_c[0]);
    for (int i = 1; i < 6; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ag_kern_exp_c[i]));
    const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(keep, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

float ag_kern_softmax_exp_avx2(float *row, int n, float mx) {
    __m256 acc = _mm256_setzero_ps();
    const __m256 m = _mm256_set1_ps(mx);
    int p = 0;
    for (; p + 8 <= n; p += 8) {
        const __m256 y = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + p), m));
        _mm256_storeu_ps(row + p, y);
        acc = _mm256_add_ps(acc, y);
    }
    float lane[8];
    _mm256_storeu_ps(lane, acc);
    return ag_kern_softmax_exp_from(row, p, n, mx, lane);
}

void ag_kern_silu_mul_avx2(float *g, const float *u, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_xor_ps(x, neg))));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    ag_kern_silu_mul_from(g, u, i, n);
}

/* o[j0..d) += p[k] * v[k][j0..d) for k = k0..k1-1: 8 columns at a time, each held in a register over k. */
static void pv_row(float *o, const float *p, const float *v, size_t d, size_t j0, int k0, int k1) {
    size_t j = j0;
    for (; j + 8 <= d; j += 8) {
        __m256 acc = _mm256_loadu_ps(o + j);
        for (int k = k0; k < k1; k++) acc = _mm256_fmadd_ps(_mm256_set1_ps(p[k]), _mm256_loadu_ps(v + (size_t)k * d + j), acc);
        _mm256_storeu_ps(o + j, acc);
    }
    for (; j < d; j++)
        for (int k = k0; k < k1; k++) o[j] = fmaf(p[k], v[(size_t)k * d + j], o[j]);
}

/*
 * Four rows x 16 columns in 8 accumulators, each v load shared by the four
 * rows, over the keys all four see; then each row's own further keys (the
 * causal diagonal).  Every element still takes its FMAs in key order.
 */
void ag_kern_attn_pv_avx2(float *o, size_t ldo, const float *p, size_t ldp, const float *v, size_t d, const int *n,
                          size_t rows) {
    size_t i = 0;
    for (; i + 4 <= rows; i += 4) {
        int common = n[i];
        for (int r = 1; r < 4; r++) common = n[i + r] < common ? n[i + r] : common;
        size_t j = 0;
        for (; j + 16 <= d; j += 16) {
            __m256 acc[4][2];
            for (int r = 0; r < 4; r++)
                acc[r][0] = _mm256_loadu_ps(o + (i + r) * ldo + j), acc[r][1] = _mm256_loadu_ps(o + (i + r) * ldo + j + 8);
            for (int k = 0; k < common; k++) {
                const __m256 v0 = _mm256_loadu_ps(v + (size_t)k * d + j), v1 = _mm256_loadu_ps(v + (size_t)k * d + j + 8);
                for (int r = 0; r < 4; r++) {
                    const __m256 b = _mm256_set1_ps(p[(i + r) * ldp + (size_t)k]);
                    acc[r][0] = _mm256_fmadd_ps(b, v0, acc[r][0]), acc[r][1] = _mm256_fmadd_ps(b, v1, acc[r][1]);
                }
            }
            for (int r = 0; r < 4; r++)
                _mm256_storeu_ps(o + (i + r) * ldo + j, acc[r][0]), _mm256_storeu_ps(o + (i + r) * ldo + j + 8, acc[r][1]);
        }
        for (int r = 0; r < 4; r++) {
            pv_row(o + (i + r) * ldo, p + (i + r) * ldp, v, d, j, 0, common); /* the columns past the last 16 */
            pv_row(o + (i + r) * ldo, p + (i + r) * ldp, v, d, 0, common, n[i + r]);
        }
    }
    for (; i < rows; i++) pv_row(o + i * ldo, p + i * ldp, v, d, 0, 0, n[i]);
}

/* Columns j..j+8C of o over all the keys (so each element's FMAs in key order). */
AG_INLINE void pv_f16_cols(float *o, const float *p, const void *v, size_t vstride, size_t j, int n, const int C) {
    __m256 acc[4];
    for (int c = 0; c < C; c++) acc[c] = _mm256_loadu_ps(o + j + 8 * c);
    for (int k = 0; k < n; k++) {
        const uint16_t *vk = (const uint16_t *)((const char *)v + (size_t)k * vstride) + j;
        const __m256 b = _mm256_set1_ps(p[k]);
        for (int c = 0; c < C; c++)
            acc[c] = _mm256_fmadd_ps(b, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vk + 8 * c))), acc[c]);
    }
    for (int c = 0; c < C; c++) _mm256_storeu_ps(o + j + 8 * c, acc[c]);
}

/* 32 columns at a time, then 8, then a tail of single columns. */
void ag_kern_attn_pv_f16_avx2(float *o, const float *p, const void *v, size_t vstride, size_t d, int n) {
    size_t j = 0;
    for (; j + 32 <= d; j += 32) pv_f16_cols(o, p, v, vstride, j, n, 4);
    for (; j + 8 <= d; j += 8) pv_f16_cols(o, p, v, vstride, j, n, 1);
    ag_kern_attn_pv_f16_from(o, p, v, vstride, j, d, n);
}

/*
 * Decode reads every weight from memory once a step, and the repacked
 * layouts are read as interleaved runs (levels, high bits, scales) that the
 * hardware prefetchers do not keep far enough ahead of (one Q4_0 or Q5_K
 * stream ran at 60-75% of the rows in place's bandwidth without this).  So
 * the first pass over a group (a single token's, or the first half of its
 * token block's first tile, which brings the group into cache for the
 * other tiles: the walk's `first`) prefetches as it goes: step `step` fetches LPS lines of the region
 * of `bytes` bytes at N, the region some way ahead of the one it computes,
 * and the steps together cover it.  The asm keeps each prefetch at its
 * step: GCC bunched the intrinsics of a fully unrolled super-block
 * together, more at once than the miss buffers hold.
 */
AG_INLINE void r16_prefetch(const char *N, size_t bytes, int step, const int LPS) {
    for (int i = 0; i < LPS; i++)
        if ((size_t)(step * LPS + i) * 64 < bytes) __asm__ volatile("prefetcht0 %0" ::"m"(N[(step * LPS + i) * 64]));
}
/*
 * The repacked Q8_0 and Q4_0 products (repack.c), 8 rows to a ymm.  Without
 * VNNI a lane's four products are maddubs (pairs into int16) and madd with
 * ones into int32.  Q8_0's levels are made signed again and multiplied in
 * ggml's abs/sign form (a pair is at most 2 * 128 * 127), one madd per
 * maddubs, each 16-row group in two halves so C int32 sums and C float
 * accumulators fit the 16 registers.  The integer sums are exact, so the
 * results are the generic twin's bits.
 */
#define AG_R16_CMAX 4
/* Token c's activation bytes 4i..4i+3 of block b, in every lane. */
#define R16_X(c, i) _mm256_set1_epi32(load_i32(((const ag_block_q8_0 *)(x + (c) * xs))[b].qs + 4 * (i)))

AG_INLINE void r16_tile_q8_0(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,
                             const int first) {
    const size_t nb = n / 32;
    const uint16_t *d = (const uint16_t *)(g + nb * 512);
    const size_t gs = ag_kern_repack_group_bytes(AG_W_Q8_0_R16, n);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int h = 0; h < 2; h++) {
        __m256 acc[AG_R16_CMAX];
        for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps();
        for (size_t b = 0; b < nb; b++) {
            if (first && h == 0) r16_prefetch(g + gs, gs, (int)b, 9);
            const char *L = g + b * 512 + h * 32;
            __m256i isum[AG_R16_CMAX];
            for (int c = 0; c < C; c++) isum[c] = _mm256_setzero_si256();
            for (int k = 0; k < 8; k++) {
                __m256i q = _mm256_xor_si256(_mm256_load_si256((const __m256i *)(L + k * 64)), _mm256_set1_epi8(-128));
                __m256i aq = _mm256_abs_epi8(q);
                for (int c = 0; c < C; c++) {
                    isum[c] = _mm256_add_epi32(
                        isum[c], _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(R16_X(c, k), q)), ones));
                    AG_KEEP(isum[c]);
                }
            }
            __m256 dw = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(d + b * 16 + h * 8)));
            for (int c = 0; c < C; c++)
                acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]),
                                         _mm256_mul_ps(dw, _mm256_set1_ps(AG_R16_SIDE(c, b).d)), acc[c]);
        }
        for (int c = 0; c < C; c++) _mm256_storeu_ps(y + c * ldy + h * 8, acc[c]);
    }
}
/*
 * A single Q8_0 token: both halves of a group in one pass, and the products
 * taken in int16 pairs instead of the tile's abs/sign form.  On Zen 3
 * vpabsb, vpsignb, vpmaddubsw and vpmaddwd all issue on the same two pipes
 * (a loop of maddubs and sign runs at half the rate of either alone), so
 * the sign form costs 4 of them per 32 bytes; here a vpshufb (on the other
 * two pipes) spreads a row's levels 0 and 1 (or 2 and 3) to two zero-extended
 * int16 and one vpmaddwd against the token's pair, widened to int16 once a
 * call, gives the row's sum: 2 of them per 32 bytes.  The levels go in
 * unsigned (q + 128, as stored) and the lanes start at -128 * sum(x): the
 * same exact integer, so the generic twin's bits.  A token streams the
 * weights from memory, and the product in cache had kept up with it only
 * partly: one thread in L2 32 -> 39 GB/s, two threads streaming 73 MB of
 * 2816 x 1024 matrices 76% -> 91% of a plain read's bandwidth.  Tiles keep
 * the sign form: with several tokens the weights' abs is shared and the
 * int16 form's broadcasts and adds made it no faster (both 67 GMAC/s in L1).
 */
static void r16_rows_q8_0(const void *w, size_t gs, const void *x, size_t n, size_t r0, size_t r1, float *y) {
    const size_t nb = n / 32;
    const ag_block_q8_0 *xb = x;
    const ag_kern_act_side *side = (const ag_kern_act_side *)((const char *)x + ag_kern_act_side_offset(n));
    int16_t *x16 = ag_kern_scratch(n * sizeof(int16_t));
    for (size_t b = 0; b < nb; b++) {
        _mm256_store_si256((__m256i *)(x16 + 32 * b), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)xb[b].qs)));
        _mm256_store_si256((__m256i *)(x16 + 32 * b + 16),
                           _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(xb[b].qs + 16))));
    }
    const __m256i m01 = _mm256_setr_epi8(0, -1, 1, -1, 4, -1, 5, -1, 8, -1, 9, -1, 12, -1, 13, -1, 0, -1, 1, -1, 4, -1, 5,
                                         -1, 8, -1, 9, -1, 12, -1, 13, -1);
    const __m256i m23 = _mm256_add_epi8(m01, _mm256_set1_epi16(2));
    for (size_t r = r0; r < r1; r += AG_REPACK_ROWS) {
        const char *g = (const char *)w + r / AG_REPACK_ROWS * gs;
        const uint16_t *d = (const uint16_t *)(g + nb * 512);
        __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (size_t b = 0; b < nb; b++) {
            r16_prefetch(g + gs, gs, (int)b, 9);
            __m256i isum[2];
            isum[0] = isum[1] = _mm256_set1_epi32(-128 * side[b].sum);
            for (int k = 0; k < 8; k++) {
                __m256i x01 = _mm256_set1_epi32(load_i32(x16 + 32 * b + 4 * k));
                __m256i x23 = _mm256_set1_epi32(load_i32(x16 + 32 * b + 4 * k + 2));
                for (int h = 0; h < 2; h++) {
                    __m256i v = _mm256_load_si256((const __m256i *)(g + (b * 8 + k) * 64 + h * 32));
                    __m256i p = _mm256_add_epi32(_mm256_madd_epi16(_mm256_shuffle_epi8(v, m01), x01),
                                                 _mm256_madd_epi16(_mm256_shuffle_epi8(v, m23), x23));
                    isum[h] = _mm256_add_epi32(isum[h], p);
                    AG_KEEP(isum[h]);
                }
            }
            const __m256 dx = _mm256_set1_ps(side[b].d);
            for (int h = 0; h < 2; h++) {
                __m256 dw = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(d + b * 16 + h * 8)));
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[h]), _mm256_mul_ps(dw, dx), acc[h]);
            }
        }
        _mm256_storeu_ps(y + r, acc[0]), _mm256_storeu_ps(y + r + 8, acc[1]);
    }
}
AG_R16_WALK(matmul_q8_0_r16, r16_tile_q8_0, AG_R16_CMAX, AG_R16_CASES_4, AG_R16_SINGLE(r16_rows_q8_0))
/*
 * Q4_0's levels 0..15 go in as they are: a pair is at most 2 * 15 * 127, so
 * a block's eight maddubs add up in int16 (at most 30480) and take one
 * madd; the lanes start at -8 * sum(x).  Both halves of a group in one pass
 * (each token's activation broadcasts shared by the 16 rows): 10% more
 * multiply-adds a second than a half at a time with 16 tokens in
 * bench_kernels, though C = 4 tokens' sums and accumulators no longer all
 * fit the registers (GCC spills some).  A
 * single token is the same tile with C = 1, which prefetches the next group
 * as it goes: a block is 4.5 lines, the padding at most one more.
 */
AG_INLINE void r16_tile_q4_0(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,
                             const int first) {
    const size_t nb = n / 32;
    const uint16_t *d = (const uint16_t *)(g + nb * 256);
    const size_t gs = ag_kern_repack_group_bytes(AG_W_Q4_0_R16, n);
    const __m256i lo4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    __m256 acc[AG_R16_CMAX][2];
    for (int c = 0; c < C; c++) acc[c][0] = acc[c][1] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        if (first) r16_prefetch(g + gs, gs, (int)b, 5);
        __m256i s16[AG_R16_CMAX][2];
        for (int c = 0; c < C; c++) s16[c][0] = s16[c][1] = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            __m256i lo[2], hi[2];
            for (int h = 0; h < 2; h++) {
                __m256i v = _mm256_load_si256((const __m256i *)(g + (b * 4 + k) * 64 + h * 32));
                lo[h] = _mm256_and_si256(v, lo4), hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
            }
            for (int c = 0; c < C; c++) {
                __m256i xl = R16_X(c, k), xh = R16_X(c, 4 + k);
                for (int h = 0; h < 2; h++) {
                    s16[c][h] = _mm256_add_epi16(s16[c][h], _mm256_maddubs_epi16(lo[h], xl));
                    AG_KEEP(s16[c][h]);
                }
                for (int h = 0; h < 2; h++) {
                    s16[c][h] = _mm256_add_epi16(s16[c][h], _mm256_maddubs_epi16(hi[h], xh));
                    AG_KEEP(s16[c][h]);
                }
            }
        }
        __m256 dw[2];
        for (int h = 0; h < 2; h++) dw[h] = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(d + b * 16 + h * 8)));
        for (int c = 0; c < C; c++) {
            const __m256i corr = _mm256_set1_epi32(-8 * AG_R16_SIDE(c, b).sum);
            const __m256 dx = _mm256_set1_ps(AG_R16_SIDE(c, b).d);
            for (int h = 0; h < 2; h++) {
                __m256i isum = _mm256_add_epi32(_mm256_madd_epi16(s16[c][h], ones), corr);
                acc[c][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw[h], dx), acc[c][h]);
            }
        }
    }
    for (int c = 0; c < C; c++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(y + c * ldy + h * 8, acc[c][h]);
}
static void r16_rows_q4_0(const void *w, size_t gs, const void *x, size_t n, size_t r0, size_t r1, float *y) {
    for (size_t r = r0; r < r1; r += AG_REPACK_ROWS)
        r16_tile_q4_0((const char *)w + r / AG_REPACK_ROWS * gs, n, x, 0, y + r, 0, 1, 1);
}
AG_R16_WALK(matmul_q4_0_r16, r16_tile_q4_0, AG_R16_CMAX, AG_R16_CASES_4, AG_R16_SINGLE(r16_rows_q4_0))

/*
 * Repacked Q4_K (repack.c), 8 rows to a ymm and C <= 2 tokens: a
 * sub-block's levels times the token's bytes sum in int16 (8 maddubs of at
 * most 2 * 15 * 128 each), then one madd with the rows' scales (widened so
 * both int16 halves of a lane hold the scale, once for the C tokens) makes
 * sc times the sub-block's sum in int32; the mins take four madds against
 * the token's sub-block sums, two to a lane.  Exact integers, so the
 * generic twin's bits.
 */
#define AG_R16K_CMAX 2
/* The first pass over a group prefetches the super-block this many on (1 and 2 measured alike; 2 leaves more time). */
#define AG_R16K_AHEAD 2
/* Token c's sub-block sums 2p and 2p + 1 as two int16 halves (each at most 32 * 128). */
AG_INLINE int32_t q8k_sum_pair(const ag_block_q8_k *x, int p) {
    const int16_t *b = x->bsums + 4 * p;
    return (int32_t)((uint32_t)(uint16_t)(b[0] + b[1]) | (uint32_t)(uint16_t)(b[2] + b[3]) << 16);
}
/* 8 rows' 6-bit scales (bytes) as int32 lanes holding the scale in both int16 halves. */
AG_INLINE __m256i q4k_scales(const char *p) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_or_si256(v, _mm256_slli_epi32(v, 16));
}
/* Bit `bit` of every byte of b moved to bit 4, the rest 0 (16-bit shifts: what crosses a byte lands elsewhere). */
AG_INLINE __m256i bit_to_4(__m256i b, const int bit) {
    const __m256i m = _mm256_set1_epi8(0x10);
    return _mm256_and_si256(bit <= 4 ? _mm256_slli_epi16(b, 4 - bit) : _mm256_srli_epi16(b, bit - 4), m);
}
/*
 * acc + isum * d_w * d_x - msum * dmin_w * d_x, the two terms of a
 * super-block with mins (Q4_K, Q5_K, Q2_K): d holds the half's 8 fp16 d,
 * its dmin two vectors on.
 */
AG_INLINE __m256 r16k_min_terms(__m256 acc, __m256i isum, __m256i msum, const __m128i *d, __m256 dx) {
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128(d)), dx), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128(d + 2)), dx), acc);
}
/*
 * The end of a Q4_K/Q5_K super-block S for one token (x) and half h: acc
 * plus isum's term and minus the mins' (the rows' mins against the token's
 * sub-block sums, two to a madd), each times its fp16 scale and the token's d.
 */
AG_INLINE __m256 k45_finish(const char *S, const ag_block_q8_k *x, __m256i isum, const int h, __m256 acc) {
    __m256i msum = _mm256_setzero_si256();
    for (int p = 0; p < 4; p++) {
        const __m128i m = _mm_load_si128((const __m128i *)(S + AG_R16_Q4K_MINS + p * 32 + h * 16));
        msum = _mm256_add_epi32(msum, _mm256_madd_epi16(_mm256_cvtepu8_epi16(m), _mm256_set1_epi32(q8k_sum_pair(x, p))));
    }
    return r16k_min_terms(acc, isum, msum, (const __m128i *)(S + AG_R16_Q4K_D) + h, _mm256_set1_ps(x->d));
}
/* Q5_K's level vectors of piece k (8 rows x 4 elements) of chunk j, half h: sub-block 2j's (lo) and 2j + 1's (hi). */
AG_INLINE void q5k_levels(const char *B, int j, int k, int h, __m256i *lo, __m256i *hi) {
    const __m256i lo4 = _mm256_set1_epi8(15);
    const __m256i v = _mm256_load_si256((const __m256i *)(B + AG_R16_Q5K_QH + (j * 8 + k) * 64 + h * 32));
    const __m256i b = _mm256_load_si256((const __m256i *)(B + k * 64 + h * 32));
    *lo = _mm256_or_si256(_mm256_and_si256(v, lo4), bit_to_4(b, 2 * j));
    *hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), lo4), bit_to_4(b, 2 * j + 1));
}
/* NAME: a K-quant kernel of the AG_R16K_PRODUCT form, IMPL with its type flag fixed (a compile-time constant). */
#define AG_R16K_BIND(NAME, IMPL, FLAG)                                                                                 \
    AG_INLINE void NAME(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,          \
                        const int h0, const int NH, const int PF) {                                                    \
        IMPL(g, n, x, xs, y, ldy, C, h0, NH, PF, FLAG);                                                                \
    }
/*
 * Tokens [0, C) against the halves [h0, h0 + NH) of group g, C * NH <= 2 (so
 * the sums fit the registers): the tile takes C <= 2 tokens one half at a
 * time; a single token takes both halves at once, so each broadcast serves
 * 16 rows and a group's lines are read in one pass (half by half is two
 * passes, which decode, streaming the weights from memory, measured slower
 * than the rows in place).  Every lane's arithmetic is the same either way.
 * Q5 (Q5_K): each level gets its fifth bit (levels 0..31), so only 4
 * maddubs add up in int16 (at most 4 * 2 * 31 * 128 = 31744) before the
 * madd with the scale.
 */
AG_INLINE void r16_k45(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,
                       const int h0, const int NH, const int PF, const int Q5) {
    const __m256i lo4 = _mm256_set1_epi8(15);
    const size_t o = Q5 ? AG_R16_Q5K_QH : 0; /* the fifth bits before the Q4_K bytes */
    __m256 acc[AG_R16K_CMAX][2];
    for (int c = 0; c < C; c++)
        for (int h = 0; h < NH; h++) acc[c][h] = _mm256_setzero_ps();
    for (size_t s = 0; s < n / AG_QK_K; s++) {
        const char *B = g + s * (o + AG_R16_Q4K_SB), *S = B + o;
        const ag_block_q8_k *xb[AG_R16K_CMAX];
        __m256i isum[AG_R16K_CMAX][2];
        for (int c = 0; c < C; c++) {
            xb[c] = (const ag_block_q8_k *)(x + c * xs) + s;
            for (int h = 0; h < NH; h++) isum[c][h] = _mm256_setzero_si256();
        }
#pragma GCC unroll 4 /* a constant j gives the fifth bits' shifts */
        for (int j = 0; j < 4; j++) {
            __m256i sl[AG_R16K_CMAX][2], sh[AG_R16K_CMAX][2];
            for (int c = 0; c < C; c++)
                for (int h = 0; h < NH; h++) sl[c][h] = sh[c][h] = _mm256_setzero_si256();
            for (int k = 0; k < 8; k++) {
                __m256i lo[2], hi[2];
                if (PF) r16_prefetch(B + AG_R16K_AHEAD * (o + AG_R16_Q4K_SB), o + AG_R16_Q4K_SB, j * 8 + k, 2);
                for (int h = 0; h < NH; h++) {
                    if (Q5) {
                        q5k_levels(B, j, k, h0 + h, &lo[h], &hi[h]);
                    } else {
                        const __m256i v = _mm256_load_si256((const __m256i *)(S + (j * 8 + k) * 64 + (h0 + h) * 32));
                        lo[h] = _mm256_and_si256(v, lo4), hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
                    }
                }
                for (int c = 0; c < C; c++) {
                    const int8_t *q = xb[c]->qs + 64 * j + 4 * k;
                    const __m256i xl = _mm256_set1_epi32(load_i32(q)), xh = _mm256_set1_epi32(load_i32(q + 32));
                    for (int h = 0; h < NH; h++) {
                        sl[c][h] = _mm256_add_epi16(sl[c][h], _mm256_maddubs_epi16(lo[h], xl));
                        AG_KEEP(sl[c][h]);
                        sh[c][h] = _mm256_add_epi16(sh[c][h], _mm256_maddubs_epi16(hi[h], xh));
                        AG_KEEP(sh[c][h]);
                    }
                }
                if (k % (Q5 ? 4 : 8) != (Q5 ? 3 : 7)) continue;
                for (int h = 0; h < NH; h++) {
                    const __m256i s0 = q4k_scales(S + AG_R16_Q4K_SCALES + 2 * j * 16 + (h0 + h) * 8);
                    const __m256i s1 = q4k_scales(S + AG_R16_Q4K_SCALES + (2 * j + 1) * 16 + (h0 + h) * 8);
                    for (int c = 0; c < C; c++) {
                        isum[c][h] = _mm256_add_epi32(isum[c][h], _mm256_add_epi32(_mm256_madd_epi16(sl[c][h], s0),
                                                                                   _mm256_madd_epi16(sh[c][h], s1)));
                        sl[c][h] = sh[c][h] = _mm256_setzero_si256();
                    }
                }
            }
        }
        for (int c = 0; c < C; c++)
            for (int h = 0; h < NH; h++) acc[c][h] = k45_finish(S, xb[c], isum[c][h], h0 + h, acc[c][h]);
    }
    for (int c = 0; c < C; c++)
        for (int h = 0; h < NH; h++) _mm256_storeu_ps(y + c * ldy + (h0 + h) * 8, acc[c][h]);
}
AG_R16K_BIND(r16_q4_k, r16_k45, 0)
AG_R16K_BIND(r16_q5_k, r16_k45, 1)
/*
 * Q5_K's tile: up to 4 tokens, one half at a time, so each level vector
 * (nibble and fifth bit: 4-5 operations) serves 4 tokens instead of 2, in
 * Q6_K's shape: the two maddubs of a sub-block's elements 4k..4k+7 add in
 * int16 (at most 2 * 7936) and take one madd with its scale.  The same
 * integers as r16_q5_k, so the same bits.
 */
#define AG_R16K5_CMAX 4
AG_INLINE void r16_q5_k_tile(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,
                             const int h0, const int NH, const int PF) {
    (void)NH; /* one half */
    __m256 acc[AG_R16K5_CMAX];
    for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps();
    for (size_t s = 0; s < n / AG_QK_K; s++) {
        const char *B = g + s * AG_R16_Q5K_SB, *S = B + AG_R16_Q5K_QH;
        const ag_block_q8_k *xb[AG_R16K5_CMAX];
        __m256i isum[AG_R16K5_CMAX];
        for (int c = 0; c < C; c++) xb[c] = (const ag_block_q8_k *)(x + c * xs) + s, isum[c] = _mm256_setzero_si256();
#pragma GCC unroll 4 /* a constant j gives the fifth bits' shifts */
        for (int j = 0; j < 4; j++) {
            const __m256i s0 = q4k_scales(S + AG_R16_Q4K_SCALES + 2 * j * 16 + h0 * 8);
            const __m256i s1 = q4k_scales(S + AG_R16_Q4K_SCALES + (2 * j + 1) * 16 + h0 * 8);
            for (int k = 0; k < 8; k += 2) {
                if (PF) r16_prefetch(B + AG_R16K_AHEAD * AG_R16_Q5K_SB, AG_R16_Q5K_SB, (j * 8 + k) / 2, 4);
                __m256i lo0, hi0, lo1, hi1;
                q5k_levels(B, j, k, h0, &lo0, &hi0), q5k_levels(B, j, k + 1, h0, &lo1, &hi1);
                for (int c = 0; c < C; c++) {
                    const int8_t *q = xb[c]->qs + 64 * j + 4 * k;
                    const __m256i pl = _mm256_add_epi16(_mm256_maddubs_epi16(lo0, _mm256_set1_epi32(load_i32(q))),
                                                        _mm256_maddubs_epi16(lo1, _mm256_set1_epi32(load_i32(q + 4))));
                    const __m256i ph = _mm256_add_epi16(_mm256_maddubs_epi16(hi0, _mm256_set1_epi32(load_i32(q + 32))),
                                                        _mm256_maddubs_epi16(hi1, _mm256_set1_epi32(load_i32(q + 36))));
                    isum[c] = _mm256_add_epi32(isum[c], _mm256_add_epi32(_mm256_madd_epi16(pl, s0), _mm256_madd_epi16(ph, s1)));
                    AG_KEEP(isum[c]);
                }
            }
        }
        for (int c = 0; c < C; c++) acc[c] = k45_finish(S, xb[c], isum[c], h0, acc[c]);
    }
    for (int c = 0; c < C; c++) _mm256_storeu_ps(y + c * ldy + h0 * 8, acc[c]);
}
/*
 * The product around K-quant group kernels KERNEL(g, n, x, xs, y, ldy, C,
 * h0, NH, PF) (PF: prefetch, on the first pass over the group): tiles of C <= CMAX tokens (CASES, AG_R16_CASES_<CMAX>) half by
 * half with TKERNEL, a single token both halves at once with KERNEL (the
 * same kernel but for Q5_K); exported as ag_kern_matmul_<T>_r16_avx2,
 * the AVX-512 table's too (its wider registers buy nothing here without a
 * kernel of their own).
 */
#define AG_R16K_PRODUCT(T, TKERNEL, KERNEL, CMAX, CASES)                                                               \
    AG_INLINE void r16_tile_##T(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C, \
                                const int first) {                                                                     \
        for (int h = 0; h < 2; h++) TKERNEL(g, n, x, xs, y, ldy, C, h, 1, first && h == 0);                            \
    }                                                                                                                  \
    static void r16_rows_##T(const void *w, size_t gs, const void *x, size_t n, size_t r0, size_t r1, float *y) {      \
        for (size_t r = r0; r < r1; r += AG_REPACK_ROWS)                                                               \
            KERNEL((const char *)w + r / AG_REPACK_ROWS * gs, n, x, 0, y + r, 0, 1, 0, 2, 1);                          \
    }                                                                                                                  \
    AG_R16_WALK(matmul_##T##_r16, r16_tile_##T, CMAX, CASES, AG_R16_SINGLE(r16_rows_##T))                              \
    void ag_kern_matmul_##T##_r16_avx2(const void *w, size_t gs, const void *x, size_t xs, size_t n, size_t r0,        \
                                       size_t r1, size_t T_, float *y, size_t ldy) {                                   \
        matmul_##T##_r16(w, gs, x, xs, n, r0, r1, T_, y, ldy);                                                         \
    }
AG_R16K_PRODUCT(q4_k, r16_q4_k, r16_q4_k, AG_R16K_CMAX, AG_R16_CASES_2)
AG_R16K_PRODUCT(q5_k, r16_q5_k_tile, r16_q5_k, AG_R16K5_CMAX, AG_R16_CASES_4)

/*
 * Repacked Q6_K (repack.c), Q4_K's shape with C <= 4 tokens one half at a
 * time (each level vector, built in 4-5 operations, then serves 4 tokens:
 * measured faster than 2), or one token and both halves.  A level vector (8 rows x
 * 4 elements) is its nibble OR its two high bits moved to bits 4-5 (16-bit
 * shifts, the bits that cross into a neighbour byte masked off); levels
 * 0..63 times the token's bytes pair into int16 at most 2 * 63 * 128, so two
 * maddubs of a 16-element group add up in int16 (at most 32256) before one
 * madd with the rows' scale (signed, in both int16 halves of a lane).  The
 * -32 offset is -32 times the scales against the token's group sums (the
 * Q8_K bsums, two to a madd).  Exact integers, so the generic twin's bits.
 * Q3_K (K = 3) takes the same walk: a level (0..7) is its piece's bits 2j
 * OR its high bit moved to bit 2, and the offset is -4.  So does Q2_K
 * (K = 2): levels 0..3, each scale byte scale | min << 4, and its mins
 * against the group sums a second term, as Q4_K's.
 */
/* The 8 rows' scale of group q (0..15) of half h, each lane holding it in both int16 halves (Q2_K's: the low 4 bits). */
AG_INLINE __m256i k36_scale(const char *S, int q, int h, const int K) {
    const __m128i v = _mm_load_si128((const __m128i *)(S + AG_R16_Q6K_SCALES + q / 2 * 32 + h * 16));
    const __m128i dup = _mm_shuffle_epi8(v, _mm_add_epi8(_mm_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14),
                                                          _mm_set1_epi8((char)(q % 2))));
    return K == 2 ? _mm256_and_si256(_mm256_cvtepu8_epi16(dup), _mm256_set1_epi16(15)) : _mm256_cvtepi8_epi16(dup);
}
/* Levels of elements 128m + 32j + 4k .. +3 (k 0..7) of the 8 rows of half h. */
AG_INLINE __m256i q6k_levels(const char *S, int m, int j, int k, int h) {
    const __m256i lo4 = _mm256_set1_epi8(15), hi2 = _mm256_set1_epi8(0x30);
    const __m256i v = _mm256_load_si256((const __m256i *)(S + ag_r16_q6k_ql(m, k + (j & 1) * 8) + h * 32));
    const __m256i b = _mm256_load_si256((const __m256i *)(S + ag_r16_q6k_qh(m, k) + h * 32));
    const __m256i nib = j < 2 ? _mm256_and_si256(v, lo4) : _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
    const __m256i top = j == 0   ? _mm256_slli_epi16(b, 4)
                        : j == 1 ? _mm256_slli_epi16(b, 2)
                        : j == 2 ? b
                                 : _mm256_srli_epi16(b, 2);
    return _mm256_or_si256(nib, _mm256_and_si256(top, hi2));
}
/*
 * Q3_K's (K = 3) or Q2_K's: elements 128m + 32j + 4k .. +3 (k 0..7) of the 8
 * rows of half h, bits 2j of the low piece (and Q3_K's bit 4m + j moved to bit 2).
 */
AG_INLINE __m256i q23k_levels(const char *S, int m, int j, int k, int h, const int K) {
    const __m256i v =
        _mm256_load_si256((const __m256i *)(S + (K == 3 ? AG_R16_Q3K_QL : AG_R16_Q2K_QL) + (8 * m + k) * 64 + h * 32));
    const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), _mm256_set1_epi8(3));
    if (K == 2) return lo;
    const __m256i b = _mm256_load_si256((const __m256i *)(S + AG_R16_Q3K_QH + k * 64 + h * 32));
    const int t = 4 * m + j; /* at most 7: a 16-bit shift right by t - 2 <= 5 keeps bit 2 within the byte */
    const __m256i top = t >= 2 ? _mm256_srli_epi16(b, t - 2) : _mm256_slli_epi16(b, 2 - t);
    return _mm256_or_si256(lo, _mm256_and_si256(top, _mm256_set1_epi8(4)));
}
#define AG_R16K6_CMAX 4
/* Q6_K, Q3_K or Q2_K (K = 6, 3, 2): the same walk over the scales and the 16 groups. */
AG_INLINE void r16_k36(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,
                       const int h0, const int NH, const int PF, const int K) {
    const size_t SB = K == 2 ? AG_R16_Q2K_SB : K == 3 ? AG_R16_Q3K_SB : AG_R16_Q6K_SB;
    const size_t D = K == 2 ? AG_R16_Q2K_D : K == 3 ? AG_R16_Q3K_D : AG_R16_Q6K_D;
    __m256 acc[AG_R16K6_CMAX][2];
    for (int c = 0; c < C; c++)
        for (int h = 0; h < NH; h++) acc[c][h] = _mm256_setzero_ps();
    for (size_t s = 0; s < n / AG_QK_K; s++) {
        const char *S = g + s * SB;
        const ag_block_q8_k *xb[AG_R16K6_CMAX];
        __m256i isum[AG_R16K6_CMAX][2];
        for (int c = 0; c < C; c++) {
            xb[c] = (const ag_block_q8_k *)(x + c * xs) + s;
            for (int h = 0; h < NH; h++) isum[c][h] = _mm256_setzero_si256();
        }
#pragma GCC unroll 2
        for (int m = 0; m < 2; m++)
#pragma GCC unroll 4 /* constant k and j pick the pieces, the nibble and the shift */
            for (int k = 0; k < 8; k += 2) /* a chunk: elements 4k..4k+7 (+32j) of half m */
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) {
                    if (PF) r16_prefetch(S + AG_R16K_AHEAD * SB, SB, m * 16 + k * 2 + j, K == 6 ? 2 : 1);
                    __m256i sc[2]; /* group q = 8m + 2j + k / 4: elements 16q..16q+15 */
                    __m256i l0[2], l1[2];
                    for (int h = 0; h < NH; h++) {
                        sc[h] = k36_scale(S, 8 * m + 2 * j + k / 4, h0 + h, K);
                        l0[h] = K == 6 ? q6k_levels(S, m, j, k, h0 + h) : q23k_levels(S, m, j, k, h0 + h, K);
                        l1[h] = K == 6 ? q6k_levels(S, m, j, k + 1, h0 + h) : q23k_levels(S, m, j, k + 1, h0 + h, K);
                    }
                    for (int c = 0; c < C; c++) {
                        const int8_t *xq = xb[c]->qs + 128 * m + 32 * j + 4 * k;
                        const __m256i x0 = _mm256_set1_epi32(load_i32(xq)), x1 = _mm256_set1_epi32(load_i32(xq + 4));
                        for (int h = 0; h < NH; h++) {
                            const __m256i p =
                                _mm256_add_epi16(_mm256_maddubs_epi16(l0[h], x0), _mm256_maddubs_epi16(l1[h], x1));
                            isum[c][h] = _mm256_add_epi32(isum[c][h], _mm256_madd_epi16(p, sc[h]));
                            AG_KEEP(isum[c][h]);
                        }
                    }
                }
        for (int c = 0; c < C; c++) {
            const __m256 dx = _mm256_set1_ps(xb[c]->d);
            for (int h = 0; h < NH; h++) {
                __m256i msum = _mm256_setzero_si256();
                for (int p = 0; p < 8; p++) {
                    const __m128i sp = _mm_load_si128((const __m128i *)(S + AG_R16_Q6K_SCALES + p * 32 + (h0 + h) * 16));
                    const __m256i f = K == 2 ? _mm256_srli_epi16(_mm256_cvtepu8_epi16(sp), 4) : _mm256_cvtepi8_epi16(sp);
                    msum = _mm256_add_epi32(msum, _mm256_madd_epi16(f, _mm256_set1_epi32(load_i32(xb[c]->bsums + 2 * p))));
                }
                const __m128i *d = (const __m128i *)(S + D) + h0 + h;
                if (K == 2) {
                    acc[c][h] = r16k_min_terms(acc[c][h], isum[c][h], msum, d, dx);
                } else {
                    const __m256i tot = _mm256_sub_epi32(isum[c][h], _mm256_slli_epi32(msum, K == 3 ? 2 : 5));
                    acc[c][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128(d)), dx),
                                                acc[c][h]);
                }
            }
        }
    }
    for (int c = 0; c < C; c++)
        for (int h = 0; h < NH; h++) _mm256_storeu_ps(y + c * ldy + (h0 + h) * 8, acc[c][h]);
}
AG_R16K_BIND(r16_q6_k, r16_k36, 6)
AG_R16K_BIND(r16_q3_k, r16_k36, 3)
AG_R16K_BIND(r16_q2_k, r16_k36, 2)
AG_R16K_PRODUCT(q6_k, r16_q6_k, r16_q6_k, AG_R16K6_CMAX, AG_R16_CASES_4)
AG_R16K_PRODUCT(q3_k, r16_q3_k, r16_q3_k, AG_R16K6_CMAX, AG_R16_CASES_4)
AG_R16K_PRODUCT(q2_k, r16_q2_k, r16_q2_k, AG_R16K6_CMAX, AG_R16_CASES_4)

/*
 * Repacked F16 (repack.c): 16 rows as two 8-lane halves converted once per
 * element and C <= 6 tokens broadcast against them: 12 accumulators, the
 * 16 registers' worth (BLIS's 6x16 sgemm shape).  A single token takes 4
 * groups at once, so 8 independent FMA chains hide the FMA latency; every
 * row's sum runs over k in order either way.  (Widening a group to f32 once
 * per token block measured no faster: the f32 group leaves L1.)
 */
#define AG_R16F_CMAX 6
AG_INLINE void r16_tile_f16(const char *g, size_t n, const char *x, size_t xs, float *y, size_t ldy, const int C,
                            const int first) {
    (void)first; /* F16's tiles prefetch nothing: not measured */
    __m256 acc[AG_R16F_CMAX][2];
    for (int c = 0; c < C; c++) acc[c][0] = acc[c][1] = _mm256_setzero_ps();
    const uint16_t *G = (const uint16_t *)g;
    for (size_t k = 0; k < n; k++) {
        __m256 w0 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(G + k * 16)));
        __m256 w1 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(G + k * 16 + 8)));
        for (int c = 0; c < C; c++) {
            __m256 xb = _mm256_broadcast_ss((const float *)(x + c * xs) + k);
            acc[c][0] = _mm256_fmadd_ps(w0, xb, acc[c][0]);
            acc[c][1] = _mm256_fmadd_ps(w1, xb, acc[c][1]);
        }
    }
    for (int c = 0; c < C; c++) _mm256_storeu_ps(y + c * ldy, acc[c][0]), _mm256_storeu_ps(y + c * ldy + 8, acc[c][1]);
}

AG_INLINE void r16_groups_f16(const char *w, size_t gs, const float *x, size_t n, float *y, const int NG) {
    __m256 acc[4][2];
    for (int j = 0; j < NG; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (size_t k = 0; k < n; k++) {
        __m256 xb = _mm256_broadcast_ss(x + k);
        for (int j = 0; j < NG; j++) {
            const uint16_t *G = (const uint16_t *)(w + j * gs) + k * 16;
            acc[j][0] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_load_si128((const __m128i *)G)), xb, acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_load_si128((const __m128i *)(G + 8))), xb, acc[j][1]);
        }
    }
    for (int j = 0; j < NG; j++) _mm256_storeu_ps(y + j * 16, acc[j][0]), _mm256_storeu_ps(y + j * 16 + 8, acc[j][1]);
}

AG_R16_ROWS_F16(r16_rows_f16, r16_groups_f16, 4)

AG_R16_WALK(matmul_f16_r16, r16_tile_f16, AG_R16F_CMAX, AG_R16_CASES_6, AG_R16_SINGLE(r16_rows_f16))

const ag_kernels ag_kernels_avx2 = {
    .name = "avx2",
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
