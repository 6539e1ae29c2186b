/*
 * Tests for src/http/http.c: the request head parser fed whole and byte by
 * byte (the same result either way), every limit and its status, the
 * smuggling refusals, and the chunked decoder split at every byte.
 */
#include "test.h"

#include "http/http.h"

#include <string.h>

static ag_http_header hdrs[AG_HTTP_MAX_HEADERS_CAP];


/* Parse text fed in steps of `step` bytes; returns the last status, with *req and *err as left. */
static ag_status parse_stepped(const char *text, size_t step, const ag_http_limits *lim, ag_http_request *req,
                               ag_http_error *err) {
    ag_http_head_parser p = {0};
    size_t len = strlen(text);
    ag_status st = AG_AGAIN;
    for (size_t n = step < len ? step : len;; n = n + step < len ? n + step : len) {
        req->headers = hdrs;
        st = ag_http_head_parse(&p, text, n, lim, req, err);
        if (st != AG_AGAIN || n == len) return st;
    }
}

static void test_simple_request(void **state) {
    (void)state;
    const char *text = "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n"
                       "Content-Type:application/json  \r\nConnection: keep-alive\r\n\r\n{\"prompt\":1}";
    ag_http_limits lim = ag_http_limits_default();
    for (size_t step = 1; step <= strlen(text); step++) {
        ag_http_request req;
        ag_http_error err;
        assert_int_equal(parse_stepped(text, step, &lim, &req, &err), AG_OK);
        assert_true(ag_str_eq_cstr(req.method, "POST"));
        assert_true(ag_str_eq_cstr(req.target, "/v1/completions?x=1"));
        assert_true(ag_str_eq_cstr(req.path, "/v1/completions"));
        assert_true(ag_str_eq_cstr(req.query, "x=1"));
        assert_int_equal(req.version_minor, 1);
        assert_int_equal(req.n_headers, 4);
        assert_int_equal(req.content_length, 12);
        assert_true(req.keep_alive);
        assert_false(req.chunked);
        assert_true(ag_str_eq_cstr(ag_http_header_get(&req, "content-type"), "application/json"));
        assert_int_equal(req.head_len, strlen(text) - 12);
    }
}

static void test_bare_lf_and_versions(void **state) {
    (void)state;
    ag_http_limits lim = ag_http_limits_default();
    ag_http_request req;
    ag_http_error err;
    assert_int_equal(parse_stepped("GET / HTTP/1.1\nHost: a\n\n", 3, &lim, &req, &err), AG_OK);
    assert_true(req.keep_alive);
    assert_int_equal(parse_stepped("GET / HTTP/1.0\r\n\r\n", 100, &lim, &req, &err), AG_OK);
    assert_false(req.keep_alive); /* 1.0 closes by default, needs no Host */
    assert_int_equal(parse_stepped("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 100, &lim, &req, &err), AG_OK);
    assert_true(req.keep_alive);
    assert_int_equal(parse_stepped("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", 100, &lim, &req, &err),
                     AG_OK);
    assert_false(req.keep_alive);
    assert_int_equal(parse_stepped("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", 5, &lim, &req, &err), AG_OK);
    assert_true(req.expect_continue);
    assert_int_equal(parse_stepped("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", 5, &lim, &req, &err),
                     AG_OK);
    assert_true(req.chunked);
}

static void expect_status(const char *text, const ag_http_limits *lim, int status) {
    for (size_t step = 1; step <= strlen(text); step += step < 8 ? 1 : 7) {
        ag_http_request req;
        ag_http_error err = {0};
        ag_status st = parse_stepped(text, step, lim, &req, &err);
        if (st == AG_OK || st == AG_AGAIN) fail_msg("accepted (%d) at step %zu: %s", st, step, text);
        if (err.status != status) fail_msg("status %d, want %d (%s) for %s", err.status, status, err.reason, text);
        assert_non_null(err.reason);
    }
}

static void test_malformed(void **state) {
    (void)state;
    ag_http_limits lim = ag_http_limits_default();
    expect_status("HELLO\r\n\r\n", &lim, 400);
    expect_status(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", &lim, 400);
    expect_status("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", &lim, 400);
    expect_status("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", &lim, 400);
    expect_status("GET / HTTQ/1.1\r\nHost: a\r\n\r\n", &lim, 400);
    expect_status("GET / HTTP/2.0\r\nHost: a\r\n\r\n", &lim, 505);
    expect_status("GET / HTTP/1.1\r\n\r\n", &lim, 400);                                  /* no Host */
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &lim, 400);            /* two Hosts */
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n", &lim, 400);              /* space before colon */
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", &lim, 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", &lim, 400);          /* obs-fold */
    expect_status("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", &lim, 400);                 /* bare CR */
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", &lim, 400);            /* DEL in a value */
    expect_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", &lim, 400);
    expect_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", &lim, 400);
    expect_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &lim, 400);
    expect_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", &lim, 400);
    expect_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", &lim, 400);
    expect_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &lim, 501);
    expect_status("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", &lim, 417);
    /* equal duplicate Content-Lengths are one value */
    ag_http_request req;
    ag_http_error err;
    assert_int_equal(parse_stepped("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 4, &lim,
                                   &req, &err),
                     AG_OK);
    assert_int_equal(req.content_length, 3);
}

static void test_limits(void **state) {
    (void)state;
    ag_http_limits lim = {.max_request_line = 32, .max_header_bytes = 80, .max_headers = 3, .max_body = 10};
    ag_http_request req;
    ag_http_error err;
    /* exactly at the limits is fine */
    assert_int_equal(parse_stepped("GET /aaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\nB: b\r\nC: c\r\n\r\n", 1, &lim, &req, &err),
                     AG_OK);
    expect_status("GET /aaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", &lim, 414); /* 33 bytes */
    /* an endless request line is refused once it passes the limit, without a line end */
    expect_status("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &lim, 414);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nB: b\r\nC: c\r\nD: d\r\n\r\n", &lim, 431);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nB: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n", &lim,
                  431);
    /* endless headers are refused without their end */
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nB: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", &lim,
                  431);
}

/* Decode coded, fed in steps; returns the status and the decoded text. */
static ag_status decode_stepped(const char *coded, size_t step, size_t max_body, char *out, size_t *out_len,
                                size_t *rest_at) {
    size_t len = strlen(coded);
    char *buf = malloc(len + 1);
    ag_http_chunked d = {0};
    ag_http_error err;
    ag_status st = AG_AGAIN;
    for (size_t n = 0; n < len && st == AG_AGAIN;) {
        size_t k = n + step < len ? n + step : len;
        memcpy(buf + n, coded + n, k - n); /* bytes arrive after the decoder has rewritten earlier ones */
        n = k;
        st = ag_http_chunked_decode(&d, buf, n, max_body, 64, &err);
    }
    memcpy(out, buf, d.dst);
    *out_len = d.dst;
    *rest_at = d.src;
    free(buf);
    return st;
}

static void test_chunked(void **state) {
    (void)state;
    const char *coded = "5;name=val\r\nhello\r\n1\r\n \r\nB\r\nworld, 0123\r\n0\r\nTrailer: x\r\n\r\nGET /next";
    for (size_t step = 1; step <= strlen(coded); step++) {
        char out[64];
        size_t n, rest;
        assert_int_equal(decode_stepped(coded, step, 100, out, &n, &rest), AG_OK);
        assert_int_equal(n, 17);
        assert_memory_equal(out, "hello world, 0123", 17);
        assert_string_equal(coded + rest, "GET /next");
    }
    char out[64];
    size_t n, rest;
    assert_int_equal(decode_stepped("3\nabc\n0\n\n", 1, 100, out, &n, &rest), AG_OK); /* bare LF */
    assert_int_equal(decode_stepped("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 3, 9, out, &n, &rest), AG_ELIMIT);
    assert_int_equal(decode_stepped("zz\r\n", 1, 100, out, &n, &rest), AG_EINVAL);
    assert_int_equal(decode_stepped("\r\n", 1, 100, out, &n, &rest), AG_EINVAL);
    assert_int_equal(decode_stepped("3\r\nabcd\r\n", 1, 100, out, &n, &rest), AG_EINVAL);
    assert_int_equal(decode_stepped("1111111111111111\r\n", 1, 100, out, &n, &rest), AG_EINVAL);
    assert_int_equal(decode_stepped("ffffffffffffff\r\n", 1, 100, out, &n, &rest), AG_ELIMIT);
    assert_int_equal(decode_stepped("3\r\nabc\r\n", 2, 100, out, &n, &rest), AG_AGAIN);
}

/* Random bytes never crash the parser or the decoder, and never read past what they were given. */
static void test_random_input(void **state) {
    (void)state;
    uint64_t seed = 99;
    ag_http_limits lim = ag_http_limits_default();
    lim.max_headers = 8;
    static const char alphabet[] = "GET /HTP1.\r\n: abcHost-Lngh0123456789chunked\t\x01\x80";
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = ag_test_rand(&seed) % 96;
        char *buf = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++) buf[i] = alphabet[ag_test_rand(&seed) % (sizeof alphabet - 1)];
        ag_http_head_parser p = {0};
        ag_http_request req = {.headers = hdrs};
        ag_http_error err;
        for (size_t n = 0; n <= len; n++)
            if (ag_http_head_parse(&p, buf, n, &lim, &req, &err) != AG_AGAIN) break;
        ag_http_chunked d = {0};
        ag_http_chunked_decode(&d, buf, len, 1000, 64, &err);
        assert_true(d.dst <= d.src && d.src <= len);
        free(buf);
    }
}

/* The fuzz target's checks over its corpus: a crash the fuzzer finds is added there and becomes a test. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#include "../../../fuzz/http_parse.c"

static void test_etag_match(void **state) {
    (void)state;
    const ag_str tag = AG_STR_LIT("\"a1\""), weak = AG_STR_LIT("W/\"a1\"");
    const struct {
        const char *inm;
        bool match;
    } cases[] = {
        {"\"a1\"", true},          {"W/\"a1\"", true},         {"\"b\", \"a1\"", true}, {" ,\"b\",,\t\"a1\" ", true},
        {"*", true},               {"\"a1 \"", false},         {"\"a\"", false},         {"a1", false},
        {"\"a1", false},           {"\"x,\"a1\"\"", false},    {"", false},             {"\"b\" junk \"a1\"", false},
        {"\"x,y\", \"a1\"", true}, {"W/", false},               {"w/\"a1\"", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ag_str inm = ag_str_from_cstr(cases[i].inm);
        if (ag_http_etag_match(inm, tag) != cases[i].match || ag_http_etag_match(inm, weak) != cases[i].match)
            fail_msg("If-None-Match: %s should %smatch", cases[i].inm, cases[i].match ? "" : "not ");
    }
}

static void test_fuzz_corpus_replays(void **state) {
    (void)state;
    assert_true(ag_test_fuzz_corpus(AG_SOURCE_DIR "/fuzz/corpus/http", LLVMFuzzerTestOneInput) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_request), cmocka_unit_test(test_bare_lf_and_versions),
        cmocka_unit_test(test_malformed),      cmocka_unit_test(test_limits),
        cmocka_unit_test(test_chunked),        cmocka_unit_test(test_random_input),
        cmocka_unit_test(test_etag_match),     cmocka_unit_test(test_fuzz_corpus_replays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
