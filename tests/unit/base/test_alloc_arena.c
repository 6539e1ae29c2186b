/* Tests for src/base/alloc.c and src/base/arena.c. */
#include "test.h"

#include "base/alloc.h"
#include "base/arena.h"

#include <stdlib.h>
#include <string.h>

static void test_arena_alignment_and_independence(void **state) {
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 0);
    char *prev = NULL;
    for (size_t n = 1; n < 300; n++) {
        char *p = ag_arena_try_alloc(&a, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, (int)n, n);
        if (prev) assert_int_equal((unsigned char)prev[0], (unsigned char)(n - 1));
        prev = p;
    }
    ag_arena_deinit(&a);
}

static void test_arena_large_and_reset(void **state) {
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 0);
    char *big = ag_arena_try_alloc(&a, 3u << 20); /* larger than the first chunk */
    assert_non_null(big);
    memset(big, 1, 3u << 20);
    assert_true(a.bytes_used >= (3u << 20));
    ag_arena_reset(&a);
    assert_int_equal(a.bytes_used, 0);
    /* the kept chunk serves the next request without growing */
    char *again = ag_arena_try_alloc(&a, 1u << 20);
    assert_non_null(again);
    ag_arena_deinit(&a);
}

static void test_arena_strndup(void **state) {
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 64);
    char *s = ag_arena_try_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    ag_arena_deinit(&a);
}

static void test_arena_overflow_size_fails_cleanly(void **state) {
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 0);
    assert_null(ag_arena_try_alloc(&a, SIZE_MAX));
    assert_null(ag_arena_try_alloc(&a, SIZE_MAX - 8));
    assert_non_null(ag_arena_try_alloc(&a, 8));
    ag_arena_deinit(&a);
}

static void test_fault_injection(void **state) {
    (void)state;
    ag_alloc_fail_at(2);
    void *a = ag_try_malloc(8);
    void *b = ag_try_malloc(8);
    void *c = ag_try_malloc(8);
    assert_non_null(a);
    assert_null(b);
    assert_non_null(c);
    assert_int_equal(ag_alloc_failed_count(), 1);
    free(a);
    free(c);

    ag_arena ar;
    ag_arena_init(&ar, 0);
    ag_alloc_fail_at(1);
    assert_null(ag_arena_try_alloc(&ar, 10));
    assert_non_null(ag_arena_try_alloc(&ar, 10)); /* injection is one-shot */
    ag_arena_deinit(&ar);
    ag_alloc_fail_at(0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alignment_and_independence),
        cmocka_unit_test(test_arena_large_and_reset),
        cmocka_unit_test(test_arena_strndup),
        cmocka_unit_test(test_arena_overflow_size_fails_cleanly),
        cmocka_unit_test(test_fault_injection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
