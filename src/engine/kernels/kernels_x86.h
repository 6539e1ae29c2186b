/*
 * kernels_x86.h - what the x86 variants (kernels_avx2.c, kernels_avx512.c)
 * share: small inline helpers, and the AVX2 kernels the AVX-512 variant
 * reuses where wider registers buy nothing (activation quantization,
 * attention helpers).  Include only from files compiled with AVX2 and F16C.
 */
#ifndef AG_ENGINE_KERNELS_X86_H
#define AG_ENGINE_KERNELS_X86_H

#include "engine/kernels/kernels.h"
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

AG_INLINE __m256i load_q8_0(const ag_block_q8_0 *b) { return _mm256_loadu_si256((const __m256i *)b->qs); }

/*
 * The float-type kernels, written once for both widths.  The including file
 * defines ACC (the accumulator vector type), ACC_ZERO(), ACC_ADD(a, b) and
 * ACC_SUM(a) (horizontal sum) for its width.  V is the loaded operand type,
 * STEP the elements one OP(acc, w, x) consumes, SW/SX scalar converters for
 * the tails.
 */

/* R weight rows x C activation rows, R*C accumulators (an AG_MATMUL_WALK tile). */
#define AG_X86_FLOAT_TILE(NAME, WT, XT, V, STEP, LOADW, LOADX, OP, SW, SX)                                             \
    AG_INLINE void NAME(const char *w, size_t ws, const char *x, size_t xs, size_t n, float *y, size_t ldy,            \
                        const int R, const int C) {                                                                    \
        ACC acc[4][4];                                                                                                 \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) acc[r][c] = ACC_ZERO();                                                        \
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
                float s = ACC_SUM(acc[r][c]);                                                                          \
                const WT *wr = (const WT *)(w + r * ws);                                                               \
                const XT *xr = (const XT *)(x + c * xs);                                                               \
                for (size_t i = k; i < n; i++) s += SW(wr[i]) * SX(xr[i]);                                             \
                y[c * ldy + r] = s;                                                                                    \
            }                                                                                                          \
    }

/*
 * One row against one token with one accumulator, in the same order as a tile's
 * (r, c) pair, so a row's result never depends on how many tokens share the
 * product: decode alone and decode batched with others give identical bits.
 */
#define AG_X86_FLOAT_ROW(NAME, WT, XT, V, STEP, LOADW, LOADX, OP, SW, SX)                                              \
    static float NAME(const void *wv, const void *xv, size_t n) {                                                     \
        const WT *w = wv;                                                                                              \
        const XT *x = xv;                                                                                              \
        ACC acc = ACC_ZERO();                                                                                          \
        size_t k = 0;                                                                                                  \
        for (; k + (STEP) <= n; k += (STEP)) acc = OP(acc, LOADW(w + k), LOADX(x + k));                                \
        float s = ACC_SUM(acc);                                                                                        \
        for (; k < n; k++) s += SW(w[k]) * SX(x[k]);                                                                   \
        return s;                                                                                                      \
    }

void ag_kern_quantize_q8_0_avx2(const float *x, ag_block_q8_0 *y, size_t n);
float ag_kern_dot_f32_avx2(const float *a, const float *b, size_t n);
float ag_kern_dot_f16_avx2(const uint16_t *a, const float *b, size_t n);
void ag_kern_axpy_f32_avx2(float *y, float a, const float *x, size_t n);
void ag_kern_axpy_f16_avx2(float *y, float a, const uint16_t *x, size_t n);

#endif
