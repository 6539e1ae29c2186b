/*
 * JSONTestSuite conformance (tests/data/JSONTestSuite/test_parsing, MIT,
 * its LICENSE beside it): every y_ file parses and survives
 * parse->write->parse, every n_ file is rejected, every i_ file either way
 * without a crash.  The files are in the repository, so a clone anywhere runs
 * them; the file counts below fail the test if they are missing.
 */
#include "test.h"

#include "json/json.h"

#include <dirent.h>
#include <string.h>

#define SUITE_DIR AG_SOURCE_DIR "/tests/data/JSONTestSuite/test_parsing"

typedef struct counts {
    int files, ok, rejected, fails;
} counts;

static counts run_prefix(char prefix) {
    counts c = {0};
    DIR *d = opendir(SUITE_DIR);
    if (!d) return c;
    struct dirent *e;
    ag_arena a;
    ag_arena_init(&a, 0);
    while ((e = readdir(d))) {
        if (e->d_name[0] != prefix || e->d_name[1] != '_') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", SUITE_DIR, e->d_name);
        size_t len;
        char *data = ag_test_read_file(path, &len);
        if (!data) continue;
        c.files++;
        ag_json_val *v;
        ag_json_err err;
        ag_status st = ag_json_parse(data, len, NULL, &a, &v, &err);
        if (st == AG_OK) {
            c.ok++;
            ag_buf b;
            ag_buf_init(&b);
            ag_jw w;
            ag_jw_init(&w, &b, 0, AG_UTF8_REJECT);
            ag_jw_value(&w, v);
            ag_json_val *v2;
            if (b.err != AG_OK || ag_json_parse(b.data, b.len, NULL, &a, &v2, NULL) != AG_OK || !ag_json_equal(v, v2)) {
                printf("# round trip failed: %s\n", e->d_name);
                c.fails++;
            }
            ag_buf_deinit(&b);
        } else {
            c.rejected++;
            if (prefix == 'y') printf("# rejected %s at %zu: %s\n", e->d_name, err.offset, err.reason);
        }
        if (prefix == 'n' && st == AG_OK) printf("# accepted %s\n", e->d_name);
        free(data);
        ag_arena_reset(&a);
    }
    closedir(d);
    ag_arena_deinit(&a);
    return c;
}

static void test_y_files_parse(void **state) {
    (void)state;
    counts c = run_prefix('y');
    AG_TEST_NOTE("y_: %d files, %d parsed and round-tripped", c.files, c.ok - c.fails);
    assert_true(c.files > 90);
    assert_int_equal(c.ok, c.files);
    assert_int_equal(c.fails, 0);
}

static void test_n_files_rejected(void **state) {
    (void)state;
    counts c = run_prefix('n');
    AG_TEST_NOTE("n_: %d files, %d rejected", c.files, c.rejected);
    assert_true(c.files > 180);
    assert_int_equal(c.rejected, c.files);
}

static void test_i_files_do_not_crash(void **state) {
    (void)state;
    counts c = run_prefix('i');
    AG_TEST_NOTE("i_: %d files, %d accepted, %d rejected, none crashed", c.files, c.ok, c.rejected);
    assert_true(c.files > 20);
    assert_int_equal(c.ok + c.rejected, c.files);
    assert_int_equal(c.fails, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_y_files_parse),
        cmocka_unit_test(test_n_files_rejected),
        cmocka_unit_test(test_i_files_do_not_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
