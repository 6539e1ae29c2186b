/*
 * hist.h - latency histograms in the manner of HdrHistogram: log-linear
 * buckets (each power of two split into 128 linear sub-buckets) over
 * microseconds, so any value from 1 us to about 35 minutes is kept within
 * 1/128 (0.8 %) relative error in a fixed 21 KB, with O(1) recording and
 * merging.  Percentiles report the bucket's midpoint, clamped to the exact
 * minimum and maximum seen.
 */
#ifndef AG_TOOLS_HIST_H
#define AG_TOOLS_HIST_H

#include <stdint.h>

enum { AG_HIST_SUB_BITS = 7, AG_HIST_SUB = 1 << AG_HIST_SUB_BITS, AG_HIST_MAGS = 25 };

typedef struct ag_hist {
    uint32_t counts[AG_HIST_MAGS][AG_HIST_SUB];
    uint64_t n;
    double sum_us;
    uint64_t min_us, max_us;
} ag_hist;

void ag_hist_init(ag_hist *h);
/* Values above the top bucket (~2^31 us) are counted in it. */
void ag_hist_add(ag_hist *h, uint64_t us);
void ag_hist_merge(ag_hist *into, const ag_hist *from);
/* The value at quantile q in [0, 1] (0 when empty). */
double ag_hist_quantile(const ag_hist *h, double q);
double ag_hist_mean(const ag_hist *h);

#endif
