/*
 * Replays every file of fuzz/corpus/json through what the fuzz targets do:
 * parse, and for valid documents write and parse again to an equal value.
 * A crash the fuzzer finds is added to the corpus and so becomes a test.
 */
#include "test.h"

#include "json/json.h"

#include <string.h>

/* Parse; a valid document must write and parse again to an equal value.  Returns whether it was valid. */
static int round_trips(const char *data, size_t len, void *ctx) {
    ag_arena *a = ctx;
    ag_json_val *v, *v2;
    int valid = ag_json_parse(data, len, NULL, a, &v, NULL) == AG_OK;
    if (valid) {
        ag_buf b;
        ag_buf_init(&b);
        ag_jw w;
        ag_jw_init(&w, &b, 0, AG_UTF8_REJECT);
        ag_jw_value(&w, v);
        assert_int_equal(b.err, AG_OK);
        assert_int_equal(ag_json_parse(b.data, b.len, NULL, a, &v2, NULL), AG_OK);
        assert_true(ag_json_equal(v, v2));
        ag_buf_deinit(&b);
    }
    ag_arena_reset(a);
    return valid;
}

static void test_corpus_replays(void **state) {
    (void)state;
    ag_arena a;
    ag_arena_init(&a, 0);
    int valid, files = ag_test_for_each_file(AG_SOURCE_DIR "/fuzz/corpus/json", round_trips, &a, &valid);
    ag_arena_deinit(&a);
    AG_TEST_NOTE("corpus: %d files, %d valid JSON", files, valid);
    assert_true(files > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_corpus_replays)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
