/*
 * Replays every file of fuzz/corpus/json through what the fuzz targets do:
 * parse, and for valid documents write and parse again to an equal value.
 * A crash the fuzzer finds is added to the corpus and so becomes a test.
 */
#include "test.h"

#include "json/json.h"

#include <dirent.h>
#include <string.h>

#define CORPUS_DIR AG_SOURCE_DIR "/fuzz/corpus/json"

static void test_corpus_replays(void **state) {
    (void)state;
    DIR *d = opendir(CORPUS_DIR);
    assert_non_null(d);
    struct dirent *e;
    int files = 0, valid = 0;
    ag_arena a;
    ag_arena_init(&a, 0);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, e->d_name);
        size_t len;
        char *data = ag_test_read_file(path, &len);
        assert_non_null(data);
        files++;
        ag_json_val *v, *v2;
        if (ag_json_parse(data, len, NULL, &a, &v, NULL) == AG_OK) {
            valid++;
            ag_buf b;
            ag_buf_init(&b);
            ag_jw w;
            ag_jw_init(&w, &b, 0, AG_UTF8_REJECT);
            ag_jw_value(&w, v);
            assert_int_equal(b.err, AG_OK);
            assert_int_equal(ag_json_parse(b.data, b.len, NULL, &a, &v2, NULL), AG_OK);
            if (!ag_json_equal(v, v2)) fail_msg("round trip differs for %s", e->d_name);
            ag_buf_deinit(&b);
        }
        free(data);
        ag_arena_reset(&a);
    }
    closedir(d);
    ag_arena_deinit(&a);
    AG_TEST_NOTE("corpus: %d files, %d valid JSON", files, valid);
    assert_true(files > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_corpus_replays)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
