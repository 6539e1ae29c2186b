/*
 * The fixture models (scripts/make-fixtures: real tokenizer.json files from the
 * npm packages pinned in tests/fixtures, converted with random weights) carry
 * what those files say.  The expected values below were read from the
 * tokenizer files themselves, not from our output.
 */
#include "test.h"

#include "engine/gguf.h"

#include <string.h>

#define FIXTURES AG_SOURCE_DIR "/build/fixtures/"

static ag_gguf_file *open_fixture(const char *name) {
    ag_gguf_file *f = NULL;
    ag_err err = {{0}};
    if (ag_gguf_open(name, &f, &err) != AG_OK) fail_msg("%s: %s (make test builds it: scripts/make-fixtures)", name, err.msg);
    return f;
}

static void expect_token(ag_gguf_file *f, uint32_t id, const char *text, int32_t type) {
    const ag_gguf_kv *toks = ag_gguf_find(f, "tokenizer.ggml.tokens"), *types = ag_gguf_find(f, "tokenizer.ggml.token_type");
    ag_str s = ag_gguf_arr_str(toks, id);
    if (!ag_str_eq_cstr(s, text)) fail_msg("token %u is '%.*s', want '%s'", id, (int)s.n, s.p, text);
    int32_t t;
    memcpy(&t, types->value + (size_t)id * 4, 4);
    assert_int_equal(t, type);
}

static void expect_u32(ag_gguf_file *f, const char *key, uint32_t want) {
    uint32_t v;
    if (!ag_gguf_get_u32(f, key, &v) || v != want) fail_msg("%s: want %u", key, want);
}

static void expect_str(ag_gguf_file *f, const char *key, const char *want) {
    ag_str s;
    if (!ag_gguf_get_str(f, key, &s) || !ag_str_eq_cstr(s, want)) fail_msg("%s: want '%s'", key, want);
}

static void test_llama2_sentencepiece(void **state) {
    (void)state;
    ag_gguf_file *f = open_fixture(FIXTURES "llama2.gguf");
    expect_str(f, "tokenizer.ggml.model", "llama");
    assert_null(ag_gguf_find(f, "tokenizer.ggml.pre"));
    assert_int_equal(ag_gguf_find(f, "tokenizer.ggml.tokens")->arr_len, 32000);
    expect_token(f, 0, "<unk>", 2);
    expect_token(f, 1, "<s>", 3);
    expect_token(f, 3, "<0x00>", 6);
    expect_token(f, 272, "\xe2\x96\x81the", 1);
    expect_u32(f, "tokenizer.ggml.bos_token_id", 1);
    expect_u32(f, "tokenizer.ggml.eos_token_id", 2);
    bool add_bos;
    assert_true(ag_gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos) && add_bos);
    float score;
    memcpy(&score, ag_gguf_find(f, "tokenizer.ggml.scores")->value + 272 * 4, 4);
    assert_true(score < 0); /* a merged piece: -(its merge rank + 1) */
    ag_gguf_close(f);
}

static void test_llama3_byte_level(void **state) {
    (void)state;
    ag_gguf_file *f = open_fixture(FIXTURES "llama3.gguf");
    expect_str(f, "tokenizer.ggml.model", "gpt2");
    expect_str(f, "tokenizer.ggml.pre", "llama-bpe");
    assert_int_equal(ag_gguf_find(f, "tokenizer.ggml.tokens")->arr_len, 128256);
    assert_int_equal(ag_gguf_find(f, "tokenizer.ggml.merges")->arr_len, 280147);
    expect_token(f, 279, "\xc4\xa0the", 1); /* "Ġthe" */
    expect_token(f, 128000, "<|begin_of_text|>", 3);
    expect_u32(f, "tokenizer.ggml.bos_token_id", 128000);
    expect_u32(f, "tokenizer.ggml.eos_token_id", 128001);
    /* this tokenizer.json says nothing on BOS: the key is left to llama.cpp's llama-bpe default */
    assert_null(ag_gguf_find(f, "tokenizer.ggml.add_bos_token"));
    assert_non_null(ag_gguf_find(f, "tokenizer.chat_template"));
    expect_u32(f, "llama.attention.head_count_kv", 2);
    assert_non_null(ag_gguf_find_tensor(f, "output.weight"));
    ag_gguf_close(f);
}

static void test_qwen3(void **state) {
    (void)state;
    ag_gguf_file *f = open_fixture(FIXTURES "qwen3.gguf");
    expect_str(f, "general.architecture", "qwen3");
    expect_str(f, "tokenizer.ggml.pre", "qwen2");
    assert_int_equal(ag_gguf_find(f, "tokenizer.ggml.tokens")->arr_len, 151936); /* config vocab_size: padded */
    assert_int_equal(ag_gguf_find(f, "tokenizer.ggml.merges")->arr_len, 151387);
    expect_token(f, 151643, "<|endoftext|>", 3);
    expect_token(f, 151645, "<|im_end|>", 3);
    expect_token(f, 151935, "[PAD151935]", 5);
    expect_u32(f, "tokenizer.ggml.eos_token_id", 151645);
    bool add_bos;
    assert_true(ag_gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos) && !add_bos);
    expect_u32(f, "qwen3.rope.dimension_count", 32); /* explicit head_dim, not hidden/heads */
    assert_null(ag_gguf_find_tensor(f, "output.weight")); /* tied */
    assert_int_equal(ag_gguf_find_tensor(f, "blk.1.attn_k_norm.weight")->ne[0], 32);
    assert_int_equal(ag_gguf_find_tensor(f, "blk.0.attn_q.weight")->ne[1], 4 * 32);
    ag_gguf_close(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama2_sentencepiece),
        cmocka_unit_test(test_llama3_byte_level),
        cmocka_unit_test(test_qwen3),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
