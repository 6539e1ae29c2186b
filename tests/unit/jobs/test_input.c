/*
 * test_input.c - batch input files: what a good file's lines give, each way
 * a line is refused (named by its number), and the fuzz corpus replayed.
 */
#include "test.h"

#include "../../../fuzz/batch_input.c"

typedef struct seen {
    size_t n;
    char ids[8][16];
} seen;

static ag_status keep(void *ctx, const ag_jobs_line *l, ag_err *err) {
    (void)err;
    seen *s = ctx;
    if (s->n < 8) snprintf(s->ids[s->n], 16, "%.*s", (int)l->custom_id.n, l->custom_id.p);
    s->n++;
    return AG_OK;
}

static ag_status check(const char *text, seen *s, size_t *n, ag_err *err) {
    memset(s, 0, sizeof *s);
    return ag_jobs_input_check(text, strlen(text), keep, s, n, err);
}

static void test_good_file(void **state) {
    (void)state;
    const char *text = "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[]}}\n"
                       "\n   \n"
                       "{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\",\"stream\":false}}";
    seen s;
    size_t n;
    ag_err err;
    assert_int_equal(check(text, &s, &n, &err), AG_OK);
    assert_int_equal(n, 2);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], "a");
    assert_string_equal(s.ids[1], "b");
}

static void test_bad_lines_are_named(void **state) {
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}\nnot json\n", "line 2: invalid JSON"},
        {"[1]\n", "line 1: not a JSON object"},
        {"{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}", "line 1: custom_id must be"},
        {"{\"custom_id\":\"\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}", "line 1: custom_id must be"},
        {"{\"custom_id\":\"a\",\"method\":\"GET\",\"url\":\"/v1/completions\",\"body\":{}}", "line 1: method must be"},
        {"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}", "line 1: url must be"},
        {"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":\"x\"}", "line 1: body must be"},
        {"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"stream\":true}}", "line 1: a batch request cannot stream"},
        {"\n{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}\n"
         "{\"custom_id\":\"\\u0061\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}",
         "line 3: custom_id \"a\" is used by an earlier line"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        seen s;
        size_t n;
        ag_err err;
        assert_int_equal(check(cases[i].text, &s, &n, &err), AG_EINVAL);
        if (strncmp(err.msg, cases[i].want, strlen(cases[i].want)) != 0) fail_msg("case %zu: %s", i, err.msg);
    }
}

static void test_custom_id_limit(void **state) {
    (void)state;
    ag_buf b;
    ag_buf_init(&b);
    ag_buf_append_str(&b, "{\"custom_id\":\"");
    for (int i = 0; i <= AG_JOBS_MAX_CUSTOM_ID; i++) ag_buf_append_char(&b, 'x');
    ag_buf_append_str(&b, "\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}");
    size_t n;
    ag_err err;
    assert_int_equal(ag_jobs_input_check(b.data, b.len, NULL, NULL, &n, &err), AG_EINVAL);
    assert_non_null(strstr(err.msg, "longer than"));
    ag_buf_deinit(&b);
}

static void test_tenants(void **state) {
    (void)state;
    char a[24], b[24], none[24];
    ag_jobs_tenant(AG_STR_LIT("key-a"), a);
    ag_jobs_tenant(AG_STR_LIT("key-b"), b);
    ag_jobs_tenant((ag_str){NULL, 0}, none);
    assert_string_not_equal(a, b);
    assert_string_equal(none, "public");
}

static void test_fuzz_corpus(void **state) {
    (void)state;
    assert_true(ag_test_fuzz_corpus(AG_SOURCE_DIR "/fuzz/corpus/batch_input", LLVMFuzzerTestOneInput) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file), cmocka_unit_test(test_bad_lines_are_named),
        cmocka_unit_test(test_custom_id_limit), cmocka_unit_test(test_tenants), cmocka_unit_test(test_fuzz_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
