/* The vector string scanner of src/json/json.c against its generic twin (includes the .c for its statics). */
#include "test.h"

#include "../../../src/json/json.c"

static void test_scan_matches_generic(void **state) {
    (void)state;
    static const uint8_t specials[] = {'"', '\\', 0x00, 0x01, 0x1f};
    static const uint8_t harmless[] = {'a', ' ', 0x20, 0x7f, 0x80, 0xff, '/', '!', '#', 0x5c + 1, 0x22 + 1};
    uint8_t buf[300];
    uint64_t seed = 5;
    for (size_t len = 0; len < 200; len++) {
        for (size_t pos = 0; pos <= len; pos++) { /* one special at every position, or none (pos == len) */
            for (size_t i = 0; i < len; i++) buf[i] = harmless[ag_test_rand(&seed) % sizeof harmless];
            if (pos < len) buf[pos] = specials[ag_test_rand(&seed) % sizeof specials];
            const uint8_t *want = scan_str_generic(buf, buf + len);
            const uint8_t *got = scan_str(buf, buf + len);
            assert_ptr_equal(got, want);
            assert_ptr_equal(want, buf + pos);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_scan_matches_generic)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
