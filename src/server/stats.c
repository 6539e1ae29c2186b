/*
 * stats.c - GET /v1/stats: the server's load and latency now, as one small
 * JSON object for the web UI's dashboard (and for scripts that want numbers
 * without parsing Prometheus text).
 *
 * /metrics keeps totals since start, which a dashboard would have to
 * difference itself; this keeps the recent past instead.  One slot per second
 * of the last AG_STATS_SECONDS counts requests, statuses, tokens and cache
 * verdicts, and a ring of the latest AG_STATS_SAMPLES generations keeps their
 * latencies, so a window's percentiles are exact (nearest rank over the
 * samples), not interpolated between histogram bounds.  Everything here runs
 * on the loop thread: plain counters, no atomics.  Slots are reused lazily,
 * by the second they belong to, so an idle server does no work.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "json/json.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATS_CODES 8         /* distinct statuses a second keeps; more are counted under code 0 ("other") */
#define STATS_WINDOW_CODES 64 /* distinct statuses a window reports; more are left out */

typedef struct status_count {
    int code;
    uint64_t n;
} status_count;

typedef struct stats_second {
    uint64_t sec; /* which second of the server's life this slot holds (from 1; 0: never used) */
    uint64_t requests, generations, errors, generated_tokens, prompt_tokens, cached_tokens, rc_hits, rc_lookups;
    status_count codes[STATS_CODES];
} stats_second;

typedef struct stats_sample {
    uint64_t t_ns;                    /* when the generation's answer ended */
    uint64_t ttft_ns, tpot_ns, e2e_ns; /* tpot_ns 0: fewer than two tokens */
} stats_sample;

struct ag_stats {
    uint64_t t0_ns;
    stats_second sec[AG_STATS_SECONDS];
    stats_sample samples[AG_STATS_SAMPLES];
    size_t n_samples, next_sample;
    uint64_t total_requests, total_generations, total_errors, total_prompt_tokens, total_generated_tokens;
};

ag_stats *ag_stats_new(uint64_t t0_ns) {
    ag_stats *st = ag_xcalloc(1, sizeof *st);
    st->t0_ns = t0_ns;
    return st;
}

void ag_stats_free(ag_stats *st) { free(st); }

/* The slot of the second now falls in, emptied when it last held an older second. */
static stats_second *slot(ag_stats *st, uint64_t now_ns) {
    uint64_t sec = (now_ns - st->t0_ns) / 1000000000u + 1;
    stats_second *s = &st->sec[sec % AG_STATS_SECONDS];
    if (s->sec != sec) memset(s, 0, sizeof *s), s->sec = sec;
    return s;
}

void ag_stats_token(ag_stats *st, uint64_t now_ns) {
    slot(st, now_ns)->generated_tokens++;
    st->total_generated_tokens++;
}

/* A client that left (499) did not get an error from us. */
static bool is_error(int status) { return status >= 400 && status != 499; }

void ag_stats_request(ag_stats *st, uint64_t now_ns, int status, const ag_stats_gen *g) {
    stats_second *s = slot(st, now_ns);
    s->requests++, st->total_requests++;
    if (is_error(status)) s->errors++, st->total_errors++;
    int k = 0;
    while (k < STATS_CODES && s->codes[k].n && s->codes[k].code != status) k++;
    if (k == STATS_CODES) k = STATS_CODES - 1, s->codes[k].code = 0; /* the last one becomes "other" */
    else s->codes[k].code = status;
    s->codes[k].n++;
    if (!g) return;
    s->generations++, st->total_generations++;
    s->prompt_tokens += g->prompt_tokens, st->total_prompt_tokens += g->prompt_tokens;
    s->cached_tokens += g->cached_tokens;
    if (g->cache_hit >= 0) s->rc_lookups++, s->rc_hits += (uint64_t)g->cache_hit;
    if (status != 200 || !g->ttft_ns) return; /* latencies of whole, generated answers only */
    st->samples[st->next_sample] = (stats_sample){now_ns, g->ttft_ns, g->tpot_ns, g->e2e_ns};
    st->next_sample = (st->next_sample + 1) % AG_STATS_SAMPLES;
    if (st->n_samples < AG_STATS_SAMPLES) st->n_samples++;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* {"p50":..,"p90":..,"p99":..,"max":..} in ms by nearest rank over v[0..n) (sorted here), or null when empty. */
static void percentiles(ag_jw *w, uint64_t *v, size_t n) {
    if (!n) return ag_jw_null(w);
    qsort(v, n, sizeof *v, cmp_u64);
    static const struct {
        const char *name;
        double q;
    } qs[] = {{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"max", 1.0}};
    ag_jw_obj_begin(w);
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        size_t rank = (size_t)(qs[i].q * (double)n + 0.999999); /* ceil(q n), at least 1 */
        ag_jw_keyc(w, qs[i].name);
        ag_jw_double(w, (double)v[(rank ? rank : 1) - 1] / 1e6);
    }
    ag_jw_obj_end(w);
}

static void ratio(ag_jw *w, uint64_t num, uint64_t den) {
    if (den) ag_jw_double(w, (double)num / (double)den);
    else ag_jw_null(w);
}

static void count(ag_jw *w, const char *key, uint64_t v) {
    ag_jw_keyc(w, key);
    ag_jw_int(w, (int64_t)v);
}

ag_status ag_stats_window_parse(ag_str query, int *window_s) {
    *window_s = AG_STATS_DEFAULT_WINDOW;
    for (size_t i = 0; i < query.n;) {
        size_t j = i;
        while (j < query.n && query.p[j] != '&') j++;
        ag_str kv = {query.p + i, j - i};
        uint64_t v;
        if (ag_str_starts_with(kv, AG_STR_LIT("window="))) {
            if (ag_str_parse_u64((ag_str){kv.p + 7, kv.n - 7}, &v) != AG_OK || v < 1 || v > AG_STATS_SECONDS)
                return AG_EINVAL;
            *window_s = (int)v;
        }
        i = j + 1;
    }
    return AG_OK;
}

void ag_stats_json(ag_stats *st, const ag_stats_now *now, int window_s, ag_buf *out) {
    uint64_t t = now->t_ns;
    uint64_t cur = (t - st->t0_ns) / 1000000000u + 1; /* the second now falls in */
    double uptime = (double)(t - st->t0_ns) / 1e9;
    uint64_t first = cur > (uint64_t)window_s ? cur - (uint64_t)window_s + 1 : 1;
    stats_second sum = {0};
    status_count codes[STATS_WINDOW_CODES];
    size_t n_codes = 0;
    for (uint64_t sec = first; sec <= cur; sec++) {
        const stats_second *s = &st->sec[sec % AG_STATS_SECONDS];
        if (s->sec != sec) continue;
        sum.requests += s->requests, sum.generations += s->generations, sum.errors += s->errors;
        sum.generated_tokens += s->generated_tokens, sum.prompt_tokens += s->prompt_tokens;
        sum.cached_tokens += s->cached_tokens, sum.rc_hits += s->rc_hits, sum.rc_lookups += s->rc_lookups;
        for (int k = 0; k < STATS_CODES && s->codes[k].n; k++) {
            size_t i = 0;
            while (i < n_codes && codes[i].code != s->codes[k].code) i++;
            if (i == n_codes && n_codes == STATS_WINDOW_CODES) continue;
            if (i == n_codes) codes[n_codes++] = (status_count){s->codes[k].code, 0};
            codes[i].n += s->codes[k].n;
        }
    }
    /* the window's seconds so far: a younger server has not lived the whole window */
    double span = uptime < (double)window_s ? (uptime > 1e-3 ? uptime : 1e-3) : (double)window_s;

    uint64_t since = t > (uint64_t)window_s * 1000000000u ? t - (uint64_t)window_s * 1000000000u : 0;
    uint64_t *lat = ag_try_malloc(3 * AG_STATS_SAMPLES * sizeof *lat);
    size_t n = 0, n_tpot = 0;
    for (size_t i = 0; lat && i < st->n_samples; i++) {
        const stats_sample *p = &st->samples[i];
        if (p->t_ns < since) continue;
        lat[n] = p->ttft_ns, lat[AG_STATS_SAMPLES + n] = p->e2e_ns, n++;
        if (p->tpot_ns) lat[2 * AG_STATS_SAMPLES + n_tpot++] = p->tpot_ns;
    }

    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "object");
    ag_jw_strc(&w, "stats");
    ag_jw_keyc(&w, "model");
    ag_jw_strc(&w, now->model);
    ag_jw_keyc(&w, "status");
    ag_jw_strc(&w, now->status);
    ag_jw_keyc(&w, "uptime_s");
    ag_jw_double(&w, uptime);
    ag_jw_keyc(&w, "window_s");
    ag_jw_int(&w, window_s);

    ag_jw_keyc(&w, "engine");
    if (now->engine) {
        const ag_engine_stats *e = now->engine;
        ag_jw_obj_begin(&w);
        count(&w, "requests_running", (uint64_t)e->running);
        count(&w, "requests_waiting", (uint64_t)e->waiting);
        count(&w, "kv_blocks_used", e->kv_used);
        count(&w, "kv_blocks_cached", e->kv_cached);
        count(&w, "kv_blocks_total", e->kv_blocks);
        ag_jw_keyc(&w, "kv_usage");
        ratio(&w, e->kv_used, e->kv_blocks);
        ag_jw_keyc(&w, "prefix_cache_hit_rate");
        ratio(&w, e->prefix_hit_tokens, e->prefix_query_tokens);
        ag_jw_obj_end(&w);
    } else {
        ag_jw_null(&w);
    }

    ag_jw_keyc(&w, "totals");
    ag_jw_obj_begin(&w);
    count(&w, "requests", st->total_requests);
    count(&w, "generations", st->total_generations);
    count(&w, "errors", st->total_errors);
    count(&w, "prompt_tokens", st->total_prompt_tokens);
    count(&w, "generated_tokens", st->total_generated_tokens);
    ag_jw_obj_end(&w);

    ag_jw_keyc(&w, "window");
    ag_jw_obj_begin(&w);
    count(&w, "requests", sum.requests);
    count(&w, "generations", sum.generations);
    count(&w, "errors", sum.errors);
    count(&w, "prompt_tokens", sum.prompt_tokens);
    count(&w, "generated_tokens", sum.generated_tokens);
    ag_jw_keyc(&w, "requests_per_s");
    ag_jw_double(&w, (double)sum.requests / span);
    ag_jw_keyc(&w, "generated_tokens_per_s");
    ag_jw_double(&w, (double)sum.generated_tokens / span);
    ag_jw_keyc(&w, "prefix_cache_hit_rate");
    ratio(&w, sum.cached_tokens, sum.prompt_tokens);
    ag_jw_keyc(&w, "response_cache_hit_rate");
    ratio(&w, sum.rc_hits, sum.rc_lookups);
    ag_jw_keyc(&w, "status");
    ag_jw_obj_begin(&w);
    for (size_t i = 0; i < n_codes; i++) {
        char code[16];
        snprintf(code, sizeof code, "%d", codes[i].code);
        count(&w, codes[i].code ? code : "other", codes[i].n);
    }
    ag_jw_obj_end(&w);
    count(&w, "latency_samples", n);
    ag_jw_keyc(&w, "ttft_ms");
    percentiles(&w, lat, lat ? n : 0);
    ag_jw_keyc(&w, "tpot_ms");
    percentiles(&w, lat ? lat + 2 * AG_STATS_SAMPLES : NULL, lat ? n_tpot : 0);
    ag_jw_keyc(&w, "e2e_ms");
    percentiles(&w, lat ? lat + AG_STATS_SAMPLES : NULL, lat ? n : 0);
    ag_jw_obj_end(&w);

    /* per second, oldest first; the last is the second now running */
    static const struct {
        const char *name;
        size_t off;
    } series[] = {{"requests", offsetof(stats_second, requests)},
                  {"errors", offsetof(stats_second, errors)},
                  {"generated_tokens", offsetof(stats_second, generated_tokens)}};
    ag_jw_keyc(&w, "series");
    ag_jw_obj_begin(&w);
    for (size_t k = 0; k < sizeof series / sizeof series[0]; k++) {
        ag_jw_keyc(&w, series[k].name);
        ag_jw_arr_begin(&w);
        for (uint64_t sec = first; sec <= cur; sec++) {
            const stats_second *s = &st->sec[sec % AG_STATS_SECONDS];
            ag_jw_int(&w, s->sec == sec ? (int64_t) * (const uint64_t *)((const char *)s + series[k].off) : 0);
        }
        ag_jw_arr_end(&w);
    }
    ag_jw_obj_end(&w);
    ag_jw_obj_end(&w);
    free(lat);
}
