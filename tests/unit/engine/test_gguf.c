/*
 * Tests for src/engine/gguf.c: writer -> reader round trips (byte-identical),
 * every field read back, and malformed files (hand-encoded here, independently
 * of the writer) refused with a message: truncation at every byte, bad
 * magic/version, counts and lengths past the end, unknown types, misaligned or
 * out-of-file tensors, duplicates, and random byte flips (never a crash).
 */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "tmpdir.h"

#include "engine/gguf.h"

#include <string.h>
#include <unistd.h>

/* ---- an independent little encoder for hand-made files ---- */
static void u32(ag_buf *b, uint32_t v) { ag_buf_append(b, &v, 4); }
static void u64(ag_buf *b, uint64_t v) { ag_buf_append(b, &v, 8); }
static void str(ag_buf *b, const char *s) {
    u64(b, strlen(s));
    ag_buf_append_str(b, s);
}
static void header(ag_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    u32(b, 0x46554747u);
    u32(b, version);
    u64(b, n_tensors);
    u64(b, n_kv);
}
static void pad_to(ag_buf *b, size_t a) {
    while (b->len % a) ag_buf_append_char(b, 0);
}

static ag_status parse(const ag_buf *b, ag_gguf_file **f, ag_err *err) {
    memset(err, 0, sizeof *err);
    return ag_gguf_parse(b->data, b->len, f, err);
}

static void expect_refused(const ag_buf *b, const char *msg_part) {
    ag_gguf_file *f = NULL;
    ag_err err;
    ag_status st = parse(b, &f, &err);
    if (st == AG_OK) {
        ag_gguf_close(f);
        fail_msg("accepted a file that should be refused (%s)", msg_part);
    }
    if (!strstr(err.msg, msg_part)) fail_msg("message '%s' lacks '%s'", err.msg, msg_part);
}

/* A model-like file: every metadata kind and one tensor of each type. */
static float f32_data[64 * 2];
static uint16_t f16_data[32 * 3], bf16_data[32];
static ag_block_q8_0 q8_data[4];
static ag_block_q4_0 q4_data[2];

static ag_gguf_writer *sample_writer(uint32_t alignment) {
    for (int i = 0; i < 128; i++) f32_data[i] = (float)i * 0.5f;
    for (int i = 0; i < 96; i++) f16_data[i] = ag_f32_to_f16((float)i);
    for (int i = 0; i < 32; i++) bf16_data[i] = ag_f32_to_bf16((float)-i);
    ag_dtype_from_f32(AG_DTYPE_Q8_0, f32_data, q8_data, 128);
    ag_dtype_from_f32(AG_DTYPE_Q4_0, f32_data, q4_data, 64);
    ag_gguf_writer *w = ag_gguf_writer_create(alignment);
    ag_gguf_writer_set_str(w, "general.architecture", "llama", 5);
    if (alignment) ag_gguf_writer_set_u32(w, "general.alignment", alignment);
    ag_gguf_writer_set_u32(w, "llama.context_length", 4096);
    ag_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    ag_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    ag_gguf_writer_set_i32(w, "test.negative", -7);
    ag_str toks[] = {AG_STR_LIT("<unk>"), AG_STR_LIT("<s>"), AG_STR_LIT(""), AG_STR_LIT("\xe4\xb8\xad")};
    ag_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    float scores[] = {0, -1.5f, -2, -3};
    ag_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, 4);
    int32_t types[] = {2, 3, 1, 1};
    ag_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, 4);
    assert_int_equal(ag_gguf_writer_add_tensor(w, "output_norm.weight", AG_DTYPE_F32, 2, (uint64_t[]){64, 2}, f32_data), AG_OK);
    assert_int_equal(ag_gguf_writer_add_tensor(w, "blk.0.attn_q.weight", AG_DTYPE_F16, 2, (uint64_t[]){32, 3}, f16_data), AG_OK);
    assert_int_equal(ag_gguf_writer_add_tensor(w, "blk.0.attn_k.weight", AG_DTYPE_BF16, 1, (uint64_t[]){32}, bf16_data), AG_OK);
    assert_int_equal(ag_gguf_writer_add_tensor(w, "token_embd.weight", AG_DTYPE_Q8_0, 3, (uint64_t[]){32, 2, 2}, q8_data), AG_OK);
    assert_int_equal(ag_gguf_writer_add_tensor(w, "blk.0.ffn_up.weight", AG_DTYPE_Q4_0, 2, (uint64_t[]){64, 1}, q4_data), AG_OK);
    return w;
}

/* The sample model as file bytes in b (initialized here; the caller deinits it). */
static void sample_file(ag_buf *b) {
    ag_gguf_writer *w = sample_writer(0);
    ag_buf_init(b);
    assert_int_equal(ag_gguf_writer_to_buf(w, b), AG_OK);
    ag_gguf_writer_destroy(w);
}

static void test_write_read_every_field(void **state) {
    (void)state;
    ag_buf b;
    sample_file(&b);
    ag_gguf_file *f;
    ag_err err;
    assert_int_equal(parse(&b, &f, &err), AG_OK);
    assert_int_equal(ag_gguf_version(f), 3);
    assert_int_equal(ag_gguf_alignment(f), 32);
    assert_int_equal(ag_gguf_data_offset(f) % 32, 0);
    ag_str s;
    assert_true(ag_gguf_get_str(f, "general.architecture", &s) && ag_str_eq_cstr(s, "llama"));
    uint32_t u;
    uint64_t u6;
    assert_true(ag_gguf_get_u32(f, "llama.context_length", &u) && u == 4096);
    assert_true(ag_gguf_get_u64(f, "llama.context_length", &u6) && u6 == 4096); /* u32 read as u64 */
    assert_false(ag_gguf_get_u32(f, "test.negative", &u));                      /* negative: no */
    float e;
    assert_true(ag_gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &e) && e == 1e-5f);
    bool bo;
    assert_true(ag_gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &bo) && bo);
    assert_false(ag_gguf_get_str(f, "llama.context_length", &s)); /* wrong kind */
    assert_null(ag_gguf_find(f, "missing.key"));
    const ag_gguf_kv *toks = ag_gguf_find(f, "tokenizer.ggml.tokens");
    assert_int_equal(toks->arr_len, 4);
    assert_true(ag_str_eq_cstr(ag_gguf_arr_str(toks, 1), "<s>"));
    assert_int_equal(ag_gguf_arr_str(toks, 2).n, 0);
    assert_true(ag_str_eq_cstr(ag_gguf_arr_str(toks, 3), "\xe4\xb8\xad"));
    assert_null(ag_gguf_arr_str(toks, 4).p);
    const ag_gguf_kv *sc = ag_gguf_find(f, "tokenizer.ggml.scores");
    float s1;
    memcpy(&s1, sc->value + 4, 4);
    assert_true(s1 == -1.5f);
    assert_int_equal(ag_gguf_n_tensors(f), 5);
    const ag_gguf_tensor *t = ag_gguf_find_tensor(f, "token_embd.weight");
    assert_int_equal(t->type, AG_DTYPE_Q8_0);
    assert_int_equal(t->n_dims, 3);
    assert_true(t->ne[0] == 32 && t->ne[1] == 2 && t->ne[2] == 2 && t->ne[3] == 1);
    assert_int_equal(t->n_bytes, 4 * 34);
    assert_memory_equal(t->data, q8_data, 4 * 34);
    for (size_t i = 0; i < ag_gguf_n_tensors(f); i++) {
        const ag_gguf_tensor *ti = ag_gguf_tensor_at(f, i);
        assert_int_equal(ti->offset % 32, 0);
        assert_true((const uint8_t *)ti->data + ti->n_bytes <= (const uint8_t *)b.data + b.len);
    }
    assert_memory_equal(ag_gguf_find_tensor(f, "blk.0.ffn_up.weight")->data, q4_data, sizeof q4_data);
    ag_gguf_close(f);
    ag_buf_deinit(&b);
}

/* Read a file and write it back from what was read: the same bytes. */
static void round_trip(uint32_t alignment) {
    ag_gguf_writer *w = sample_writer(alignment);
    ag_buf b1, b2;
    ag_buf_init(&b1);
    ag_buf_init(&b2);
    assert_int_equal(ag_gguf_writer_to_buf(w, &b1), AG_OK);
    ag_gguf_file *f;
    ag_err err;
    assert_int_equal(parse(&b1, &f, &err), AG_OK);
    assert_int_equal(ag_gguf_alignment(f), alignment ? alignment : 32);
    ag_gguf_writer *w2 = ag_gguf_writer_create(ag_gguf_alignment(f));
    for (size_t i = 0; i < ag_gguf_n_kv(f); i++) ag_gguf_writer_copy_kv(w2, ag_gguf_kv_at(f, i));
    for (size_t i = 0; i < ag_gguf_n_tensors(f); i++) {
        const ag_gguf_tensor *t = ag_gguf_tensor_at(f, i);
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.p);
        assert_int_equal(ag_gguf_writer_add_tensor(w2, name, t->type, t->n_dims, t->ne, t->data), AG_OK);
    }
    assert_int_equal(ag_gguf_writer_to_buf(w2, &b2), AG_OK);
    assert_int_equal(b1.len, b2.len);
    assert_memory_equal(b1.data, b2.data, b1.len);
    ag_gguf_close(f);
    ag_gguf_writer_destroy(w);
    ag_gguf_writer_destroy(w2);
    ag_buf_deinit(&b1);
    ag_buf_deinit(&b2);
}

static void test_round_trip_is_byte_identical(void **state) {
    (void)state;
    round_trip(0);
    round_trip(64);
}

static void test_every_truncation_is_refused(void **state) {
    (void)state;
    ag_buf b;
    sample_file(&b);
    /* the last tensor's data ends before the final padding; any cut before that must fail */
    ag_gguf_file *f;
    ag_err err;
    assert_int_equal(parse(&b, &f, &err), AG_OK);
    const ag_gguf_tensor *last = ag_gguf_tensor_at(f, ag_gguf_n_tensors(f) - 1);
    size_t needed = (size_t)((const uint8_t *)last->data + last->n_bytes - (const uint8_t *)b.data);
    ag_gguf_close(f);
    for (size_t n = 0; n < b.len; n++) {
        memset(&err, 0, sizeof err);
        ag_status st = ag_gguf_parse(b.data, n, &f, &err);
        if (n < needed) {
            if (st == AG_OK) fail_msg("a cut at %zu of %zu bytes was accepted", n, b.len);
            assert_true(err.msg[0] != '\0');
        } else if (st == AG_OK) {
            ag_gguf_close(f);
        }
    }
    ag_buf_deinit(&b);
}

static void test_random_corruption_never_crashes(void **state) {
    (void)state;
    ag_buf b;
    sample_file(&b);
    uint64_t seed = 17;
    int accepted = 0, refused = 0;
    char *copy = malloc(b.len);
    for (int t = 0; t < 20000; t++) {
        memcpy(copy, b.data, b.len);
        for (int k = 0; k < 1 + t % 3; k++) copy[ag_test_rand(&seed) % b.len] = (char)ag_test_rand(&seed);
        ag_gguf_file *f;
        ag_err err;
        if (ag_gguf_parse(copy, b.len, &f, &err) == AG_OK) {
            for (size_t i = 0; i < ag_gguf_n_tensors(f); i++) { /* touch every tensor byte: ASan checks bounds */
                const ag_gguf_tensor *ti = ag_gguf_tensor_at(f, i);
                volatile uint8_t sink = 0;
                for (uint64_t j = 0; j < ti->n_bytes; j++) sink ^= ((const uint8_t *)ti->data)[j];
                (void)sink;
            }
            ag_gguf_close(f);
            accepted++;
        } else {
            refused++;
        }
    }
    free(copy);
    AG_TEST_NOTE("byte flips: %d accepted (data bytes), %d refused", accepted, refused);
    assert_true(accepted > 0 && refused > 0);
    ag_buf_deinit(&b);
}

static void test_malformed_headers_and_metadata(void **state) {
    (void)state;
    ag_buf b;
    ag_buf_init(&b);
    ag_buf_append_str(&b, "GGML");
    u32(&b, 3);
    u64(&b, 0);
    u64(&b, 0);
    expect_refused(&b, "not a GGUF file");

    for (uint32_t v = 0; v < 6; v++) {
        if (v == 2 || v == 3) continue;
        ag_buf_reset(&b);
        header(&b, v, 0, 0);
        expect_refused(&b, "version");
    }
    ag_buf_reset(&b);
    header(&b, 3, 0, 1000000000000ull);
    expect_refused(&b, "more than the file can hold");

    ag_buf_reset(&b);
    header(&b, 3, 0, 1);
    u64(&b, 1ull << 40); /* key length far past the end */
    ag_buf_append_str(&b, "abcdefghijkl");
    expect_refused(&b, "runs past the end");

    ag_buf_reset(&b);
    header(&b, 3, 0, 1);
    str(&b, "k");
    u32(&b, 13); /* no such value type */
    u32(&b, 0);
    expect_refused(&b, "unknown value type 13");

    ag_buf_reset(&b);
    header(&b, 3, 0, 1);
    str(&b, "k");
    u32(&b, AG_GGUF_ARRAY);
    u32(&b, AG_GGUF_ARRAY);
    u64(&b, 1);
    expect_refused(&b, "nested arrays");

    ag_buf_reset(&b);
    header(&b, 3, 0, 1);
    str(&b, "k");
    u32(&b, AG_GGUF_ARRAY);
    u32(&b, AG_GGUF_STRING);
    u64(&b, 1ull << 60);
    expect_refused(&b, "runs past the end");

    ag_buf_reset(&b);
    header(&b, 3, 0, 2);
    str(&b, "dup");
    u32(&b, AG_GGUF_U32);
    u32(&b, 1);
    str(&b, "dup");
    u32(&b, AG_GGUF_U32);
    u32(&b, 2);
    expect_refused(&b, "appears twice");

    ag_buf_reset(&b);
    header(&b, 3, 0, 1);
    str(&b, "general.alignment");
    u32(&b, AG_GGUF_U32);
    u32(&b, 48);
    expect_refused(&b, "power of two");
    ag_buf_deinit(&b);
}

/* One tensor info after an empty metadata section, then data padded to 32. */
static void tensor_file(ag_buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                        uint64_t offset, size_t data_bytes) {
    ag_buf_reset(b);
    header(b, 3, 1, 0);
    str(b, name);
    u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) u64(b, ne[d]);
    u32(b, type);
    u64(b, offset);
    pad_to(b, 32);
    for (size_t i = 0; i < data_bytes; i++) ag_buf_append_char(b, 0);
}

static void test_malformed_tensors(void **state) {
    (void)state;
    ag_buf b;
    ag_buf_init(&b);
    tensor_file(&b, "w", 1, (uint64_t[]){32}, AG_DTYPE_F32, 0, 128);
    ag_gguf_file *f;
    ag_err err;
    assert_int_equal(parse(&b, &f, &err), AG_OK); /* the well-formed baseline */
    ag_gguf_close(f);
    tensor_file(&b, "w", 1, (uint64_t[]){32}, AG_DTYPE_F32, 0, 127);
    expect_refused(&b, "run past the end of the file");
    tensor_file(&b, "w", 1, (uint64_t[]){32}, AG_DTYPE_F32, 16, 256);
    expect_refused(&b, "not a multiple of the alignment");
    tensor_file(&b, "w", 1, (uint64_t[]){256}, 23, 0, 136);
    expect_refused(&b, "type iq4_xs (23) is not supported");
    tensor_file(&b, "w", 1, (uint64_t[]){128}, AG_DTYPE_Q4_K, 0, 128);
    expect_refused(&b, "not a whole number of q4_k blocks"); /* K-quant rows are 256-element super-blocks */
    tensor_file(&b, "w", 1, (uint64_t[]){32}, 77, 0, 128);
    expect_refused(&b, "type-77");
    tensor_file(&b, "w", 1, (uint64_t[]){33}, AG_DTYPE_Q8_0, 0, 64);
    expect_refused(&b, "not a whole number of q8_0 blocks");
    tensor_file(&b, "w", 5, (uint64_t[]){1, 1, 1, 1, 1}, AG_DTYPE_F32, 0, 4);
    expect_refused(&b, "5 dimensions");
    tensor_file(&b, "w", 2, (uint64_t[]){1ull << 40, 1ull << 40}, AG_DTYPE_F32, 0, 4);
    expect_refused(&b, "too large");
    tensor_file(&b, "w", 1, (uint64_t[]){0}, AG_DTYPE_F32, 0, 4);
    expect_refused(&b, "zero or too large");
    ag_buf_reset(&b); /* "a\0b": a name that would be found as "a" */
    header(&b, 3, 1, 0);
    u64(&b, 3);
    ag_buf_append(&b, "a\0b", 3);
    u32(&b, 1);
    u64(&b, 1);
    u32(&b, AG_DTYPE_F32);
    u64(&b, 0);
    pad_to(&b, 32);
    for (int i = 0; i < 32; i++) ag_buf_append_char(&b, 0);
    expect_refused(&b, "contains a NUL byte");
    tensor_file(&b, "0123456789012345678901234567890123456789012345678901234567890123", 1, (uint64_t[]){1},
                AG_DTYPE_F32, 0, 4);
    expect_refused(&b, "longer than 63 bytes");
    /* two tensors of one name */
    ag_buf_reset(&b);
    header(&b, 3, 2, 0);
    for (int i = 0; i < 2; i++) {
        str(&b, "same");
        u32(&b, 1);
        u64(&b, 8);
        u32(&b, AG_DTYPE_F32);
        u64(&b, 0);
    }
    pad_to(&b, 32);
    for (int i = 0; i < 32; i++) ag_buf_append_char(&b, 0);
    expect_refused(&b, "appears twice");
    ag_buf_deinit(&b);
}

static void test_open_file(void **state) {
    (void)state;
    char dir[4096], path[4200];
    assert_int_equal(ag_test_tmpdir_make(dir, sizeof dir, "gguf"), 0);
    snprintf(path, sizeof path, "%s/sample.gguf", dir);
    FILE *empty = fopen(path, "wb");
    assert_non_null(empty);
    fclose(empty);
    ag_gguf_file *f;
    ag_err err = {{0}};
    assert_int_equal(ag_gguf_open(path, &f, &err), AG_EINVAL); /* empty */
    assert_string_equal(err.msg, "empty file");
    ag_gguf_writer *w = sample_writer(0);
    assert_int_equal(ag_gguf_writer_to_file(w, path), AG_OK);
    assert_int_equal(ag_gguf_open(path, &f, &err), AG_OK);
    assert_int_equal(ag_gguf_n_tensors(f), 5);
    assert_memory_equal(ag_gguf_find_tensor(f, "output_norm.weight")->data, f32_data, sizeof f32_data);
    ag_gguf_close(f);
    ag_gguf_writer_destroy(w);
    unlink(path);
    assert_int_equal(ag_gguf_open(path, &f, &err), AG_EIO);
    assert_non_null(strstr(err.msg, "No such file"));
    assert_int_equal(ag_test_tmpdir_remove(dir), 0);
}

static void test_writer_refuses_bad_tensors(void **state) {
    (void)state;
    ag_gguf_writer *w = ag_gguf_writer_create(0);
    float x[64] = {0};
    assert_int_equal(ag_gguf_writer_add_tensor(w, "a", AG_DTYPE_Q8_0, 1, (uint64_t[]){31}, x), AG_EINVAL);
    assert_int_equal(ag_gguf_writer_add_tensor(w, "a", AG_DTYPE_F32, 0, (uint64_t[]){1}, x), AG_EINVAL);
    assert_int_equal(ag_gguf_writer_add_tensor(w, "a", (ag_dtype)23, 1, (uint64_t[]){256}, x), AG_EINVAL); /* iq4_xs */
    assert_int_equal(ag_gguf_writer_add_tensor(w, "a", AG_DTYPE_Q8_K, 1, (uint64_t[]){256}, x), AG_EINVAL); /* activations only */
    assert_int_equal(ag_gguf_writer_add_tensor(w, "a", AG_DTYPE_F32, 1, (uint64_t[]){16}, x), AG_OK);
    assert_int_equal(ag_gguf_writer_add_tensor(w, "a", AG_DTYPE_F32, 1, (uint64_t[]){16}, x), AG_EINVAL);
    ag_gguf_writer_destroy(w);
    /* a non-default alignment must be written into the file */
    w = ag_gguf_writer_create(64);
    ag_buf b;
    ag_buf_init(&b);
    assert_int_equal(ag_gguf_writer_to_buf(w, &b), AG_EINVAL);
    ag_buf_deinit(&b);
    ag_gguf_writer_destroy(w);
}

static int parses_as_gguf(const char *data, size_t len, void *ctx) {
    (void)ctx;
    ag_gguf_file *f;
    ag_err err;
    if (ag_gguf_parse(data, len, &f, &err) != AG_OK) return 0;
    ag_gguf_close(f);
    return 1;
}

/* Every file of fuzz/corpus/gguf (seeds, and crashes once found) goes through the reader. */
static void test_corpus_replays(void **state) {
    (void)state;
    int valid, files = ag_test_for_each_file(AG_SOURCE_DIR "/fuzz/corpus/gguf", parses_as_gguf, NULL, &valid);
    AG_TEST_NOTE("gguf corpus: %d files, %d valid", files, valid);
    assert_true(valid >= 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_read_every_field),
        cmocka_unit_test(test_round_trip_is_byte_identical),
        cmocka_unit_test(test_every_truncation_is_refused),
        cmocka_unit_test(test_random_corruption_never_crashes),
        cmocka_unit_test(test_malformed_headers_and_metadata),
        cmocka_unit_test(test_malformed_tensors),
        cmocka_unit_test(test_open_file),
        cmocka_unit_test(test_writer_refuses_bad_tensors),
        cmocka_unit_test(test_corpus_replays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
