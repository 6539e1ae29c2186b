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
 * A single token (decode) takes another path: ROW(w_row, x, n) per weight
 * row, reading the matrix front to back as one sequential stream.  Tiles of
 * several rows would read several short streams at once (a 1024-element F16
 * row is only 32 cache lines), which the hardware prefetchers do not follow,
 * and decode is bound by exactly that stream.
 */
#ifndef AG_ENGINE_KERNELS_TILE_H
#define AG_ENGINE_KERNELS_TILE_H

#include <stddef.h>

#define AG_TILE_TOKEN_BLOCK 64

#define AG_TILE_CASE(TILE, R, C)                                                                                       \
    case ((R) - 1) * 4 + (C) - 1: TILE(wp, ws, xp, xs, n, yp, ldy, R, C); break;

#define AG_TILED_MATMUL(NAME, TILE, ROW, RMAX, CMAX)                                                                   \
    static void NAME(const void *w, size_t ws, const void *x, size_t xs, size_t n, size_t r0, size_t r1, size_t T,    \
                     float *y, size_t ldy) {                                                                           \
        if (T == 1) {                                                                                                  \
            for (size_t r = r0; r < r1; r++) y[r] = ROW((const char *)w + r * ws, x, n);                              \
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
                    switch ((R - 1) * 4 + C - 1) {                                                                     \
                        AG_TILE_CASE(TILE, 1, 1) AG_TILE_CASE(TILE, 1, 2) AG_TILE_CASE(TILE, 1, 3)                     \
                        AG_TILE_CASE(TILE, 1, 4) AG_TILE_CASE(TILE, 2, 1) AG_TILE_CASE(TILE, 2, 2)                     \
                        AG_TILE_CASE(TILE, 2, 3) AG_TILE_CASE(TILE, 2, 4) AG_TILE_CASE(TILE, 3, 1)                     \
                        AG_TILE_CASE(TILE, 3, 2) AG_TILE_CASE(TILE, 3, 3) AG_TILE_CASE(TILE, 3, 4)                     \
                        AG_TILE_CASE(TILE, 4, 1) AG_TILE_CASE(TILE, 4, 2) AG_TILE_CASE(TILE, 4, 3)                     \
                        AG_TILE_CASE(TILE, 4, 4)                                                                       \
                    }                                                                                                  \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }

#define AG_INLINE static inline __attribute__((always_inline))

#endif
