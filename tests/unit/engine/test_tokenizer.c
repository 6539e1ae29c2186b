/*
 * Tokenizer exactness: our ids equal the JavaScript reference's
 * (build/fixtures/NAME.ref.json, written by scripts/make-fixtures from
 * tests/fixtures/tokenizer-corpus.json) for every corpus text, on the real
 * Llama 2, Llama 3 and Qwen3 vocabularies; decode(encode(x)) == x; the streaming
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

typedef enum roundtrip { RT_EXACT, RT_NFC, RT_SPACE_PREFIX } roundtrip;

static void check_against_reference(const char *name, roundtrip rt) {
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
        /* decode(encode(x)) == x; NFC(x) where the vocabulary normalizes; " " + x for SentencePiece,
         * whose "▁" prefix decodes to a space (texts with special tokens get one per segment: skipped) */
        ag_buf dec, want_text;
        ag_buf_init(&dec);
        ag_buf_init(&want_text);
        decode_all(fx.t, &ids, &dec);
        if (rt == RT_NFC && text.n) {
            utf8proc_uint8_t *nf = NULL;
            utf8proc_ssize_t en = utf8proc_map((const utf8proc_uint8_t *)text.p, (utf8proc_ssize_t)text.n, &nf,
                                               UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            ag_buf_append(&want_text, nf, (size_t)en);
            free(nf);
        } else {
            if (rt == RT_SPACE_PREFIX && text.n) ag_buf_append_char(&want_text, ' ');
            ag_buf_append(&want_text, text.p, text.n);
        }
        bool has_special = rt == RT_SPACE_PREFIX && memchr(text.p, '<', text.n);
        if (!has_special && (dec.len != want_text.len || (dec.len && memcmp(dec.data, want_text.data, dec.len) != 0)))
            fail_msg("%s text %zu: decode(encode(x)) differs", name, i);
        ag_buf_deinit(&dec);
        ag_buf_deinit(&want_text);
        free(ids.v);
    }
    AG_TEST_NOTE("%s: %zu texts, %zu ids, all equal to the reference", name, ag_json_len(root), n_ids);
    ag_arena_deinit(&a);
    free(json);
    unload(&fx);
}

static void test_llama3_matches_reference(void **state) {
    (void)state;
    check_against_reference("llama3", RT_EXACT);
}

static void test_qwen3_matches_reference(void **state) {
    (void)state;
    check_against_reference("qwen3", RT_NFC);
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

static void test_llama2_matches_reference(void **state) {
    (void)state;
    check_against_reference("llama2", RT_SPACE_PREFIX);
}

/* llama.cpp's files carry scores and no merges: merging by score gives the same ids on the corpus. */
static void test_sentencepiece_scores_match_merges(void **state) {
    (void)state;
    fixture fx = load("llama2");
    ag_gguf_writer *w = ag_gguf_writer_create(0);
    for (size_t i = 0; i < ag_gguf_n_kv(fx.f); i++)
        if (!ag_str_eq_cstr(ag_gguf_kv_at(fx.f, i)->key, "tokenizer.ggml.merges")) ag_gguf_writer_copy_kv(w, ag_gguf_kv_at(fx.f, i));
    ag_buf file;
    ag_buf_init(&file);
    assert_int_equal(ag_gguf_writer_to_buf(w, &file), AG_OK);
    ag_gguf_file *g;
    ag_tokenizer *by_score;
    ag_err err;
    assert_int_equal(ag_gguf_parse(file.data, file.len, &g, &err), AG_OK);
    assert_null(ag_gguf_find(g, "tokenizer.ggml.merges"));
    assert_int_equal(ag_tokenizer_load(g, &by_score, &err), AG_OK);
    size_t len;
    char *json = ag_test_read_file(AG_SOURCE_DIR "/tests/fixtures/tokenizer-corpus.json", &len);
    ag_arena a;
    ag_arena_init(&a, 0);
    ag_json_val *root;
    assert_int_equal(ag_json_parse(json, len, NULL, &a, &root, NULL), AG_OK);
    for (size_t i = 0; i < ag_json_len(root); i++) {
        ag_str text = ag_json_str(ag_json_arr_at(root, i));
        ag_ids x = {0}, y = {0};
        assert_int_equal(ag_tokenize(fx.t, text.p, text.n, false, true, &x, &err), AG_OK);
        assert_int_equal(ag_tokenize(by_score, text.p, text.n, false, true, &y, &err), AG_OK);
        assert_int_equal(x.n, y.n);
        if (x.n) assert_memory_equal(x.v, y.v, x.n * sizeof *x.v);
        free(x.v);
        free(y.v);
    }
    ag_arena_deinit(&a);
    free(json);
    ag_tokenizer_free(by_score);
    ag_gguf_close(g);
    ag_buf_deinit(&file);
    ag_gguf_writer_destroy(w);
    unload(&fx);
}

static void test_sentencepiece_byte_fallback(void **state) {
    (void)state;
    fixture fx = load("llama2");
    ag_ids ids = {0};
    ag_err err = {{0}};
    const char *s = "\xf0\x9f\xa6\x99"; /* 🦙: not in the vocabulary, so its four bytes */
    assert_int_equal(ag_tokenize(fx.t, s, strlen(s), false, false, &ids, &err), AG_OK);
    assert_int_equal(ids.n, 5); /* "▁" then <0xF0> <0x9F> <0xA6> <0x99> */
    assert_int_equal(ids.v[1], 3 + 0xF0);
    assert_int_equal(ids.v[4], 3 + 0x99);
    ag_buf out;
    ag_buf_init(&out);
    ag_token_bytes(fx.t, 272, &out);      /* "▁the" is " the" */
    ag_token_bytes(fx.t, 3 + 0x41, &out); /* <0x41> is "A" */
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, " theA", 5);
    ag_buf_deinit(&out);
    free(ids.v);
    unload(&fx);
}

/* A byte-level vocabulary of the 256 byte symbols plus "34", merged by "3 4" only. */
static ag_tokenizer *tiny_bpe(const char *pre) {
    static char syms[256][4];
    ag_str toks[257];
    int n = 0;
    for (int b = 0; b < 256; b++) { /* GPT-2's byte-to-unicode map, written out independently */
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        uint32_t cp = self ? (uint32_t)b : 256 + (uint32_t)n++;
        size_t len = ag_utf8_encode(cp, (uint8_t *)syms[b]);
        toks[b] = (ag_str){syms[b], len};
    }
    toks[256] = AG_STR_LIT("34");
    ag_str merges[] = {AG_STR_LIT("3 4")};
    ag_gguf_writer *w = ag_gguf_writer_create(0);
    ag_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", 4);
    if (pre) ag_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, strlen(pre));
    ag_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 257);
    ag_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    static ag_buf file;
    ag_buf_deinit(&file);
    ag_buf_init(&file);
    assert_int_equal(ag_gguf_writer_to_buf(w, &file), AG_OK);
    ag_gguf_writer_destroy(w);
    ag_gguf_file *f;
    ag_tokenizer *t;
    ag_err err;
    assert_int_equal(ag_gguf_parse(file.data, file.len, &f, &err), AG_OK);
    if (ag_tokenizer_load(f, &t, &err) != AG_OK) fail_msg("%s", err.msg);
    ag_gguf_close(f);
    return t;
}

static void expect_ids(ag_tokenizer *t, const char *text, const int32_t *want, size_t n) {
    ag_ids ids = {0};
    ag_err err;
    assert_int_equal(ag_tokenize(t, text, strlen(text), false, false, &ids, &err), AG_OK);
    assert_int_equal(ids.n, n);
    assert_memory_equal(ids.v, want, n * sizeof *want);
    free(ids.v);
}

/* llama.cpp's "default" splits digits into threes after three other regexes: "1234" is "123" + "4". */
static void test_default_pre_tokenizer(void **state) {
    (void)state;
    ag_tokenizer *gpt2 = tiny_bpe("gpt-2"), *def = tiny_bpe("default"), *missing = tiny_bpe(NULL);
    expect_ids(gpt2, "1234", (const int32_t[]){'1', '2', 256}, 3); /* one piece: "3 4" merges */
    expect_ids(def, "1234", (const int32_t[]){'1', '2', '3', '4'}, 4);
    expect_ids(missing, "1234", (const int32_t[]){'1', '2', '3', '4'}, 4);
    expect_ids(def, "12345", (const int32_t[]){'1', '2', '3', '4', '5'}, 5); /* "123" + "45": 3 and 4 never meet */
    expect_ids(gpt2, "12345", (const int32_t[]){'1', '2', 256, '5'}, 4);
    ag_tokenizer_free(gpt2);
    ag_tokenizer_free(def);
    ag_tokenizer_free(missing);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3_matches_reference),
        cmocka_unit_test(test_qwen3_matches_reference),
        cmocka_unit_test(test_special_tokens_only_when_asked),
        cmocka_unit_test(test_invalid_utf8_is_refused),
        cmocka_unit_test(test_streaming_detokenizer),
        cmocka_unit_test(test_llama2_matches_reference),
        cmocka_unit_test(test_sentencepiece_byte_fallback),
        cmocka_unit_test(test_sentencepiece_scores_match_merges),
        cmocka_unit_test(test_default_pre_tokenizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
