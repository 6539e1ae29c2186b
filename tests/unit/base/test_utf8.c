/* Tests for src/base/utf8.c: the SIMD-assisted validator against the generic one, and RFC 3629's edges. */
#include "test.h"

#include "base/utf8.h"

#include <string.h>

static void test_every_code_point_round_trips(void **state) {
    (void)state;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        uint8_t buf[4];
        size_t n = ag_utf8_encode(cp, buf);
        uint32_t back = 0;
        assert_int_equal(ag_utf8_decode(buf, n, &back), n);
        assert_int_equal(back, cp);
        assert_int_equal(ag_utf8_valid_prefix(buf, n), n);
    }
}

static void test_invalid_sequences(void **state) {
    (void)state;
    static const struct {
        const char *s;
        size_t valid; /* expected valid prefix */
    } cases[] = {
        {"\xc0\x80", 0},         /* overlong NUL */
        {"\xc1\xbf", 0},         /* overlong */
        {"\xe0\x80\x80", 0},     /* overlong 3-byte */
        {"\xe0\x9f\xbf", 0},     /* overlong 3-byte, top */
        {"\xed\xa0\x80", 0},     /* surrogate D800 */
        {"\xed\xbf\xbf", 0},     /* surrogate DFFF */
        {"\xf0\x80\x80\x80", 0}, /* overlong 4-byte */
        {"\xf4\x90\x80\x80", 0}, /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 0}, /* lead byte never valid */
        {"\xff", 0},
        {"\x80", 0},             /* lone continuation */
        {"ab\xe2\x82", 2},       /* truncated at the end */
        {"ab\xe2\x28\xa1", 2},   /* bad continuation */
        {"\xed\x9f\xbf", 3},     /* U+D7FF, just below the surrogates */
        {"\xee\x80\x80", 3},     /* U+E000, just above */
        {"\xf4\x8f\xbf\xbf", 4}, /* U+10FFFF */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint8_t *p = (const uint8_t *)cases[i].s;
        size_t n = strlen(cases[i].s);
        assert_int_equal(ag_utf8_valid_prefix(p, n), cases[i].valid);
        assert_int_equal(ag_utf8_valid_prefix_generic(p, n), cases[i].valid);
    }
}

/* Random mixes of ASCII runs (long enough for the vector path) and multi-byte pieces, some broken. */
static void test_simd_matches_generic(void **state) {
    (void)state;
    static const char *pieces[] = {"a",  "hello world, this is a long ascii run of text!!", "\xc3\xa9",
                                   "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\xe2\x82", "\xff", "\xed\xa0\x80", "\x80"};
    uint64_t seed = 99;
    uint8_t buf[512];
    for (int t = 0; t < 20000; t++) {
        size_t n = 0;
        while (n < 400) {
            size_t k = ag_test_rand(&seed) % 100;
            const char *piece = pieces[k < 60 ? 1 : k < 70 ? 0 : k < 95 ? 2 + k % 3 : 5 + k % 4];
            size_t len = strlen(piece);
            memcpy(buf + n, piece, len);
            n += len;
        }
        size_t cut = ag_test_rand(&seed) % n;
        assert_int_equal(ag_utf8_valid_prefix(buf, cut), ag_utf8_valid_prefix_generic(buf, cut));
    }
}

/* Random code points (all lengths), cut at any length and with one byte sometimes overwritten. */
static void test_simd_matches_generic_random(void **state) {
    (void)state;
    uint64_t seed = 123;
    uint8_t buf[420];
    for (int t = 0; t < 200000; t++) {
        size_t n = 0;
        size_t want = 1 + ag_test_rand(&seed) % 400;
        unsigned ascii_pct = t % 2 ? 25 : 97; /* half the cases mostly ASCII: the 128-byte fast path */
        while (n < want) {
            uint64_t r = ag_test_rand(&seed);
            uint32_t cp = (r >> 40) % 100 < ascii_pct ? (uint32_t)(r >> 8) % 0x80
                        : r % 3 == 0 ? 0x80 + (uint32_t)(r >> 8) % 0x780
                        : r % 3 == 1 ? 0x800 + (uint32_t)(r >> 8) % 0xF800
                                     : 0x10000 + (uint32_t)(r >> 8) % 0x100000;
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            n += ag_utf8_encode(cp, buf + n);
        }
        if (ag_test_rand(&seed) % 2) buf[ag_test_rand(&seed) % n] = (uint8_t)ag_test_rand(&seed);
        size_t cut = ag_test_rand(&seed) % (n + 1);
        assert_int_equal(ag_utf8_valid_prefix(buf, cut), ag_utf8_valid_prefix_generic(buf, cut));
    }
}

static void test_invalid_len_is_maximal_subpart(void **state) {
    (void)state;
    assert_int_equal(ag_utf8_invalid_len((const uint8_t *)"\xe2\x82", 2), 2);
    assert_int_equal(ag_utf8_invalid_len((const uint8_t *)"\xe2\x82z", 3), 2);
    assert_int_equal(ag_utf8_invalid_len((const uint8_t *)"\xf0\x9f\x98z", 4), 3);
    assert_int_equal(ag_utf8_invalid_len((const uint8_t *)"\xed\xa0\x80", 3), 1);
    assert_int_equal(ag_utf8_invalid_len((const uint8_t *)"\xff", 1), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_point_round_trips),
        cmocka_unit_test(test_invalid_sequences),
        cmocka_unit_test(test_simd_matches_generic),
        cmocka_unit_test(test_simd_matches_generic_random),
        cmocka_unit_test(test_invalid_len_is_maximal_subpart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
