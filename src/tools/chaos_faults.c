/*
 * chaos_faults.c - the chaos proxy's faults as text (see chaos.h): one
 * grammar for the command line, the admin API's JSON and what GET /faults
 * shows, so a fault read back can be written again unchanged.
 */
#define _POSIX_C_SOURCE 200809L
#include "tools/chaos.h"

#include "base/arena.h"
#include "base/str.h"
#include "json/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A number and its unit: "300ms" -> 300, "ms". */
static bool number_unit(const char *s, double *v, const char **unit) {
    char *end;
    *v = strtod(s, &end);
    if (end == s || !isfinite(*v) || *v < 0) return false;
    *unit = end;
    return true;
}

static bool duration_us(const char *s, uint64_t *us) {
    return ag_str_parse_duration_us(ag_str_from_cstr(s), us) == AG_OK && *us <= 86400000000ull; /* a day at most */
}

static bool rate_bytes(const char *s, double *bps) {
    static const struct {
        const char *unit;
        double bytes;
    } units[] = {{"bit", 1 / 8.0}, {"kbit", 1e3 / 8}, {"mbit", 1e6 / 8}, {"gbit", 1e9 / 8},
                 {"", 1},          {"b", 1},          {"kb", 1e3},      {"mb", 1e6}, {"gb", 1e9}};
    double v;
    const char *u;
    if (!number_unit(s, &v, &u) || v <= 0) return false;
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (strcasecmp(u, units[i].unit) == 0) return *bps = v * units[i].bytes, true;
    return false;
}

static bool probability(const char *s, double *p) {
    char *end;
    *p = strtod(s, &end);
    return end != s && !*end && *p >= 0 && *p <= 1;
}

/* "VALUE[,up|,down|,both][,p=P]": value into val, the directions (bit per AG_CHAOS_*), the toxicity. */
static bool options(const char *text, char *val, size_t cap, unsigned *dirs, double *p) {
    *dirs = 1u << AG_CHAOS_DOWN, *p = 1;
    const char *comma = strchr(text, ',');
    size_t n = comma ? (size_t)(comma - text) : strlen(text);
    if (!n || n >= cap) return false;
    memcpy(val, text, n);
    val[n] = 0;
    while (comma) {
        const char *opt = comma + 1;
        comma = strchr(opt, ',');
        size_t len = comma ? (size_t)(comma - opt) : strlen(opt);
        char o[32];
        if (len >= sizeof o) return false;
        memcpy(o, opt, len);
        o[len] = 0;
        if (strcmp(o, "up") == 0) *dirs = 1u << AG_CHAOS_UP;
        else if (strcmp(o, "down") == 0) *dirs = 1u << AG_CHAOS_DOWN;
        else if (strcmp(o, "both") == 0) *dirs = 3;
        else if (strncmp(o, "p=", 2) != 0 || !probability(o + 2, p)) return false;
    }
    return true;
}

typedef enum { K_LATENCY, K_JITTER, K_BANDWIDTH, K_SLICE, K_RESET, K_DROP, K_STALL, K_SLOW_CLOSE, K_HTTP_ERROR,
               K_HTTP_DELAY, K_RETRY_AFTER, K_N } kind;
static const char *const names[K_N] = {"latency",    "jitter",     "bandwidth",  "slice",       "reset-after-bytes",
                                       "drop-connections", "stall", "slow-close", "http-error", "http-delay",
                                       "retry-after"};

static int kind_of(const char *name) {
    for (int k = 0; k < K_N; k++) {
        size_t i = 0;
        while (names[k][i] && (name[i] == names[k][i] || (name[i] == '_' && names[k][i] == '-'))) i++;
        if (!names[k][i] && !name[i]) return k;
    }
    return -1;
}

bool ag_chaos_fault_set(ag_chaos_faults *f, const char *name, const char *text, char *msg, size_t cap) {
    int k = kind_of(name);
    char val[64];
    unsigned dirs;
    double p;
    uint64_t us, n;
    double v;
    char *end;
    bool ok = false;
    if (k < 0) {
        snprintf(msg, cap, "unknown fault '%s'", name);
        return false;
    }
    switch ((kind)k) {
    case K_LATENCY: case K_JITTER: case K_BANDWIDTH: case K_SLICE: case K_RESET:
        if (!options(text, val, sizeof val, &dirs, &p)) break;
        for (int d = 0; d < 2; d++) {
            if (!(dirs & (1u << d))) continue;
            ag_chaos_link *l = &f->link[d];
            if (k == K_LATENCY && (ok = duration_us(val, &us))) l->latency_us = us, l->p_latency = p;
            else if (k == K_JITTER && (ok = duration_us(val, &us))) l->jitter_us = us, l->p_latency = p;
            else if (k == K_BANDWIDTH && (ok = rate_bytes(val, &v))) l->bandwidth = v, l->p_bandwidth = p;
            else if (k == K_SLICE && (ok = (n = strtoull(val, &end, 10)) > 0 && !*end)) l->slice = n, l->p_slice = p;
            else if (k == K_RESET && (ok = (n = strtoull(val, &end, 10)) > 0 && !*end)) l->reset_after = n, l->p_reset = p;
            if (!ok) break;
        }
        break;
    case K_STALL: case K_SLOW_CLOSE:
        if (!options(text, val, sizeof val, &dirs, &p) || dirs != 1u << AG_CHAOS_DOWN || !duration_us(val, &us)) break;
        if (k == K_STALL) f->stall_us = us, f->p_stall = p;
        else f->slow_close_us = us, f->p_slow_close = p;
        ok = true;
        break;
    case K_DROP:
        ok = probability(text, &f->p_drop);
        break;
    case K_HTTP_ERROR: {
        long code = strtol(text, &end, 10);
        ok = code >= 400 && code <= 599 && *end == ':' && probability(end + 1, &p);
        if (ok) f->http_error = (int)code, f->p_http_error = p;
        break;
    }
    case K_HTTP_DELAY: {
        const char *colon = strrchr(text, ':');
        size_t n = colon ? (size_t)(colon - text) : 0;
        ok = n && n < sizeof val && probability(colon + 1, &p);
        if (ok) memcpy(val, text, n), val[n] = 0, ok = duration_us(val, &us) && us > 0;
        if (ok) f->http_delay_us = us, f->p_http_delay = p;
        break;
    }
    case K_RETRY_AFTER: {
        long s = strtol(text, &end, 10);
        ok = end != text && !*end && s >= 0 && s <= 86400;
        if (ok) f->retry_after_s = (int)s;
        break;
    }
    case K_N: break;
    }
    if (!ok) {
        static const char *const forms[K_N] = {
            "DURATION[,up|,down|,both][,p=P]", "DURATION[,up|,down|,both][,p=P]", "RATE[,up|,down|,both][,p=P] (e.g. 1mbit, 64KB)",
            "BYTES[,up|,down|,both][,p=P]",    "BYTES[,up|,down|,both][,p=P]",    "a probability in [0, 1]",
            "DURATION[,p=P]",                  "DURATION[,p=P]",                  "CODE:P (CODE 400-599, P in [0, 1])",
            "DURATION:P (P in [0, 1])",        "whole seconds"};
        snprintf(msg, cap, "%s '%s': expected %s", names[k], text, forms[k]);
    }
    return ok;
}

/* ---- as JSON ---------------------------------------------------------------------------------- */

static void duration_text(char *b, size_t cap, uint64_t us) {
    if (us % 1000) snprintf(b, cap, "%lluus", (unsigned long long)us);
    else snprintf(b, cap, "%llums", (unsigned long long)(us / 1000));
}

/* name: "value,dir,p=P", one per direction that has it ("both" when the two agree).  Two directions with
 * different values repeat the name; each text says its direction, so reading them in order gives both back. */
static void link_json(ag_buf *o, bool *first, const ag_chaos_faults *f, kind k) {
    char v[2][48];
    double p[2];
    bool set[2];
    for (int d = 0; d < 2; d++) {
        const ag_chaos_link *l = &f->link[d];
        set[d] = true;
        switch (k) {
        case K_LATENCY: set[d] = l->latency_us, duration_text(v[d], sizeof v[d], l->latency_us), p[d] = l->p_latency; break;
        case K_JITTER: set[d] = l->jitter_us, duration_text(v[d], sizeof v[d], l->jitter_us), p[d] = l->p_latency; break;
        case K_BANDWIDTH: set[d] = l->bandwidth > 0, snprintf(v[d], sizeof v[d], "%.0fB", l->bandwidth), p[d] = l->p_bandwidth; break;
        case K_SLICE: set[d] = l->slice, snprintf(v[d], sizeof v[d], "%zu", l->slice), p[d] = l->p_slice; break;
        default: set[d] = l->reset_after, snprintf(v[d], sizeof v[d], "%llu", (unsigned long long)l->reset_after), p[d] = l->p_reset;
        }
    }
    bool both = set[0] && set[1] && strcmp(v[0], v[1]) == 0 && p[0] == p[1];
    for (int d = 0; d < 2; d++) {
        if (!set[d] || (both && d == AG_CHAOS_DOWN)) continue;
        ag_buf_appendf(o, "%s\"%s\":\"%s,%s,p=%g\"", *first ? "" : ",", names[k], v[d], both ? "both" : d ? "down" : "up", p[d]);
        *first = false;
    }
}

void ag_chaos_faults_json(const ag_chaos_faults *f, ag_buf *out) {
    bool first = true;
    char d[48];
    ag_buf_append_char(out, '{');
    for (kind k = K_LATENCY; k <= K_RESET; k++) link_json(out, &first, f, k);
#define SEP (first ? (first = false, "") : ",")
    if (f->p_drop > 0) ag_buf_appendf(out, "%s\"drop-connections\":\"%g\"", SEP, f->p_drop);
    if (f->stall_us) duration_text(d, sizeof d, f->stall_us), ag_buf_appendf(out, "%s\"stall\":\"%s,p=%g\"", SEP, d, f->p_stall);
    if (f->slow_close_us)
        duration_text(d, sizeof d, f->slow_close_us), ag_buf_appendf(out, "%s\"slow-close\":\"%s,p=%g\"", SEP, d, f->p_slow_close);
    if (f->http_error) ag_buf_appendf(out, "%s\"http-error\":\"%d:%g\"", SEP, f->http_error, f->p_http_error);
    if (f->http_delay_us)
        duration_text(d, sizeof d, f->http_delay_us), ag_buf_appendf(out, "%s\"http-delay\":\"%s:%g\"", SEP, d, f->p_http_delay);
    if (f->retry_after_s) ag_buf_appendf(out, "%s\"retry-after\":\"%d\"", SEP, f->retry_after_s);
#undef SEP
    ag_buf_append_char(out, '}');
}

bool ag_chaos_faults_from_json(const char *json, size_t len, ag_chaos_faults *f, char *msg, size_t cap) {
    ag_arena a;
    ag_arena_init(&a, 4096);
    ag_json_val *root;
    ag_json_err err;
    bool ok = ag_json_parse(json, len, NULL, &a, &root, &err) == AG_OK && ag_json_is(root, AG_JSON_OBJECT);
    if (!ok) snprintf(msg, cap, "the body must be a JSON object of faults");
    memset(f, 0, sizeof *f);
    for (uint32_t i = 0; ok && i < root->len; i++) {
        const ag_json_member *m = &root->u.members[i];
        char name[48], text[96];
        ag_str k = ag_json_str(&m->key), v = ag_json_str(&m->val);
        double num;
        if (k.n >= sizeof name) k.n = sizeof name - 1;
        memcpy(name, k.p, k.n);
        name[k.n] = 0;
        if (v.p && v.n < sizeof text) memcpy(text, v.p, v.n), text[v.n] = 0;
        else if (ag_json_get_double(&m->val, &num)) snprintf(text, sizeof text, "%.17g", num);
        else text[0] = 0;
        ok = ag_chaos_fault_set(f, name, text, msg, cap);
    }
    ag_arena_deinit(&a);
    return ok;
}
