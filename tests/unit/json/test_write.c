/* Tests for the streaming JSON writer (src/json/json_write.c). */
#include "test.h"

#include "json/json.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void check_double_text(double v, const char *want) {
    char out[40];
    size_t n = ag_json_format_double(v, out);
    assert_int_equal(n, strlen(out));
    if (strcmp(out, want) != 0) fail_msg("%.17g formatted as %s, want %s", v, out, want);
}

static void test_double_shortest(void **state) {
    (void)state;
    check_double_text(0.1, "0.1");
    check_double_text(1.0, "1.0");
    check_double_text(-0.0, "-0.0");
    check_double_text(0.30000000000000004, "0.30000000000000004");
    check_double_text(1e21, "1e+21");
    check_double_text(123456789.0, "123456789.0");
    check_double_text(0x1p-1074, "5e-324");
    check_double_text(DBL_MAX, "1.7976931348623157e+308");
    check_double_text(2.2250738585072014e-308, "2.2250738585072014e-308");
    check_double_text(0.7, "0.7");
}

/* Random bit patterns: the text reads back to the identical double. */
static void test_double_round_trip(void **state) {
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 0);
    uint64_t seed = 7;
    for (int t = 0; t < 100000; t++) {
        uint64_t bits = ag_test_rand(&seed);
        double d;
        memcpy(&d, &bits, 8);
        if (!isfinite(d)) continue;
        char out[40];
        size_t n = ag_json_format_double(d, out);
        ag_json_val *v;
        assert_int_equal(ag_json_parse(out, n, NULL, &a, &v, NULL), AG_OK);
        assert_int_equal(v->type, AG_JSON_DOUBLE);
        assert_memory_equal(&v->u.d, &d, 8);
        if ((t & 1023) == 0) ag_arena_reset(&a);
    }
    ag_arena_deinit(&a);
}

static void test_compact_and_pretty(void **state) {
    (void)state;
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    for (int pretty = 0; pretty < 2; pretty++) {
        ag_buf_reset(&b);
        ag_jw_init(&w, &b, pretty ? 2 : 0, AG_UTF8_REJECT);
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "id");
        ag_jw_strc(&w, "chatcmpl-1");
        ag_jw_keyc(&w, "choices");
        ag_jw_arr_begin(&w);
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "index");
        ag_jw_int(&w, 0);
        ag_jw_keyc(&w, "logprobs");
        ag_jw_null(&w);
        ag_jw_obj_end(&w);
        ag_jw_arr_end(&w);
        ag_jw_keyc(&w, "empty");
        ag_jw_arr_begin(&w);
        ag_jw_arr_end(&w);
        ag_jw_keyc(&w, "ok");
        ag_jw_bool(&w, true);
        ag_jw_obj_end(&w);
        assert_int_equal(b.err, AG_OK);
        if (!pretty)
            assert_string_equal(b.data, "{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"logprobs\":null}],"
                                        "\"empty\":[],\"ok\":true}");
        else
            assert_string_equal(b.data, "{\n  \"id\": \"chatcmpl-1\",\n  \"choices\": [\n    {\n      \"index\": 0,\n"
                                        "      \"logprobs\": null\n    }\n  ],\n  \"empty\": [],\n  \"ok\": true\n}");
    }
    ag_buf_deinit(&b);
}

static void test_ints(void **state) {
    (void)state;
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    ag_jw_init(&w, &b, 0, AG_UTF8_REJECT);
    ag_jw_arr_begin(&w);
    ag_jw_int(&w, INT64_MIN);
    ag_jw_int(&w, INT64_MAX);
    ag_jw_int(&w, 0);
    ag_jw_int(&w, -7);
    ag_jw_arr_end(&w);
    assert_string_equal(b.data, "[-9223372036854775808,9223372036854775807,0,-7]");
    ag_buf_deinit(&b);
}

static void expect_misuse(void (*script)(ag_jw *), ag_status want) {
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    ag_jw_init(&w, &b, 0, AG_UTF8_REJECT);
    script(&w);
    assert_int_equal(b.err, want);
    ag_buf_deinit(&b);
}

static void value_without_key(ag_jw *w) {
    ag_jw_obj_begin(w);
    ag_jw_int(w, 1);
}
static void key_in_array(ag_jw *w) {
    ag_jw_arr_begin(w);
    ag_jw_keyc(w, "k");
}
static void wrong_close(ag_jw *w) {
    ag_jw_arr_begin(w);
    ag_jw_obj_end(w);
}
static void close_with_key_pending(ag_jw *w) {
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "k");
    ag_jw_obj_end(w);
}
static void nan_value(ag_jw *w) { ag_jw_double(w, NAN); }
static void too_deep(ag_jw *w) {
    for (int i = 0; i <= AG_JW_MAX_DEPTH; i++) ag_jw_arr_begin(w);
}
static void bad_utf8(ag_jw *w) { ag_jw_str(w, "\xc3", 1); }

static void test_misuse_sets_error(void **state) {
    (void)state;
    expect_misuse(value_without_key, AG_EINVAL);
    expect_misuse(key_in_array, AG_EINVAL);
    expect_misuse(wrong_close, AG_EINVAL);
    expect_misuse(close_with_key_pending, AG_EINVAL);
    expect_misuse(nan_value, AG_EINVAL);
    expect_misuse(too_deep, AG_ELIMIT);
    expect_misuse(bad_utf8, AG_EINVAL);
}

static void test_parse_write_parse(void **state) {
    (void)state;
    const char *docs[] = {
        "{\"a\":[1,-2,3.25,1e300,-0.0,true,false,null],\"s\":\"\\u0001\\n\\\"\\\\ \xf0\x9f\x98\x80\",\"o\":{}}",
        "[[[[[]]]],{\"k\":{\"k\":{\"k\":\"v\"}}}]",
        "\"just a string\"",
        "-9223372036854775808",
    };
    ag_arena a;
    ag_arena_init(&a, 0);
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        for (int indent = 0; indent <= 4; indent += 4) {
            ag_json_val *v1, *v2;
            assert_int_equal(ag_json_parse(docs[i], strlen(docs[i]), NULL, &a, &v1, NULL), AG_OK);
            ag_buf b;
            ag_buf_init(&b);
            ag_jw w;
            ag_jw_init(&w, &b, (uint8_t)indent, AG_UTF8_REJECT);
            ag_jw_value(&w, v1);
            assert_int_equal(b.err, AG_OK);
            assert_int_equal(ag_json_parse(b.data, b.len, NULL, &a, &v2, NULL), AG_OK);
            assert_true(ag_json_equal(v1, v2));
            if (indent == 0 && i == 1) assert_string_equal(b.data, docs[i]); /* compact is canonical here */
            ag_buf_deinit(&b);
        }
    }
    ag_arena_deinit(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_double_shortest),   cmocka_unit_test(test_double_round_trip),
        cmocka_unit_test(test_compact_and_pretty), cmocka_unit_test(test_ints),
        cmocka_unit_test(test_misuse_sets_error), cmocka_unit_test(test_parse_write_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
