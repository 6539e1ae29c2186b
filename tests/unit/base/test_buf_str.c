/* Tests for src/base/buf.c and src/base/str.c. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/str.h"
#include "base/utf8.h"

#include <locale.h>
#include <stdlib.h>
#include <string.h>

static void test_buf_append_and_format(void **state) {
    (void)state;
    ag_buf b;
    ag_buf_init(&b);
    ag_buf_append_str(&b, "abc");
    ag_buf_append_char(&b, '-');
    ag_buf_appendf(&b, "%d/%s", 42, "x");
    assert_string_equal(b.data, "abc-42/x");
    assert_int_equal(b.len, 8);
    /* a formatted piece longer than the internal stack buffer */
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ag_buf_appendf(&b, "[%s]", big);
    assert_int_equal(b.len, 8 + 2 + 999);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(b.data[b.len - 1], ']');
    ag_buf_reset(&b);
    assert_int_equal(b.len, 0);
    size_t len;
    ag_buf_append_str(&b, "kept");
    char *owned = ag_buf_detach(&b, &len);
    assert_string_equal(owned, "kept");
    assert_int_equal(len, 4);
    assert_null(b.data);
    free(owned);
    ag_buf_deinit(&b);
}

static void test_buf_limit_is_sticky(void **state) {
    (void)state;
    ag_buf b;
    ag_buf_init(&b);
    b.max_len = 10;
    ag_buf_append_str(&b, "0123456789");
    assert_int_equal(b.err, AG_OK);
    ag_buf_append_char(&b, 'x');
    assert_int_equal(b.err, AG_ELIMIT);
    ag_buf_append_str(&b, "y"); /* ignored after the error */
    assert_int_equal(b.len, 10);
    ag_buf_deinit(&b);
}

static void test_buf_nomem_is_sticky(void **state) {
    (void)state;
    ag_buf b;
    ag_buf_init(&b);
    ag_alloc_fail_at(1);
    ag_buf_append_str(&b, "a");
    assert_int_equal(b.err, AG_NOMEM);
    ag_buf_append_str(&b, "b");
    assert_int_equal(b.len, 0);
    ag_alloc_fail_at(0);
    ag_buf_deinit(&b);
}

static void check_escape(const char *in, size_t n, ag_utf8_policy pol, const char *want, ag_status want_err) {
    ag_buf b;
    ag_buf_init(&b);
    ag_buf_append_json_str(&b, in, n, pol);
    assert_int_equal(b.err, want_err);
    if (want_err == AG_OK) assert_string_equal(b.data, want);
    ag_buf_deinit(&b);
}

static void test_json_escape(void **state) {
    (void)state;
    check_escape("plain", 5, AG_UTF8_REJECT, "\"plain\"", AG_OK);
    check_escape("q\"b\\s/", 6, AG_UTF8_REJECT, "\"q\\\"b\\\\s/\"", AG_OK);
    check_escape("\b\f\n\r\t", 5, AG_UTF8_REJECT, "\"\\b\\f\\n\\r\\t\"", AG_OK);
    check_escape("\x01\x1f", 2, AG_UTF8_REJECT, "\"\\u0001\\u001f\"", AG_OK);
    check_escape("a\0b", 3, AG_UTF8_REJECT, "\"a\\u0000b\"", AG_OK);
    check_escape("\x7f", 1, AG_UTF8_REJECT, "\"\x7f\"", AG_OK); /* DEL needs no escape */
    check_escape("h\xc3\xa9 \xf0\x9f\x98\x80", 8, AG_UTF8_REJECT, "\"h\xc3\xa9 \xf0\x9f\x98\x80\"", AG_OK);
    check_escape("a\xffz", 3, AG_UTF8_REJECT, NULL, AG_EINVAL);
    check_escape("a\xffz", 3, AG_UTF8_REPLACE, "\"a\xef\xbf\xbdz\"", AG_OK);
    /* a truncated 3-byte sequence is one maximal subpart: one U+FFFD */
    check_escape("\xe2\x82", 2, AG_UTF8_REPLACE, "\"\xef\xbf\xbd\"", AG_OK);
    check_escape("\xed\xa0\x80", 3, AG_UTF8_REPLACE, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"", AG_OK);
}

/* The escaper as a plain byte-at-a-time reference: decode, escape, or substitute. */
static ag_status reference_escape(const uint8_t *p, size_t n, ag_utf8_policy pol, ag_buf *out) {
    ag_buf_append_char(out, '"');
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        uint32_t cp;
        if (c == '"' || c == '\\') {
            ag_buf_appendf(out, "\\%c", c);
            i++;
        } else if (c < 0x20) {
            const char *named = c == '\b' ? "\\b" : c == '\f' ? "\\f" : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (named) ag_buf_append_str(out, named);
            else ag_buf_appendf(out, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            ag_buf_append_char(out, (char)c);
            i++;
        } else {
            size_t len = ag_utf8_decode(p + i, n - i, &cp);
            if (len) {
                ag_buf_append(out, p + i, len);
                i += len;
            } else if (pol == AG_UTF8_REPLACE) {
                ag_buf_append(out, "\xef\xbf\xbd", 3);
                i += ag_utf8_invalid_len(p + i, n - i);
            } else {
                return AG_EINVAL;
            }
        }
    }
    ag_buf_append_char(out, '"');
    return AG_OK;
}

static void test_json_escape_matches_reference(void **state) {
    (void)state;
    static const char *pieces[] = {"a", "plain ascii run longer than one vector of thirty-two bytes", "\"", "\\",
                                   "\n", "\x01", "\x1f", "\x7f", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
                                   "\xff", "\xe2\x82", "\xed\xa0\x80", "\xc0\x80"};
    uint64_t seed = 8;
    uint8_t in[600];
    for (int t = 0; t < 20000; t++) {
        size_t n = 0, want = ag_test_rand(&seed) % 500;
        while (n < want) {
            size_t k = ag_test_rand(&seed) % (sizeof pieces / sizeof pieces[0]);
            if (k >= 11 && ag_test_rand(&seed) % 4) continue; /* invalid bytes: rarer */
            size_t len = strlen(pieces[k]);
            memcpy(in + n, pieces[k], len);
            n += len;
        }
        for (int pol = 0; pol < 2; pol++) {
            ag_buf got, ref;
            ag_buf_init(&got);
            ag_buf_init(&ref);
            ag_buf_append_json_str(&got, (const char *)in, n, (ag_utf8_policy)pol);
            ag_status want_st = reference_escape(in, n, (ag_utf8_policy)pol, &ref);
            assert_int_equal(got.err, want_st);
            if (want_st == AG_OK) {
                assert_int_equal(got.len, ref.len);
                assert_memory_equal(got.data, ref.data, ref.len);
            }
            ag_buf_deinit(&got);
            ag_buf_deinit(&ref);
        }
    }
}

static void test_str_helpers(void **state) {
    (void)state;
    assert_true(ag_str_eq(AG_STR_LIT("abc"), ag_str_from_cstr("abc")));
    assert_false(ag_str_eq(AG_STR_LIT("abc"), AG_STR_LIT("abd")));
    assert_true(ag_str_ieq(AG_STR_LIT("Content-Length"), AG_STR_LIT("content-length")));
    assert_false(ag_str_ieq(AG_STR_LIT("a"), AG_STR_LIT("ab")));
    assert_true(ag_str_starts_with(AG_STR_LIT("Bearer xyz"), AG_STR_LIT("Bearer ")));
    ag_str t = ag_str_trim(AG_STR_LIT(" \t x y \r\n"));
    assert_true(ag_str_eq_cstr(t, "x y"));
    assert_int_equal(ag_str_trim(AG_STR_LIT("   ")).n, 0);
}

static void test_str_parse_numbers(void **state) {
    (void)state;
    uint64_t v;
    assert_int_equal(ag_str_parse_u64(AG_STR_LIT("18446744073709551615"), &v), AG_OK);
    assert_true(v == UINT64_MAX);
    assert_int_equal(ag_str_parse_u64(AG_STR_LIT("18446744073709551616"), &v), AG_ELIMIT);
    assert_int_equal(ag_str_parse_u64(AG_STR_LIT(""), &v), AG_EINVAL);
    assert_int_equal(ag_str_parse_u64(AG_STR_LIT("12a"), &v), AG_EINVAL);
    assert_int_equal(ag_str_parse_u64(AG_STR_LIT("-1"), &v), AG_EINVAL);
    assert_int_equal(ag_str_parse_duration_ms(AG_STR_LIT("250ms"), &v), AG_OK);
    assert_int_equal(v, 250);
    assert_int_equal(ag_str_parse_duration_ms(AG_STR_LIT("30s"), &v), AG_OK);
    assert_int_equal(v, 30000);
    assert_int_equal(ag_str_parse_duration_ms(AG_STR_LIT("2m"), &v), AG_OK);
    assert_int_equal(v, 120000);
    assert_int_equal(ag_str_parse_duration_ms(AG_STR_LIT("5"), &v), AG_OK);
    assert_int_equal(v, 5000);
    assert_int_equal(ag_str_parse_duration_ms(AG_STR_LIT("5h"), &v), AG_EINVAL);
    assert_int_equal(ag_str_parse_duration_ms(AG_STR_LIT("ms"), &v), AG_EINVAL);
    assert_int_equal(ag_str_parse_duration_ms(AG_STR_LIT("1.5s"), &v), AG_OK);
    assert_int_equal(v, 1500);
    assert_int_equal(ag_str_parse_duration_ms(AG_STR_LIT("40us"), &v), AG_OK);
    assert_int_equal(v, 1); /* rounded up: a positive duration stays positive */
    /* the one grammar: flags of serve, bench and chaos, and chaos's admin API */
    const struct {
        const char *in;
        ag_status st;
        uint64_t us;
    } cases[] = {{"250ms", AG_OK, 250000}, {"1.5s", AG_OK, 1500000}, {"40us", AG_OK, 40},   {"2m", AG_OK, 120000000},
                 {"0.5", AG_OK, 500000},   {".25s", AG_OK, 250000},  {"0", AG_OK, 0},        {"3.", AG_OK, 3000000},
                 {"", AG_EINVAL, 0},       {".", AG_EINVAL, 0},      {"-1s", AG_EINVAL, 0},  {"+1s", AG_EINVAL, 0},
                 {" 1s", AG_EINVAL, 0},    {"1 s", AG_EINVAL, 0},    {"1e3ms", AG_EINVAL, 0}, {"1.2.3s", AG_EINVAL, 0},
                 {"inf", AG_EINVAL, 0},    {"nan", AG_EINVAL, 0},    {"0x10s", AG_EINVAL, 0}, {"5h", AG_EINVAL, 0},
                 {"1S", AG_EINVAL, 0},     {"99999999999999999999m", AG_ELIMIT, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint64_t us = 12345;
        ag_status st = ag_str_parse_duration_us(ag_str_from_cstr(cases[i].in), &us);
        if (st != cases[i].st || (st == AG_OK && us != cases[i].us))
            fail_msg("'%s': status %d, %llu us", cases[i].in, (int)st, (unsigned long long)us);
    }
}

static void test_c_locale_numbers(void **state) {
    (void)state;
    char out[32];
    /* Switch the process to a decimal-comma locale when the machine has one. */
    const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", NULL};
    const char *used = NULL;
    for (int i = 0; names[i] && !used; i++)
        if (setlocale(LC_NUMERIC, names[i])) used = names[i];
    ag_snprintf_c(out, sizeof out, "%.2f", 0.5);
    assert_string_equal(out, "0.50");
    assert_true(ag_strtod_c("0.25", NULL) == 0.25);
    if (!used) AG_TEST_NOTE("no decimal-comma locale installed; checked in the C locale only");
    setlocale(LC_NUMERIC, "C");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_and_format), cmocka_unit_test(test_buf_limit_is_sticky),
        cmocka_unit_test(test_buf_nomem_is_sticky),   cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_json_escape_matches_reference),
        cmocka_unit_test(test_str_helpers),           cmocka_unit_test(test_str_parse_numbers),
        cmocka_unit_test(test_c_locale_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
