/*
 * test_multipart.c - multipart/form-data: the bodies the OpenAI SDK and curl
 * -F send, the boundary from Content-Type, every way a body can be broken,
 * and the fuzz corpus replayed.
 */
#include "test.h"

#include "../../../fuzz/multipart_parse.c"

#include "base/buf.h"

static ag_status parse(const char *body, const char *boundary, ag_multipart_part *parts, size_t *n,
                       const char **why) {
    return ag_multipart_parse(body, strlen(body), ag_str_from_cstr(boundary), parts, AG_MULTIPART_MAX_PARTS, n, why);
}

static void assert_str(ag_str s, const char *want) {
    assert_non_null(s.p);
    assert_int_equal(s.n, strlen(want));
    assert_memory_equal(s.p, want, s.n);
}

static void test_curl_body(void **state) {
    (void)state;
    const char *body = "--------------------------d74496d66958873e\r\n"
                       "Content-Disposition: form-data; name=\"purpose\"\r\n\r\n"
                       "batch\r\n"
                       "--------------------------d74496d66958873e\r\n"
                       "Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
                       "Content-Type: application/octet-stream\r\n\r\n"
                       "{\"a\":1}\n{\"b\":2}\n\r\n"
                       "--------------------------d74496d66958873e--\r\n";
    ag_multipart_part p[AG_MULTIPART_MAX_PARTS];
    size_t n;
    const char *why;
    assert_int_equal(parse(body, "------------------------d74496d66958873e", p, &n, &why), AG_OK);
    assert_int_equal(n, 2);
    assert_str(p[0].name, "purpose");
    assert_null(p[0].filename.p);
    assert_str(p[0].data, "batch");
    assert_str(p[1].name, "file");
    assert_str(p[1].filename, "in.jsonl");
    assert_str(p[1].ctype, "application/octet-stream");
    assert_str(p[1].data, "{\"a\":1}\n{\"b\":2}\n");
}

/* A preamble, transport padding after a delimiter, an epilogue, and a part whose data holds "--" and CRLFs. */
static void test_preamble_padding_epilogue(void **state) {
    (void)state;
    const char *body = "ignored preamble\r\n--b  \r\n"
                       "content-disposition: form-data; name=x\r\n\r\n"
                       "--not the boundary\r\n\r\n-b\r\n"
                       "--b--\r\nepilogue";
    ag_multipart_part p[AG_MULTIPART_MAX_PARTS];
    size_t n;
    const char *why;
    assert_int_equal(parse(body, "b", p, &n, &why), AG_OK);
    assert_int_equal(n, 1);
    assert_str(p[0].name, "x");
    assert_str(p[0].data, "--not the boundary\r\n\r\n-b");
}

static void test_quoted_parameters(void **state) {
    (void)state;
    const char *body = "--q\r\nContent-Disposition: form-data; filename=\"a;b.jsonl\"; name=\"file\"\r\n\r\nx\r\n--q--";
    ag_multipart_part p[AG_MULTIPART_MAX_PARTS];
    size_t n;
    const char *why;
    assert_int_equal(parse(body, "q", p, &n, &why), AG_OK);
    assert_str(p[0].name, "file");
    assert_str(p[0].filename, "a;b.jsonl");
}

static void test_broken_bodies(void **state) {
    (void)state;
    static const char *const bad[] = {
        "no boundary at all",
        "--b\r\nContent-Disposition: form-data; name=x\r\n\r\nnever closed",
        "--b\r\nContent-Disposition: form-data; name=x\r\nheaders never end",
        "--b\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n--b--",
        "--b\r\nContent-Disposition: attachment; name=x\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--b--",
        "--b\r\nno colon here\r\n\r\nx\r\n--b--",
        "--bX\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ag_multipart_part p[AG_MULTIPART_MAX_PARTS];
        size_t n;
        const char *why = NULL;
        assert_int_not_equal(parse(bad[i], "b", p, &n, &why), AG_OK);
        assert_non_null(why);
    }
}

static void test_limits(void **state) {
    (void)state;
    ag_buf b;
    ag_buf_init(&b);
    for (int i = 0; i <= AG_MULTIPART_MAX_PARTS; i++) ag_buf_appendf(&b, "--b\r\nContent-Disposition: form-data; name=p%d\r\n\r\nv\r\n", i);
    ag_buf_append_str(&b, "--b--");
    ag_multipart_part p[AG_MULTIPART_MAX_PARTS];
    size_t n;
    const char *why;
    assert_int_equal(ag_multipart_parse(b.data, b.len, AG_STR_LIT("b"), p, AG_MULTIPART_MAX_PARTS, &n, &why), AG_ELIMIT);
    ag_buf_reset(&b);
    ag_buf_append_str(&b, "--b\r\nContent-Disposition: form-data; name=x\r\nX-Long: ");
    for (int i = 0; i < AG_MULTIPART_MAX_HEAD; i++) ag_buf_append_char(&b, 'a');
    ag_buf_append_str(&b, "\r\n\r\nv\r\n--b--");
    assert_int_equal(ag_multipart_parse(b.data, b.len, AG_STR_LIT("b"), p, AG_MULTIPART_MAX_PARTS, &n, &why), AG_EINVAL);
    assert_string_equal(why, "a part's headers are too long");
    ag_buf_deinit(&b);
}

static void test_boundary_from_content_type(void **state) {
    (void)state;
    ag_str b;
    assert_int_equal(ag_multipart_boundary(AG_STR_LIT("multipart/form-data; boundary=abc"), &b), AG_OK);
    assert_str(b, "abc");
    assert_int_equal(ag_multipart_boundary(AG_STR_LIT("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b\""), &b), AG_OK);
    assert_str(b, "a b");
    assert_int_equal(ag_multipart_boundary(AG_STR_LIT("application/json"), &b), AG_EINVAL);
    assert_int_equal(ag_multipart_boundary(AG_STR_LIT("multipart/form-datax; boundary=a"), &b), AG_EINVAL);
    assert_int_equal(ag_multipart_boundary(AG_STR_LIT("multipart/form-data"), &b), AG_EINVAL);
    assert_int_equal(ag_multipart_boundary(AG_STR_LIT("multipart/form-data; boundary="), &b), AG_EINVAL);
}

static void test_fuzz_corpus(void **state) {
    (void)state;
    assert_true(ag_test_fuzz_corpus(AG_SOURCE_DIR "/fuzz/corpus/multipart", LLVMFuzzerTestOneInput) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curl_body),          cmocka_unit_test(test_preamble_padding_epilogue),
        cmocka_unit_test(test_quoted_parameters),  cmocka_unit_test(test_broken_bodies),
        cmocka_unit_test(test_limits),             cmocka_unit_test(test_boundary_from_content_type),
        cmocka_unit_test(test_fuzz_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
