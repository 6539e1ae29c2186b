/*
 * zipf_trace.h - the request trace the cache policy test and bench/cache
 * share: keys drawn from Zipf(s) over a universe of n keys, with a scan of
 * scan_len one-off keys (never seen again) after every scan_every requests,
 * the pattern that flushes a plain LRU.  Deterministic for a seed.
 */
#ifndef AG_ZIPF_TRACE_H
#define AG_ZIPF_TRACE_H

#include "cache/cache.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct zipf_trace {
    double *cdf;
    size_t n, scan_every, scan_len, i, scanning;
    uint64_t rng, next_scan_key;
} zipf_trace;

static inline void zipf_init(zipf_trace *t, size_t n, double s, size_t scan_every, size_t scan_len, uint64_t seed) {
    memset(t, 0, sizeof *t);
    t->cdf = malloc(n * sizeof *t->cdf);
    double sum = 0;
    for (size_t k = 0; k < n; k++) t->cdf[k] = sum += 1 / pow((double)(k + 1), s);
    for (size_t k = 0; k < n; k++) t->cdf[k] /= sum;
    t->n = n, t->scan_every = scan_every, t->scan_len = scan_len;
    t->rng = seed * 0x9E3779B97F4A7C15ull | 1;
    t->next_scan_key = n; /* scan keys lie beyond the Zipf universe */
}

static inline void zipf_free(zipf_trace *t) { free(t->cdf); }

/* The next key as a 32-byte digest-like key (the key number in the first 8 bytes, spread). */
static inline void zipf_next(zipf_trace *t, uint8_t key[32]) {
    uint64_t k;
    if (t->scanning) {
        t->scanning--;
        k = t->next_scan_key++;
    } else {
        t->rng ^= t->rng << 13, t->rng ^= t->rng >> 7, t->rng ^= t->rng << 17;
        double u = (double)(t->rng >> 11) * 0x1.0p-53;
        size_t lo = 0, hi = t->n - 1;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (t->cdf[mid] < u) lo = mid + 1;
            else hi = mid;
        }
        k = lo;
        if (t->scan_every && ++t->i % t->scan_every == 0) t->scanning = t->scan_len;
    }
    uint64_t h = (k + 1) * 0x9E3779B97F4A7C15ull; /* a digest's bytes look random */
    h ^= h >> 31;
    memset(key, 0, 32);
    memcpy(key, &h, 8);
    memcpy(key + 8, &k, 8);
}

/*
 * The hit ratio of a cache of `entries` values of value_bytes under the policy,
 * on Zipf(0.9) over 100k keys with a 20k-key scan after every 20k requests
 * (half the traffic is scans): a miss puts the value, as a server would.
 */
static inline double zipf_hit_ratio(ag_cache_policy p, size_t entries, uint64_t requests, size_t value_bytes) {
    zipf_trace t;
    zipf_init(&t, 100000, 0.9, 20000, 20000, 42);
    ag_cache *c = ag_cache_create(entries * (value_bytes + 128), p);
    char *val = calloc(1, value_bytes);
    uint64_t hits = 0;
    for (uint64_t i = 0; i < requests; i++) {
        uint8_t k[32];
        zipf_next(&t, k);
        ag_cache_val *v = ag_cache_get(c, k, 0);
        if (v) hits++, ag_cache_val_release(v);
        else ag_cache_put(c, k, val, value_bytes, 0, 0, 0);
    }
    free(val);
    ag_cache_destroy(c);
    zipf_free(&t);
    return (double)hits / (double)requests;
}

#endif
