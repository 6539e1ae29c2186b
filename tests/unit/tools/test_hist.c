/*
 * Tests for src/tools/hist.c and the knee/SLO logic of src/tools/report.c:
 * percentiles within the promised 1 % of the exact ones from microseconds to
 * minutes, merging, and the knee named where throughput stalls while p99
 * latency climbs.
 */
#include "test.h"

#include "tools/hist.h"
#include "tools/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_quantiles_within_one_percent(void **state) {
    (void)state;
    enum { N = 20000 };
    static uint64_t v[N];
    uint64_t seed = 3;
    static ag_hist h;
    ag_hist_init(&h);
    for (int i = 0; i < N; i++) { /* log-uniform from 1 us to ~20 minutes */
        double e = (double)(ag_test_rand(&seed) % 1000000) / 1e6 * 21;
        v[i] = (uint64_t)pow(2, e) + 1;
        ag_hist_add(&h, v[i]);
    }
    qsort(v, N, sizeof *v, cmp_u64);
    const double qs[] = {0.01, 0.5, 0.9, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++) {
        double exact = (double)v[(size_t)ceil(qs[i] * N) - 1], got = ag_hist_quantile(&h, qs[i]);
        if (fabs(got - exact) > 0.01 * exact + 1) fail_msg("q%.3f: %.1f vs exact %.1f", qs[i], got, exact);
    }
    double sum = 0;
    for (int i = 0; i < N; i++) sum += (double)v[i];
    assert_true(fabs(ag_hist_mean(&h) - sum / N) < 1e-6 * sum / N);
    assert_int_equal(h.min_us, v[0]);
    assert_int_equal(h.max_us, v[N - 1]);
}

static void test_merge_and_edges(void **state) {
    (void)state;
    static ag_hist a, b;
    ag_hist_init(&a), ag_hist_init(&b);
    assert_true(ag_hist_quantile(&a, 0.5) == 0);
    for (uint64_t i = 1; i <= 100; i++) ag_hist_add(i <= 50 ? &a : &b, i * 1000);
    ag_hist_merge(&a, &b);
    assert_int_equal(a.n, 100);
    assert_true(fabs(ag_hist_quantile(&a, 0.5) - 50000) <= 500);
    ag_hist_add(&a, UINT64_MAX); /* beyond the top bucket: counted, max kept exactly */
    assert_int_equal(a.max_us, UINT64_MAX);
    assert_true(ag_hist_quantile(&a, 1.0) > 1e9);
}

/* A step whose results say: req/s, p99 latency (ms), all ok. */
static void fake_step(ag_bench_row *row, double load, double rps, double p99_ms) {
    memset(row, 0, sizeof *row);
    row->load = load;
    ag_lg_result *r = &row->r;
    ag_hist_init(&r->e2e), ag_hist_init(&r->ttft), ag_hist_init(&r->tpot), ag_hist_init(&r->itl);
    r->seconds = 10;
    r->counted = r->ok = r->good = (uint64_t)(rps * 10);
    for (uint64_t i = 0; i < r->ok; i++) ag_hist_add(&r->e2e, (uint64_t)(p99_ms * 1000 * (i + 1) / r->ok));
    for (uint64_t i = 0; i < r->ok; i++) ag_hist_add(&r->ttft, (uint64_t)(p99_ms * 100));
}

static void test_knee_and_slo(void **state) {
    (void)state;
    static ag_bench_row rows[5];
    fake_step(&rows[0], 1, 10, 100);
    fake_step(&rows[1], 2, 19, 105);
    fake_step(&rows[2], 4, 36, 110);
    fake_step(&rows[3], 8, 38, 220); /* +5 % throughput, +100 % p99: the knee was at 4 */
    fake_step(&rows[4], 16, 39, 450);
    ag_bench_run run = {.target = "t", .mode = "concurrency", .rows = rows, .n = 5, .knee_throughput = 0.10,
                        .knee_latency = 0.50};
    assert_int_equal(ag_bench_knee(&run), 2);
    run.n = 3; /* still climbing */
    assert_int_equal(ag_bench_knee(&run), -1);
    run.n = 5;
    assert_int_equal(ag_bench_slo_max(&run), -1); /* no SLOs */
    run.has_slo = true, run.slo.ttft_us = 15000; /* TTFT is a tenth of p99 here: 11 ms at 4, 22 ms at 8 */
    assert_int_equal(ag_bench_slo_max(&run), 2);
    rows[2].r.counted++; /* one failed request disqualifies a step */
    assert_int_equal(ag_bench_slo_max(&run), 1);
}

/* The HTML report: the parameters escaped in a header, each table once as HTML, the knee marked in the
 * summary and on the three load charts, the target's version from its Server header. */
static void test_report_html(void **state) {
    (void)state;
    static ag_bench_row rows[5];
    fake_step(&rows[0], 1, 10, 100);
    fake_step(&rows[1], 2, 19, 105);
    fake_step(&rows[2], 4, 36, 110);
    fake_step(&rows[3], 8, 38, 220);
    fake_step(&rows[4], 16, 39, 450);
    snprintf(rows[1].r.server, sizeof rows[1].r.server, "autoglm/9.9.9");
    rows[4].r.counted += 3, rows[4].r.http_error = 3, rows[4].r.statuses[0].status = 503, rows[4].r.statuses[0].n = 3;
    ag_bench_run run = {.target = "http://h/<x>&\"", .mode = "concurrency", .rows = rows, .n = 5,
                        .knee_throughput = 0.10, .knee_latency = 0.50, .steps = "1, 2, 4, 8, 16",
                        .workload = "chat, model m", .per_step = "10 s measured", .started = "2026-12-02T00:00:00Z",
                        .wall_s = 52.5, .client = "autoglm bench 1.2.3"};
    ag_buf b;
    ag_buf_init(&b);
    ag_bench_html(&run, &b);
    ag_buf_append_char(&b, 0);
    const char *h = b.data;
    assert_null(strstr(h, "<pre"));
    assert_null(strstr(h, "<x>"));
    assert_non_null(strstr(h, "<th>target</th><td>http://h/&lt;x&gt;&amp;&quot;</td>"));
    assert_non_null(strstr(h, "<th>sweep</th><td>concurrency 1, 2, 4, 8, 16 (5 steps)</td>"));
    assert_non_null(strstr(h, "<th>duration</th><td>52.5 s</td>"));
    assert_non_null(strstr(h, "<th>versions</th><td>autoglm bench 1.2.3; target: autoglm/9.9.9</td>"));
    assert_null(strstr(h, "<th>SLOs</th>"));
    assert_non_null(strstr(h, "<tr class=\"knee\"><td>4</td>"));
    assert_non_null(strstr(h, "knee: concurrency 4 (beyond it"));
    assert_non_null(strstr(h, "concurrency 16: 393 requests: 390 ok, 3 HTTP errors (503 x3)"));
    size_t tables = 0, marks = 0;
    for (const char *p = h; (p = strstr(p, "<table")); p++) tables++;
    for (const char *p = h; (p = strstr(p, ">knee (4)</text>")); p++) marks++;
    assert_int_equal(tables, 6);
    assert_int_equal(marks, 3);
    ag_buf_deinit(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantiles_within_one_percent),
        cmocka_unit_test(test_merge_and_edges),
        cmocka_unit_test(test_knee_and_slo),
        cmocka_unit_test(test_report_html),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
