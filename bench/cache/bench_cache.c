/*
 * bench_cache - the response cache's policies on a hard trace: hit ratio of
 * W-TinyLFU, LRU and sampled LFU on Zipf(0.9) requests over 100k keys with a
 * scan of 20k one-off keys after every 20k requests (half the traffic is
 * scans), at three cache sizes, plus each policy's speed in lookups+inserts
 * per second.  The last column is the hit ratio an oracle holding exactly the
 * most popular keys would get (the ceiling for any policy).
 * usage: bench_cache
 */
#include "base/clock.h"
#include "cache/cache.h"
#include "unit/cache/zipf_trace.h"

#include <stdio.h>

enum { VALUE = 100, REQUESTS = 2000000, UNIVERSE = 100000 };

/* The hit ratio, and the speed in millions of lookups (+ inserts on misses) per second. */
static double run(ag_cache_policy p, size_t entries, double *mops) {
    uint64_t t0 = ag_clock_mono_ns();
    double h = zipf_hit_ratio(p, entries, REQUESTS, VALUE);
    *mops = REQUESTS / ((double)(ag_clock_mono_ns() - t0) / 1e9) / 1e6;
    return h;
}

int main(void) {
    static const char *const names[] = {"W-TinyLFU", "LRU", "LFU (sampled)"};
    printf("Zipf(0.9) over %d keys, a 20k-key scan after every 20k requests, %d requests, %d-byte values\n",
           UNIVERSE, REQUESTS, VALUE);
    printf("| cache size (entries) | W-TinyLFU | LRU | LFU (sampled) | oracle | W-TinyLFU / LRU |\n|--:|--:|--:|--:|--:|--:|\n");
    double speed[3] = {0};
    static const size_t sizes[] = {500, 2000, 8000};
    for (size_t s = 0; s < 3; s++) {
        double h[3], mops;
        for (int p = 0; p < 3; p++) h[p] = run((ag_cache_policy)p, sizes[s], &mops), speed[p] += mops / 3;
        double top = 0, all = 0; /* the oracle: the sizes[s] most popular keys, on the non-scan half */
        for (size_t k = 1; k <= UNIVERSE; k++) all += 1 / pow((double)k, 0.9), top += k <= sizes[s] ? 1 / pow((double)k, 0.9) : 0;
        printf("| %zu | %.3f | %.3f | %.3f | %.3f | %.2fx |\n", sizes[s], h[0], h[1], h[2], top / all / 2, h[0] / h[1]);
    }
    printf("\nspeed, million lookups (+ inserts on misses) per second, mean over the sizes:");
    for (int p = 0; p < 3; p++) printf(" %s %.1f;", names[p], speed[p]);
    printf("\n");
    return 0;
}
