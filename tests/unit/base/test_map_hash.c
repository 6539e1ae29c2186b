/* Tests for src/base/map.c and src/base/hash.c. */
#include "test.h"

#include "base/hash.h"
#include "base/map.h"

#include <stdlib.h>
#include <string.h>

#define N_KEYS 20000

static void test_map_basic(void **state) {
    (void)state;
    ag_map m;
    ag_map_init(&m);
    int a = 1, b = 2;
    assert_null(ag_map_get(&m, "x", 1));
    assert_null(ag_map_put(&m, "x", 1, &a));
    assert_ptr_equal(ag_map_get(&m, "x", 1), &a);
    assert_ptr_equal(ag_map_put(&m, "x", 1, &b), &a); /* replace returns the old value */
    assert_int_equal(m.count, 1);
    assert_null(ag_map_get(&m, "xy", 2));
    assert_null(ag_map_put(&m, "", 0, &a)); /* the empty key is a key */
    assert_ptr_equal(ag_map_get(&m, "", 0), &a);
    assert_ptr_equal(ag_map_del(&m, "x", 1), &b);
    assert_null(ag_map_del(&m, "x", 1));
    assert_int_equal(m.count, 1);
    ag_map_deinit(&m);
}

/* Random inserts and deletes against a plain array as the model. */
static void test_map_against_model(void **state) {
    (void)state;
    static char keys[N_KEYS][16];
    static int present[N_KEYS];
    memset(present, 0, sizeof present);
    ag_map m;
    ag_map_init(&m);
    uint64_t seed = 42;
    for (int i = 0; i < N_KEYS; i++) snprintf(keys[i], sizeof keys[i], "k%d", i);
    size_t live = 0;
    for (int step = 0; step < 200000; step++) {
        int k = (int)(ag_test_rand(&seed) % N_KEYS);
        size_t len = strlen(keys[k]);
        if (ag_test_rand(&seed) % 3) {
            void *prev = ag_map_put(&m, keys[k], len, &present[k]);
            assert_true(prev == (present[k] ? &present[k] : NULL));
            if (!present[k]) live++;
            present[k] = 1;
        } else {
            void *prev = ag_map_del(&m, keys[k], len);
            assert_true(prev == (present[k] ? &present[k] : NULL));
            if (present[k]) live--;
            present[k] = 0;
        }
        assert_int_equal(m.count, live);
    }
    for (int k = 0; k < N_KEYS; k++)
        assert_true(ag_map_get(&m, keys[k], strlen(keys[k])) == (present[k] ? &present[k] : NULL));
    size_t pos = 0, seen = 0, klen;
    const char *key;
    void *val;
    while (ag_map_next(&m, &pos, &key, &klen, &val)) {
        assert_true(*(int *)val == 1);
        seen++;
    }
    assert_int_equal(seen, live);
    ag_map_deinit(&m);
}

static void test_hash_spread_and_avalanche(void **state) {
    (void)state;
    /* 64k short similar keys into 1024 buckets: no bucket far above the mean of 64 */
    static unsigned buckets[1024];
    memset(buckets, 0, sizeof buckets);
    char key[32];
    for (int i = 0; i < 65536; i++) {
        int n = snprintf(key, sizeof key, "field_%d", i);
        buckets[ag_hash_bytes(key, (size_t)n, 7) & 1023]++;
    }
    unsigned max = 0;
    for (int i = 0; i < 1024; i++)
        if (buckets[i] > max) max = buckets[i];
    assert_true(max < 64 * 2);

    /* flipping one input bit flips about half of the output bits, for every key length 1..40 */
    uint64_t seed = 1;
    double total = 0;
    int trials = 0;
    for (size_t len = 1; len <= 40; len++) {
        for (int t = 0; t < 50; t++) {
            uint8_t buf[40];
            for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)ag_test_rand(&seed);
            uint64_t h0 = ag_hash_bytes(buf, len, 0);
            size_t bit = ag_test_rand(&seed) % (len * 8);
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            total += __builtin_popcountll(h0 ^ ag_hash_bytes(buf, len, 0));
            trials++;
        }
    }
    double mean = total / trials;
    assert_true(mean > 29.0 && mean < 35.0);
    /* the seed changes the hash, and the length is part of it */
    assert_true(ag_hash_bytes("abc", 3, 1) != ag_hash_bytes("abc", 3, 2));
    assert_true(ag_hash_bytes("a\0", 1, 0) != ag_hash_bytes("a\0", 2, 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_basic),
        cmocka_unit_test(test_map_against_model),
        cmocka_unit_test(test_hash_spread_and_avalanche),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
