/*
 * kernels_avx512.c - the AVX-512 variant for CPUs with VNNI and BF16 dot
 * products (Zen 4, Sapphire Rapids and later); compiled with those flags for
 * this file only and used after CPUID says so.
 *
 * Float types: 16-lane FMA tiles of up to 4 rows x 4 tokens (16 of the 32
 * zmm registers hold accumulators).  BF16: vdpbf16ps, 32 products per
 * instruction.  Quantized types: one vpdpbusd per 32-element block replaces
 * AVX2's maddubs + madd pair (256-bit, so a 34- or 18-byte block is one load).
 */
#include "engine/kernels/kernels_x86.h"
#include "engine/kernels/tile.h"

#include <immintrin.h>

AG_INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AG_INLINE float f16(uint16_t h) { return _cvtsh_ss(h); }
AG_INLINE float bf16(uint16_t h) { return ag_bf16_to_f32(h); }
AG_INLINE float f32(float v) { return v; }

AG_INLINE __m512 load_f32(const float *p) { return _mm512_loadu_ps(p); }
AG_INLINE __m512 load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
AG_INLINE __m512 fma_ps(__m512 acc, __m512 w, __m512 x) { return _mm512_fmadd_ps(w, x, acc); }
AG_INLINE __m512i load_bf16x32(const uint16_t *p) { return _mm512_loadu_si512(p); }
AG_INLINE __m512 dot_bf16(__m512 acc, __m512i w, __m512i x) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x); }

/* R rows of WT against C rows of XT, STEP elements a step: acc = OP(acc, w, x) on vectors of type V. */
#define TILE512(NAME, WT, XT, V, STEP, LOADW, LOADX, OP, SW, SX)                                                       \
    AG_INLINE void NAME(const char *w, size_t ws, const char *x, size_t xs, size_t n, float *y, size_t ldy,            \
                        const int R, const int C) {                                                                    \
        __m512 acc[4][4];                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();                                               \
        size_t k = 0;                                                                                                  \
        for (; k + (STEP) <= n; k += (STEP)) {                                                                         \
            V xv[4];                                                                                                   \
            for (int c = 0; c < C; c++) xv[c] = LOADX((const XT *)(x + c * xs) + k);                                  \
            for (int r = 0; r < R; r++) {                                                                              \
                V wv = LOADW((const WT *)(w + r * ws) + k);                                                            \
                for (int c = 0; c < C; c++) acc[r][c] = OP(acc[r][c], wv, xv[c]);                                      \
            }                                                                                                          \
        }                                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) {                                                                              \
                float s = _mm512_reduce_add_ps(acc[r][c]);                                                             \
                const WT *wr = (const WT *)(w + r * ws);                                                               \
                const XT *xr = (const XT *)(x + c * xs);                                                               \
                for (size_t i = k; i < n; i++) s += SW(wr[i]) * SX(xr[i]);                                             \
                y[c * ldy + r] = s;                                                                                    \
            }                                                                                                          \
    }

TILE512(tile_f32, float, float, __m512, 16, load_f32, load_f32, fma_ps, f32, f32)
TILE512(tile_f16, uint16_t, float, __m512, 16, load_f16, load_f32, fma_ps, f16, f32)
TILE512(tile_bf16, uint16_t, uint16_t, __m512i, 32, load_bf16x32, load_bf16x32, dot_bf16, bf16, bf16)

AG_INLINE __m256i unpack_q4_0(const ag_block_q4_0 *b) {
    __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q); /* elements 16..31 are the high nibbles */
    return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(15)), _mm256_set1_epi8(8));
}
AG_INLINE __m256i load_q8_0(const ag_block_q8_0 *b) { return _mm256_loadu_si256((const __m256i *)b->qs); }

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
                    __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, _mm256_sign_epi8(xq[c], wq));         \
                    acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * dx[c]), acc[r][c]);         \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) y[c * ldy + r] = hsum256(acc[r][c]);                                           \
    }

QUANT_TILE(tile_q8_0, ag_block_q8_0, load_q8_0, AG_QK8_0)
QUANT_TILE(tile_q4_0, ag_block_q4_0, unpack_q4_0, AG_QK4_0)

/* One row against one token, 4 independent accumulators so the FMA latency is hidden. */
#define ROW512(NAME, WT, XT, V, STEP, LOADW, LOADX, OP, SW, SX)                                                        \
    static float NAME(const void *wv, const void *xv, size_t n) {                                                     \
        const WT *w = wv;                                                                                              \
        const XT *x = xv;                                                                                              \
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};         \
        size_t k = 0;                                                                                                  \
        for (; k + 4 * (STEP) <= n; k += 4 * (STEP))                                                                   \
            for (int u = 0; u < 4; u++) acc[u] = OP(acc[u], LOADW(w + k + u * (STEP)), LOADX(x + k + u * (STEP)));     \
        for (; k + (STEP) <= n; k += (STEP)) acc[0] = OP(acc[0], LOADW(w + k), LOADX(x + k));                          \
        float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));  \
        for (; k < n; k++) s += SW(w[k]) * SX(x[k]);                                                                   \
        return s;                                                                                                      \
    }

ROW512(row_f32, float, float, __m512, 16, load_f32, load_f32, fma_ps, f32, f32)
ROW512(row_f16, uint16_t, float, __m512, 16, load_f16, load_f32, fma_ps, f16, f32)
ROW512(row_bf16, uint16_t, uint16_t, __m512i, 32, load_bf16x32, load_bf16x32, dot_bf16, bf16, bf16)

/* One quantized row against one token: two blocks a step into two accumulators. */
/* The scaled dot product of one weight block with one activation block, as 8 float lanes. */
#define QUANT_BLOCK(WB, LOADW)                                                                                         \
    AG_INLINE __m256 block_dot_##WB(const WB *w, const ag_block_q8_0 *x) {                                             \
        __m256i wq = LOADW(w), aw = _mm256_sign_epi8(wq, wq), sx = _mm256_sign_epi8(load_q8_0(x), wq);               \
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx)), _mm256_set1_ps(f16(w->d) * f16(x->d)));           \
    }
QUANT_BLOCK(ag_block_q8_0, load_q8_0)
QUANT_BLOCK(ag_block_q4_0, unpack_q4_0)

/* One quantized row against one token: two blocks a step into two accumulators. */
#define QUANT_ROW(NAME, WB, QK)                                                                                        \
    static float NAME(const void *wv, const void *xv, size_t n) {                                                     \
        const WB *w = wv;                                                                                              \
        const ag_block_q8_0 *x = xv;                                                                                   \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                                     \
        size_t nb = n / (QK), b = 0;                                                                                   \
        for (; b + 2 <= nb; b += 2) {                                                                                  \
            a0 = _mm256_add_ps(a0, block_dot_##WB(&w[b], &x[b]));                                                      \
            a1 = _mm256_add_ps(a1, block_dot_##WB(&w[b + 1], &x[b + 1]));                                              \
        }                                                                                                              \
        if (b < nb) a0 = _mm256_add_ps(a0, block_dot_##WB(&w[b], &x[b]));                                              \
        return hsum256(_mm256_add_ps(a0, a1));                                                                         \
    }

QUANT_ROW(row_q8_0, ag_block_q8_0, AG_QK8_0)
QUANT_ROW(row_q4_0, ag_block_q4_0, AG_QK4_0)

AG_TILED_MATMUL(matmul_f32, tile_f32, row_f32, 4, 4)
/* An F16 row to f32, for AG_TILED_MATMUL_WIDEN. */
static void widen_f16(const void *src, float *dst, size_t n) {
    const uint16_t *h = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load_f16(h + i));
    for (; i < n; i++) dst[i] = f16(h[i]);
}

AG_TILED_MATMUL_WIDEN(matmul_f16, tile_f32, row_f16, widen_f16, 4, 4)
AG_TILED_MATMUL(matmul_bf16, tile_bf16, row_bf16, 4, 4)
AG_TILED_MATMUL(matmul_q8_0, tile_q8_0, row_q8_0, 4, 4)
AG_TILED_MATMUL(matmul_q4_0, tile_q4_0, row_q4_0, 4, 4)

const ag_kernels ag_kernels_avx512 = {
    .name = "avx512",
    .matmul = {matmul_f32, matmul_f16, matmul_bf16, matmul_q8_0, matmul_q4_0},
    .quantize_q8_0 = ag_kern_quantize_q8_0_avx2,
    .dot_f32 = ag_kern_dot_f32_avx2,
    .dot_f16 = ag_kern_dot_f16_avx2,
    .axpy_f32 = ag_kern_axpy_f32_avx2,
    .axpy_f16 = ag_kern_axpy_f16_avx2,
};
