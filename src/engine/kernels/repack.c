/*
 * repack.c - F16, Q8_0, Q4_0 and the K-quants' weights rewritten at load into
 * 16-row groups, and the generic twins of their products.
 *
 * Why: a product that walks a file's rows in place needs, per 32-element
 * block and per (row, token) pair, one dot product of 32 bytes, a horizontal
 * reduction at the end and a float multiply-add per block; on AVX-512 that
 * keeps the int8 units about a third busy.  With 16 rows' blocks side by
 * side, one 64-byte load holds the same 4 bytes of 16 rows, so one vpdpbusd
 * against 4 broadcast activation bytes advances 16 rows at once, the 16
 * int32 lanes ARE the 16 rows (no reduction), and a block's scales are one
 * vector: per block and token, 8 dot-product instructions and one convert,
 * one multiply, one FMA for 16 rows.  llama.cpp does the same for Q4_0
 * (block_q4_0x8, 8 rows, ggml-cpu/repack.cpp); ours is 16 rows so a group is
 * exactly one zmm of results.
 *
 * A group of 16 rows of n elements (nb = n / 32 blocks), 64-byte aligned:
 *   levels: nb blocks, each K chunks of 64 bytes (Q8_0: K = 8, Q4_0: K = 4);
 *     byte 4r + i of chunk k of block b is row r's qs[4k + i] of block b.
 *     Q8_0 bytes are stored as unsigned levels q + 128 (so vpdpbusd, which
 *     multiplies unsigned by signed bytes, takes them as they are); Q4_0
 *     bytes are the file's, two nibbles 0..15 for q + 8: chunk k's low
 *     nibbles are elements 4k..4k+3, its high nibbles 16+4k..16+4k+3.
 *   scales: then nb x 16 fp16, the block's scale of rows 0..15;
 *   padding to a multiple of 64 bytes.
 *
 * F16 the same way, element by element: a group is n steps of 32 bytes, step
 * k holding element k of rows 0..15, so one 16-lane convert gives a vector
 * of 16 rows' weights and each token's x[k] is one broadcast FMA into the
 * 16 rows' accumulators (the register-blocked GEMM's "rows as vector
 * lanes, tokens broadcast", as BLIS's sgemm microkernels).  Row r's result
 * for one token is acc = fma(w_rk, x_k, acc) for k = 0..n-1 in order.
 *
 * The quantized result of row r for one token is, block by block in order,
 *   acc = fma((float)isum_b, d_w * d_x, acc),   isum_b = sum_i q_i * x_i
 * with q the signed level, isum_b exact in int32.  Every variant computes
 * exactly that per lane, so results are bit-identical across variants and
 * across batch sizes (the AVX-512 kernel starts isum at -offset * sum(x)
 * and adds unsigned levels times x: the same integer).
 *
 * Q4_K (super-blocks of 256: 8 sub-blocks of 32 with 6-bit scales and
 * mins) per super-block of the 16 rows, AG_R16_Q4K_SB bytes:
 *   levels: 4 chunks j of 64 elements, each 8 pieces k of 64 bytes; byte
 *     4r + i of piece (j, k) is row r's qs[32j + 4k + i], whose low nibble
 *     is element 64j + 4k + i (sub-block 2j) and high nibble element
 *     64j + 32 + 4k + i (sub-block 2j + 1);
 *   scales: 8 sub-blocks x 16 rows, a byte each (6 bits);
 *   mins: 4 pairs p x 16 rows of two bytes m[2p], m[2p+1], which widen to
 *     the int16 pair a pmaddwd takes against the token's sub-block sums
 *     two at a time;
 *   d, dmin: 16 fp16 each, the file's.
 * That is 2368 bytes for the file's 16 x 144: 3% more (a layout with the
 * scales already widened to int32 took 28% more, and one with d and dmin as
 * floats 6% more, which decode, streaming the weights every token, paid
 * for).
 * Row r's result for one token is, super-block by super-block in order,
 *   acc = fma((float)isum, d_w * d_x, acc); acc = fma(-(float)msum, dmin_w * d_x, acc)
 *   isum = sum_s sc_s * sum_{e in s} q_e x_e,  msum = sum_s m_s * sum_{e in s} x_e
 * with the levels q 0..15 and both sums exact in int32.
 *
 * Q5_K (Q4_K with a fifth bit per element: levels 0..31) per super-block
 * of the 16 rows, AG_R16_Q5K_SB bytes: first the fifth bits, 8 pieces k of
 * 64 bytes, byte 4r + i of piece k row r's qh[4k + i], whose bit j is
 * element 32j + 4k + i's (sub-block j's); then a Q4_K super-block's bytes.
 * The bits come first so a token's product, which needs piece k with the
 * levels of every chunk j, reads them beside chunk 0 (from L1 after that).
 * 2880 bytes for the file's 16 x 176: 2% more.  Row r's result is Q4_K's
 * with the levels 0..31.
 *
 * Q6_K (super-blocks of 256: 16 groups of 16 with signed 8-bit scales, a
 * 6-bit level q - 32 each, the low 4 bits in ql and the high 2 in qh) per
 * super-block of the 16 rows, AG_R16_Q6K_SB bytes, the file's 16 x 210:
 *   scales: 8 pairs p x 16 rows of two bytes sc[2p], sc[2p+1], which widen
 *     to the int16 pair a pmaddwd takes against the token's group sums two
 *     at a time (and, one byte repeated, to a row's scale in both halves);
 *     first, because the levels' products read them from the start (after
 *     the levels, the one jump back in each super-block cost a single
 *     stream about a quarter of its bandwidth);
 *   low nibbles: 2 halves m of 128 elements, each 16 pieces k of 64 bytes;
 *     byte 4r + i of piece (m, k) is row r's ql[64m + 4k + i] (ggml's: for
 *     k < 8 its low nibble is element 128m + 4k + i and its high nibble
 *     element 128m + 64 + 4k + i; for k >= 8 the same plus 32);
 *   high bits: per half 8 pieces k of 64 bytes; byte 4r + i of piece (m, k)
 *     is row r's qh[32m + 4k + i], bits 2j..2j+1 the high bits of element
 *     128m + 32j + 4k + i;
 *   the pieces in chunks of what makes elements 4k..4k+7 (+32j) of half m,
 *     k = 0, 2, 4, 6: low nibbles (m, k), (m, k+1), (m, k+8), (m, k+9), high
 *     bits (m, k), (m, k+1), so a token's product reads the super-block
 *     front to back (one stream; jumping between the planes measured 15%
 *     slower in decode, which streams the weights);
 *   d: 16 fp16, the file's.
 * No byte more than the file (a layout with levels as whole bytes took 30%
 * more, which decode, streaming the weights, would pay for); the kernels
 * put a level together from its nibble and its two bits.
 * Row r's result for one token is, super-block by super-block in order,
 *   acc = fma((float)(isum - 32 * msum), d_w * d_x, acc)
 *   isum = sum_g sc_g * sum_{e in g} q_e x_e,  msum = sum_g sc_g * sum_{e in g} x_e
 * with the levels q 0..63 (the -32 moved into msum) and both exact in int32.
 *
 * Q3_K (super-blocks of 256: 16 groups of 16 with 6-bit scales sc - 32, a
 * 3-bit level q - 4 each, the low 2 bits in qs and the third in hmask) per
 * super-block of the 16 rows, AG_R16_Q3K_SB bytes:
 *   scales: as Q6_K's, the signed scales sc - 32 (first, for the same reason);
 *   high bits: 8 pieces k of 64 bytes; byte 4r + i of piece k is row r's
 *     hmask[4k + i], whose bit 4m + j is element 128m + 32j + 4k + i's (so a
 *     token's product reads them with the first levels, then from L1, as
 *     Q5_K's fifth bits);
 *   low bits: 2 halves m of 8 pieces k of 64 bytes; byte 4r + i of piece
 *     (m, k) is row r's qs[32m + 4k + i], whose bits 2j..2j+1 are element
 *     128m + 32j + 4k + i's;
 *   d: 16 fp16, the file's.
 * 1824 bytes for the file's 16 x 110: 4% more (the scales unpacked to a
 * byte each).  Row r's result is Q6_K's with the levels q 0..7 and -4 for -32.
 *
 * Q2_K (super-blocks of 256: 16 groups of 16, each with a byte scale | min
 * << 4, 2-bit levels packed as Q3_K's low bits, d and dmin) per super-block
 * of the 16 rows, AG_R16_Q2K_SB bytes: the scale bytes where Q6_K's scales
 * are, Q3_K's 16 pieces of levels, then d and dmin (16 fp16 each): the
 * file's 16 x 84, no byte more.  Row r's result is Q4_K's two terms,
 *   acc = fma((float)isum, d_w * d_x, acc); acc = fma(-(float)msum, dmin_w * d_x, acc)
 *   isum = sum_g sc_g * sum_{e in g} q_e x_e,  msum = sum_g m_g * sum_{e in g} x_e
 * over the 16 groups, levels 0..3.
 */
#include "engine/kernels/kernels.h"

#include <math.h>
#include <string.h>

int ag_wtype_repacked(ag_wtype w) {
    switch (w) {
    case AG_W_Q8_0: return AG_W_Q8_0_R16;
    case AG_W_Q4_0: return AG_W_Q4_0_R16;
    case AG_W_F16: return AG_W_F16_R16;
    case AG_W_Q4_K: return AG_W_Q4_K_R16;
    case AG_W_Q5_K: return AG_W_Q5_K_R16;
    case AG_W_Q6_K: return AG_W_Q6_K_R16;
    case AG_W_Q3_K: return AG_W_Q3_K_R16;
    case AG_W_Q2_K: return AG_W_Q2_K_R16;
    default: return -1;
    }
}

/* Bytes of one block's levels for all 16 rows. */
static size_t levels_bytes(ag_wtype r) { return r == AG_W_Q8_0_R16 ? 16 * 32 : 16 * 16; }

size_t ag_kern_repack_group_bytes(ag_wtype r, size_t n) {
    if (r == AG_W_F16_R16) return (n * 16 * sizeof(uint16_t) + 63) / 64 * 64;
    if (r == AG_W_Q4_K_R16) return n / AG_QK_K * AG_R16_Q4K_SB;
    if (r == AG_W_Q5_K_R16) return n / AG_QK_K * AG_R16_Q5K_SB;
    if (r == AG_W_Q6_K_R16) return (n / AG_QK_K * AG_R16_Q6K_SB + 63) / 64 * 64;
    if (r == AG_W_Q3_K_R16) return (n / AG_QK_K * AG_R16_Q3K_SB + 63) / 64 * 64;
    if (r == AG_W_Q2_K_R16) return n / AG_QK_K * AG_R16_Q2K_SB;
    size_t nb = n / 32;
    return (nb * (levels_bytes(r) + 16 * sizeof(uint16_t)) + 63) / 64 * 64;
}

static void repack_f16(const void *src, size_t src_stride, size_t rows, size_t n, void *dst) {
    const size_t gb = ag_kern_repack_group_bytes(AG_W_F16_R16, n);
    for (size_t g = 0; g < rows / AG_REPACK_ROWS; g++) {
        uint16_t *G = (uint16_t *)((char *)dst + g * gb);
        memset((char *)G + n * 32, 0, gb - n * 32);
        for (size_t i = 0; i < AG_REPACK_ROWS; i++) {
            const uint16_t *row = (const uint16_t *)((const char *)src + (g * AG_REPACK_ROWS + i) * src_stride);
            for (size_t k = 0; k < n; k++) G[k * 16 + i] = row[k];
        }
    }
}

/* Q4_K or Q5_K (w), whose blocks share everything but Q5_K's fifth bits. */
static void repack_k45(ag_wtype w, const void *src, size_t src_stride, size_t rows, size_t n, void *dst) {
    const bool q5 = w == AG_W_Q5_K;
    const size_t nsb = n / AG_QK_K, gb = ag_kern_repack_group_bytes((ag_wtype)ag_wtype_repacked(w), n);
    const size_t o = q5 ? AG_R16_Q5K_QH : 0, bb = q5 ? sizeof(ag_block_q5_k) : sizeof(ag_block_q4_k);
    for (size_t g = 0; g < rows / AG_REPACK_ROWS; g++)
        for (size_t i = 0; i < AG_REPACK_ROWS; i++)
            for (size_t s = 0; s < nsb; s++) {
                const char *blk = (const char *)src + (g * AG_REPACK_ROWS + i) * src_stride + s * bb;
                const ag_block_q4_k *q4 = (const ag_block_q4_k *)blk;
                const ag_block_q5_k *q5b = (const ag_block_q5_k *)blk;
                const uint8_t *qs = q5 ? q5b->qs : q4->qs, *scales = q5 ? q5b->scales : q4->scales;
                uint8_t *S = (uint8_t *)dst + g * gb + s * (o + AG_R16_Q4K_SB);
                if (q5)
                    for (size_t k = 0; k < 8; k++) memcpy(S + k * 64 + 4 * i, q5b->qh + 4 * k, 4);
                S += o;
                for (size_t k = 0; k < 32; k++) memcpy(S + k * 64 + 4 * i, qs + 4 * k, 4); /* piece (j, k) = 8j + k */
                uint8_t sc[8], m[8];
                for (int j = 0; j < 8; j++) ag_q4k_scale_min(j, scales, &sc[j], &m[j]);
                for (int j = 0; j < 8; j++) S[AG_R16_Q4K_SCALES + j * 16 + i] = sc[j];
                for (int j = 0; j < 8; j++) S[AG_R16_Q4K_MINS + j / 2 * 32 + 2 * i + j % 2] = m[j];
                uint16_t *d = (uint16_t *)(S + AG_R16_Q4K_D);
                d[i] = q5 ? q5b->d : q4->d, d[16 + i] = q5 ? q5b->dmin : q4->dmin;
            }
}

/* The bytes of one repacked super-block of Q6_K, Q3_K or Q2_K (w). */
static size_t k36_sb_bytes(ag_wtype w) {
    return w == AG_W_Q2_K ? AG_R16_Q2K_SB : w == AG_W_Q3_K ? AG_R16_Q3K_SB : AG_R16_Q6K_SB;
}

/* Q6_K, Q3_K or Q2_K (w): a scale byte per group and row first, then the level pieces, then d (and Q2_K's dmin). */
static void repack_k36(ag_wtype w, const void *src, size_t src_stride, size_t rows, size_t n, void *dst) {
    const size_t nsb = n / AG_QK_K, sb = k36_sb_bytes(w);
    const size_t gb = ag_kern_repack_group_bytes((ag_wtype)ag_wtype_repacked(w), n);
    for (size_t g = 0; g < rows / AG_REPACK_ROWS; g++) {
        memset((uint8_t *)dst + g * gb + nsb * sb, 0, gb - nsb * sb);
        for (size_t i = 0; i < AG_REPACK_ROWS; i++) {
            const char *row = (const char *)src + (g * AG_REPACK_ROWS + i) * src_stride;
            for (size_t s = 0; s < nsb; s++) {
                uint8_t *S = (uint8_t *)dst + g * gb + s * sb;
                uint8_t sc[16];
                uint16_t *d;
                if (w == AG_W_Q2_K) {
                    const ag_block_q2_k *q = (const ag_block_q2_k *)row + s;
                    for (int k = 0; k < 16; k++) memcpy(S + AG_R16_Q2K_QL + k * 64 + 4 * i, q->qs + 4 * k, 4);
                    memcpy(sc, q->scales, 16);
                    d = (uint16_t *)(S + AG_R16_Q2K_D);
                    d[i] = q->d, d[16 + i] = q->dmin;
                } else if (w == AG_W_Q3_K) {
                    const ag_block_q3_k *q = (const ag_block_q3_k *)row + s;
                    for (int k = 0; k < 8; k++) memcpy(S + AG_R16_Q3K_QH + k * 64 + 4 * i, q->hmask + 4 * k, 4);
                    for (int k = 0; k < 16; k++) memcpy(S + AG_R16_Q3K_QL + k * 64 + 4 * i, q->qs + 4 * k, 4);
                    for (int j = 0; j < 16; j++) sc[j] = (uint8_t)ag_q3k_scale(j, q->scales);
                    d = (uint16_t *)(S + AG_R16_Q3K_D);
                    d[i] = q->d;
                } else {
                    const ag_block_q6_k *q = (const ag_block_q6_k *)row + s;
                    for (int m = 0; m < 2; m++)
                        for (int k = 0; k < 16; k++) memcpy(S + ag_r16_q6k_ql(m, k) + 4 * i, q->ql + 64 * m + 4 * k, 4);
                    for (int m = 0; m < 2; m++)
                        for (int k = 0; k < 8; k++) memcpy(S + ag_r16_q6k_qh(m, k) + 4 * i, q->qh + 32 * m + 4 * k, 4);
                    memcpy(sc, q->scales, 16);
                    d = (uint16_t *)(S + AG_R16_Q6K_D);
                    d[i] = q->d;
                }
                for (int j = 0; j < 16; j++) S[AG_R16_Q6K_SCALES + j / 2 * 32 + 2 * i + j % 2] = sc[j];
            }
        }
    }
}

void ag_kern_repack(ag_wtype w, const void *src, size_t src_stride, size_t rows, size_t n, void *dst) {
    if (w == AG_W_F16) {
        repack_f16(src, src_stride, rows, n, dst);
        return;
    }
    if (w == AG_W_Q4_K || w == AG_W_Q5_K) {
        repack_k45(w, src, src_stride, rows, n, dst);
        return;
    }
    if (w == AG_W_Q6_K || w == AG_W_Q3_K || w == AG_W_Q2_K) {
        repack_k36(w, src, src_stride, rows, n, dst);
        return;
    }
    const ag_wtype r = (ag_wtype)ag_wtype_repacked(w);
    const size_t nb = n / 32, gb = ag_kern_repack_group_bytes(r, n), lb = levels_bytes(r);
    for (size_t g = 0; g < rows / AG_REPACK_ROWS; g++) {
        uint8_t *G = (uint8_t *)dst + g * gb;
        uint16_t *d = (uint16_t *)(G + nb * lb);
        memset(G + nb * (lb + 32), 0, gb - nb * (lb + 32));
        for (size_t i = 0; i < AG_REPACK_ROWS; i++) {
            const char *row = (const char *)src + (g * AG_REPACK_ROWS + i) * src_stride;
            for (size_t b = 0; b < nb; b++) {
                uint8_t *L = G + b * lb;
                if (r == AG_W_Q8_0_R16) {
                    const ag_block_q8_0 *q = (const ag_block_q8_0 *)row + b;
                    for (size_t k = 0; k < 8; k++)
                        for (size_t j = 0; j < 4; j++) L[k * 64 + 4 * i + j] = (uint8_t)(q->qs[4 * k + j] + 128);
                    d[b * 16 + i] = q->d;
                } else {
                    const ag_block_q4_0 *q = (const ag_block_q4_0 *)row + b;
                    for (size_t k = 0; k < 4; k++) memcpy(L + k * 64 + 4 * i, q->qs + 4 * k, 4);
                    d[b * 16 + i] = q->d;
                }
            }
        }
    }
}

/* The signed levels of block b of group G, row by row: lv[i][e] is row i's element e. */
static void unpack_levels(ag_wtype r, const uint8_t *G, size_t b, int8_t lv[AG_REPACK_ROWS][32]) {
    const uint8_t *L = G + b * levels_bytes(r);
    for (size_t i = 0; i < AG_REPACK_ROWS; i++)
        for (size_t e = 0; e < 32; e++) {
            if (r == AG_W_Q8_0_R16) {
                lv[i][e] = (int8_t)(L[(e / 4) * 64 + 4 * i + e % 4] - 128);
            } else {
                uint8_t v = L[((e % 16) / 4) * 64 + 4 * i + e % 4];
                lv[i][e] = (int8_t)((e < 16 ? v & 15 : v >> 4) - 8);
            }
        }
}

/* Block by block, each row's result accumulates in y itself: the same fmaf chain as one float accumulator. */
static void matmul_r16_generic(ag_wtype r, const void *w, size_t gs, const void *x, size_t xs, size_t n, size_t r0,
                               size_t r1, size_t T, float *y, size_t ldy) {
    const size_t nb = n / 32;
    int8_t lv[AG_REPACK_ROWS][32];
    for (size_t g = r0 / AG_REPACK_ROWS; g < r1 / AG_REPACK_ROWS; g++) {
        const uint8_t *G = (const uint8_t *)w + g * gs;
        const uint16_t *d = (const uint16_t *)(G + nb * levels_bytes(r));
        for (size_t b = 0; b < nb; b++) {
            unpack_levels(r, G, b, lv);
            for (size_t t = 0; t < T; t++) {
                const ag_block_q8_0 *xb = (const ag_block_q8_0 *)((const char *)x + t * xs) + b;
                float *yt = y + t * ldy + g * AG_REPACK_ROWS;
                for (size_t i = 0; i < AG_REPACK_ROWS; i++) {
                    int32_t isum = 0;
                    for (size_t e = 0; e < 32; e++) isum += lv[i][e] * xb->qs[e];
                    const float scale = ag_f16_to_f32(d[b * 16 + i]) * ag_f16_to_f32(xb->d);
                    yt[i] = fmaf((float)isum, scale, b == 0 ? 0.0f : yt[i]);
                }
            }
        }
    }
}

void ag_kern_matmul_f16_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                    size_t r0, size_t r1, size_t T, float *y, size_t ldy) {
    for (size_t g = r0 / AG_REPACK_ROWS; g < r1 / AG_REPACK_ROWS; g++) {
        const uint16_t *G = (const uint16_t *)((const char *)w + g * w_stride);
        for (size_t t = 0; t < T; t++) {
            const float *xt = (const float *)((const char *)x + t * x_stride);
            for (size_t i = 0; i < AG_REPACK_ROWS; i++) {
                float acc = 0;
                for (size_t k = 0; k < n; k++) acc = fmaf(ag_f16_to_f32(G[k * 16 + i]), xt[k], acc);
                y[t * ldy + g * AG_REPACK_ROWS + i] = acc;
            }
        }
    }
}

/* One super-block of a repacked K-quant group for row i and one token: acc plus its terms, in the layout's order. */
typedef float (*r16k_block_fn)(const uint8_t *S, size_t i, const ag_block_q8_k *xb, float acc);

/* The K-quant twins' walk: each (group, token, row) over its super-blocks (sb_bytes each) in order. */
static void matmul_r16k_generic(size_t sb_bytes, r16k_block_fn block, const void *w, size_t w_stride, const void *x,
                                size_t x_stride, size_t n, size_t r0, size_t r1, size_t T, float *y, size_t ldy) {
    for (size_t g = r0 / AG_REPACK_ROWS; g < r1 / AG_REPACK_ROWS; g++)
        for (size_t t = 0; t < T; t++)
            for (size_t i = 0; i < AG_REPACK_ROWS; i++) {
                float acc = 0;
                for (size_t s = 0; s < n / AG_QK_K; s++)
                    acc = block((const uint8_t *)w + g * w_stride + s * sb_bytes, i,
                                (const ag_block_q8_k *)((const char *)x + t * x_stride) + s, acc);
                y[t * ldy + g * AG_REPACK_ROWS + i] = acc;
            }
}

/* ag_kern_matmul_<T>_r16_generic: the walk over super-blocks of SB bytes, each one's terms CALL (of S, i, xb, acc). */
#define R16K_TWIN(T, SB, CALL)                                                                                         \
    static float T##_r16_block(const uint8_t *S, size_t i, const ag_block_q8_k *xb, float acc) { return CALL; }       \
    void ag_kern_matmul_##T##_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,    \
                                          size_t r0, size_t r1, size_t T_, float *y, size_t ldy) {                     \
        matmul_r16k_generic(SB, T##_r16_block, w, w_stride, x, x_stride, n, r0, r1, T_, y, ldy);                       \
    }

/* A Q4_K super-block (Q5_K's after its fifth bits at S - AG_R16_Q5K_QH when q5). */
static float k45_r16_block(const uint8_t *S, size_t i, const ag_block_q8_k *xb, float acc, bool q5) {
    const uint16_t *d = (const uint16_t *)(S + AG_R16_Q4K_D);
    int32_t isum = 0, msum = 0;
    for (int sb = 0; sb < 8; sb++) {
        int32_t p = 0;
        for (int e = 0; e < 32; e++) {
            const int j = sb / 2, k = e / 4; /* element 64j + 32 (sb & 1) + 4k + e % 4 */
            const uint8_t v = S[(j * 8 + k) * 64 + 4 * i + e % 4];
            const int fifth = q5 ? (S[-AG_R16_Q5K_QH + k * 64 + 4 * i + e % 4] >> sb & 1) << 4 : 0;
            p += ((sb & 1 ? v >> 4 : v & 15) | fifth) * xb->qs[32 * sb + e];
        }
        isum += S[AG_R16_Q4K_SCALES + sb * 16 + i] * p;
        msum += S[AG_R16_Q4K_MINS + sb / 2 * 32 + 2 * i + sb % 2] * (xb->bsums[2 * sb] + xb->bsums[2 * sb + 1]);
    }
    acc = fmaf((float)isum, ag_f16_to_f32(d[i]) * xb->d, acc);
    return fmaf(-(float)msum, ag_f16_to_f32(d[16 + i]) * xb->d, acc);
}
R16K_TWIN(q4_k, AG_R16_Q4K_SB, k45_r16_block(S, i, xb, acc, false))
R16K_TWIN(q5_k, AG_R16_Q5K_SB, k45_r16_block(S + AG_R16_Q5K_QH, i, xb, acc, true))

/* Level (0..63) of element e (0..255) of row i in a repacked Q6_K super-block S. */
static int q6_level_r16(const uint8_t *S, size_t i, int e) {
    const int m = e / 128, j = (e % 128) / 32, l = e % 32; /* ggml's l: ql byte l (+32 for odd j), qh byte l */
    const int k = l / 4 + (j & 1) * 8;
    const uint8_t v = S[ag_r16_q6k_ql(m, k) + 4 * i + l % 4];
    const uint8_t h = S[ag_r16_q6k_qh(m, l / 4) + 4 * i + l % 4];
    return (j < 2 ? v & 15 : v >> 4) | ((h >> (2 * j)) & 3) << 4;
}

/* Level of element e of row i in a repacked Q3_K (0..7, the file's q + 4) or Q2_K (0..3) super-block S. */
static int q23_level_r16(const uint8_t *S, size_t i, int e, bool q3) {
    const int m = e / 128, j = (e % 128) / 32, l = e % 32;
    const uint8_t v = S[(q3 ? AG_R16_Q3K_QL : AG_R16_Q2K_QL) + (8 * m + l / 4) * 64 + 4 * i + l % 4];
    const int hi = q3 ? (S[AG_R16_Q3K_QH + (l / 4) * 64 + 4 * i + l % 4] >> (4 * m + j) & 1) << 2 : 0;
    return (v >> (2 * j) & 3) | hi;
}

/*
 * A Q6_K, Q3_K or Q2_K (K = 6, 3, 2) super-block: a scale per 16 elements.
 * Q6_K and Q3_K: signed scales, levels offset by 32 (4), one d; Q2_K:
 * scale | min << 4 and Q4_K's two terms.
 */
static float k36_r16_block(const uint8_t *S, size_t i, const ag_block_q8_k *xb, float acc, int K) {
    int32_t isum = 0, msum = 0;
    for (int q = 0; q < 16; q++) {
        int32_t p = 0;
        for (int e = 16 * q; e < 16 * q + 16; e++) p += (K == 6 ? q6_level_r16(S, i, e) : q23_level_r16(S, i, e, K == 3)) * xb->qs[e];
        const uint8_t b = S[AG_R16_Q6K_SCALES + q / 2 * 32 + 2 * i + q % 2];
        const int sc = K == 2 ? b & 15 : (int8_t)b;
        isum += sc * p;
        msum += (K == 2 ? b >> 4 : sc) * xb->bsums[q];
    }
    const uint16_t *d = (const uint16_t *)(S + (K == 2 ? AG_R16_Q2K_D : K == 3 ? AG_R16_Q3K_D : AG_R16_Q6K_D));
    if (K == 2) {
        acc = fmaf((float)isum, ag_f16_to_f32(d[i]) * xb->d, acc);
        return fmaf(-(float)msum, ag_f16_to_f32(d[16 + i]) * xb->d, acc);
    }
    return fmaf((float)(isum - (K == 3 ? 4 : 32) * msum), ag_f16_to_f32(d[i]) * xb->d, acc);
}
R16K_TWIN(q6_k, AG_R16_Q6K_SB, k36_r16_block(S, i, xb, acc, 6))
R16K_TWIN(q3_k, AG_R16_Q3K_SB, k36_r16_block(S, i, xb, acc, 3))
R16K_TWIN(q2_k, AG_R16_Q2K_SB, k36_r16_block(S, i, xb, acc, 2))

void ag_kern_matmul_q8_0_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                     size_t r0, size_t r1, size_t T, float *y, size_t ldy) {
    matmul_r16_generic(AG_W_Q8_0_R16, w, w_stride, x, x_stride, n, r0, r1, T, y, ldy);
}

void ag_kern_matmul_q4_0_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                     size_t r0, size_t r1, size_t T, float *y, size_t ldy) {
    matmul_r16_generic(AG_W_Q4_0_R16, w, w_stride, x, x_stride, n, r0, r1, T, y, ldy);
}
