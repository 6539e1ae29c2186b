/*
 * test_policy.c - the client's decision table (src/client/policy.c): every
 * row, the waits' bounds, Retry-After in its three forms, the limits, and the
 * budget's promise (retries stay under ratio x calls + floor).
 */
#define _GNU_SOURCE
#include "test.h"

#include "client/client_int.h"

#include <math.h>
#include <string.h>

static ag_client_retry_policy policy(void) { return ag_client_options_default().retry; }

static agc_outcome out(ag_client_outcome kind, int status) {
    return (agc_outcome){.kind = kind, .status = status, .remaining_s = 600, .now_unix = 1700000000};
}

static void test_rows(void **state) {
    (void)state;
    const struct {
        ag_client_outcome kind;
        int status;
        bool retry;
    } rows[] = {
        {AG_CLIENT_OK, 200, false},           {AG_CLIENT_CONNECT_ERROR, 0, true}, {AG_CLIENT_RESET, 0, true},
        {AG_CLIENT_TIMEOUT, 0, true},         {AG_CLIENT_HTTP_STATUS, 429, true}, {AG_CLIENT_HTTP_STATUS, 503, true},
        {AG_CLIENT_HTTP_STATUS, 408, true},   {AG_CLIENT_HTTP_STATUS, 409, true}, {AG_CLIENT_HTTP_STATUS, 500, true},
        {AG_CLIENT_HTTP_STATUS, 502, true},   {AG_CLIENT_HTTP_STATUS, 504, true}, {AG_CLIENT_HTTP_STATUS, 400, false},
        {AG_CLIENT_HTTP_STATUS, 401, false},  {AG_CLIENT_HTTP_STATUS, 404, false}, {AG_CLIENT_HTTP_STATUS, 413, false},
        {AG_CLIENT_HTTP_STATUS, 422, false},  {AG_CLIENT_STREAM_BROKEN, 0, false}, {AG_CLIENT_PROTOCOL, 0, false},
        {AG_CLIENT_DEADLINE, 0, false},       {AG_CLIENT_CLOSED, 0, false},       {AG_CLIENT_CERTIFICATE, 0, false},
    };
    ag_client_retry_policy p = policy();
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        agc_budget b;
        agc_budget_init(&b, &p);
        agc_outcome o = out(rows[i].kind, rows[i].status);
        agc_decision d = agc_decide(&p, &o, &b, 0.5);
        if (d.retry != rows[i].retry)
            fail_msg("%s %d: retry %d, want %d (%s)", ag_client_outcome_name(rows[i].kind), rows[i].status, d.retry,
                     rows[i].retry, d.rule);
        assert_non_null(d.rule);
    }
}

/* Full jitter: retry n waits within [0, min(cap, base * 2^n)], and the draw spans the whole range. */
static void test_backoff_bounds(void **state) {
    (void)state;
    ag_client_retry_policy p = policy();
    for (int n = 0; n < 8; n++) {
        double hi = 0.5 * (1 << n) < 8 ? 0.5 * (1 << n) : 8;
        for (double u = 0; u < 1; u += 0.125) {
            agc_budget b = {.tokens = 100};
            p.max_retries = 100;
            agc_outcome o = out(AG_CLIENT_TIMEOUT, 0);
            o.retries_done = n;
            agc_decision d = agc_decide(&p, &o, &b, u);
            assert_true(d.retry);
            assert_true(d.wait_s >= 0 && d.wait_s <= hi + 1e-9);
            assert_true(fabs(d.wait_s - u * hi) < 1e-9);
        }
    }
}

static void test_retry_after(void **state) {
    (void)state;
    double s;
    const int64_t now = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    assert_true(agc_retry_after(AG_STR_LIT("3"), (ag_str){0}, now, &s));
    assert_true(s == 3);
    assert_true(agc_retry_after((ag_str){0}, AG_STR_LIT("250.5"), now, &s)); /* retry-after-ms wins */
    assert_true(fabs(s - 0.2505) < 1e-12);
    assert_true(agc_retry_after(AG_STR_LIT("Sun, 06 Nov 1994 08:49:47 GMT"), (ag_str){0}, now, &s));
    assert_true(s == 10);
    assert_true(agc_retry_after(AG_STR_LIT("Sun, 06 Nov 1994 08:49:27 GMT"), (ag_str){0}, now, &s)); /* past: now */
    assert_true(s == 0);
    assert_false(agc_retry_after(AG_STR_LIT("soon"), (ag_str){0}, now, &s));
    assert_false(agc_retry_after(AG_STR_LIT("-1"), (ag_str){0}, now, &s));
    assert_false(agc_retry_after((ag_str){0}, (ag_str){0}, now, &s));
    /* 429/503 wait what the server says; a wait past max_retry_after or the time left ends the call */
    ag_client_retry_policy p = policy();
    agc_budget b;
    agc_budget_init(&b, &p);
    agc_outcome o = out(AG_CLIENT_HTTP_STATUS, 503);
    o.retry_after = AG_STR_LIT("7");
    agc_decision d = agc_decide(&p, &o, &b, 0.9);
    assert_true(d.retry && d.wait_s == 7);
    o.retry_after = AG_STR_LIT("61");
    d = agc_decide(&p, &o, &b, 0.9);
    assert_false(d.retry);
    assert_non_null(strstr(d.why, "max_retry_after"));
    o.retry_after = AG_STR_LIT("5"), o.remaining_s = 4;
    d = agc_decide(&p, &o, &b, 0.9);
    assert_false(d.retry);
    assert_non_null(strstr(d.why, "total timeout"));
    /* 500 does not read Retry-After: backoff */
    o = out(AG_CLIENT_HTTP_STATUS, 500);
    o.retry_after = AG_STR_LIT("7");
    d = agc_decide(&p, &o, &b, 0.5);
    assert_true(d.retry && d.wait_s == 0.25);
}

static void test_limits(void **state) {
    (void)state;
    ag_client_retry_policy p = policy();
    p.max_retries = 5, p.max_5xx_retries = 1;
    agc_budget b;
    agc_budget_init(&b, &p);
    agc_outcome o = out(AG_CLIENT_HTTP_STATUS, 502);
    o.retries_done = 1, o.retries_5xx_done = 1;
    agc_decision d = agc_decide(&p, &o, &b, 0.5);
    assert_false(d.retry);
    assert_non_null(strstr(d.why, "max_5xx_retries"));
    o = out(AG_CLIENT_HTTP_STATUS, 503); /* 503 is not held to the 5xx limit */
    o.retries_done = 1, o.retries_5xx_done = 1;
    assert_true(agc_decide(&p, &o, &b, 0.5).retry);
    o = out(AG_CLIENT_RESET, 0);
    o.retries_done = 5;
    d = agc_decide(&p, &o, &b, 0.5);
    assert_false(d.retry);
    assert_non_null(strstr(d.why, "max_retries"));
}

/* In an outage where every attempt fails, retries stay under ratio x calls + floor. */
static void test_budget(void **state) {
    (void)state;
    ag_client_retry_policy p = policy();
    agc_budget b;
    agc_budget_init(&b, &p);
    int calls = 1000, retries = 0;
    for (int i = 0; i < calls; i++) {
        agc_budget_earn(&b, &p);
        for (int r = 0;; r++) {
            agc_outcome o = out(AG_CLIENT_HTTP_STATUS, 503);
            o.retries_done = r;
            agc_decision d = agc_decide(&p, &o, &b, 0.5);
            if (!d.retry) break;
            retries++;
        }
    }
    assert_true(retries <= p.budget_ratio * calls + p.budget_floor);
    assert_true(retries >= p.budget_ratio * calls - 1); /* and it does spend what it earns */
    /* once it is spent, the reason says so */
    agc_outcome o = out(AG_CLIENT_TIMEOUT, 0);
    agc_decision d = agc_decide(&p, &o, &b, 0.5);
    assert_false(d.retry);
    assert_non_null(strstr(d.why, "budget"));
}

/* The hedge delay: the initial one until enough samples, then the nearest-rank quantile of the last 256. */
static void test_hedge_delay(void **state) {
    (void)state;
    ag_client_options o = ag_client_options_default();
    agc_latency l = {0};
    assert_int_equal(agc_hedge_delay_ms(&l, &o), 1000);
    for (int i = 100; i >= 1; i--) {
        agc_latency_add(&l, (uint64_t)i);
        assert_int_equal(agc_hedge_delay_ms(&l, &o), l.n < 20 ? 1000 : (uint64_t)((100 - l.n) + (l.n * 95 + 99) / 100));
    }
    assert_int_equal(agc_hedge_delay_ms(&l, &o), 95); /* 1..100 */
    o.hedge_quantile = 1;
    assert_int_equal(agc_hedge_delay_ms(&l, &o), 100);
    o.hedge_quantile = 0;
    assert_int_equal(agc_hedge_delay_ms(&l, &o), 1);
    o.hedge_quantile = 0.95;
    for (int i = 0; i < 256; i++) agc_latency_add(&l, 7); /* the oldest samples go */
    assert_int_equal(l.n, 256);
    assert_int_equal(agc_hedge_delay_ms(&l, &o), 7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),   cmocka_unit_test(test_backoff_bounds), cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_limits), cmocka_unit_test(test_budget),  cmocka_unit_test(test_hedge_delay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
