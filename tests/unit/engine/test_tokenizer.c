/*
 * Tokenizer exactness: our ids equal the JavaScript reference's
 * (build/fixtures/NAME.ref.json, written by scripts/make-fixtures from
 * tests/fixtures/tokenizer-corpus.json) for every corpus text, on the real
 * Llama 3 and Qwen3 vocabularies; decode(encode(x)) == x; the streaming
 * detokenizer never emits a broken UTF-8 sequence; special-token texts are
 * plain text unless asked; invalid UTF-8 is a clear error.
 */
#include "test.h"

#include "engine/tokenizer.h"
#include "base/utf8.h"
#include "json/json.h"

#include <string.h>
#include <utf8proc.h>

#define FIXTURES AG_SOURCE_DIR "/build/fixtures/"

typedef struct fixture {
    ag_gguf_file *f;
    ag_tokenizer *t;
} fixture;

static fixture load(const char *name) {
    char path[512];
    snprintf(path, sizeof path, FIXTURES "%s.gguf", name);
    fixture fx;
    ag_err err = {{0}};
    if (ag_gguf_open(path, &fx.f, &err) != AG_OK) fail_msg("%s: %s (make test builds it)", path, err.msg);
    if (ag_tokenizer_load(fx.f, &fx.t, &err) != AG_OK) fail_msg("%s: %s", path, err.msg);
    return fx;
}

static void unload(fixture *fx) {
    ag_tokenizer_free(fx->t);
    ag_gguf_close(fx->f);
}

static void decode_all(const ag_tokenizer *t, const ag_ids *ids, ag_buf *out) {
    for (size_t i = 0; i < ids->n; i++) ag_token_bytes(t, ids->v[i], out);
}

static void check_against_reference(const char *name, bool nfc) {
    fixture fx = load(name);
    char path[512];
    snprintf(path, sizeof path, FIXTURES "%s.ref.json", name);
    size_t len;
    char *json = ag_test_read_file(path, &len);
    if (!json) fail_msg("%s missing (make test builds it)", path);
    ag_arena a;
    ag_arena_init(&a, 0);
    ag_json_val *root;
    assert_int_equal(ag_json_parse(json, len, NULL, &a, &root, NULL), AG_OK);
    size_t n_ids = 0;
    for (size_t i = 0; i < ag_json_len(root); i++) {
        const ag_json_val *e = ag_json_arr_at(root, i), *want = ag_json_obj_getc(e, "ids");
        ag_str text = ag_json_str(ag_json_obj_getc(e, "text"));
        ag_ids ids = {0};
        ag_err err = {{0}};
        assert_int_equal(ag_tokenize(fx.t, text.p, text.n, false, true, &ids, &err), AG_OK);
        size_t k = 0;
        while (k < ids.n && k < ag_json_len(want) && ag_json_arr_at(want, k)->u.i == ids.v[k]) k++;
        if (k != ids.n || k != ag_json_len(want))
            fail_msg("%s text %zu ('%.40s'): ids differ at %zu of %zu (ours %d, reference %lld)", name, i, text.p, k,
                     ag_json_len(want), k < ids.n ? ids.v[k] : -1,
                     k < ag_json_len(want) ? (long long)ag_json_arr_at(want, k)->u.i : -1LL);
        n_ids += ids.n;
        /* decode(encode(x)) == x, or NFC(x) where the vocabulary normalizes */
        ag_buf dec;
        ag_buf_init(&dec);
        decode_all(fx.t, &ids, &dec);
        utf8proc_uint8_t *expect = NULL;
        utf8proc_ssize_t en = nfc && text.n ? utf8proc_map((const utf8proc_uint8_t *)text.p, (utf8proc_ssize_t)text.n, &expect,
                                                           UTF8PROC_STABLE | UTF8PROC_COMPOSE)
                                            : (utf8proc_ssize_t)text.n;
        const char *want_text = expect ? (const char *)expect : text.p;
        if (dec.len != (size_t)en || (en && memcmp(dec.data, want_text, (size_t)en) != 0))
            fail_msg("%s text %zu: decode(encode(x)) differs", name, i);
        free(expect);
        ag_buf_deinit(&dec);
        free(ids.v);
    }
    AG_TEST_NOTE("%s: %zu texts, %zu ids, all equal to the reference", name, ag_json_len(root), n_ids);
    ag_arena_deinit(&a);
    free(json);
    unload(&fx);
}

static void test_llama3_matches_reference(void **state) {
    (void)state;
    check_against_reference("llama3", false);
}

static void test_qwen3_matches_reference(void **state) {
    (void)state;
    check_against_reference("qwen3", true);
}

static void test_special_tokens_only_when_asked(void **state) {
    (void)state;
    fixture fx = load("llama3");
    const char *s = "<|begin_of_text|>hi";
    ag_ids with = {0}, without = {0};
    ag_err err;
    assert_int_equal(ag_tokenize(fx.t, s, strlen(s), false, true, &with, &err), AG_OK);
    assert_int_equal(ag_tokenize(fx.t, s, strlen(s), false, false, &without, &err), AG_OK);
    assert_int_equal(with.n, 2);
    assert_int_equal(with.v[0], 128000);
    assert_true(without.n > 2);
    for (size_t i = 0; i < without.n; i++) assert_true(without.v[i] < 128000); /* plain text: no special id */
    ag_ids bos = {0};
    assert_int_equal(ag_tokenize(fx.t, "hi", 2, true, false, &bos, &err), AG_OK);
    assert_true(bos.n == 2 && bos.v[0] == 128000 && bos.v[1] == 6151);
    free(with.v);
    free(without.v);
    free(bos.v);
    unload(&fx);
}

static void test_invalid_utf8_is_refused(void **state) {
    (void)state;
    fixture fx = load("qwen3");
    ag_ids ids = {0};
    ag_err err = {{0}};
    assert_int_equal(ag_tokenize(fx.t, "ok\xff", 3, false, false, &ids, &err), AG_EINVAL);
    assert_string_equal(err.msg, "text is not valid UTF-8 at byte 2");
    free(ids.v);
    unload(&fx);
}

/* Token by token, the detokenizer only ever emits complete UTF-8, and all of it in the end. */
static void test_streaming_detokenizer(void **state) {
    (void)state;
    fixture fx = load("qwen3");
    const char *s = "中文😀👨‍👩‍👧 ok 東京";
    ag_ids ids = {0};
    ag_err err;
    assert_int_equal(ag_tokenize(fx.t, s, strlen(s), false, false, &ids, &err), AG_OK);
    ag_detok d;
    ag_detok_init(&d);
    ag_buf out;
    ag_buf_init(&out);
    int split = 0;
    for (size_t i = 0; i < ids.n; i++) {
        size_t before = out.len;
        ag_detok_push(&d, fx.t, ids.v[i], &out);
        assert_int_equal(ag_utf8_valid_prefix_generic((const uint8_t *)out.data, out.len), out.len);
        split += d.n_pending > 0 || out.len == before;
    }
    ag_detok_flush(&d, &out);
    assert_int_equal(out.len, strlen(s));
    assert_memory_equal(out.data, s, out.len);
    assert_true(split > 0); /* the text really did split characters across tokens */
    /* a lone continuation byte can never complete: U+FFFD, and the stream goes on */
    int32_t lone = -1;
    ag_buf one;
    ag_buf_init(&one);
    for (size_t id = 0; id < ag_tokenizer_n_vocab(fx.t) && lone < 0; id++) {
        ag_buf_reset(&one);
        ag_token_bytes(fx.t, (int32_t)id, &one);
        if (one.len == 1 && (uint8_t)one.data[0] == 0x80) lone = (int32_t)id;
    }
    ag_buf_deinit(&one);
    assert_true(lone >= 0);
    ag_ids ok = {0};
    assert_int_equal(ag_tokenize(fx.t, "ok", 2, false, false, &ok, &err), AG_OK);
    ag_buf_reset(&out);
    ag_detok_init(&d);
    ag_detok_push(&d, fx.t, lone, &out);
    for (size_t i = 0; i < ok.n; i++) ag_detok_push(&d, fx.t, ok.v[i], &out);
    ag_detok_flush(&d, &out);
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, "\xEF\xBF\xBDok", 5);
    free(ok.v);
    ag_buf_deinit(&out);
    free(ids.v);
    unload(&fx);
}

static void test_sentencepiece_encoding_is_refused_clearly(void **state) {
    (void)state;
    fixture fx = load("llama2");
    ag_ids ids = {0};
    ag_err err = {{0}};
    assert_int_equal(ag_tokenize(fx.t, "hi", 2, false, false, &ids, &err), AG_ENOTFOUND);
    assert_non_null(strstr(err.msg, "not implemented yet"));
    ag_buf out;
    ag_buf_init(&out);
    ag_token_bytes(fx.t, 272, &out); /* decoding works: "▁the" is " the" */
    ag_token_bytes(fx.t, 3 + 0x41, &out); /* <0x41> is "A" */
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, " theA", 5);
    ag_buf_deinit(&out);
    free(ids.v);
    unload(&fx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3_matches_reference),
        cmocka_unit_test(test_qwen3_matches_reference),
        cmocka_unit_test(test_special_tokens_only_when_asked),
        cmocka_unit_test(test_invalid_utf8_is_refused),
        cmocka_unit_test(test_streaming_detokenizer),
        cmocka_unit_test(test_sentencepiece_encoding_is_refused_clearly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
