/*
 * Tests for src/server/stats.c (GET /v1/stats) on a clock of the test's own:
 * percentiles are exact by nearest rank, the window drops what is older and
 * a slot reused a window later starts empty, statuses past a second's table
 * go under "other", 499 is not an error, series sum to the window's counts,
 * and the cache hit rate counts only requests that looked the cache up.
 */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include "base/arena.h"
#include "json/json.h"
#include "server/internal.h"

#include <string.h>

#define T0 1000000000000ull /* the server's start, in ns */
#define SEC 1000000000ull

static ag_arena arena;

/* The answer at t_ns for window_s, parsed. */
static const ag_json_val *answer(ag_stats *st, uint64_t t_ns, int window_s) {
    ag_buf b;
    ag_buf_init(&b);
    ag_stats_now now = {.t_ns = t_ns, .model = "m", .status = "ok", .engine = NULL};
    ag_stats_json(st, &now, window_s, &b);
    assert_int_equal(b.err, AG_OK);
    /* the DOM's strings point into the text: it lives in the arena too */
    char *text = ag_arena_try_strndup(&arena, b.data, b.len);
    assert_non_null(text);
    ag_buf_deinit(&b);
    ag_json_val *root = NULL;
    assert_int_equal(ag_json_parse(text, strlen(text), NULL, &arena, &root, NULL), AG_OK);
    return root;
}

static const ag_json_val *at(const ag_json_val *v, const char *a, const char *b) {
    v = ag_json_obj_getc(v, a);
    return b ? ag_json_obj_getc(v, b) : v;
}

static int64_t num(const ag_json_val *v) {
    int64_t i;
    assert_true(ag_json_get_int(v, &i));
    return i;
}

static double real(const ag_json_val *v) {
    double d;
    assert_true(ag_json_get_double(v, &d));
    return d;
}

static void test_percentiles_are_nearest_rank(void **state) {
    (void)state;
    ag_stats *st = ag_stats_new(T0);
    /* 100 generations in shuffled order: TTFT k ms, end to end 10 k ms, TPOT only for the even ones */
    for (int i = 0; i < 100; i++) {
        uint64_t k = (uint64_t)((i * 37) % 100 + 1);
        ag_stats_gen g = {.ttft_ns = k * 1000000, .e2e_ns = 10 * k * 1000000, .tpot_ns = k % 2 ? 0 : k * 1000,
                          .prompt_tokens = 10, .cached_tokens = k % 2 ? 0 : 10, .cache_hit = -1};
        ag_stats_request(st, T0 + SEC + (uint64_t)i, 200, &g);
    }
    const ag_json_val *r = answer(st, T0 + 2 * SEC, 60);
    const ag_json_val *w = ag_json_obj_getc(r, "window");
    assert_int_equal(num(ag_json_obj_getc(w, "latency_samples")), 100);
    assert_true(real(at(w, "ttft_ms", "p50")) == 50);
    assert_true(real(at(w, "ttft_ms", "p90")) == 90);
    assert_true(real(at(w, "ttft_ms", "p99")) == 99);
    assert_true(real(at(w, "ttft_ms", "max")) == 100);
    assert_true(real(at(w, "e2e_ms", "p50")) == 500);
    /* TPOT over the 50 that have one: 2, 4, ..., 100 us */
    assert_true(real(at(w, "tpot_ms", "p50")) == 0.05);
    assert_true(real(at(w, "tpot_ms", "max")) == 0.1);
    assert_true(real(ag_json_obj_getc(w, "prefix_cache_hit_rate")) == 0.5);
    assert_true(ag_json_is(ag_json_obj_getc(w, "response_cache_hit_rate"), AG_JSON_NULL));
    assert_true(ag_json_is(ag_json_obj_getc(r, "engine"), AG_JSON_NULL));
    /* one sample: every percentile is it */
    ag_stats *one = ag_stats_new(T0);
    ag_stats_request(one, T0 + 1, 200, &(ag_stats_gen){.ttft_ns = 3000000, .e2e_ns = 4000000, .cache_hit = -1});
    w = ag_json_obj_getc(answer(one, T0 + 2, 60), "window");
    assert_true(real(at(w, "ttft_ms", "p50")) == 3 && real(at(w, "ttft_ms", "p99")) == 3);
    assert_true(ag_json_is(ag_json_obj_getc(w, "tpot_ms"), AG_JSON_NULL));
    ag_stats_free(one);
    ag_stats_free(st);
}

static void test_window_and_slot_reuse(void **state) {
    (void)state;
    ag_stats *st = ag_stats_new(T0);
    ag_stats_gen g = {.ttft_ns = 1000000, .e2e_ns = 2000000, .cache_hit = 1};
    ag_stats_request(st, T0 + 5 * SEC, 200, &g);
    ag_stats_token(st, T0 + 5 * SEC);
    ag_stats_token(st, T0 + 5 * SEC);
    /* at 100 s: outside a 60 s window, inside a 300 s one */
    const ag_json_val *r = answer(st, T0 + 100 * SEC, 60);
    assert_int_equal(num(at(r, "window", "requests")), 0);
    assert_true(ag_json_is(at(r, "window", "ttft_ms"), AG_JSON_NULL));
    assert_int_equal(num(at(r, "totals", "requests")), 1);
    assert_int_equal(num(at(r, "totals", "generated_tokens")), 2);
    assert_int_equal(ag_json_len(at(r, "series", "requests")), 60);
    r = answer(st, T0 + 100 * SEC, 300);
    assert_int_equal(num(at(r, "window", "requests")), 1);
    assert_int_equal(num(at(r, "window", "generated_tokens")), 2);
    assert_true(real(at(r, "window", "response_cache_hit_rate")) == 1);
    assert_int_equal(ag_json_len(at(r, "series", "requests")), 101); /* seconds 1..101 of the server's life */
    assert_int_equal(num(ag_json_arr_at(at(r, "series", "generated_tokens"), 5)), 2);
    /* 300 s later the same slot holds another second: the old counts are gone from it */
    ag_stats_request(st, T0 + 305 * SEC, 404, NULL);
    r = answer(st, T0 + 305 * SEC, 300);
    assert_int_equal(num(at(r, "window", "requests")), 1);
    assert_int_equal(num(at(r, "window", "generated_tokens")), 0);
    assert_int_equal(num(at(r, "window", "errors")), 1);
    assert_int_equal(num(at(r, "totals", "requests")), 2);
    ag_stats_free(st);
}

static void test_statuses_errors_and_series(void **state) {
    (void)state;
    ag_stats *st = ag_stats_new(T0);
    static const int codes[] = {200, 400, 401, 404, 405, 408, 413, 429, 500, 503};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) ag_stats_request(st, T0 + SEC, codes[i], NULL);
    ag_stats_request(st, T0 + SEC, 503, NULL); /* past the table: "other" */
    ag_stats_request(st, T0 + 2 * SEC, 499, NULL);
    ag_stats_request(st, T0 + 2 * SEC, 499, NULL);
    ag_stats_gen miss = {.cache_hit = 0}, hit = {.cache_hit = 1};
    ag_stats_request(st, T0 + 3 * SEC, 200, &miss);
    ag_stats_request(st, T0 + 3 * SEC, 200, &hit);
    ag_stats_request(st, T0 + 3 * SEC, 200, &miss);
    ag_stats_request(st, T0 + 3 * SEC, 200, &miss);
    const ag_json_val *r = answer(st, T0 + 3 * SEC + SEC / 2, 60);
    const ag_json_val *w = ag_json_obj_getc(r, "window"), *status = ag_json_obj_getc(w, "status");
    assert_int_equal(num(ag_json_obj_getc(w, "requests")), 17);
    assert_int_equal(num(ag_json_obj_getc(w, "errors")), 10); /* 400..503, "other" included, 499 not */
    assert_int_equal(num(ag_json_obj_getc(status, "499")), 2);
    assert_int_equal(num(ag_json_obj_getc(status, "200")), 5);
    assert_int_equal(num(ag_json_obj_getc(status, "other")), 4); /* 429, 500, 503 and 503 */
    assert_null(ag_json_obj_getc(status, "429"));
    assert_true(real(ag_json_obj_getc(w, "response_cache_hit_rate")) == 0.25);
    assert_int_equal(num(ag_json_obj_getc(w, "generations")), 4);
    assert_int_equal(num(at(r, "totals", "errors")), 10);
    /* series: 4 seconds, oldest first, summing to the window */
    const ag_json_val *req = at(r, "series", "requests");
    assert_int_equal(ag_json_len(req), 4);
    static const int64_t want[] = {0, 11, 2, 4};
    for (size_t i = 0; i < 4; i++) assert_int_equal(num(ag_json_arr_at(req, i)), want[i]);
    /* rates: the server is 3.5 s old, younger than the window */
    assert_true(real(ag_json_obj_getc(w, "requests_per_s")) == 17 / 3.5);
    ag_stats_free(st);
}

static void test_window_parse(void **state) {
    (void)state;
    int w;
    assert_int_equal(ag_stats_window_parse((ag_str){NULL, 0}, &w), AG_OK);
    assert_int_equal(w, AG_STATS_DEFAULT_WINDOW);
    assert_int_equal(ag_stats_window_parse(AG_STR_LIT("x=1&window=300"), &w), AG_OK);
    assert_int_equal(w, 300);
    static const char *const bad[] = {"window=0", "window=301", "window=", "window=1x", "window=-5", "window=99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(ag_stats_window_parse(ag_str_from_cstr(bad[i]), &w), AG_EINVAL);
}

static int setup(void **state) {
    (void)state;
    ag_arena_init(&arena, 1 << 16);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ag_arena_deinit(&arena);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentiles_are_nearest_rank),
        cmocka_unit_test(test_window_and_slot_reuse),
        cmocka_unit_test(test_statuses_errors_and_series),
        cmocka_unit_test(test_window_parse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
