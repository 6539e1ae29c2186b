/*
 * Masks on real vocabularies (the qwen2 and llama2 fixtures' 151,936 and
 * 32,000 tokens): at positions of documents of a JSON schema (a free string,
 * a counted one, numbers, enums) and of a tool call, every token's bit in the
 * mask equals the one-token check, which walks the token's bytes alone.  The
 * mask takes shortcuts the check does not (whole subtrees of text tokens in a
 * string's body), so this pins them to the plain walk.
 */
#include "test.h"

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "grammar/grammar.h"

#include <stdlib.h>
#include <string.h>

#define FIXTURES AG_SOURCE_DIR "/build/fixtures/"

static void tok_bytes(void *ctx, int32_t id, ag_buf *out) { ag_token_bytes(ctx, id, out); }
static bool tok_skip(void *ctx, int32_t id) { return ag_tokenizer_is_control(ctx, id); }

static const char SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},\"bio\":{\"type\":\"string\"},"
    "\"n\":{\"type\":\"number\"},\"kind\":{\"enum\":[\"a b\",\"日本\"]},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},"
    "\"required\":[\"name\",\"bio\",\"n\",\"kind\",\"tags\"],\"additionalProperties\":false}";
static const char *const DOCS[] = {
    "{\"name\": \"Ada Lovelace\", \"bio\": \"Mathematician — wrote the first program; 日本語 too. \\\"Notes\\\"\\n\", "
    "\"n\": -1.5e3, \"kind\": \"日本\", \"tags\": [\"x\", \"poetry of science\"]}",
    "{\"name\":\"\",\"bio\":\"Ελληνικά and ASCII mixed, with digits 12345 and symbols #$%&'()*+,-./:;<=>?@[]^_`{|}~\",\"n\":0,"
    "\"kind\":\"a b\",\"tags\":[]}",
};

static void check(const char *model) {
    ag_gguf_file *f;
    ag_tokenizer *t;
    ag_err err;
    if (ag_gguf_open(model, &f, &err) != AG_OK || ag_tokenizer_load(f, &t, &err) != AG_OK) fail_msg("%s: %s", model, err.msg);
    ag_gguf_close(f);
    size_t n_vocab = ag_tokenizer_n_vocab(t);
    ag_grammar_vocab *v = ag_grammar_vocab_create(n_vocab, tok_bytes, tok_skip, t);
    ag_buf gbnf;
    ag_buf_init(&gbnf);
    ag_schema_gbnf_common(&gbnf);
    assert_int_equal(ag_schema_to_gbnf(SCHEMA, sizeof SCHEMA - 1, "root", NULL, &gbnf, &err), AG_OK);
    ag_grammar *g;
    assert_int_equal(ag_grammar_compile(gbnf.data, gbnf.len, NULL, &g, &err), AG_OK);
    size_t words = (n_vocab + 63) / 64;
    uint64_t *mask = malloc(words * sizeof *mask);
#ifdef AG_TEST_SANITIZED
    const size_t every = 7; /* the sanitized build checks every 7th byte */
#else
    const size_t every = 1;
#endif
    for (size_t d = 0; d < sizeof DOCS / sizeof DOCS[0]; d++) {
        ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
        size_t len = strlen(DOCS[d]);
        for (size_t i = 0; i < len; i++) {
            if (i % every == 0) {
                size_t n_allowed, count = 0;
                memcpy(mask, ag_grammar_matcher_mask(m, &n_allowed), words * sizeof *mask);
                for (size_t id = 0; id < n_vocab; id++) {
                    bool bit = mask[id >> 6] >> (id & 63) & 1;
                    count += bit;
                    if (bit != ag_grammar_matcher_allows(m, (int32_t)id)) {
                        ag_buf b;
                        ag_buf_init(&b);
                        ag_token_bytes(t, (int32_t)id, &b);
                        fail_msg("%s doc %zu at byte %zu ('%.20s'): token %zu '%.*s' mask %d", model, d, i, DOCS[d] + i,
                                 id, (int)b.len, b.data, bit);
                    }
                }
                assert_int_equal(count, n_allowed);
            }
            assert_true(ag_grammar_matcher_accept_bytes(m, (const uint8_t *)DOCS[d] + i, 1));
        }
        assert_true(ag_grammar_matcher_must_end(m));
        ag_grammar_matcher_free(m);
    }
    free(mask);
    ag_grammar_release(g);
    ag_buf_deinit(&gbnf);
    ag_grammar_vocab_free(v);
    ag_tokenizer_free(t);
}

static void test_qwen2(void **state) {
    (void)state;
    check(FIXTURES "qwen2.gguf");
}

static void test_llama2(void **state) {
    (void)state;
    check(FIXTURES "llama2.gguf");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_qwen2), cmocka_unit_test(test_llama2)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
