/*
 * test_lg_response.c - the load generator's HTTP/1.1 response reader through
 * the fuzz target's harness (fuzz/lg_response.c): whole, chunked and
 * event-stream answers read the same however the reads split them (every
 * piece size from 1 byte up), usage and chunk gaps counted, an interim 100
 * skipped, and the protocol errors it must stop at; then the fuzz corpus
 * replayed.
 */
#define _GNU_SOURCE /* pthread types for uv.h */
#define AG_FUZZ_NO_MAIN
#include "test.h"

#include "../../../fuzz/lg_response.c"

static lg_response feed(const char *text, size_t piece) { return lg_response_feed((const uint8_t *)text, strlen(text), piece); }

/* The same reading at every piece size. */
static void same_at_every_split(const char *text, lg_response want) {
    for (size_t piece = 0; piece <= strlen(text); piece++) {
        lg_response got = feed(text, piece);
        assert_int_equal(got.ok, want.ok);
        assert_int_equal(got.done, want.done);
        assert_int_equal(got.status, want.status);
        assert_int_equal(got.sse, want.sse);
        assert_int_equal(got.in_tokens, want.in_tokens);
        assert_int_equal(got.out_tokens, want.out_tokens);
        assert_int_equal(got.itl_samples, want.itl_samples);
    }
}

static void test_whole_json(void **state) {
    (void)state;
    const char *r = "HTTP/1.1 200 OK\r\nServer: peer/1.2\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"
                    "{\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}";
    same_at_every_split(r, (lg_response){.ok = true, .done = true, .status = 200, .in_tokens = 7, .out_tokens = 3});
    assert_string_equal(feed(r, 0).server, "peer/1.2");
}

static void test_chunked_event_stream(void **state) {
    (void)state;
    const char *r = "HTTP/1.1 100 Continue\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "2F\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\r\n"
                    "51\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n"
                    "data: {\"choices\":[{\"text\":\"c\"}]}\n\n\r\n"
                    "48\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\n\r\n"
                    "E\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";
    /* three chunks carry text: two gaps between them */
    same_at_every_split(r, (lg_response){.ok = true, .done = true, .status = 200, .sse = true, .in_tokens = 4,
                                         .out_tokens = 3, .itl_samples = 2});
}

static void test_errors_and_open_ends(void **state) {
    (void)state;
    /* bytes past Content-Length, a status line that is not HTTP/1.x, a bad chunk size */
    assert_false(feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc", 0).ok);
    assert_false(feed("ICY 200 OK\r\n\r\n", 0).ok);
    assert_false(feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0).ok);
    /* a head that never ends is cut at 64 KiB */
    static char big[70000];
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(big + 20, 'a', sizeof big - 21);
    assert_false(feed(big, 4096).ok);
    /* no length and not chunked: the body runs to the close, which lg_conn.c reads as the end */
    lg_response eof = feed("HTTP/1.1 503 Busy\r\n\r\nlater", 0);
    assert_true(eof.ok);
    assert_false(eof.done);
    assert_int_equal(eof.status, 503);
}

static void test_fuzz_corpus(void **state) {
    (void)state;
    assert_true(ag_test_fuzz_corpus(AG_SOURCE_DIR "/fuzz/corpus/lg_response", lg_response_run) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_json),
        cmocka_unit_test(test_chunked_event_stream),
        cmocka_unit_test(test_errors_and_open_ends),
        cmocka_unit_test(test_fuzz_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
