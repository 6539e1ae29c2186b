/*
 * hist.c - log-linear latency histogram (see hist.h).  Magnitude 0 holds
 * 0..127 us one microsecond apart; magnitude m > 0 holds
 * [128 << (m-1), 128 << m) in 128 equal steps of 1 << (m-1) us.
 */
#include "tools/hist.h"

#include <string.h>

void ag_hist_init(ag_hist *h) {
    memset(h, 0, sizeof *h);
    h->min_us = UINT64_MAX;
}

static void locate(uint64_t v, int *mag, int *sub) {
    if (v < AG_HIST_SUB) {
        *mag = 0, *sub = (int)v;
        return;
    }
    int top = 63 - __builtin_clzll(v); /* v in [2^top, 2^(top+1)) */
    int m = top - AG_HIST_SUB_BITS + 1;
    if (m >= AG_HIST_MAGS) {
        *mag = AG_HIST_MAGS - 1, *sub = AG_HIST_SUB - 1;
        return;
    }
    *mag = m, *sub = (int)((v >> (m - 1)) - AG_HIST_SUB);
}

void ag_hist_add(ag_hist *h, uint64_t us) {
    int m, s;
    locate(us, &m, &s);
    h->counts[m][s]++;
    h->n++;
    h->sum_us += (double)us;
    if (us < h->min_us) h->min_us = us;
    if (us > h->max_us) h->max_us = us;
}

void ag_hist_merge(ag_hist *into, const ag_hist *from) {
    for (int m = 0; m < AG_HIST_MAGS; m++)
        for (int s = 0; s < AG_HIST_SUB; s++) into->counts[m][s] += from->counts[m][s];
    into->n += from->n;
    into->sum_us += from->sum_us;
    if (from->min_us < into->min_us) into->min_us = from->min_us;
    if (from->max_us > into->max_us) into->max_us = from->max_us;
}

/* The midpoint of bucket (m, s). */
static double midpoint(int m, int s) {
    if (m == 0) return s;
    double width = (double)(1ull << (m - 1));
    return ((double)AG_HIST_SUB + s) * width + width / 2;
}

double ag_hist_quantile(const ag_hist *h, double q) {
    if (!h->n) return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n + 0.5);
    if (rank < 1) rank = 1;
    if (rank > h->n) rank = h->n;
    uint64_t seen = 0;
    for (int m = 0; m < AG_HIST_MAGS; m++)
        for (int s = 0; s < AG_HIST_SUB; s++) {
            seen += h->counts[m][s];
            if (seen >= rank) {
                double v = midpoint(m, s);
                if (v < (double)h->min_us) v = (double)h->min_us;
                if (v > (double)h->max_us) v = (double)h->max_us;
                return v;
            }
        }
    return (double)h->max_us;
}

double ag_hist_mean(const ag_hist *h) { return h->n ? h->sum_us / (double)h->n : 0; }
