/*
 * fuzz_schema_compile: any bytes as a JSON Schema.  Whatever the schema, the
 * GBNF we write for it must compile (a schema we accept and then cannot run
 * would be a 500, not a 400), and the grammar must run over a document
 * without a crash; a refused schema must say why.
 */
#include "grammar/grammar.h"

#include <string.h>

static void fz_one_byte(void *ctx, int32_t id, ag_buf *out) {
    (void)ctx;
    ag_buf_append_char(out, (char)id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ag_buf gbnf;
    ag_buf_init(&gbnf);
    ag_schema_gbnf_common(&gbnf);
    ag_err err = {0};
    ag_schema_opts o = {.max_depth = 16, .max_properties = 200, .max_enum = 100};
    if (ag_schema_to_gbnf((const char *)data, size, "root", &o, &gbnf, &err) != AG_OK) {
        if (!err.msg[0]) __builtin_trap();
        ag_buf_deinit(&gbnf);
        return 0;
    }
    ag_grammar_limits lim = {.max_repeat = 2000, .cache_bytes = 1 << 20};
    ag_grammar *g;
    if (ag_grammar_compile(gbnf.data, gbnf.len, &lim, &g, &err) != AG_OK) {
        if (err.msg[0] && !strstr(err.msg, "max_")) __builtin_trap(); /* only a size limit may refuse our own GBNF */
        ag_buf_deinit(&gbnf);
        return 0;
    }
    ag_grammar_vocab *v = ag_grammar_vocab_create(256, fz_one_byte, NULL, NULL);
    ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
    static const char doc[] = "{\"a\": [1, \"x\", {\"b\": null}], \"c\": true}";
    for (size_t i = 0; i < sizeof doc - 1; i++) {
        size_t n;
        if (i % 8 == 0) (void)ag_grammar_matcher_mask(m, &n);
        if (!ag_grammar_matcher_accept_bytes(m, (const uint8_t *)doc + i, 1)) break;
    }
    ag_grammar_matcher_free(m);
    ag_grammar_vocab_free(v);
    ag_grammar_release(g);
    ag_buf_deinit(&gbnf);
    return 0;
}
