/*
 * test_coding.c - content codings: Accept-Encoding negotiation by RFC 9110's
 * rules (q-values, "*", identity, an empty value), round trips through gzip
 * and zstd, whole and flushed event by event (each piece decodable as it
 * comes), and bounded decoding: bombs stop at the limit with 413, corrupt or
 * truncated bodies are 400, unknown codings 415; the fuzz corpus replayed.
 */
#include "test.h"

#include "http/coding.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

static const unsigned BOTH = 1u << AG_CODING_GZIP | 1u << AG_CODING_ZSTD;

static ag_http_coding pick(const char *v, unsigned allowed) {
    return ag_http_accept_pick(v ? ag_str_from_cstr(v) : (ag_str){NULL, 0}, allowed);
}

static void test_accept_encoding(void **state) {
    (void)state;
    assert_int_equal(pick(NULL, BOTH), AG_CODING_IDENTITY); /* not asked: not coded */
    assert_int_equal(pick("", BOTH), AG_CODING_IDENTITY);
    assert_int_equal(pick("gzip", BOTH), AG_CODING_GZIP);
    assert_int_equal(pick("x-gzip", BOTH), AG_CODING_GZIP);
    assert_int_equal(pick("deflate, gzip, br, zstd", BOTH), AG_CODING_ZSTD); /* curl --compressed: a tie */
    assert_int_equal(pick("gzip;q=1.0, zstd;q=0.5", BOTH), AG_CODING_GZIP);
    assert_int_equal(pick("zstd;q=0, gzip;q=0.001", BOTH), AG_CODING_GZIP);
    assert_int_equal(pick("zstd;q=0, gzip;q=0", BOTH), AG_CODING_IDENTITY);
    assert_int_equal(pick("*", BOTH), AG_CODING_ZSTD);
    assert_int_equal(pick("*;q=0.5, zstd;q=0", BOTH), AG_CODING_GZIP);
    assert_int_equal(pick("br, identity", BOTH), AG_CODING_IDENTITY);
    assert_int_equal(pick("GZIP ; Q=0.8 , ZSTD ; q=0.7", BOTH), AG_CODING_GZIP);
    assert_int_equal(pick("gzip;q=2", BOTH), AG_CODING_IDENTITY);        /* malformed q: the item is dropped */
    assert_int_equal(pick("gzip;q=0.5555", BOTH), AG_CODING_IDENTITY);   /* more than three decimals */
    assert_int_equal(pick("gzip;level=9", BOTH), AG_CODING_IDENTITY);
    assert_int_equal(pick("gzip, zstd", 1u << AG_CODING_ZSTD), AG_CODING_ZSTD); /* what the caller allows */
    assert_int_equal(pick("gzip", 1u << AG_CODING_ZSTD), AG_CODING_IDENTITY);
    assert_int_equal(pick(",,, ;q=1, gzip", BOTH), AG_CODING_GZIP);
    assert_int_equal(ag_http_coding_parse(ag_str_from_cstr(" gzip ")), AG_CODING_GZIP);
    assert_int_equal(ag_http_coding_parse(ag_str_from_cstr("zstd")), AG_CODING_ZSTD);
    assert_int_equal(ag_http_coding_parse(ag_str_from_cstr("identity")), AG_CODING_IDENTITY);
    assert_int_equal(ag_http_coding_parse(ag_str_from_cstr("gzip, zstd")), AG_CODING_UNKNOWN);
    assert_int_equal(ag_http_coding_parse(ag_str_from_cstr("br")), AG_CODING_UNKNOWN);
}

static char *json_like(size_t n) {
    char *p = malloc(n);
    for (size_t i = 0; i < n; i++) p[i] = "{\"text\":\"the king said\",\"index\":0}"[i % 34];
    return p;
}

static void test_round_trips(void **state) {
    (void)state;
    size_t n = 200000;
    char *in = json_like(n);
    for (ag_http_coding c = AG_CODING_GZIP; c <= AG_CODING_ZSTD; c++) {
        ag_buf z, back;
        ag_buf_init(&z), ag_buf_init(&back);
        assert_int_equal(ag_http_encode(c, in, n, &z), AG_OK);
        assert_true(z.len < n / 20);
        ag_http_error err;
        assert_int_equal(ag_http_decode(c, z.data, z.len, n, &back, &err), AG_OK);
        assert_int_equal(back.len, n);
        assert_memory_equal(back.data, in, n);
        ag_buf_reset(&back);
        assert_int_equal(ag_http_decode(c, z.data, z.len, n - 1, &back, &err), AG_EINVAL); /* one byte over */
        assert_int_equal(err.status, 413);
        assert_true(back.cap <= 2 * (n + 65536)); /* stopped within a step of the limit (the buffer doubles) */
        ag_buf_reset(&back);
        assert_int_equal(ag_http_decode(c, z.data, z.len / 2, n, &back, &err), AG_EINVAL); /* truncated */
        assert_int_equal(err.status, 400);
        ag_buf_deinit(&z), ag_buf_deinit(&back);
    }
    free(in);
}

/* Each flushed piece decodes completely as it arrives: what an SSE client needs. */
static void test_flushed_pieces_decode_as_they_come(void **state) {
    (void)state;
    for (ag_http_coding c = AG_CODING_GZIP; c <= AG_CODING_ZSTD; c++) {
        ag_http_encoder *e = ag_http_encoder_new(c, c == AG_CODING_ZSTD);
        ag_http_decoder *d = ag_http_decoder_new(c);
        assert_non_null(e);
        assert_non_null(d);
        ag_buf got;
        ag_buf_init(&got);
        ag_http_error err;
        for (int i = 0; i < 5; i++) {
            char event[64];
            int len = snprintf(event, sizeof event, "data: {\"n\":%d}\n\n", i);
            ag_buf z;
            ag_buf_init(&z);
            assert_int_equal(i < 4 ? ag_http_encoder_push(e, event, (size_t)len, &z) : ag_http_encoder_end(e, event, (size_t)len, &z), AG_OK);
            got.len = 0;
            assert_int_equal(ag_http_decoder_push(d, z.data, z.len, 1000, &got, &err), AG_OK);
            assert_int_equal(got.len, (size_t)len); /* each event whole as soon as its piece arrives */
            assert_memory_equal(got.data, event, got.len);
            ag_buf_deinit(&z);
        }
        assert_int_equal(ag_http_decoder_end(d, &err), AG_OK);
        ag_buf_deinit(&got);
        ag_http_decoder_free(d);
        ag_http_encoder_free(e);
    }
}

/* A body pushed a byte at a time decodes as it does whole; its limit counts across pushes; a cut is truncation. */
static void test_decoder_takes_any_split(void **state) {
    (void)state;
    size_t n = 100000;
    char *in = json_like(n);
    for (ag_http_coding c = AG_CODING_GZIP; c <= AG_CODING_ZSTD; c++) {
        ag_buf z, back;
        ag_buf_init(&z), ag_buf_init(&back);
        assert_int_equal(ag_http_encode(c, in, n, &z), AG_OK);
        ag_http_encode(c, in, 100, &z); /* a second gzip member, or zstd frame */
        ag_http_error err;
        ag_http_decoder *d = ag_http_decoder_new(c);
        for (size_t i = 0; i < z.len; i++) {
            assert_int_equal(ag_http_decoder_push(d, z.data + i, 1, n + 100, &back, &err), AG_OK);
        }
        assert_int_equal(ag_http_decoder_end(d, &err), AG_OK);
        ag_http_decoder_free(d);
        assert_int_equal(back.len, n + 100);
        assert_memory_equal(back.data, in, n);
        assert_memory_equal(back.data + n, in, 100);
        /* the limit is over the whole body, not each push */
        ag_buf_reset(&back);
        d = ag_http_decoder_new(c);
        ag_status st = AG_OK;
        for (size_t i = 0; i < z.len && st == AG_OK; i += 1000)
            st = ag_http_decoder_push(d, z.data + i, z.len - i < 1000 ? z.len - i : 1000, n, &back, &err);
        assert_int_equal(st, AG_EINVAL);
        assert_int_equal(err.status, 413);
        ag_http_decoder_free(d);
        /* cut short: every piece decodes, the end says it is incomplete */
        ag_buf_reset(&back);
        d = ag_http_decoder_new(c);
        assert_int_equal(ag_http_decoder_push(d, z.data, z.len / 3, n + 100, &back, &err), AG_OK);
        assert_int_equal(ag_http_decoder_end(d, &err), AG_EINVAL);
        assert_int_equal(err.status, 400);
        ag_http_decoder_free(d);
        ag_buf_deinit(&z), ag_buf_deinit(&back);
    }
    free(in);
}

/* A tail coded once, joined to many heads: each body decodes to head + tail (zlib's gunzip reads the gzip one). */
static void test_coded_tail_joins_any_head(void **state) {
    (void)state;
    size_t n = 50000;
    char *tail = json_like(n);
    for (ag_http_coding c = AG_CODING_GZIP; c <= AG_CODING_ZSTD; c++) {
        ag_http_coded_tail t;
        assert_int_equal(ag_http_code_tail(c, tail, n, &t), AG_OK);
        for (int i = 0; i < 3; i++) {
            char head[64];
            int hn = i == 2 ? 0 : snprintf(head, sizeof head, "{\"id\":\"cmpl-%d\",\"created\":%d,", i, 1000 + i);
            ag_buf z, back;
            ag_buf_init(&z), ag_buf_init(&back);
            assert_int_equal(ag_http_code_with_tail(&t, head, (size_t)hn, &z), AG_OK);
            ag_http_error err;
            assert_int_equal(ag_http_decode(c, z.data, z.len, 1u << 20, &back, &err), AG_OK);
            assert_int_equal(back.len, (size_t)hn + n);
            assert_memory_equal(back.data, head, (size_t)hn);
            assert_memory_equal(back.data + hn, tail, n);
            if (c == AG_CODING_GZIP) { /* one member: uncompress through zlib's own gzip reader, trailer checked */
                z_stream zs;
                memset(&zs, 0, sizeof zs);
                inflateInit2(&zs, 15 + 16);
                char *o = malloc(n + 100);
                zs.next_in = (Bytef *)z.data, zs.avail_in = (uInt)z.len, zs.next_out = (Bytef *)o, zs.avail_out = (uInt)(n + 100);
                assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
                assert_int_equal(zs.avail_in, 0);
                inflateEnd(&zs);
                free(o);
            }
            ag_buf_deinit(&z), ag_buf_deinit(&back);
        }
        ag_http_coded_tail_free(&t);
    }
    free(tail);
}

static void test_bombs_and_bad_bodies(void **state) {
    (void)state;
    size_t n = 64u << 20; /* 64 MiB of zeros: about 64 KiB as gzip, a few KiB as zstd */
    char *zeros = calloc(1, n);
    for (ag_http_coding c = AG_CODING_GZIP; c <= AG_CODING_ZSTD; c++) {
        ag_buf z, out;
        ag_buf_init(&z), ag_buf_init(&out);
        assert_int_equal(ag_http_encode(c, zeros, n, &z), AG_OK);
        ag_http_error err;
        assert_int_equal(ag_http_decode(c, z.data, z.len, 1u << 20, &out, &err), AG_EINVAL);
        assert_int_equal(err.status, 413);
        assert_true(out.cap <= 2 * ((1u << 20) + 65536)); /* the bomb's size was never allocated: the buffer doubles up to the limit */
        ag_buf_deinit(&z), ag_buf_deinit(&out);
    }
    free(zeros);
    ag_buf out;
    ag_buf_init(&out);
    ag_http_error err;
    assert_int_equal(ag_http_decode(AG_CODING_GZIP, "garbage!", 8, 100, &out, &err), AG_EINVAL);
    assert_int_equal(err.status, 400);
    assert_int_equal(ag_http_decode(AG_CODING_ZSTD, "garbage!", 8, 100, &out, &err), AG_EINVAL);
    assert_int_equal(err.status, 400);
    assert_int_equal(ag_http_decode(AG_CODING_UNKNOWN, "x", 1, 100, &out, &err), AG_EINVAL);
    assert_int_equal(err.status, 415);
    /* a zstd frame whose window passes 8 MiB (RFC 9659) is refused, not decoded */
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, 25);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 19);
    char src[256] = "x", dst[1024];
    ZSTD_inBuffer ib = {src, sizeof src, 0}, none = {NULL, 0, 0};
    ZSTD_outBuffer ob = {dst, sizeof dst, 0};
    ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_continue); /* size unknown when the frame starts: the window stays */
    while (ZSTD_compressStream2(cc, &ob, &none, ZSTD_e_end) != 0) {}
    ZSTD_freeCCtx(cc);
    ag_buf_reset(&out);
    assert_int_equal(ag_http_decode(AG_CODING_ZSTD, dst, ob.pos, 1u << 30, &out, &err), AG_EINVAL);
    assert_int_equal(err.status, 400);
    /* two gzip members in a row are one body (RFC 1952) */
    ag_buf two;
    ag_buf_init(&two);
    ag_http_encode(AG_CODING_GZIP, "hello, ", 7, &two);
    ag_http_encode(AG_CODING_GZIP, "world", 5, &two);
    ag_buf_reset(&out);
    assert_int_equal(ag_http_decode(AG_CODING_GZIP, two.data, two.len, 100, &out, &err), AG_OK);
    assert_int_equal(out.len, 12);
    assert_memory_equal(out.data, "hello, world", 12);
    ag_buf_deinit(&two);
    ag_buf_deinit(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#include "../../../fuzz/decode_body.c"

static void test_fuzz_corpus_replays(void **state) {
    (void)state;
    assert_true(ag_test_fuzz_corpus(AG_SOURCE_DIR "/fuzz/corpus/decode", LLVMFuzzerTestOneInput) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_encoding),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_flushed_pieces_decode_as_they_come),
        cmocka_unit_test(test_decoder_takes_any_split),
        cmocka_unit_test(test_coded_tail_joins_any_head),
        cmocka_unit_test(test_bombs_and_bad_bodies),
        cmocka_unit_test(test_fuzz_corpus_replays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
