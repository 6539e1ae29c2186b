/* Tests for the JSON parser and DOM (src/json/json.c). */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include "base/alloc.h"
#include "json/json.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static ag_arena arena;

static int setup(void **state) {
    (void)state;
    ag_arena_init(&arena, 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ag_arena_deinit(&arena);
    return 0;
}

static ag_json_val *parse_ok(const char *s) {
    ag_json_val *root = NULL;
    ag_json_err err = {0};
    ag_status st = ag_json_parse(s, strlen(s), NULL, &arena, &root, &err);
    if (st != AG_OK) fail_msg("parse of %s failed at %zu: %s", s, err.offset, err.reason);
    return root;
}

static ag_json_err parse_fail(const char *s, size_t n, ag_status want) {
    ag_json_val *root = NULL;
    ag_json_err err = {0};
    assert_int_equal(ag_json_parse(s, n, NULL, &arena, &root, &err), want);
    assert_non_null(err.reason);
    return err;
}

static void test_scalars_and_containers(void **state) {
    (void)state;
    assert_int_equal(ag_json_type_of(parse_ok("null")), AG_JSON_NULL);
    assert_int_equal(ag_json_type_of(parse_ok(" true ")), AG_JSON_TRUE);
    assert_int_equal(ag_json_type_of(parse_ok("false")), AG_JSON_FALSE);
    ag_json_val *v = parse_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                              "\"temperature\":0.5,\"stream\":true,\"n\":2,\"stop\":null}");
    assert_int_equal(ag_json_len(v), 6);
    assert_true(ag_str_eq_cstr(ag_json_str(ag_json_obj_getc(v, "model")), "m"));
    const ag_json_val *msgs = ag_json_obj_getc(v, "messages");
    assert_int_equal(ag_json_type_of(msgs), AG_JSON_ARRAY);
    assert_true(ag_str_eq_cstr(ag_json_str(ag_json_obj_getc(ag_json_arr_at(msgs, 0), "content")), "hi"));
    assert_null(ag_json_arr_at(msgs, 1));
    double t;
    assert_true(ag_json_get_double(ag_json_obj_getc(v, "temperature"), &t) && t == 0.5);
    bool b;
    assert_true(ag_json_get_bool(ag_json_obj_getc(v, "stream"), &b) && b);
    int64_t n;
    assert_true(ag_json_get_int(ag_json_obj_getc(v, "n"), &n) && n == 2);
    assert_int_equal(ag_json_type_of(ag_json_obj_getc(v, "stop")), AG_JSON_NULL);
    assert_non_null(ag_json_obj_getc(v, "stop"));
    assert_null(ag_json_obj_getc(v, "absent"));
    assert_null(ag_json_obj_getc(msgs, "model")); /* not an object */
    assert_int_equal(ag_json_len(parse_ok("[]")), 0);
    assert_int_equal(ag_json_len(parse_ok("{}")), 0);
    assert_int_equal(ag_json_len(parse_ok(" [ [ ] , { } ] ")), 2);
}

static void check_string(const char *json, const char *want, size_t want_len) {
    ag_json_val *v = parse_ok(json);
    ag_str s = ag_json_str(v);
    assert_int_equal(s.n, want_len);
    assert_memory_equal(s.p, want, want_len);
}

static void test_string_escapes(void **state) {
    (void)state;
    check_string("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8);
    check_string("\"a\\u0000b\"", "a\0b", 3);
    check_string("\"\\u00e9\\u00E9\"", "\xc3\xa9\xc3\xa9", 4);
    check_string("\"\\u20ac\"", "\xe2\x82\xac", 3);
    check_string("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4); /* surrogate pair */
    check_string("\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf", 4); /* U+10FFFF */
    check_string("\"\xe4\xb8\xad\xe6\x96\x87 raw\"", "\xe4\xb8\xad\xe6\x96\x87 raw", 10);
    parse_fail("\"\\ud83d\"", 8, AG_EINVAL);           /* lone high */
    parse_fail("\"\\ude00\"", 8, AG_EINVAL);           /* lone low */
    parse_fail("\"\\ud83d\\u0041\"", 14, AG_EINVAL);   /* high then not-low */
    parse_fail("\"\\x\"", 4, AG_EINVAL);
    parse_fail("\"\\u12g4\"", 8, AG_EINVAL);
    parse_fail("\"\\u12\"", 6, AG_EINVAL);
    parse_fail("\"a\tb\"", 5, AG_EINVAL); /* raw control character */
    parse_fail("\"abc", 4, AG_EINVAL);
    parse_fail("\"abc\\", 5, AG_EINVAL);
    parse_fail("\"\xff\"", 3, AG_EINVAL);
    parse_fail("'single'", 8, AG_EINVAL);
}

static void test_zero_copy(void **state) {
    (void)state;
    const char *in = "{\"plain\":\"no escapes here\",\"esc\":\"a\\nb\"}";
    ag_json_val *v = parse_ok(in);
    ag_str plain = ag_json_str(ag_json_obj_getc(v, "plain"));
    assert_true(plain.p > in && plain.p < in + strlen(in)); /* a span into the input */
    ag_str esc = ag_json_str(ag_json_obj_getc(v, "esc"));
    assert_false(esc.p > in && esc.p < in + strlen(in)); /* decoded copy */
    assert_int_equal(esc.n, 3);
}

static void check_int(const char *json, int64_t want) {
    ag_json_val *v = parse_ok(json);
    assert_int_equal(ag_json_type_of(v), AG_JSON_INT);
    assert_true(v->u.i == want);
}

static void check_double(const char *json, double want) {
    ag_json_val *v = parse_ok(json);
    assert_int_equal(ag_json_type_of(v), AG_JSON_DOUBLE);
    if (!(v->u.d == want && signbit(v->u.d) == signbit(want))) fail_msg("%s parsed as %.17g, want %.17g", json, v->u.d, want);
}

static void test_numbers(void **state) {
    (void)state;
    check_int("0", 0);
    check_int("-1", -1);
    check_int("9223372036854775807", INT64_MAX);
    check_int("-9223372036854775808", INT64_MIN);
    check_double("9223372036854775808", 9223372036854775808.0);
    check_double("-9223372036854775809", -9223372036854775809.0);
    check_double("-0", -0.0);
    check_double("-0.0", -0.0);
    check_double("0e10", 0.0);
    check_double("1.0", 1.0);
    check_double("1E2", 100.0);
    check_double("1e+2", 100.0);
    check_double("0.1", 0.1);
    check_double("1e-400", 0.0); /* underflow is zero, not an error */
    check_double("4.9406564584124654e-324", 0x1p-1074);
    check_double("2.2250738585072011e-308", 2.2250738585072011e-308);
    check_double("1.7976931348623157e308", DBL_MAX);
    check_double("123456789012345678901234567890", 123456789012345678901234567890.0);
    check_double("0.30000000000000004441", 0.30000000000000004441);
    check_double("1000000000000000000000000000000e-30", 1.0);
    check_double("0.000000000000000000000000000001e30", 1.0);
    parse_fail("1e400", 5, AG_EINVAL);
    parse_fail("-1e400", 6, AG_EINVAL);
    parse_fail("01", 2, AG_EINVAL);
    parse_fail("-01", 3, AG_EINVAL);
    parse_fail("1.", 2, AG_EINVAL);
    parse_fail(".5", 2, AG_EINVAL);
    parse_fail("+1", 2, AG_EINVAL);
    parse_fail("-", 1, AG_EINVAL);
    parse_fail("1e", 2, AG_EINVAL);
    parse_fail("1e+", 3, AG_EINVAL);
    parse_fail("0x10", 4, AG_EINVAL);
    parse_fail("NaN", 3, AG_EINVAL);
    parse_fail("Infinity", 8, AG_EINVAL);
    parse_fail("1 2", 3, AG_EINVAL);
}

/* 200k random decimal numbers: the parser agrees with glibc's correctly rounded strtod. */
static void test_numbers_match_strtod(void **state) {
    (void)state;
    uint64_t seed = 2026;
    char buf[80];
    for (int t = 0; t < 200000; t++) {
        uint64_t r = ag_test_rand(&seed);
        int digits = 1 + (int)(r % 25);
        int n = 0;
        if (r & (1ull << 40)) buf[n++] = '-';
        buf[n++] = (char)('1' + ag_test_rand(&seed) % 9);
        int point = (int)(ag_test_rand(&seed) % (unsigned)(digits + 1));
        for (int i = 1; i < digits; i++) {
            if (i == point) buf[n++] = '.';
            buf[n++] = (char)('0' + ag_test_rand(&seed) % 10);
        }
        if (r & (1ull << 41)) n += snprintf(buf + n, sizeof buf - (size_t)n, "e%d", (int)(ag_test_rand(&seed) % 640) - 330);
        buf[n] = '\0';
        double want = strtod(buf, NULL);
        if (isinf(want)) continue;
        ag_json_val *v = parse_ok(buf);
        double got;
        assert_true(ag_json_get_double(v, &got));
        if (got != want) fail_msg("%s: got %.17g want %.17g", buf, got, want);
        if ((t & 1023) == 0) ag_arena_reset(&arena);
    }
}

static void test_depth_limit(void **state) {
    (void)state;
    char buf[3000];
    for (int depth = 127; depth <= 129; depth++) {
        int n = 0;
        for (int i = 0; i < depth; i++) buf[n++] = '[';
        for (int i = 0; i < depth; i++) buf[n++] = ']';
        ag_json_val *root;
        ag_status st = ag_json_parse(buf, (size_t)n, NULL, &arena, &root, NULL);
        assert_int_equal(st, depth <= AG_JSON_DEFAULT_MAX_DEPTH ? AG_OK : AG_ELIMIT);
    }
    /* a configured deeper limit */
    int n = 0;
    for (int i = 0; i < 1000; i++) buf[n++] = '[';
    for (int i = 0; i < 1000; i++) buf[n++] = ']';
    ag_json_opts opts = {.max_depth = 1000};
    ag_json_val *root;
    assert_int_equal(ag_json_parse(buf, (size_t)n, &opts, &arena, &root, NULL), AG_OK);
    opts.max_depth = 999;
    assert_int_equal(ag_json_parse(buf, (size_t)n, &opts, &arena, &root, NULL), AG_ELIMIT);
    /* objects count too */
    ag_json_err err;
    const char *objs = "{\"a\":{\"a\":{\"a\":1}}}";
    opts.max_depth = 2;
    assert_int_equal(ag_json_parse(objs, strlen(objs), &opts, &arena, &root, &err), AG_ELIMIT);
    assert_int_equal(err.offset, 10);
}

static void test_size_limit(void **state) {
    (void)state;
    ag_json_opts opts = {.max_bytes = 10};
    ag_json_val *root;
    ag_json_err err;
    assert_int_equal(ag_json_parse("[1,2,3,4] ", 10, &opts, &arena, &root, &err), AG_OK);
    assert_int_equal(ag_json_parse("[1,2,3,4,5]", 11, &opts, &arena, &root, &err), AG_ELIMIT);
    assert_string_equal(err.reason, "document larger than the size limit");
}

static void test_error_positions(void **state) {
    (void)state;
    const char *s = "{\n  \"a\": tru\n}";
    ag_json_err e = parse_fail(s, strlen(s), AG_EINVAL);
    assert_int_equal(e.line, 2);
    assert_int_equal(e.col, 8);
    assert_int_equal(e.offset, 9);
    e = parse_fail("[1,]", 4, AG_EINVAL);
    assert_int_equal(e.offset, 3);
    e = parse_fail("{\"a\" 1}", 7, AG_EINVAL);
    assert_string_equal(e.reason, "expected ':' after object key");
    e = parse_fail("", 0, AG_EINVAL);
    assert_int_equal(e.offset, 0);
    e = parse_fail("[1] x", 5, AG_EINVAL);
    assert_string_equal(e.reason, "unexpected data after the JSON value");
    /* a syntax error before an invalid UTF-8 byte is reported first */
    e = parse_fail("[1,,\"\xff\"]", 8, AG_EINVAL);
    assert_int_equal(e.offset, 3);
    e = parse_fail("[\"ok\",\"\xff\"]", 10, AG_EINVAL);
    assert_int_equal(e.offset, 7);
    assert_string_equal(e.reason, "invalid UTF-8");
}

static void test_duplicate_keys_last_wins(void **state) {
    (void)state;
    ag_json_val *v = parse_ok("{\"a\":1,\"b\":2,\"a\":3}");
    assert_int_equal(ag_json_len(v), 2);
    int64_t x;
    assert_true(ag_json_get_int(ag_json_obj_getc(v, "a"), &x) && x == 3);
    assert_true(ag_str_eq_cstr(ag_json_str(&v->u.members[0].key), "a")); /* first position kept */
    /* the same on an indexed (large) object, with an escaped spelling of a key */
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "{");
    for (int i = 0; i < 40; i++) n += snprintf(buf + n, sizeof buf - (size_t)n, "\"k%d\":%d,", i, i);
    n += snprintf(buf + n, sizeof buf - (size_t)n, "\"\\u006b5\":500,\"k39\":3900}");
    v = parse_ok(buf);
    assert_true(v->flags != 0); /* past AG_JSON_INDEX_MIN: indexed */
    assert_int_equal(ag_json_len(v), 40);
    assert_true(ag_json_get_int(ag_json_obj_getc(v, "k5"), &x) && x == 500);
    assert_true(ag_json_get_int(ag_json_obj_getc(v, "k39"), &x) && x == 3900);
    assert_true(ag_json_get_int(ag_json_obj_getc(v, "k0"), &x) && x == 0);
    assert_null(ag_json_obj_getc(v, "k40"));
    /* keys alike in length, first and last byte (the duplicate filter's signature) stay distinct */
    v = parse_ok("{\"axb\":1,\"ayb\":2,\"azb\":3,\"ayb\":4,\"\":5,\"\":6}");
    assert_int_equal(ag_json_len(v), 4);
    assert_true(ag_json_get_int(ag_json_obj_getc(v, "axb"), &x) && x == 1);
    assert_true(ag_json_get_int(ag_json_obj_getc(v, "ayb"), &x) && x == 4);
    assert_true(ag_json_get_int(ag_json_obj_getc(v, "azb"), &x) && x == 3);
    assert_true(ag_json_get_int(ag_json_obj_getc(v, ""), &x) && x == 6);
}

static void test_large_object_and_array(void **state) {
    (void)state;
    enum { N = 5000 };
    size_t cap = N * 24 + 16;
    char *buf = malloc(cap);
    size_t n = 0;
    buf[n++] = '{';
    for (int i = 0; i < N; i++) n += (size_t)snprintf(buf + n, cap - n, "%s\"key%d\":[%d]", i ? "," : "", i, i);
    buf[n++] = '}';
    ag_json_val *root;
    assert_int_equal(ag_json_parse(buf, n, NULL, &arena, &root, NULL), AG_OK);
    assert_int_equal(ag_json_len(root), N);
    char key[16];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "key%d", i);
        int64_t x;
        assert_true(ag_json_get_int(ag_json_arr_at(ag_json_obj_getc(root, key), 0), &x));
        assert_int_equal(x, i);
        assert_true(ag_str_eq_cstr(ag_json_str(&root->u.members[i].key), key)); /* order kept */
    }
    free(buf);
}

/* Fail the k-th allocation for k = 1, 2, ...: every failure is AG_NOMEM, nothing leaks (ASan), then success. */
static void test_allocation_failures(void **state) {
    (void)state;
    /* deep and wide enough to grow both parser stacks and several arena chunks */
    size_t cap = 400000;
    char *buf = malloc(cap);
    size_t n = 0;
    for (int i = 0; i < 60; i++) buf[n++] = '[';
    for (int i = 0; i < 5000; i++) n += (size_t)snprintf(buf + n, cap - n, "{\"k\\n%d\":\"v\\t%d\",\"x\":1.5e300},", i, i);
    n--;
    for (int i = 0; i < 60; i++) buf[n++] = ']';
    int succeeded = 0;
    for (unsigned long k = 1; k < 200 && !succeeded; k++) {
        ag_arena a;
        ag_arena_init(&a, 0);
        ag_json_val *root;
        ag_json_err err;
        ag_alloc_fail_at(k);
        ag_status st = ag_json_parse(buf, n, NULL, &a, &root, &err);
        unsigned long failed = ag_alloc_failed_count();
        ag_alloc_fail_at(0);
        if (st == AG_OK) {
            assert_int_equal(failed, 0);
            succeeded = 1;
        } else {
            assert_int_equal(st, AG_NOMEM);
            assert_string_equal(err.reason, "out of memory");
        }
        ag_arena_deinit(&a);
    }
    assert_true(succeeded);
    free(buf);
}

static void test_equal(void **state) {
    (void)state;
    assert_true(ag_json_equal(parse_ok("{\"a\":[1,2.0],\"b\":\"x\"}"), parse_ok("{\"b\":\"x\",\"a\":[1.0,2]}")));
    assert_false(ag_json_equal(parse_ok("{\"a\":1}"), parse_ok("{\"a\":2}")));
    assert_false(ag_json_equal(parse_ok("[0.0]"), parse_ok("[-0.0]")));
    assert_false(ag_json_equal(parse_ok("{\"a\":1}"), parse_ok("{\"b\":1}")));
    assert_false(ag_json_equal(parse_ok("true"), parse_ok("false")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_and_containers),
        cmocka_unit_test(test_string_escapes),
        cmocka_unit_test(test_zero_copy),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_numbers_match_strtod),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_error_positions),
        cmocka_unit_test(test_duplicate_keys_last_wins),
        cmocka_unit_test(test_large_object_and_array),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_equal),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
