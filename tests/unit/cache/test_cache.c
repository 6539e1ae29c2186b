/*
 * Tests for src/cache/cache.c: hits, misses, replacement, TTL expiry, the
 * byte bound under every policy, values that outlive their eviction while a
 * reader holds them, and W-TinyLFU keeping a Zipf workload's hot set through
 * scans that flush a plain LRU.
 */
#include "test.h"

#include "cache/cache.h"
#include "unit/cache/zipf_trace.h"

static void key_of(uint8_t key[32], uint64_t k) {
    memset(key, 0, 32);
    uint64_t h = (k + 1) * 0x9E3779B97F4A7C15ull;
    memcpy(key, &h, 8);
}

static void test_get_put_replace_remove_ttl(void **state) {
    (void)state;
    for (int p = 0; p < 3; p++) {
        ag_cache *c = ag_cache_create(1 << 20, (ag_cache_policy)p);
        uint8_t k[32];
        key_of(k, 1);
        assert_null(ag_cache_get(c, k, 0));
        assert_true(ag_cache_put(c, k, "hello", 5, 1000, 10, 0));
        ag_cache_val *v = ag_cache_get(c, k, 500);
        assert_non_null(v);
        assert_int_equal(v->len, 5);
        assert_memory_equal(v->data, "hello", 5);
        assert_int_equal(v->stored_ns, 10);
        ag_cache_val_release(v);
        assert_true(ag_cache_put(c, k, "bye", 3, 0, 20, 0)); /* replaced, and no expiry now */
        v = ag_cache_get(c, k, 5000);
        assert_non_null(v);
        assert_memory_equal(v->data, "bye", 3);
        ag_cache_val_release(v);
        key_of(k, 2);
        ag_cache_put(c, k, "x", 1, 100, 0, 0);
        assert_null(ag_cache_get(c, k, 100)); /* expired at its TTL */
        ag_cache_stats st = ag_cache_stats_get(c);
        assert_int_equal(st.expirations, 1);
        assert_int_equal(st.entries, 1);
        key_of(k, 1);
        ag_cache_remove(c, k);
        assert_null(ag_cache_get(c, k, 0));
        assert_int_equal(ag_cache_stats_get(c).bytes, 0);
        /* larger than the whole cache: declined */
        static char big[2 << 20];
        assert_false(ag_cache_put(c, k, big, sizeof big, 0, 0, 0));
        ag_cache_destroy(c);
    }
}

static void test_value_outlives_eviction(void **state) {
    (void)state;
    ag_cache *c = ag_cache_create(4096, AG_CACHE_LRU);
    uint8_t k[32];
    key_of(k, 7);
    ag_cache_put(c, k, "still here", 10, 0, 0, 0);
    ag_cache_val *v = ag_cache_get(c, k, 0);
    ag_cache_clear(c); /* evicted while a reader holds it (ASan would catch a use after free) */
    assert_memory_equal(v->data, "still here", 10);
    ag_cache_val_release(v);
    ag_cache_destroy(c);
}

static void test_put_val_shares_the_value(void **state) {
    (void)state;
    ag_cache *c = ag_cache_create(4096, AG_CACHE_WTINYLFU);
    uint8_t k[32];
    key_of(k, 8);
    ag_cache_val *mine = ag_cache_val_new("shared", 6, 100);
    assert_true(ag_cache_put_val(c, k, mine, 50, 0)); /* the TTL counts from the value's stored time */
    ag_cache_val *got = ag_cache_get(c, k, 149);
    assert_ptr_equal(got, mine); /* the same bytes, not a copy */
    assert_int_equal(atomic_load(&mine->refs), 3);
    ag_cache_val_release(got);
    assert_null(ag_cache_get(c, k, 150));
    assert_int_equal(atomic_load(&mine->refs), 1); /* expired: the cache dropped its reference, ours stays */
    assert_memory_equal(mine->data, "shared", 6);
    ag_cache_val_release(mine);
    ag_cache_destroy(c);
}

static void test_remove_by_tag(void **state) {
    (void)state;
    ag_cache *c = ag_cache_create(1 << 20, AG_CACHE_WTINYLFU);
    for (uint64_t i = 0; i < 30; i++) {
        uint8_t k[32];
        key_of(k, i);
        ag_cache_put(c, k, "v", 1, 0, 0, i % 3); /* tags 0, 1, 2 */
    }
    assert_int_equal(ag_cache_remove_tag(c, 1), 10);
    assert_int_equal(ag_cache_stats_get(c).entries, 20);
    for (uint64_t i = 0; i < 30; i++) {
        uint8_t k[32];
        key_of(k, i);
        ag_cache_val *v = ag_cache_get(c, k, 0);
        assert_true((v != NULL) == (i % 3 != 1));
        ag_cache_val_release(v);
    }
    ag_cache_destroy(c);
}

static void test_byte_bound_holds(void **state) {
    (void)state;
    for (int p = 0; p < 3; p++) {
        size_t max = 64 << 10;
        ag_cache *c = ag_cache_create(max, (ag_cache_policy)p);
        uint64_t seed = 5;
        static char buf[3000];
        for (int i = 0; i < 5000; i++) {
            uint8_t k[32];
            key_of(k, ag_test_rand(&seed) % 300);
            ag_cache_val *v = ag_cache_get(c, k, 0);
            if (v) ag_cache_val_release(v);
            else ag_cache_put(c, k, buf, ag_test_rand(&seed) % sizeof buf, 0, 0, 0);
            ag_cache_stats st = ag_cache_stats_get(c);
            if (st.bytes > max) fail_msg("policy %d: %zu bytes over the bound %zu", p, st.bytes, max);
        }
        ag_cache_destroy(c);
    }
}

static void test_wtinylfu_beats_lru_on_zipf_with_scans(void **state) {
    (void)state;
    double w = zipf_hit_ratio(AG_CACHE_WTINYLFU, 2000, 400000, 100), l = zipf_hit_ratio(AG_CACHE_LRU, 2000, 400000, 100);
    AG_TEST_NOTE("hit ratio, 2000 entries: W-TinyLFU %.3f, LRU %.3f", w, l);
    assert_true(w > l * 1.1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_put_replace_remove_ttl),
        cmocka_unit_test(test_value_outlives_eviction), cmocka_unit_test(test_put_val_shares_the_value),
        cmocka_unit_test(test_remove_by_tag),
        cmocka_unit_test(test_byte_bound_holds),
        cmocka_unit_test(test_wtinylfu_beats_lru_on_zipf_with_scans),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
