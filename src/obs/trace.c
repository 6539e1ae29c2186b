/*
 * trace.c - trace context (see trace.h).  Ids come from a per-thread
 * xoshiro256** generator seeded from getrandom(): ids must be unique and
 * unpredictable enough not to collide across servers, not secret.
 */
#define _DEFAULT_SOURCE
#include "obs/trace.h"

#include "base/clock.h"

#include <string.h>
#include <sys/random.h>

static _Thread_local uint64_t rng[4];

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next(void) {
    if (!(rng[0] | rng[1] | rng[2] | rng[3])) {
        if (getrandom(rng, sizeof rng, 0) != (ssize_t)sizeof rng || !(rng[0] | rng[1] | rng[2] | rng[3]))
            rng[0] = ag_clock_wall_ns() | 1, rng[1] = (uint64_t)(uintptr_t)&rng, rng[2] = ag_clock_mono_ns();
    }
    uint64_t r = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
    rng[2] ^= rng[0], rng[3] ^= rng[1], rng[1] ^= rng[2], rng[0] ^= rng[3], rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return r;
}

static void random_hex(char *out, size_t digits) {
    static const char hex[] = "0123456789abcdef";
    uint64_t v = 0;
    for (size_t i = 0; i < digits; i++) {
        if (i % 16 == 0) v = next() | (i == 0); /* never all zero */
        out[i] = hex[v & 15];
        v >>= 4;
    }
    out[digits] = '\0';
}

void ag_trace_new_span_id(char out[17]) { random_hex(out, 16); }

static bool hex_field(const char *p, size_t n, bool lower_only) {
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (!lower_only && c >= 'A' && c <= 'F');
        if (!ok) return false;
        nonzero |= c != '0';
    }
    return nonzero;
}

bool ag_trace_parse(ag_str h, char trace_id[33], char parent_id[17], bool *sampled) {
    /* version 00 is exactly 55 characters; a later version may append fields after a '-' */
    if (h.n < 55 || (h.n > 55 && (h.p[55] != '-' || (h.p[0] == '0' && h.p[1] == '0')))) return false;
    const char *p = h.p;
    if (p[2] != '-' || p[35] != '-' || p[52] != '-') return false;
    if (!hex_field(p, 2, true) && !(p[0] == '0' && p[1] == '0')) return false;
    if (p[0] == 'f' && p[1] == 'f') return false;
    if (!hex_field(p + 3, 32, true) || !hex_field(p + 36, 16, true)) return false;
    if (!(hex_field(p + 53, 2, true) || (p[53] == '0' && p[54] == '0'))) return false;
    memcpy(trace_id, p + 3, 32), trace_id[32] = '\0';
    memcpy(parent_id, p + 36, 16), parent_id[16] = '\0';
    int flags = (p[54] >= 'a' ? p[54] - 'a' + 10 : p[54] - '0');
    *sampled = flags & 1;
    return true;
}

void ag_trace_begin(ag_trace *t, ag_str traceparent, ag_str x_trace_id, double sample_ratio) {
    memset(t, 0, sizeof *t);
    random_hex(t->span_id, 16);
    if (traceparent.p && ag_trace_parse(traceparent, t->trace_id, t->parent_id, &t->sampled)) return;
    t->parent_id[0] = '\0';
    if (x_trace_id.n == 32 && hex_field(x_trace_id.p, 32, false)) {
        for (int i = 0; i < 32; i++) t->trace_id[i] = (char)(x_trace_id.p[i] | 0x20); /* lowercase */
        t->trace_id[32] = '\0';
    } else {
        random_hex(t->trace_id, 32);
    }
    t->sampled = sample_ratio >= 1 || (sample_ratio > 0 && (double)(next() >> 11) * 0x1p-53 < sample_ratio);
}

void ag_trace_format(const ag_trace *t, char out[56]) {
    memcpy(out, "00-", 3);
    memcpy(out + 3, t->trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, t->span_id, 16);
    memcpy(out + 52, t->sampled ? "-01" : "-00", 3);
    out[55] = '\0';
}
