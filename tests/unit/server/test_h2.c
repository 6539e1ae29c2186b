/*
 * test_h2.c - HTTP/2 frames in, frames out, through the fuzz target's harness
 * (fuzz/h2_frames.c: a server whose routes echo, on a socketpair): requests
 * answered on their streams (the response head decoded with nghttp2's own
 * HPACK inflater), SSE bodies, the 431 and 413 limits, the empty-frame flood,
 * and the fuzz corpus replayed.
 */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include "../../../fuzz/h2_frames.c"

#include <nghttp2/nghttp2.h>

enum { DATA = 0, HEADERS = 1, RST_STREAM = 3, SETTINGS = 4, GOAWAY = 7 };
enum { END_STREAM = 1, END_HEADERS = 4 };

static void frame(ag_buf *b, int type, int flags, uint32_t id, const void *payload, size_t len) {
    uint8_t h[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, (uint8_t)type, (uint8_t)flags,
                    (uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
    ag_buf_append(b, h, 9);
    if (len) ag_buf_append(b, payload, len);
}

/* A request's header block: :method and :scheme http from the static table, :path and :authority as literals,
 * then extra fields as literals (lengths under 127; longer values use the 7-bit prefix's continuation). */
static void hpack_literal(ag_buf *b, uint8_t first, const char *name, const char *value) {
    ag_buf_append_char(b, (char)first);
    if (name) ag_buf_append_char(b, (char)strlen(name)), ag_buf_append_str(b, name);
    size_t n = strlen(value);
    if (n < 127) {
        ag_buf_append_char(b, (char)n);
    } else {
        ag_buf_append_char(b, 127);
        for (n -= 127; n >= 128; n >>= 7) ag_buf_append_char(b, (char)(0x80 | (n & 0x7f)));
        ag_buf_append_char(b, (char)n);
    }
    ag_buf_append_str(b, value);
}

static void request(ag_buf *b, uint32_t id, const char *method, const char *path, const char *big_header,
                    const char *body, size_t body_len) {
    ag_buf hb;
    ag_buf_init(&hb);
    ag_buf_append_char(&hb, (char)(strcmp(method, "GET") == 0 ? 0x82 : 0x83));
    ag_buf_append_char(&hb, (char)0x86);
    hpack_literal(&hb, 0x04, NULL, path);
    hpack_literal(&hb, 0x01, NULL, "test");
    if (big_header) hpack_literal(&hb, 0x00, "x-big", big_header);
    frame(b, HEADERS, END_HEADERS | (body ? 0 : END_STREAM), id, hb.data, hb.len);
    if (body) frame(b, DATA, END_STREAM, id, body, body_len);
    ag_buf_deinit(&hb);
}

/* The server's answer on one stream: its :status, one header's value, and the DATA bytes. */
typedef struct answer {
    int status;
    char header[64];
    ag_buf body;
    bool ended;
    uint32_t goaway_code, rst_code;
    bool goaway;
} answer;

static void read_answer(const ag_buf *out, uint32_t id, const char *header, answer *a) {
    memset(a, 0, sizeof *a);
    ag_buf_init(&a->body);
    nghttp2_hd_inflater *inf;
    assert_int_equal(nghttp2_hd_inflate_new(&inf), 0);
    const uint8_t *p = (const uint8_t *)out->data;
    size_t left = out->len;
    while (left >= 9) {
        size_t len = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
        uint32_t sid = ((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 8 | p[8]) & 0x7fffffff;
        const uint8_t *pl = p + 9;
        if (p[3] == HEADERS) { /* every block goes through the inflater: its table is the connection's */
            const uint8_t *in = pl;
            size_t inlen = len;
            for (;;) {
                nghttp2_nv nv;
                int fl = 0;
                ssize_t r = nghttp2_hd_inflate_hd2(inf, &nv, &fl, in, inlen, 1);
                assert_true(r >= 0);
                in += r, inlen -= (size_t)r;
                if ((fl & NGHTTP2_HD_INFLATE_EMIT) && sid == id) {
                    if (nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0) a->status = atoi((const char *)nv.value);
                    if (header && nv.namelen == strlen(header) && memcmp(nv.name, header, nv.namelen) == 0)
                        snprintf(a->header, sizeof a->header, "%.*s", (int)nv.valuelen, nv.value);
                }
                if (fl & NGHTTP2_HD_INFLATE_FINAL) {
                    nghttp2_hd_inflate_end_headers(inf);
                    break;
                }
                if (!inlen && !(fl & NGHTTP2_HD_INFLATE_EMIT)) break;
            }
        }
        if (sid == id && p[3] == DATA) ag_buf_append(&a->body, pl, len);
        if (sid == id && (p[3] == DATA || p[3] == HEADERS) && (p[4] & END_STREAM)) a->ended = true;
        if (sid == id && p[3] == RST_STREAM) a->rst_code = (uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 | (uint32_t)pl[2] << 8 | pl[3];
        if (p[3] == GOAWAY)
            a->goaway = true, a->goaway_code = (uint32_t)pl[4] << 24 | (uint32_t)pl[5] << 16 | (uint32_t)pl[6] << 8 | pl[7];
        p += 9 + len, left -= 9 + len;
    }
    nghttp2_hd_inflate_del(inf);
}

static void roundtrip(ag_buf *in, uint32_t id, const char *header, answer *a) {
    ag_buf out;
    ag_buf_init(&out);
    h2_run((const uint8_t *)in->data, in->len, &out);
    read_answer(&out, id, header, a);
    ag_buf_deinit(&out);
}

static void test_get_and_post_are_answered_on_their_streams(void **state) {
    (void)state;
    ag_buf in;
    ag_buf_init(&in);
    frame(&in, SETTINGS, 0, 0, NULL, 0);
    request(&in, 1, "GET", "/health", NULL, NULL, 0);
    request(&in, 3, "POST", "/echo", NULL, "hello, h2", 9);
    answer a;
    roundtrip(&in, 1, "x-echo", &a);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.header, "1");
    assert_int_equal(a.body.len, 0);
    assert_true(a.ended);
    ag_buf_deinit(&a.body);
    roundtrip(&in, 3, "content-length", &a);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.header, "9");
    assert_int_equal(a.body.len, 9);
    assert_memory_equal(a.body.data, "hello, h2", 9);
    assert_true(a.ended);
    ag_buf_deinit(&a.body);
    ag_buf_deinit(&in);
}

static void test_sse_is_data_frames_then_the_end(void **state) {
    (void)state;
    ag_buf in;
    ag_buf_init(&in);
    frame(&in, SETTINGS, 0, 0, NULL, 0);
    request(&in, 1, "POST", "/sse", NULL, "{\"a\":1}", 7);
    answer a;
    roundtrip(&in, 1, "content-type", &a);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.header, "text/event-stream");
    static const char want[] = "data: {\"a\":1}\n\ndata: [DONE]\n\n";
    assert_int_equal(a.body.len, sizeof want - 1);
    assert_memory_equal(a.body.data, want, sizeof want - 1);
    assert_true(a.ended);
    ag_buf_deinit(&a.body);
    ag_buf_deinit(&in);
}

static void test_limits_answer_431_and_413(void **state) {
    (void)state;
    char big[3001];
    memset(big, 'y', 3000), big[3000] = 0;
    char body[5000];
    memset(body, 'z', sizeof body);
    ag_buf in;
    ag_buf_init(&in);
    frame(&in, SETTINGS, 0, 0, NULL, 0);
    request(&in, 1, "GET", "/health", big, NULL, 0);   /* over max_header_bytes (2048) */
    request(&in, 3, "POST", "/x", NULL, body, 5000);   /* over max_body (4096) */
    request(&in, 5, "GET", "/after", NULL, NULL, 0);   /* the connection serves on */
    answer a;
    roundtrip(&in, 1, NULL, &a);
    assert_int_equal(a.status, 431);
    ag_buf_deinit(&a.body);
    roundtrip(&in, 3, NULL, &a);
    assert_int_equal(a.status, 413);
    assert_true(a.ended);
    ag_buf_deinit(&a.body);
    roundtrip(&in, 5, NULL, &a);
    assert_int_equal(a.status, 200);
    ag_buf_deinit(&a.body);
    ag_buf_deinit(&in);
}

static void test_empty_frame_flood_ends_the_connection(void **state) {
    (void)state;
    ag_buf in;
    ag_buf_init(&in);
    frame(&in, SETTINGS, 0, 0, NULL, 0);
    ag_buf hb; /* a POST whose body never comes: HEADERS without END_STREAM, then empty DATA frames */
    ag_buf_init(&hb);
    ag_buf_append(&hb, "\x83\x86", 2);
    hpack_literal(&hb, 0x04, NULL, "/x");
    hpack_literal(&hb, 0x01, NULL, "test"); /* nghttp2 refuses a request with neither :authority nor host */
    frame(&in, HEADERS, END_HEADERS, 1, hb.data, hb.len);
    for (int i = 0; i < 1200; i++) frame(&in, DATA, 0, 1, NULL, 0);
    answer a;
    roundtrip(&in, 1, NULL, &a);
    assert_true(a.goaway);
    assert_int_equal(a.goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
    ag_buf_deinit(&a.body);
    ag_buf_deinit(&hb);
    ag_buf_deinit(&in);
}

static void test_fuzz_corpus_replays(void **state) {
    (void)state;
    assert_true(ag_test_fuzz_corpus(AG_SOURCE_DIR "/fuzz/corpus/h2", LLVMFuzzerTestOneInput) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_post_are_answered_on_their_streams),
        cmocka_unit_test(test_sse_is_data_frames_then_the_end),
        cmocka_unit_test(test_limits_answer_431_and_413),
        cmocka_unit_test(test_empty_frame_flood_ends_the_connection),
        cmocka_unit_test(test_fuzz_corpus_replays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
