/*
 * policy.c - the client's decision table: what an attempt's outcome leads
 * to.  The table is data (rows below, printed in docs/client.md); the waits
 * are exponential backoff with full jitter (AWS's "Full Jitter": uniform in
 * [0, min(cap, base * 2^n)]) or what the server asked for; the budget is a
 * token bucket so that retries stay under budget_ratio of calls plus
 * budget_floor, whatever the failure rate (gRPC's retry throttling and
 * Finagle's RetryBudget make the same promise).
 */
#define _GNU_SOURCE /* timegm, strptime */
#include "client/client_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

ag_client_options ag_client_options_default(void) {
    return (ag_client_options){
        .connect_timeout_ms = 10000,
        .first_byte_timeout_ms = 60000,
        .total_timeout_ms = 600000,
        .retry = {.max_retries = 2, .max_5xx_retries = 2, .backoff_base_s = 0.5, .backoff_cap_s = 8,
                  .max_retry_after_s = 60, .budget_ratio = 0.1, .budget_floor = 10},
        .max_connections = 16,
        .max_response_bytes = 64u << 20,
        .compress_min_bytes = 1024,
        .hedge_quantile = 0.95,
        .hedge_initial_ms = 1000,
        .hedge_min_samples = 20,
    };
}

const char *ag_client_outcome_name(ag_client_outcome o) {
    static const char *const names[] = {"ok",    "connect error", "reset", "timeout", "http status", "stream broken",
                                        "protocol error", "deadline", "closed", "certificate refused", "cancelled"};
    return (unsigned)o < sizeof names / sizeof *names ? names[o] : "?";
}

/* ---- the budget ---------------------------------------------------------------------------- */

void agc_budget_init(agc_budget *b, const ag_client_retry_policy *p) { b->tokens = p->budget_floor; }

void agc_budget_earn(agc_budget *b, const ag_client_retry_policy *p) {
    b->tokens += p->budget_ratio;
    if (b->tokens > p->budget_floor) b->tokens = p->budget_floor;
}

bool agc_budget_spend(agc_budget *b) {
    if (b->tokens < 1) return false;
    b->tokens -= 1;
    return true;
}

/* ---- Retry-After ----------------------------------------------------------------------------- */

bool agc_retry_after(ag_str retry_after, ag_str retry_after_ms, int64_t now_unix, double *seconds) {
    char t[64];
    if (retry_after_ms.n && retry_after_ms.n < sizeof t) { /* OpenAI's: milliseconds, a decimal number */
        memcpy(t, retry_after_ms.p, retry_after_ms.n), t[retry_after_ms.n] = 0;
        char *end;
        double ms = ag_strtod_c(t, &end);
        if (end != t && !*end && ms >= 0 && isfinite(ms)) return *seconds = ms / 1000, true;
    }
    if (!retry_after.n || retry_after.n >= sizeof t) return false;
    uint64_t s;
    if (ag_str_parse_u64(retry_after, &s) == AG_OK) return *seconds = (double)s, true; /* delay-seconds */
    memcpy(t, retry_after.p, retry_after.n), t[retry_after.n] = 0;
    struct tm tm = {0}; /* an HTTP date (RFC 9110 IMF-fixdate): "Sun, 06 Nov 1994 08:49:37 GMT" */
    const char *end = strptime(t, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end) return false;
    double d = (double)(timegm(&tm) - now_unix);
    *seconds = d > 0 ? d : 0;
    return true;
}

/* ---- the table ---------------------------------------------------------------------------------- */

typedef enum { A_FAIL, A_BACKOFF, A_SERVER_WAIT } action;

/* One row: an outcome (and for HTTP statuses a range), what it leads to, and how many retries it may use. */
typedef struct row {
    ag_client_outcome kind;
    int lo, hi;  /* HTTP statuses lo..hi; 0 for other outcomes */
    action act;
    bool limit_5xx; /* counts against max_5xx_retries too */
    const char *rule;
} row;

static const row table[] = {
    {AG_CLIENT_CONNECT_ERROR, 0, 0, A_BACKOFF, false, "connect error: backoff"},
    {AG_CLIENT_RESET, 0, 0, A_BACKOFF, false, "reset before the answer: backoff"},
    {AG_CLIENT_TIMEOUT, 0, 0, A_BACKOFF, false, "timeout: backoff"},
    {AG_CLIENT_HTTP_STATUS, 429, 429, A_SERVER_WAIT, false, "429: Retry-After, else backoff"},
    {AG_CLIENT_HTTP_STATUS, 503, 503, A_SERVER_WAIT, false, "503: Retry-After, else backoff"},
    {AG_CLIENT_HTTP_STATUS, 408, 409, A_BACKOFF, false, "408/409: backoff"},
    {AG_CLIENT_HTTP_STATUS, 500, 599, A_BACKOFF, true, "5xx: backoff, at most max_5xx_retries"},
    {AG_CLIENT_HTTP_STATUS, 400, 499, A_FAIL, false, "4xx: fail at once"},
    {AG_CLIENT_STREAM_BROKEN, 0, 0, A_FAIL, false, "stream broken after delivering bytes: fail"},
    {AG_CLIENT_PROTOCOL, 0, 0, A_FAIL, false, "unreadable answer: fail"},
    {AG_CLIENT_DEADLINE, 0, 0, A_FAIL, false, "total timeout: fail"},
    {AG_CLIENT_CLOSED, 0, 0, A_FAIL, false, "client closed: fail"},
    {AG_CLIENT_CERTIFICATE, 0, 0, A_FAIL, false, "certificate refused: fail"},
    {AG_CLIENT_CANCELLED, 0, 0, A_FAIL, false, "cancelled by the caller"},
};

static const row *find_row(const agc_outcome *o) {
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (table[i].kind == o->kind && (!table[i].lo || (o->status >= table[i].lo && o->status <= table[i].hi)))
            return &table[i];
    return NULL;
}

agc_decision agc_decide(const ag_client_retry_policy *p, const agc_outcome *o, agc_budget *b, double u01) {
    agc_decision d = {.retry = false, .wait_s = 0, .rule = "ok"};
    if (o->kind == AG_CLIENT_OK) return d;
    const row *r = find_row(o);
    d.rule = r ? r->rule : "other status: fail";
    if (!r || r->act == A_FAIL) return d;
    if (o->retries_done >= p->max_retries) {
        snprintf(d.why, sizeof d.why, "gave up after %d retries (max_retries)", o->retries_done);
        return d;
    }
    if (r->limit_5xx && o->retries_5xx_done >= p->max_5xx_retries) {
        snprintf(d.why, sizeof d.why, "gave up after %d retries of 5xx (max_5xx_retries)", o->retries_5xx_done);
        return d;
    }
    double asked;
    if (r->act == A_SERVER_WAIT && agc_retry_after(o->retry_after, o->retry_after_ms, o->now_unix, &asked)) {
        if (asked > p->max_retry_after_s) {
            snprintf(d.why, sizeof d.why, "the server asked to retry after %.0f s, more than max_retry_after (%.0f s)",
                     asked, p->max_retry_after_s);
            return d;
        }
        d.wait_s = asked;
    } else {
        double expo = p->backoff_base_s * ldexp(1, o->retries_done);
        d.wait_s = u01 * (expo < p->backoff_cap_s ? expo : p->backoff_cap_s);
    }
    if (d.wait_s >= o->remaining_s) {
        snprintf(d.why, sizeof d.why, "the next attempt (after %.2f s) would start past the total timeout", d.wait_s);
        return d;
    }
    if (!agc_budget_spend(b)) {
        snprintf(d.why, sizeof d.why, "retry budget spent (retries stay under %.0f%% of calls plus %.0f)",
                 100 * p->budget_ratio, p->budget_floor);
        return d;
    }
    d.retry = true;
    return d;
}

/* ---- the hedge delay ---------------------------------------------------------------------------- */

void agc_latency_add(agc_latency *l, uint64_t ms) {
    l->ms[l->at] = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
    l->at = (l->at + 1) % AGC_LATENCY_SAMPLES;
    if (l->n < AGC_LATENCY_SAMPLES) l->n++;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

uint64_t agc_hedge_delay_ms(const agc_latency *l, const ag_client_options *o) {
    if (l->n < o->hedge_min_samples || l->n == 0) return o->hedge_initial_ms;
    uint32_t v[AGC_LATENCY_SAMPLES];
    memcpy(v, l->ms, (size_t)l->n * sizeof *v);
    qsort(v, (size_t)l->n, sizeof *v, cmp_u32);
    size_t rank = (size_t)ceil(o->hedge_quantile * (double)l->n); /* the nearest-rank quantile */
    rank = rank < 1 ? 1 : rank > (size_t)l->n ? (size_t)l->n : rank;
    return v[rank - 1];
}
