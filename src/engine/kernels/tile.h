/*
 * tile.h - the loop nest the SIMD variants share for y = W . x over a batch.
 *
 * A variant writes one register-tile function TILE(w, ws, x, xs, n, y, ldy,
 * R, C) computing R weight rows x C activation rows with R*C accumulators,
 * always inlined so the constant R and C unroll into registers.  This header
 * walks the product in token blocks (activations stay in L2 while a block of
 * weight rows streams past) and dispatches the edge tiles to the matching
 * constant instance.  RMAX and CMAX are at most 4.
 *
 * A single token (decode) takes another path: ROWS(w, ws, x, n, r0, r1, y)
 * computes y[r] row by row, reading the matrix front to back as one
 * sequential stream (AG_ROWS_OF(ROW) makes one from a one-row dot product).
 * Tiles of several rows would read several short streams at once (a
 * 1024-element F16 row is only 32 cache lines), which the hardware
 * prefetchers do not follow, and decode is bound by exactly that stream.
 */
#ifndef AG_ENGINE_KERNELS_TILE_H
#define AG_ENGINE_KERNELS_TILE_H

#include "engine/kernels/kernels.h"

#include <stddef.h>

#define AG_TILE_TOKEN_BLOCK 64

#define AG_INLINE static inline __attribute__((always_inline))

#define AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, R, C)                                                           \
    case ((R) - 1) * 4 + (C) - 1: TILE(WP, WS, XP, XS, N, YP, LDY, R, C); break;

/* Call TILE with the constant (R, C) matching the variables R and C in scope. */
#define AG_TILE_SWITCH(TILE, WP, WS, XP, XS, N, YP, LDY)                                                               \
    switch ((R - 1) * 4 + C - 1) {                                                                                     \
        AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 1, 1) AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 1, 2)      \
        AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 1, 3) AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 1, 4)      \
        AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 2, 1) AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 2, 2)      \
        AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 2, 3) AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 2, 4)      \
        AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 3, 1) AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 3, 2)      \
        AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 3, 3) AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 3, 4)      \
        AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 4, 1) AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 4, 2)      \
        AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 4, 3) AG_TILE_CASE(TILE, WP, WS, XP, XS, N, YP, LDY, 4, 4)      \
    }

/*
 * The whole product: ROWS for a single token, else the tiled walk.  Two hooks
 * run inside the walk with t0/t1 (the token block) or r/R (the row tile) in
 * scope: ON_BLOCK prepares a token block (activation sums), ON_ROWS a row
 * tile (widening).  TILE sees wp/ws, the weight rows it should read (ON_ROWS
 * may point them at a prepared copy).
 */
#define AG_MATMUL_WALK(NAME, TILE, ROWS, RMAX, CMAX, ON_BLOCK, ON_ROWS)                                                \
    static void NAME(const void *w, size_t ws_in, const void *x, size_t xs, size_t n, size_t r0, size_t r1, size_t T, \
                     float *y, size_t ldy) {                                                                           \
        if (T == 1) {                                                                                                  \
            ROWS(w, ws_in, x, n, r0, r1, y);                                                                           \
            return;                                                                                                    \
        }                                                                                                              \
        for (size_t t0 = 0; t0 < T; t0 += AG_TILE_TOKEN_BLOCK) {                                                       \
            size_t t1 = T - t0 < AG_TILE_TOKEN_BLOCK ? T : t0 + AG_TILE_TOKEN_BLOCK;                                   \
            ON_BLOCK;                                                                                                  \
            for (size_t r = r0; r < r1; r += (RMAX)) {                                                                 \
                int R = r1 - r < (RMAX) ? (int)(r1 - r) : (RMAX);                                                      \
                const char *wp = (const char *)w + r * ws_in;                                                          \
                size_t ws = ws_in;                                                                                     \
                ON_ROWS;                                                                                               \
                for (size_t t = t0; t < t1; t += (CMAX)) {                                                             \
                    int C = t1 - t < (CMAX) ? (int)(t1 - t) : (CMAX);                                                  \
                    const char *xp = (const char *)x + t * xs;                                                         \
                    float *yp = y + t * ldy + r;                                                                       \
                    AG_TILE_SWITCH(TILE, wp, ws, xp, xs, n, yp, ldy)                                                   \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }

#define AG_TILED_MATMUL(NAME, TILE, ROWS, RMAX, CMAX) AG_MATMUL_WALK(NAME, TILE, ROWS, RMAX, CMAX, (void)0, (void)0)

/*
 * For weights cheaper to widen once than at every use (F16): each row tile
 * is converted to f32 (WIDEN(src_row, dst, n)) into a per-thread buffer once
 * per token block, and the f32 x f32 tile FTILE reuses it for every token of
 * the block: one conversion per 64 tokens instead of one per 4.
 */
#define AG_WIDEN_ROWS(WIDEN)                                                                                           \
    do {                                                                                                               \
        size_t fs = (n * sizeof(float) + 63) / 64 * 64; /* rows on cache lines */                                     \
        char *wide = ag_kern_scratch((size_t)R * fs);                                                                  \
        for (int i = 0; i < R; i++) WIDEN(wp + (size_t)i * ws, (float *)(wide + (size_t)i * fs), n);                  \
        wp = wide, ws = fs;                                                                                            \
    } while (0)
#define AG_TILED_MATMUL_WIDEN(NAME, FTILE, ROWS, WIDEN, RMAX, CMAX)                                                    \
    AG_MATMUL_WALK(NAME, FTILE, ROWS, RMAX, CMAX, (void)0, AG_WIDEN_ROWS(WIDEN))

#define AG_ROWS_OF(NAME, ROW)                                                                                          \
    static void NAME(const void *w, size_t ws, const void *x, size_t n, size_t r0, size_t r1, float *y) {             \
        for (size_t r = r0; r < r1; r++) y[r] = ROW((const char *)w + r * ws, x, n);                                  \
    }

/*
 * AG_ROWS_OF, but rows of at most 512 bytes go four at a time through TILE
 * (R = 4, C = 1): the same arithmetic per row, so the same bits, and four
 * independent FMA chains where one short row leaves the FMA's latency
 * exposed (a 64-dim key is 8 dependent FMAs and a horizontal sum).  Such
 * rows are attention's keys against one decode query, a head's keys in a
 * cache block one contiguous run, so four of them are still one short
 * sequential read; long rows (weights in place) stay one at a time (above).
 */
#define AG_ROWS_OF_SHORT4(NAME, ROW, TILE, WT)                                                                         \
    static void NAME(const void *w, size_t ws, const void *x, size_t n, size_t r0, size_t r1, float *y) {             \
        size_t r = r0;                                                                                                 \
        if (n * sizeof(WT) <= 512)                                                                                     \
            for (; r + 4 <= r1; r += 4) TILE((const char *)w + r * ws, ws, x, 0, n, y + r, 0, 4, 1);                   \
        for (; r < r1; r++) y[r] = ROW((const char *)w + r * ws, x, n);                                                \
    }

/* An F16 row to f32 with VEC-wide conversions (VEC elements a step), for AG_TILED_MATMUL_WIDEN. */
#define AG_WIDEN_F16(NAME, VEC, LOAD_F16, STORE_F32, F16)                                                              \
    static void NAME(const void *src, float *dst, size_t n) {                                                         \
        const uint16_t *h = src;                                                                                       \
        size_t i = 0;                                                                                                  \
        for (; i + (VEC) <= n; i += (VEC)) STORE_F32(dst + i, LOAD_F16(h + i));                                        \
        for (; i < n; i++) dst[i] = F16(h[i]);                                                                         \
    }

#endif
