/*
 * hash.c - 64-bit hash built on the 64x64->128 "multiply and fold" mix:
 * 16 input bytes per multiply, so short keys (JSON field names, header names)
 * cost a few nanoseconds.  Quality is checked by tests/unit/base (bucket
 * spread and avalanche on short keys), not assumed.
 */
#include "base/hash.h"

#include <string.h>

#define K0 0xa0761d6478bd642full
#define K1 0xe7037ed1a0b428dbull
#define K2 0x8ebc6af09c88c6e3ull

static inline uint64_t fold_mul(uint64_t a, uint64_t b) {
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t load_tail(const uint8_t *p, size_t n) { /* 1..7 bytes */
    uint64_t v = 0;
    memcpy(&v, p, n);
    return v;
}

uint64_t ag_hash_bytes(const void *data, size_t n, uint64_t seed) {
    const uint8_t *p = data;
    uint64_t h = seed ^ K0;
    size_t left = n;
    while (left >= 16) {
        h = fold_mul(load64(p) ^ K1, load64(p + 8) ^ h);
        p += 16;
        left -= 16;
    }
    uint64_t a = 0, b = 0;
    if (left >= 8) {
        a = load64(p);
        b = left > 8 ? load_tail(p + 8, left - 8) : 0;
    } else if (left) {
        a = load_tail(p, left);
    }
    h = fold_mul(a ^ K1, b ^ h ^ K2);
    return fold_mul(h ^ (uint64_t)n, K0);
}
