/*
 * Tests for src/obs/trace.c: W3C traceparent validation (the spec's
 * examples of valid and invalid headers), X-Trace-ID, new ids, sampling,
 * and the header written back.
 */
#include "test.h"

#include "obs/trace.h"

#include <string.h>

static bool parse(const char *h, char *trace, char *parent, bool *sampled) {
    return ag_trace_parse(ag_str_from_cstr(h), trace, parent, sampled);
}

static void test_parse(void **state) {
    (void)state;
    char trace[33], parent[17];
    bool sampled;
    assert_true(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", trace, parent, &sampled));
    assert_string_equal(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(parent, "00f067aa0ba902b7");
    assert_true(sampled);
    assert_true(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", trace, parent, &sampled));
    assert_false(sampled);
    assert_true(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", trace, parent, &sampled));
    assert_true(sampled); /* other flag bits do not hide the sampled bit */
    /* a later version may carry more fields */
    assert_true(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", trace, parent, &sampled));
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",       /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  /* version 00 has no more fields */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* version ff */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    /* uppercase */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    /* zero parent id */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",    /* not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i], trace, parent, &sampled)) fail_msg("accepted %s", bad[i]);
}

static void test_begin(void **state) {
    (void)state;
    ag_trace t;
    ag_trace_begin(&t, AG_STR_LIT("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), (ag_str){NULL, 0}, 1.0);
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(t.parent_id, "00f067aa0ba902b7");
    assert_false(t.sampled); /* the caller's decision wins over the ratio */
    assert_int_equal(strlen(t.span_id), 16);
    char tp[56];
    ag_trace_format(&t, tp);
    assert_int_equal(strlen(tp), 55);
    assert_memory_equal(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
    assert_string_equal(tp + 52, "-00");
    ag_trace_begin(&t, AG_STR_LIT("bogus"), AG_STR_LIT("0123456789ABCDEF0123456789abcdef"), 1.0);
    assert_string_equal(t.trace_id, "0123456789abcdef0123456789abcdef");
    assert_string_equal(t.parent_id, "");
    assert_true(t.sampled);
    /* new ids differ; the ratio samples about its share */
    int sampled = 0;
    char prev[33] = "";
    for (int i = 0; i < 4000; i++) {
        ag_trace_begin(&t, (ag_str){NULL, 0}, (ag_str){NULL, 0}, 0.25);
        assert_string_not_equal(t.trace_id, prev);
        memcpy(prev, t.trace_id, 33);
        sampled += t.sampled;
    }
    assert_in_range(sampled, 800, 1200);
    ag_trace_begin(&t, (ag_str){NULL, 0}, (ag_str){NULL, 0}, 0);
    assert_false(t.sampled);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse), cmocka_unit_test(test_begin)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
