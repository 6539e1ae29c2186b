/*
 * fuzz_gbnf_compile: any bytes as a GBNF grammar (up to the first NUL) and a
 * document (after it).  A grammar that compiles is run over the document
 * with a small vocabulary: at every byte the mask must agree with the
 * one-token check for every token (the two paths the sampler takes), and
 * accepting must never leave a state the mask called dead.  Limits are
 * small so a grammar cannot spend the fuzzer's time on sheer size.
 */
#include "grammar/grammar.h"

#include <string.h>

static const char *const fz_toks[] = {"{", "}", "\"", "a", "ab", "\":", " ", "1", "é", "\xc3", "\xa9", "\\", "\\n", "<t>",
                                   "\n", "null", "xyz", "[", "]", ","};
enum { FZ_N_TOKS = sizeof fz_toks / sizeof fz_toks[0] };

static void fz_bytes(void *ctx, int32_t id, ag_buf *out) {
    (void)ctx;
    ag_buf_append_str(out, fz_toks[id]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t glen = nul ? (size_t)(nul - data) : size;
    const uint8_t *doc = nul ? nul + 1 : data + size;
    size_t dlen = nul ? size - glen - 1 : 0;
    ag_grammar_limits lim = {.max_rules = 400, .max_elements = 4000, .max_repeat = 50, .max_stacks = 64,
                             .max_depth = 64, .cache_bytes = 1 << 20};
    ag_grammar *g;
    ag_err err;
    if (ag_grammar_compile((const char *)data, glen, &lim, &g, &err) != AG_OK) return 0;
    if (dlen && doc[0] == '!') ag_grammar_set_trigger(g, "<t>", 3);
    ag_grammar_vocab *v = ag_grammar_vocab_create(FZ_N_TOKS, fz_bytes, NULL, NULL);
    ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
    for (size_t i = 0; i < dlen && i < 64; i++) {
        size_t n_allowed;
        const uint64_t *mask = ag_grammar_matcher_mask(m, &n_allowed);
        uint64_t bits = mask ? mask[0] : 0; /* the mask is borrowed only until the next call */
        if (mask)
            for (int id = 0; id < FZ_N_TOKS; id++)
                if ((bits >> id & 1) != ag_grammar_matcher_allows(m, id)) __builtin_trap();
        (void)ag_grammar_matcher_can_end(m);
        (void)ag_grammar_matcher_must_end(m);
        if (!ag_grammar_matcher_accept_bytes(m, doc + i, 1) && !ag_grammar_matcher_active(m)) __builtin_trap();
    }
    ag_grammar_matcher_free(m);
    ag_grammar_vocab_free(v);
    ag_grammar_release(g);
    return 0;
}
