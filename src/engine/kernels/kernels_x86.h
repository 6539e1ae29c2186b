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
#include <string.h>

/*
 * Pins an integer accumulator to a register here.  Integer adds are
 * associative, so gcc rebuilds a chain s += a; s += b; ... into a tree
 * that holds every product of a block at once; with 16 ymm registers the
 * AVX2 tiles then spill (measured: the Q4_0 tile ran at 3/4 of the speed
 * it has with the chain kept).  The sums are exact either way: this fixes
 * the schedule, not the bits.
 */
#define AG_KEEP(v) __asm__("" : "+x"(v))

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

/*
 * K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) against Q8_K activations, written once with
 * 256-bit integer ops for both variants (the AVX-512 file gets 32 registers
 * for the same code).  A weight super-block is unpacked once into 32-byte
 * vectors of unsigned levels (0..3, 0..15, 0..31, or Q3_K's q + 4 and Q6_K's
 * q + 32, the offset folded into the min term) and
 * int16 scale vectors, then dotted with each activation row that shares it:
 *   maddubs(levels, x) pairs products into int16 (at most 2*63*127, no
 *   saturation), madd with the scales sums them into int32 per 16-element
 *   group, and the min term is one madd of the activation's bsums; two FMAs
 *   per super-block turn the integer sums into the float accumulator.
 * The row path (one token) and the tiles run the same pair function, so a
 * row's result never depends on how many tokens share the product.
 */
typedef struct ag_kq_unpacked {
    __m256i q[8]; /* levels of elements 32k .. 32k+31 */
    __m256i s[8]; /* their int16 scales: lanes 0-7 elements 32k..32k+15, lanes 8-15 the next 16 */
    __m256i m;    /* per 16-element group, what multiplies the activation's bsums */
    float d, dm;  /* value = d_x * (d * sum s*q*x - dm * sum m*bsum) */
} ag_kq_unpacked;

/*
 * Q4_K/Q5_K's twelve scale bytes to eight 6-bit scales and eight mins with
 * integer ops (ggml's utmp shuffle): bytes 0-7 the scales, 8-15 the mins.
 */
AG_INLINE __m128i kq_scales_mins(const uint8_t *scales) {
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    uint32_t u[4];
    memcpy(u, scales, 12);
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t m_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = m_lo;
    u[0] &= k1;
    return _mm_loadu_si128((const __m128i *)u);
}

AG_INLINE void kq_scales45(const uint8_t *scales, ag_kq_unpacked *u) {
    __m128i sm = kq_scales_mins(scales);
    /* scale j's byte broadcast over 16 int16 lanes (the high bytes are zero: 6-bit scales) */
    __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    for (int j = 0; j < 8; j++) u->s[j] = _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)(0x0100 + 0x0202 * j)));
    /* each min twice, once per 16-element group of its sub-block */
    u->m = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
}

AG_INLINE void kq_unpack_q4_k(const ag_block_q4_k *b, ag_kq_unpacked *u) {
    const __m256i lo = _mm256_set1_epi8(15);
    for (int g = 0; g < 4; g++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
        u->q[2 * g] = _mm256_and_si256(v, lo);
        u->q[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo);
    }
    kq_scales45(b->scales, u);
    u->d = f16(b->d), u->dm = f16(b->dmin);
}

AG_INLINE void kq_unpack_q5_k(const ag_block_q5_k *b, ag_kq_unpacked *u) {
    const __m256i lo = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    for (int g = 0; g < 4; g++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
        __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), one); /* bit 2g of each byte */
        __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g + 1), one);
        u->q[2 * g] = _mm256_or_si256(_mm256_and_si256(v, lo), _mm256_slli_epi16(h0, 4));
        u->q[2 * g + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), lo), _mm256_slli_epi16(h1, 4));
    }
    kq_scales45(b->scales, u);
    u->d = f16(b->d), u->dm = f16(b->dmin);
}

/* 16 int16 sub-block scales (one per 16 elements) to the chunks' vectors: s_{2k} over lanes 0-7, s_{2k+1} 8-15. */
AG_INLINE void kq_scale_pairs(__m256i sc, ag_kq_unpacked *u) {
    /* the 128-bit half holding both in both halves, then a byte shuffle */
    __m256i half[2] = {_mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc)),
                       _mm256_broadcastsi128_si256(_mm256_extracti128_si256(sc, 1))};
    for (int k = 0; k < 8; k++) {
        short e = (short)((2 * k) % 8);
        u->s[k] = _mm256_shuffle_epi8(half[k / 4], _mm256_setr_m128i(_mm_set1_epi16((short)(0x0100 + 0x0202 * e)),
                                                                     _mm_set1_epi16((short)(0x0100 + 0x0202 * (e + 1)))));
    }
}

/* Q2_K/Q3_K's 2-bit levels: chunk 4h + k is bits 2k of qs[32h .. 32h+31]. */
AG_INLINE void kq_levels2(const uint8_t *qs, ag_kq_unpacked *u) {
    const __m256i three = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
        for (int k = 0; k < 4; k++) u->q[4 * h + k] = _mm256_and_si256(_mm256_srli_epi16(v, 2 * k), three);
    }
}

AG_INLINE void kq_unpack_q2_k(const ag_block_q2_k *b, ag_kq_unpacked *u) {
    kq_levels2(b->qs, u);
    __m256i sm = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    kq_scale_pairs(_mm256_and_si256(sm, _mm256_set1_epi16(15)), u);
    u->m = _mm256_srli_epi16(sm, 4);
    u->d = f16(b->d), u->dm = f16(b->dmin);
}

AG_INLINE void kq_unpack_q3_k(const ag_block_q3_k *b, ag_kq_unpacked *u) {
    kq_levels2(b->qs, u);
    const __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask), one = _mm256_set1_epi8(1);
    for (int k = 0; k < 8; k++) /* the third bit of chunk k is bit k of hmask[l] */
        u->q[k] = _mm256_or_si256(u->q[k], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, k), one), 2));
    /* the sixteen 6-bit scales with integer ops (ggml's aux shuffle): low nibbles, then the high pairs */
    const uint32_t k1 = 0x03030303, k2 = 0x0f0f0f0f;
    uint32_t a[4];
    memcpy(a, b->scales, 12);
    const uint32_t t = a[2];
    a[2] = ((a[0] >> 4) & k2) | (((t >> 4) & k1) << 4);
    a[3] = ((a[1] >> 4) & k2) | (((t >> 6) & k1) << 4);
    a[0] = (a[0] & k2) | ((t & k1) << 4);
    a[1] = (a[1] & k2) | (((t >> 2) & k1) << 4);
    __m256i sc = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)a)), _mm256_set1_epi16(32));
    kq_scale_pairs(sc, u);
    u->m = _mm256_slli_epi16(sc, 2); /* the levels carry +4 */
    u->d = u->dm = f16(b->d);
}

AG_INLINE void kq_unpack_q6_k(const ag_block_q6_k *b, ag_kq_unpacked *u) {
    const __m256i lo = _mm256_set1_epi8(15), three = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        __m256i nib[4] = {_mm256_and_si256(l0, lo), _mm256_and_si256(l1, lo), _mm256_and_si256(_mm256_srli_epi16(l0, 4), lo),
                          _mm256_and_si256(_mm256_srli_epi16(l1, 4), lo)};
        for (int k = 0; k < 4; k++) {
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), three);
            u->q[4 * h + k] = _mm256_or_si256(nib[k], _mm256_slli_epi16(hi, 4));
        }
    }
    __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    kq_scale_pairs(sc, u);
    u->m = _mm256_slli_epi16(sc, 5); /* the levels carry +32 */
    u->d = u->dm = f16(b->d);
}

/* acc + one super-block pair, in the fixed order every path uses. */
AG_INLINE __m256 kq_pair(__m256 acc, const ag_kq_unpacked *u, const ag_block_q8_k *x) {
    __m256i isum = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
        __m256i xq = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * k));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(u->q[k], xq), u->s[k]));
        AG_KEEP(isum);
    }
    __m256i msum = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), u->m);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(x->d * u->d), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(x->d * u->dm), acc);
}

/* Rows, one token: each row's super-blocks unpacked and dotted in turn. */
#define AG_KQ_ROWS(NAME, WB, UNPACK)                                                                                  \
    static void NAME(const void *wv, size_t ws, const void *xv, size_t n, size_t r0, size_t r1, float *y) {           \
        const ag_block_q8_k *x = xv;                                                                                   \
        for (size_t r = r0; r < r1; r++) {                                                                             \
            const WB *w = (const WB *)((const char *)wv + r * ws);                                                     \
            __m256 acc = _mm256_setzero_ps();                                                                          \
            for (size_t b = 0; b < n / AG_QK_K; b++) {                                                                 \
                ag_kq_unpacked u;                                                                                      \
                UNPACK(&w[b], &u);                                                                                     \
                acc = kq_pair(acc, &u, &x[b]);                                                                         \
            }                                                                                                          \
            y[r] = hsum256(acc);                                                                                       \
        }                                                                                                              \
    }

/* R rows x C tokens: each weight super-block unpacked once for the C tokens. */
#define AG_KQ_TILE(NAME, WB, UNPACK)                                                                                  \
    AG_INLINE void NAME(const char *w, size_t ws, const char *x, size_t xs, size_t n, float *y, size_t ldy,            \
                        const int R, const int C) {                                                                    \
        __m256 acc[4][4];                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();                                               \
        for (size_t b = 0; b < n / AG_QK_K; b++)                                                                       \
            for (int r = 0; r < R; r++) {                                                                              \
                ag_kq_unpacked u;                                                                                      \
                UNPACK((const WB *)(w + r * ws) + b, &u);                                                              \
                for (int c = 0; c < C; c++) acc[r][c] = kq_pair(acc[r][c], &u, (const ag_block_q8_k *)(x + c * xs) + b); \
            }                                                                                                          \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < C; c++) y[c * ldy + r] = hsum256(acc[r][c]);                                           \
    }

/* The K-quant products of a variant, tiles of up to 4 rows x CMAX tokens. */
#define AG_KQ_MATMULS(CMAX)                                                                                            \
    AG_KQ_ROWS(rows_q2_k, ag_block_q2_k, kq_unpack_q2_k)                                                               \
    AG_KQ_ROWS(rows_q3_k, ag_block_q3_k, kq_unpack_q3_k)                                                               \
    AG_KQ_ROWS(rows_q4_k, ag_block_q4_k, kq_unpack_q4_k)                                                               \
    AG_KQ_ROWS(rows_q5_k, ag_block_q5_k, kq_unpack_q5_k)                                                               \
    AG_KQ_ROWS(rows_q6_k, ag_block_q6_k, kq_unpack_q6_k)                                                               \
    AG_KQ_TILE(tile_q2_k, ag_block_q2_k, kq_unpack_q2_k)                                                               \
    AG_KQ_TILE(tile_q3_k, ag_block_q3_k, kq_unpack_q3_k)                                                               \
    AG_KQ_TILE(tile_q4_k, ag_block_q4_k, kq_unpack_q4_k)                                                               \
    AG_KQ_TILE(tile_q5_k, ag_block_q5_k, kq_unpack_q5_k)                                                               \
    AG_KQ_TILE(tile_q6_k, ag_block_q6_k, kq_unpack_q6_k)                                                               \
    AG_TILED_MATMUL(matmul_q2_k, tile_q2_k, rows_q2_k, 4, CMAX)                                                        \
    AG_TILED_MATMUL(matmul_q3_k, tile_q3_k, rows_q3_k, 4, CMAX)                                                        \
    AG_TILED_MATMUL(matmul_q4_k, tile_q4_k, rows_q4_k, 4, CMAX)                                                        \
    AG_TILED_MATMUL(matmul_q5_k, tile_q5_k, rows_q5_k, 4, CMAX)                                                        \
    AG_TILED_MATMUL(matmul_q6_k, tile_q6_k, rows_q6_k, 4, CMAX)

/* Q5_0's 32 levels 0..31 (value q - 16): Q4_0's nibbles plus the fifth bits of qh. */
AG_INLINE __m256i q5_0_levels(const ag_block_q5_0 *b) {
    __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
    __m256i v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(15));
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    /* byte i takes bit i of qh: broadcast, pick each byte's source byte, test its bit */
    __m256i bits = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
                                       _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
    __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bits, sel), sel), _mm256_set1_epi8(16));
    return _mm256_or_si256(v, hi);
}

/* IQ4_NL's 32 grid values as signed bytes: the nibbles looked up in the 16-entry table. */
AG_INLINE __m256i iq4_nl_values(const ag_block_iq4_nl *b) {
    __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
    __m256i idx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(15));
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ag_iq4nl_values)), idx);
}

/*
 * The walk of the repacked products (repack.c): per token block of 64, per
 * 16-row group, the token tiles TILE(group, n, x, xs, y, ldy, C, first) of up to
 * CMAX tokens (a quantized tile finds token c's sides with AG_R16_SIDE;
 * first: the block's first tile of the group, which reads it from memory);
 * a group's weights (9-48 KB at the model sizes we run) stay in
 * L1/L2 while the tiles of its token block pass.  A single token is the
 * same walk with C = 1 (one sequential stream through the groups) unless
 * SINGLE hands it to a path of its own.
 */
#define AG_R16_TILE_CASE(TILE, C)                                                                                      \
    case C: TILE(g, n, xp, xs, yp, ldy, C, t == t0); break;
#define AG_R16_CASES_1(TILE) AG_R16_TILE_CASE(TILE, 1)
#define AG_R16_CASES_2(TILE) AG_R16_CASES_1(TILE) AG_R16_TILE_CASE(TILE, 2)
#define AG_R16_CASES_3(TILE) AG_R16_CASES_2(TILE) AG_R16_TILE_CASE(TILE, 3)
#define AG_R16_CASES_4(TILE) AG_R16_CASES_3(TILE) AG_R16_TILE_CASE(TILE, 4)
#define AG_R16_CASES_5(TILE) AG_R16_CASES_4(TILE) AG_R16_TILE_CASE(TILE, 5)
#define AG_R16_CASES_6(TILE) AG_R16_CASES_5(TILE) AG_R16_TILE_CASE(TILE, 6)
#define AG_R16_CASES_7(TILE) AG_R16_CASES_6(TILE) AG_R16_TILE_CASE(TILE, 7)
#define AG_R16_CASES_8(TILE) AG_R16_CASES_7(TILE) AG_R16_TILE_CASE(TILE, 8)
#define AG_R16_CASES_9(TILE) AG_R16_CASES_8(TILE) AG_R16_TILE_CASE(TILE, 9)
#define AG_R16_CASES_10(TILE) AG_R16_CASES_9(TILE) AG_R16_TILE_CASE(TILE, 10)
#define AG_R16_CASES_11(TILE) AG_R16_CASES_10(TILE) AG_R16_TILE_CASE(TILE, 11)
#define AG_R16_CASES_12(TILE) AG_R16_CASES_11(TILE) AG_R16_TILE_CASE(TILE, 12)
/*
 * CASES is AG_R16_CASES_<CMAX>, CMAX the tile's most tokens; SINGLE is a
 * statement run first, AG_R16_SINGLE(ROWS) to hand single tokens to
 * ROWS(w, gs, x, n, r0, r1, y), or (void)0.
 */
#define AG_R16_SINGLE(ROWS)                                                                                            \
    if (T == 1) {                                                                                                      \
        ROWS(w, gs, x, n, r0, r1, y);                                                                                  \
        return;                                                                                                        \
    }
#define AG_R16_WALK(NAME, TILE, CMAX, CASES, SINGLE)                                                                   \
    static void NAME(const void *w, size_t gs, const void *x, size_t xs, size_t n, size_t r0, size_t r1, size_t T,    \
                     float *y, size_t ldy) {                                                                           \
        SINGLE;                                                                                                        \
        for (size_t t0 = 0; t0 < T; t0 += AG_TILE_TOKEN_BLOCK) {                                                       \
            size_t t1 = T - t0 < AG_TILE_TOKEN_BLOCK ? T : t0 + AG_TILE_TOKEN_BLOCK;                                   \
            for (size_t r = r0; r < r1; r += AG_REPACK_ROWS) {                                                         \
                const char *g = (const char *)w + r / AG_REPACK_ROWS * gs;                                             \
                for (size_t t = t0; t < t1; t += (CMAX)) {                                                             \
                    const char *xp = (const char *)x + t * xs;                                                         \
                    float *yp = y + t * ldy + r;                                                                       \
                    switch (t1 - t < (CMAX) ? (int)(t1 - t) : (CMAX)) { CASES(TILE) }                                  \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }

/*
 * A single token against repacked F16: GROUPS(group, gs, x, n, y, NG)
 * computes NG consecutive groups at once (independent FMA chains), the
 * leftover groups one at a time.
 */
#define AG_R16_ROWS_F16(NAME, GROUPS, NG)                                                                              \
    static void NAME(const void *w, size_t gs, const void *x, size_t n, size_t r0, size_t r1, float *y) {             \
        size_t r = r0;                                                                                                 \
        for (; r + (NG) * AG_REPACK_ROWS <= r1; r += (NG) * AG_REPACK_ROWS)                                            \
            GROUPS((const char *)w + r / AG_REPACK_ROWS * gs, gs, x, n, y + r, NG);                                    \
        for (; r < r1; r += AG_REPACK_ROWS) GROUPS((const char *)w + r / AG_REPACK_ROWS * gs, gs, x, n, y + r, 1);     \
    }

/* Token c's side of block b, in a quantized tile. */
#define AG_R16_SIDE(c, b) (((const ag_kern_act_side *)(x + (c) * xs + ag_kern_act_side_offset(n)))[b])

/* Four activation bytes from p, broadcast to every 32-bit lane by the caller's set1. */
AG_INLINE int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

void ag_kern_quantize_q8_0_avx2(const float *x, ag_block_q8_0 *y, size_t n);
void ag_kern_quantize_q8_k_avx2(const float *x, ag_block_q8_k *y, size_t n);
void ag_kern_f32_to_f16_avx2(const float *x, void *y, size_t n);
void ag_kern_matmul_q4_k_r16_avx2(const void *w, size_t gs, const void *x, size_t xs, size_t n, size_t r0, size_t r1,
                                  size_t T, float *y, size_t ldy);
void ag_kern_matmul_q5_k_r16_avx2(const void *w, size_t gs, const void *x, size_t xs, size_t n, size_t r0, size_t r1,
                                  size_t T, float *y, size_t ldy);
void ag_kern_matmul_q6_k_r16_avx2(const void *w, size_t gs, const void *x, size_t xs, size_t n, size_t r0, size_t r1,
                                  size_t T, float *y, size_t ldy);
void ag_kern_matmul_q3_k_r16_avx2(const void *w, size_t gs, const void *x, size_t xs, size_t n, size_t r0, size_t r1,
                                  size_t T, float *y, size_t ldy);
void ag_kern_matmul_q2_k_r16_avx2(const void *w, size_t gs, const void *x, size_t xs, size_t n, size_t r0, size_t r1,
                                  size_t T, float *y, size_t ldy);
float ag_kern_softmax_exp_avx2(float *row, int n, float mx);
void ag_kern_silu_mul_avx2(float *g, const float *u, size_t n);
void ag_kern_attn_pv_f16_avx2(float *o, const float *p, const void *v, size_t vstride, size_t d, int n);
void ag_kern_attn_pv_avx2(float *o, size_t ldo, const float *p, size_t ldp, const float *v, size_t d, const int *n,
                          size_t rows);

#endif
