/*
 * Tests for src/grammar: GBNF compilation (syntax, errors, limits), the
 * byte-level automaton (UTF-8 classes, repetitions, tail calls), token masks
 * against a brute-force check of every token, lazy triggers, and the cache.
 */
#include "test.h"

#include "grammar/grammar.h"

#include "../../../fuzz/gbnf_compile.c"

#include <stdlib.h>
#include <string.h>

static ag_grammar *compile(const char *text) {
    ag_grammar *g = NULL;
    ag_err err;
    if (ag_grammar_compile(text, strlen(text), NULL, &g, &err) != AG_OK) fail_msg("%s: %s", text, err.msg);
    return g;
}

static void compile_fails(const char *text, const char *needle) {
    ag_grammar *g = NULL;
    ag_err err = {0};
    if (ag_grammar_compile(text, strlen(text), NULL, &g, &err) == AG_OK) fail_msg("accepted: %s", text);
    if (!strstr(err.msg, needle)) fail_msg("%s: error '%s' lacks '%s'", text, err.msg, needle);
}

/* A toy vocabulary: tokens spanning terminals, a split UTF-8 character, a control token. */
static const char *const toks[] = {"{",  "}",  "\"", "a",   "b",      "ab", "\"}", "\":", ":",  " ",   "1",
                                   "12", "é",  "\xc3", "\xa9", ",",   "x\"", "<|end|>", "\\", "n", "\\n", "0",
                                   "-",  "\"a\"", "[", "]", "true", "null", "\n", "  "};
#define N_TOKS (sizeof toks / sizeof toks[0])
static void toy_bytes(void *ctx, int32_t id, ag_buf *out) {
    (void)ctx;
    ag_buf_append_str(out, toks[id]);
}
static bool toy_skip(void *ctx, int32_t id) {
    (void)ctx;
    return strcmp(toks[id], "<|end|>") == 0;
}

static bool accepts(ag_grammar *g, const char *text, bool whole) {
    ag_grammar_vocab *v = ag_grammar_vocab_create(N_TOKS, toy_bytes, toy_skip, NULL);
    ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
    bool ok = ag_grammar_matcher_accept_bytes(m, (const uint8_t *)text, strlen(text));
    if (ok && whole) ok = ag_grammar_matcher_can_end(m);
    ag_grammar_matcher_free(m);
    ag_grammar_vocab_free(v);
    return ok;
}

static void test_literals_classes_repetitions(void **state) {
    (void)state;
    ag_grammar *g = compile("root ::= \"a\" [0-9]{2,3} (\"x\" | \"yz\")* \"!\"?\n");
    assert_true(accepts(g, "a12", true));
    assert_true(accepts(g, "a123xyzx!", true));
    assert_false(accepts(g, "a1", true));
    assert_true(accepts(g, "a1", false)); /* a prefix */
    assert_false(accepts(g, "a1234", false));
    assert_false(accepts(g, "a12!!", false));
    ag_grammar_release(g);
    /* code point classes: negation, multi-byte ranges, `.`, escapes */
    g = compile("root ::= [^\"\\\\a] [α-ω] . \"\\u00e9\\x41\"\n");
    assert_true(accepts(g, "bβ€éA", true));
    assert_true(accepts(g, "日ω😀éA", true));
    assert_false(accepts(g, "aβ€éA", false));
    assert_false(accepts(g, "\"", false));
    assert_false(accepts(g, "bb", false)); /* b is not in α-ω */
    assert_false(accepts(g, "bβ\n", false)); /* `.` excludes the newline */
    assert_false(accepts(g, "b\xce", true)); /* half a character */
    assert_true(accepts(g, "b\xce", false));
    assert_false(accepts(g, "\xed\xa0\x80", false)); /* a surrogate's encoding is never valid */
    ag_grammar_release(g);
    /* comments, continuation after |, groups over lines, rules referenced before their definition */
    g = compile("# a comment\nroot ::= item (\",\" item)* # trailing\nitem ::= \"x\" |\n  \"y\" | (\n \"z\"\n)\n");
    assert_true(accepts(g, "x,y,z", true));
    assert_false(accepts(g, "x,", true));
    ag_grammar_release(g);
}

static void test_compile_errors(void **state) {
    (void)state;
    compile_fails("item ::= \"x\"\n", "no rule named 'root'");
    compile_fails("root ::= item\n", "'item' is used but not defined");
    compile_fails("root ::= root \"x\" | \"y\"\n", "left-recursive");
    compile_fails("root ::= a\na ::= b? root\nb ::= \"x\"\n", "left-recursive");
    compile_fails("root ::= (\"x\"? )*\n", "left-recursive");
    compile_fails("root ::= \"x\"{3,2}\n", "below the minimum");
    compile_fails("root ::= \"x\"{5000}\n", "max_repeat");
    compile_fails("root ::= \"abc\n", "unterminated literal");
    compile_fails("root ::= [ab", "unterminated");
    compile_fails("root ::= [z-a]\n", "backwards");
    compile_fails("root ::= \"\\q\"\n", "unknown escape");
    compile_fails("root ::= \"\\xZZ\"\n", "hex digits");
    compile_fails("root ::= <think>\n", "token references");
    compile_fails("root ::= ( \"x\"\nnext ::= \"y\"\n", "rule definition inside a rule");
    compile_fails("root ::= \"x\"\nroot ::= \"y\"\n", "defined twice");
    compile_fails("root ::= * \"x\"\n", "follows nothing");
    compile_fails("root = \"x\"\n", "'::=' expected");
    compile_fails("root ::= \"x\" )\n", "unexpected ')'");
    ag_grammar_limits lim = {.max_rules = 4};
    ag_grammar *g = NULL;
    ag_err err;
    const char *many = "root ::= a b c d e\na ::= \"a\"\nb ::= \"b\"\nc ::= \"c\"\nd ::= \"d\"\ne ::= \"e\"\n";
    assert_int_equal(ag_grammar_compile(many, strlen(many), &lim, &g, &err), AG_ELIMIT);
    assert_non_null(strstr(err.msg, "max_rules"));
}

/* Every token's verdict in the mask equals accept-by-bytes from the same state, at every step of a walk. */
static void check_mask(ag_grammar_matcher *m, ag_grammar *g, ag_grammar_vocab *v, const char *prefix) {
    size_t n_allowed;
    uint64_t mask[1] = {ag_grammar_matcher_mask(m, &n_allowed)[0]}; /* borrowed until the next call: copied */
    size_t count = 0;
    for (size_t id = 0; id < N_TOKS; id++) {
        bool bit = mask[id >> 6] >> (id & 63) & 1;
        ag_grammar_matcher *probe = ag_grammar_matcher_create(g, v);
        bool ok = ag_grammar_matcher_accept_bytes(probe, (const uint8_t *)prefix, strlen(prefix));
        ok = ok && !toy_skip(NULL, (int32_t)id) &&
             ag_grammar_matcher_accept_bytes(probe, (const uint8_t *)toks[id], strlen(toks[id]));
        ag_grammar_matcher_free(probe);
        if (bit != ok) fail_msg("after '%s': token '%s' mask %d, bytes %d", prefix, toks[id], bit, ok);
        if (bit != ag_grammar_matcher_allows(m, (int32_t)id)) fail_msg("allows() disagrees on '%s'", toks[id]);
        count += bit;
    }
    assert_int_equal(count, n_allowed);
}

static void test_masks_match_brute_force(void **state) {
    (void)state;
    ag_grammar *g = compile("root ::= \"{\" ws \"\\\"\" chars \"\\\"\" ws \":\" ws num ws \"}\"\n"
                            "chars ::= ([^\"\\\\] | \"\\\\\" [\"\\\\n])*\n"
                            "num ::= \"-\"? ([0] | [1-9] [0-9]*)\n"
                            "ws ::= [ \\n]{0,2}\n");
    ag_grammar_vocab *v = ag_grammar_vocab_create(N_TOKS, toy_bytes, toy_skip, NULL);
    const char *doc = "{ \"ab\\\\n\\nxé\": 12 }";
    char prefix[64];
    ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
    for (size_t i = 0; i <= strlen(doc); i++) {
        memcpy(prefix, doc, i);
        prefix[i] = 0;
        check_mask(m, g, v, prefix);
        assert_int_equal(ag_grammar_matcher_can_end(m), i == strlen(doc) || i == strlen(doc) - 1 ? i == strlen(doc) : false);
        if (i < strlen(doc)) assert_true(ag_grammar_matcher_accept_bytes(m, (const uint8_t *)doc + i, 1));
    }
    assert_true(ag_grammar_matcher_must_end(m));
    /* a rejected token leaves the state as it was */
    assert_false(ag_grammar_matcher_accept_bytes(m, (const uint8_t *)"x", 1));
    assert_true(ag_grammar_matcher_must_end(m));
    ag_grammar_matcher_free(m);
    ag_grammar_cache_stats st;
    ag_grammar_cache_stats_get(g, &st);
    assert_true(st.states > 10 && st.masks > 10 && st.resets == 0);
    ag_grammar_vocab_free(v);
    ag_grammar_release(g);
}

/* A tiny cache budget empties the cache over and over; matchers find their states again and agree. */
static void test_cache_resets(void **state) {
    (void)state;
    const char *text = "root ::= (\"a\" | \"b\" | \"é\")* \"}\"\n";
    ag_grammar_limits lim = {.cache_bytes = 1};
    ag_grammar *g = NULL;
    ag_err err;
    assert_int_equal(ag_grammar_compile(text, strlen(text), &lim, &g, &err), AG_OK);
    ag_grammar_vocab *v = ag_grammar_vocab_create(N_TOKS, toy_bytes, toy_skip, NULL);
    ag_grammar_matcher *m1 = ag_grammar_matcher_create(g, v), *m2 = ag_grammar_matcher_create(g, v);
    for (int i = 0; i < 20; i++) {
        size_t n1, n2;
        assert_true(ag_grammar_matcher_accept_bytes(m1, (const uint8_t *)"ab", 2));
        ag_grammar_matcher_mask(m1, &n1);
        assert_true(ag_grammar_matcher_accept_bytes(m2, (const uint8_t *)"\xc3", 1));
        ag_grammar_matcher_mask(m2, &n2);
        assert_int_equal(n2, 1); /* only the continuation byte */
        assert_true(ag_grammar_matcher_accept_bytes(m2, (const uint8_t *)"\xa9", 1));
        assert_int_equal(n1, 6); /* } a b ab é \xc3 */
    }
    ag_grammar_cache_stats st;
    ag_grammar_cache_stats_get(g, &st);
    assert_true(st.resets > 10);
    assert_true(ag_grammar_matcher_accept_bytes(m1, (const uint8_t *)"}", 1));
    assert_true(ag_grammar_matcher_must_end(m1));
    ag_grammar_matcher_free(m1);
    ag_grammar_matcher_free(m2);
    ag_grammar_vocab_free(v);
    ag_grammar_release(g);
}

/* A lazy grammar: free text until the trigger, then the grammar from the trigger's first byte. */
static void test_lazy_trigger(void **state) {
    (void)state;
    ag_grammar *g = compile("root ::= \"<t>\" [0-9]+ \"</t>\"\n");
    ag_grammar_set_trigger(g, "<t>", 3);
    ag_grammar_vocab *v = ag_grammar_vocab_create(N_TOKS, toy_bytes, toy_skip, NULL);
    ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
    assert_false(ag_grammar_matcher_active(m));
    assert_true(ag_grammar_matcher_can_end(m));
    assert_true(ag_grammar_matcher_accept_bytes(m, (const uint8_t *)"hello <", 7));
    assert_false(ag_grammar_matcher_active(m));
    assert_true(ag_grammar_matcher_accept_bytes(m, (const uint8_t *)"t>1", 3)); /* the trigger spans two pieces */
    assert_true(ag_grammar_matcher_active(m));
    assert_false(ag_grammar_matcher_can_end(m));
    assert_false(ag_grammar_matcher_accept_bytes(m, (const uint8_t *)"x", 1));
    assert_true(ag_grammar_matcher_accept_bytes(m, (const uint8_t *)"2</t>", 5));
    assert_true(ag_grammar_matcher_must_end(m));
    ag_grammar_matcher_free(m);
    /* text after the trigger in the same piece that breaks the grammar: rejected */
    m = ag_grammar_matcher_create(g, v);
    assert_false(ag_grammar_matcher_accept_bytes(m, (const uint8_t *)"<t>x", 4));
    ag_grammar_matcher_free(m);
    ag_grammar_vocab_free(v);
    ag_grammar_release(g);
}

/* The compiled-grammar cache: hits by text (and trigger), a capacity, and a byte budget over the masks. */
static void test_lru(void **state) {
    (void)state;
    const char *a = "root ::= \"a\"+\n", *b = "root ::= \"b\"+\n";
    ag_grammar_lru *lru = ag_grammar_lru_create(2, 1 << 20, NULL);
    ag_grammar *g1, *g2, *g3;
    ag_err err;
    assert_int_equal(ag_grammar_lru_get(lru, a, strlen(a), NULL, &g1, &err), AG_OK);
    assert_int_equal(ag_grammar_lru_get(lru, a, strlen(a), NULL, &g2, &err), AG_OK);
    assert_ptr_equal(g1, g2);
    assert_int_equal(ag_grammar_lru_get(lru, a, strlen(a), "a", &g3, &err), AG_OK); /* a trigger: another grammar */
    assert_ptr_not_equal(g1, g3);
    ag_grammar_release(g2);
    ag_grammar_release(g3);
    uint64_t hits, misses;
    size_t n;
    ag_grammar_lru_stats(lru, &hits, &misses, &n);
    assert_true(hits == 1 && misses == 2 && n == 2);
    assert_int_equal(ag_grammar_lru_get(lru, "root ::= x", 10, NULL, &g2, &err), AG_EINVAL); /* errors are not kept */
    ag_grammar_lru_free(lru);
    /* g1 outlived the cache: its request still holds it */
    ag_grammar_vocab *v = ag_grammar_vocab_create(N_TOKS, toy_bytes, toy_skip, NULL);
    ag_grammar_matcher *m = ag_grammar_matcher_create(g1, v);
    size_t n_allowed;
    ag_grammar_matcher_mask(m, &n_allowed);
    assert_int_equal(n_allowed, 1); /* "a" */
    ag_grammar_matcher_free(m);
    ag_grammar_release(g1);
    /* a budget smaller than one grammar's masks: the least recent grammar goes at the next lookup, never the newest */
    lru = ag_grammar_lru_create(8, 1, NULL);
    assert_int_equal(ag_grammar_lru_get(lru, a, strlen(a), NULL, &g1, &err), AG_OK);
    m = ag_grammar_matcher_create(g1, v);
    ag_grammar_matcher_mask(m, &n_allowed); /* its cache grows past the budget */
    ag_grammar_matcher_free(m);
    assert_true(ag_grammar_cache_bytes(g1) > 1);
    assert_int_equal(ag_grammar_lru_get(lru, b, strlen(b), NULL, &g2, &err), AG_OK);
    ag_grammar_lru_stats(lru, &hits, &misses, &n);
    assert_int_equal(n, 1); /* a went; b stays */
    assert_int_equal(ag_grammar_lru_get(lru, a, strlen(a), NULL, &g3, &err), AG_OK);
    assert_ptr_not_equal(g3, g1); /* compiled again */
    ag_grammar_release(g1);
    ag_grammar_release(g2);
    ag_grammar_release(g3);
    ag_grammar_lru_free(lru);
    ag_grammar_vocab_free(v);
}

static void test_fuzz_corpus_replays(void **state) {
    (void)state;
    assert_true(ag_test_fuzz_corpus(AG_SOURCE_DIR "/fuzz/corpus/gbnf", LLVMFuzzerTestOneInput) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuzz_corpus_replays),
        cmocka_unit_test(test_lru),
        cmocka_unit_test(test_literals_classes_repetitions),
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test(test_masks_match_brute_force),
        cmocka_unit_test(test_cache_resets),
        cmocka_unit_test(test_lazy_trigger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
