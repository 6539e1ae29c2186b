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
 * sequential stream (AG_ROWS_OF(ROW) makes one from a one-row dot product).  Tiles of
 * several rows would read several short streams at once (a 1024-element F16
 * row is only 32 cache lines), which the hardware prefetchers do not follow,
 * and decode is bound by exactly that stream.
 */
#ifndef AG_ENGINE_KERNELS_TILE_H
#define AG_ENGINE_KERNELS_TILE_H

#include "engine/kernels/kernels.h"

#include <stddef.h>

#define AG_TILE_TOKEN_BLOCK 64

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

#define AG_ROWS_OF(NAME, ROW)                                                                                          \
    static void NAME(const void *w, size_t ws, const void *x, size_t n, size_t r0, size_t r1, float *y) {             \
        for (size_t r = r0; r < r1; r++) y[r] = ROW((const char *)w + r * ws, x, n);                                  \
    }

#define AG_TILED_MATMUL(NAME, TILE, ROWS, RMAX, CMAX)                                                                  \
    static void NAME(const void *w, size_t ws, const void *x, size_t xs, size_t n, size_t r0, size_t r1, size_t T,    \
                     float *y, size_t ldy) {                                                                           \
        if (T == 1) {                                                                                                  \
            ROWS(w, ws, x, n, r0, r1, y);                                                                              \
            return;                                                                                                    \
        }                                                                                                              \
        for (size_t t0 = 0; t0 < T; t0 += AG_TILE_TOKEN_BLOCK) {                                                       \
            size_t t1 = T - t0 < AG_TILE_TOKEN_BLOCK ? T : t0 + AG_TILE_TOKEN_BLOCK;                                   \
            for (size_t r = r0; r < r1; r += (RMAX)) {                                                                 \
                int R = r1 - r < (RMAX) ? (int)(r1 - r) : (RMAX);                                                      \
                for (size_t t = t0; t < t1; t += (CMAX)) {                                                             \
                    int C = t1 - t < (CMAX) ? (int)(t1 - t) : (CMAX);                                                  \
                    const char *wp = (const char *)w + r * ws, *xp = (const char *)x + t * xs;                         \
                    float *yp = y + t * ldy + r;                                                                       \
                    AG_TILE_SWITCH(TILE, wp, ws, xp, xs, n, yp, ldy)                                                   \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }

/*
 * The same walk for weights that are cheaper to widen once than at every use
 * (F16): each tile of RMAX rows is converted to f32 into a per-thread buffer
 * once per token block, then FTILE (an f32 x f32 tile) reuses it for every
 * token in the block, so the conversion is paid once per 64 tokens instead
 * of once per 4.
 */
#define AG_TILED_MATMUL_WIDEN(NAME, FTILE, ROWS, WIDEN, RMAX, CMAX)                                                    \
    static void NAME(const void *w, size_t ws, const void *x, size_t xs, size_t n, size_t r0, size_t r1, size_t T,    \
                     float *y, size_t ldy) {                                                                           \
        if (T == 1) {                                                                                                  \
            ROWS(w, ws, x, n, r0, r1, y);                                                                              \
            return;                                                                                                    \
        }                                                                                                              \
        const size_t fs = (n * sizeof(float) + 63) / 64 * 64; /* rows on cache lines */                               \
        float *wide = ag_kern_scratch((RMAX) * fs);                                                                    \
        for (size_t t0 = 0; t0 < T; t0 += AG_TILE_TOKEN_BLOCK) {                                                       \
            size_t t1 = T - t0 < AG_TILE_TOKEN_BLOCK ? T : t0 + AG_TILE_TOKEN_BLOCK;                                   \
            for (size_t r = r0; r < r1; r += (RMAX)) {                                                                 \
                int R = r1 - r < (RMAX) ? (int)(r1 - r) : (RMAX);                                                      \
                for (int i = 0; i < R; i++) WIDEN((const char *)w + (r + i) * ws, (float *)((char *)wide + i * fs), n);\
                for (size_t t = t0; t < t1; t += (CMAX)) {                                                             \
                    int C = t1 - t < (CMAX) ? (int)(t1 - t) : (CMAX);                                                  \
                    const char *wp = (const char *)wide, *xp = (const char *)x + t * xs;                               \
                    float *yp = y + t * ldy + r;                                                                       \
                    AG_TILE_SWITCH(FTILE, wp, fs, xp, xs, n, yp, ldy)                                                  \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }

#define AG_INLINE static inline __attribute__((always_inline))

#endif
