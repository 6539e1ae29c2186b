/* The vector JSON-special scanner (src/base/jscan.h) against its generic twin, at every length and position. */
#include "test.h"

#include "base/jscan.h"

static void test_scan_matches_generic(void **state) {
    (void)state;
    static const uint8_t specials[] = {'"', '\\', 0x00, 0x01, 0x1f};
    static const uint8_t harmless[] = {'a', ' ', 0x20, 0x7f, 0x80, 0xff, '/', '!', '#', 0x5c + 1, 0x22 + 1};
    uint8_t buf[300], copy[300 + 64];
    uint64_t seed = 5;
    for (size_t len = 0; len < 200; len++) {
        for (size_t pos = 0; pos <= len; pos++) { /* one special at every position, or none (pos == len) */
            for (size_t i = 0; i < len; i++) buf[i] = harmless[ag_test_rand(&seed) % sizeof harmless];
            if (pos < len) buf[pos] = specials[ag_test_rand(&seed) % sizeof specials];
            const uint8_t *want = ag_jscan_generic(buf, buf + len);
            assert_ptr_equal(ag_jscan(buf, buf + len), want);
            assert_ptr_equal(want, buf + pos);
#ifdef AG_JSCAN_VEC
            if (len >= AG_JSCAN_VEC) { /* the mask and the copy it makes */
                uint64_t m = ag_jscan_mask(buf, copy);
                assert_memory_equal(copy, buf, AG_JSCAN_VEC);
                if (pos < AG_JSCAN_VEC) assert_int_equal(__builtin_ctzll(m), pos);
                else assert_true(m == 0);
            }
#endif
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_scan_matches_generic)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
