/* Tests for src/base/log.c: both formats, levels, escaping; JSON lines are checked with the JSON parser. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include "base/log.h"
#include "json/json.h"

#include <stdlib.h>
#include <string.h>

static void test_json_lines(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    ag_log_configure(AG_LOG_JSON, AG_LOG_INFO, f);
    ag_log_field fields[] = {AG_LOG_FIELD_STR("trace_id", "abc\"def"), AG_LOG_FIELD_INT("status", 200),
                             AG_LOG_FIELD_DOUBLE("latency_ms", 1.5)};
    ag_log_fields(AG_LOG_INFO, "request done\n", fields, 3);
    ag_log_fields(AG_LOG_DEBUG, "hidden", NULL, 0);
    ag_logf(AG_LOG_WARN, "n=%d", 7);
    fclose(f);

    char *line2 = strchr(buf, '\n');
    assert_non_null(line2);
    *line2++ = '\0';
    ag_arena a;
    ag_arena_init(&a, 0);
    ag_json_val *root;
    assert_int_equal(ag_json_parse(buf, strlen(buf), NULL, &a, &root, NULL), AG_OK);
    assert_true(ag_str_eq_cstr(ag_json_str(ag_json_obj_getc(root, "level")), "info"));
    assert_true(ag_str_eq_cstr(ag_json_str(ag_json_obj_getc(root, "msg")), "request done\n"));
    assert_true(ag_str_eq_cstr(ag_json_str(ag_json_obj_getc(root, "trace_id")), "abc\"def"));
    int64_t st;
    assert_true(ag_json_get_int(ag_json_obj_getc(root, "status"), &st));
    assert_int_equal(st, 200);
    double lat;
    assert_true(ag_json_get_double(ag_json_obj_getc(root, "latency_ms"), &lat));
    assert_true(lat == 1.5);
    ag_str ts = ag_json_str(ag_json_obj_getc(root, "ts"));
    assert_int_equal(ts.n, 24); /* 2026-11-23T22:56:30.123Z */
    assert_int_equal(ts.p[23], 'Z');

    size_t n2 = strlen(line2);
    assert_true(n2 > 0 && line2[n2 - 1] == '\n');
    assert_int_equal(ag_json_parse(line2, n2, NULL, &a, &root, NULL), AG_OK);
    assert_true(ag_str_eq_cstr(ag_json_str(ag_json_obj_getc(root, "msg")), "n=7"));
    assert_null(strstr(line2, "hidden"));
    ag_arena_deinit(&a);
    free(buf);
    ag_log_configure(AG_LOG_TEXT, AG_LOG_INFO, NULL);
}

static void test_text_lines_and_levels(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    ag_log_configure(AG_LOG_TEXT, AG_LOG_WARN, f);
    ag_log_field fields[] = {AG_LOG_FIELD_STR("route", "/v1/models"), AG_LOG_FIELD_INT("status", 404)};
    ag_log_fields(AG_LOG_INFO, "below the level", NULL, 0);
    ag_log_fields(AG_LOG_ERROR, "bad thing", fields, 2);
    fclose(f);
    assert_null(strstr(buf, "below the level"));
    assert_non_null(strstr(buf, " error bad thing route=/v1/models status=404\n"));
    assert_int_equal(strchr(buf, '\n') - buf + 1, (long)len); /* exactly one line */
    free(buf);
    ag_log_configure(AG_LOG_TEXT, AG_LOG_INFO, NULL);
    assert_int_equal(ag_log_level_parse("warn"), AG_LOG_WARN);
    assert_int_equal(ag_log_level_parse("loud"), -1);
    assert_int_equal(ag_log_format_parse("json"), AG_LOG_JSON);
    assert_int_equal(ag_log_format_parse("xml"), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_lines),
        cmocka_unit_test(test_text_lines_and_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
