/*
 * Tests for src/grammar/schema.c: JSON Schema to GBNF.  Each schema is
 * compiled and documents are run through the automaton byte by byte:
 * what must match does, what must not is refused (at the byte where it goes
 * wrong or at the end), and unsupported keywords are errors naming their place.
 */
#include "test.h"

#include "grammar/grammar.h"

#include "../../../fuzz/schema_compile.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void one_byte(void *ctx, int32_t id, ag_buf *out) {
    (void)ctx;
    ag_buf_append_char(out, (char)id);
}

static ag_grammar_vocab *bytes_vocab(void) { return ag_grammar_vocab_create(256, one_byte, NULL, NULL); }

static ag_grammar *schema_grammar(const char *schema) {
    ag_buf g;
    ag_buf_init(&g);
    ag_schema_gbnf_common(&g);
    ag_err err;
    if (ag_schema_to_gbnf(schema, strlen(schema), "root", NULL, &g, &err) != AG_OK) fail_msg("%s: %s", schema, err.msg);
    ag_grammar *gr = NULL;
    if (ag_grammar_compile(g.data, g.len, NULL, &gr, &err) != AG_OK) fail_msg("%s\n%.*s: %s", schema, (int)g.len, g.data, err.msg);
    ag_buf_deinit(&g);
    return gr;
}

static bool matches(ag_grammar *g, const ag_grammar_vocab *v, const char *doc) {
    ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
    bool ok = ag_grammar_matcher_accept_bytes(m, (const uint8_t *)doc, strlen(doc)) && ag_grammar_matcher_can_end(m);
    ag_grammar_matcher_free(m);
    return ok;
}

static void expect(const char *schema, const char *const *good, const char *const *bad) {
    ag_grammar *g = schema_grammar(schema);
    ag_grammar_vocab *v = bytes_vocab();
    for (; good && *good; good++)
        if (!matches(g, v, *good)) fail_msg("%s: refused %s", schema, *good);
    for (; bad && *bad; bad++)
        if (matches(g, v, *bad)) fail_msg("%s: accepted %s", schema, *bad);
    ag_grammar_vocab_free(v);
    ag_grammar_release(g);
}

static void schema_fails(const char *schema, const char *needle) {
    ag_buf g;
    ag_buf_init(&g);
    ag_err err = {0};
    if (ag_schema_to_gbnf(schema, strlen(schema), "root", NULL, &g, &err) == AG_OK) fail_msg("accepted: %s", schema);
    if (!strstr(err.msg, needle)) fail_msg("%s: error '%s' lacks '%s'", schema, err.msg, needle);
    ag_buf_deinit(&g);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_objects(void **state) {
    (void)state;
    const char *s = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"},"
                    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},\"required\":[\"name\",\"age\",\"tags\"],"
                    "\"additionalProperties\":false}";
    expect(s,
           L("{\"name\":\"Ann\",\"age\":31,\"tags\":[]}", "{ \"name\": \"\\u00e9\\\"x\", \"age\": -4, \"tags\": [\"a\", \"b\"] }",
             "{\n  \"name\": \"日本\",\n  \"age\": 0,\n  \"tags\": [\n    \"x\"\n  ]\n}"),
           L("{\"name\":\"Ann\",\"age\":31}", "{\"age\":31,\"name\":\"Ann\",\"tags\":[]}", /* order is the schema's */
             "{\"name\":\"Ann\",\"age\":31,\"tags\":[],\"x\":1}", "{\"name\":\"Ann\",\"age\":031,\"tags\":[]}",
             "{\"name\":\"Ann\",\"age\":3.5,\"tags\":[]}", "{\"name\":\"a\nb\",\"age\":1,\"tags\":[]}",
             " {\"name\":\"Ann\",\"age\":31,\"tags\":[]}", "{\"name\":\"Ann\",\"age\":31,\"tags\":[]} ",
             "{\"name\":\"Ann\",\"age\":31,\"tags\":[1]}", "{\"name\":\"\\q\",\"age\":1,\"tags\":[]}"));
    /* optional properties: any subset, in order */
    expect("{\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"boolean\"},\"c\":{\"type\":\"null\"}},\"required\":[\"b\"]}",
           L("{\"b\":true}", "{\"b\":false,\"a\":1}", "{\"b\":true,\"a\":1,\"c\":null}", "{\"b\":true,\"c\":null}"),
           L("{}", "{\"a\":1}", "{\"a\":1,\"b\":true}", "{\"b\":true,\"c\":null,\"a\":1}"));
    expect("{\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}}}",
           L("{}", "{\"a\":1}", "{\"b\":2}", "{\"a\":1,\"b\":2}"), L("{\"b\":2,\"a\":1}", "{,\"b\":2}"));
    /* maps and any object */
    expect("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}", L("{}", "{\"x\":1,\"y\":2}"),
           L("{\"x\":\"1\"}"));
    expect("{\"type\":\"object\"}", L("{}", "{\"x\":[1,{\"y\":null}],\"z\":\"s\"}"), L("[]", "{\"x\"}"));
    expect("{}", L("1", "\"s\"", "{\"a\":[true,false,null,-1.5e+3]}"), L("tru", "01", "1.", "-"));
}

static void test_arrays_enums_anyof_refs(void **state) {
    (void)state;
    expect("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}",
           L("[1,2]", "[1, 2, 3]", "[ 1 ,2 ]"), L("[]", "[1]", "[1,2,3,4]", "[1,2,]"));
    expect("{\"type\":\"array\",\"maxItems\":0}", L("[]", "[ ]"), L("[1]"));
    expect("{\"type\":\"array\",\"minItems\":1}", L("[1]", "[\"a\",{}]"), L("[]"));
    expect("{\"enum\":[\"red\",\"green\",42,null,{\"a\":[1]}]}", L("\"red\"", "\"green\"", "42", "null", "{\"a\":[1]}"),
           L("\"blue\"", "\"re\"", "43"));
    expect("{\"const\":\"x\\\"y\"}", L("\"x\\\"y\""), L("\"xy\""));
    expect("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"maxLength\":2}]}", L("12", "\"ab\""), L("\"abc\"", "true"));
    expect("{\"type\":[\"string\",\"null\"]}", L("\"s\"", "null"), L("1"));
    /* $defs, definitions (zod), recursion through "#" */
    const char *tree = "{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},\"kids\":{\"type\":\"array\","
                       "\"items\":{\"$ref\":\"#\"}}},\"required\":[\"v\",\"kids\"],\"additionalProperties\":false}";
    expect(tree, L("{\"v\":1,\"kids\":[]}", "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":3,\"kids\":[]}]}]}"),
           L("{\"v\":1,\"kids\":[{\"v\":2}]}"));
    expect("{\"$defs\":{\"pt\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"}},\"required\":[\"x\"]}},"
           "\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/pt\"}}",
           L("[{\"x\":1.5},{\"x\":-2e3}]"), L("[{\"y\":1}]"));
    expect("{\"definitions\":{\"a/b\":{\"type\":\"boolean\"}},\"$ref\":\"#/definitions/a~1b\"}", L("true"), L("1"));
}

static void test_strings(void **state) {
    (void)state;
    expect("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", L("\"ab\"", "\"a\\nb\"", "\"日本語\""), L("\"a\"", "\"abcd\""));
    expect("{\"type\":\"string\",\"format\":\"date\"}", L("\"2026-12-03\""), L("\"2026-13-03\"", "\"26-12-03\""));
    expect("{\"type\":\"string\",\"format\":\"date-time\"}", L("\"2026-12-03T06:15:19Z\"", "\"2026-12-03T06:15:19.5+01:00\""),
           L("\"2026-12-03 06:15:19Z\""));
    expect("{\"type\":\"string\",\"format\":\"uuid\"}", L("\"123e4567-e89b-12d3-a456-426614174000\""), L("\"123e4567\""));
    expect("{\"type\":\"string\",\"format\":\"ipv4\"}", L("\"192.168.0.1\"", "\"255.255.255.255\""), L("\"256.1.1.1\"", "\"01.1.1.1\""));
    expect("{\"type\":\"string\",\"format\":\"email\"}", L("\"a.b@example.com\""), L("\"a@b\"", "\"@b.c\""));
    /* patterns: anchored, classes, escapes; content characters JSON escapes come out escaped */
    expect("{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d{3}(x|yz)?$\"}", L("\"AB-123\"", "\"ZZ-000yz\""),
           L("\"Ab-123\"", "\"AB-12\"", "\"AB-123y\"", "\"xAB-123\""));
    expect("{\"type\":\"string\",\"pattern\":\"^a[^b]c$\"}", L("\"axc\"", "\"a\\\"c\"", "\"a\\nc\"", "\"aéc\""), L("\"abc\"", "\"a\"c\""));
    expect("{\"type\":\"string\",\"pattern\":\"^\\\\w+\\\\.\\\\s?$\"}", L("\"ab_1.\"", "\"x. \"", "\"x.\\t\""), L("\"x\"", "\"-.\""));
    expect("{\"type\":\"string\",\"pattern\":\"^a\\u007f$\"}", L("\"a\\u007f\""), L("\"a\x7f\"")); /* DEL: escaped (fuzz) */
    expect("{\"type\":\"string\",\"pattern\":\"ab\"}", L("\"ab\"", "\"xxabyy\""), L("\"a\"", "\"xyz\""));
}

/* Integer bounds: every value from -150 to 1150 is accepted exactly when it is in range. */
static void test_integer_ranges(void **state) {
    (void)state;
    static const int64_t ranges[][2] = {{0, 9}, {1, 100}, {-5, 5}, {7, 1099}, {-120, -3}, {10, 10}, {99, 1001}, {-150, 1150}};
    ag_grammar_vocab *v = bytes_vocab();
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        char schema[128], doc[32];
        snprintf(schema, sizeof schema, "{\"type\":\"integer\",\"minimum\":%lld,\"maximum\":%lld}", (long long)ranges[r][0],
                 (long long)ranges[r][1]);
        ag_grammar *g = schema_grammar(schema);
        for (int64_t x = -150; x <= 1150; x++) {
            snprintf(doc, sizeof doc, "%lld", (long long)x);
            bool in = x >= ranges[r][0] && x <= ranges[r][1];
            if (matches(g, v, doc) != in) fail_msg("%s: %s %s", schema, doc, in ? "refused" : "accepted");
        }
        assert_false(matches(g, v, "-0"));
        assert_false(matches(g, v, "05"));
        ag_grammar_release(g);
    }
    /* one side open; exclusive bounds; fractional bounds round inwards */
    expect("{\"type\":\"integer\",\"minimum\":18}", L("18", "19", "100", "123456789"), L("17", "-18", "1"));
    expect("{\"type\":\"integer\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":3}", L("1", "2"), L("0", "3"));
    expect("{\"type\":\"integer\",\"minimum\":0.5,\"maximum\":2.5}", L("1", "2"), L("0", "3"));
    ag_grammar_vocab_free(v);
}

/* Tokens that span JSON's own tokens, escapes cut in half, multi-byte characters cut in half, number pieces. */
static const char *const tricky[] = {
    "{\"", "\":", "\": ", "\",", "\"}", "\"},", "}}", "]}", "},{", ", \"", "\\", "\\u", "\\u00", "e9", "\\n", "\\\"",
    "\"\\", "1", "12", "-1", "1.", ".5", "e+", "E-", "0", "00", "01", "true", "tr", "ue", "null,", "[", "[1", ",", " ",
    "\n", "\n  ", "é", "\xc3", "\xa9", "日本", "\xe6\x97", "\xa5", "a", "ab", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ",
    "\"name\"", "name", "\"age", "ge\":", "Ann", "\"Ann\"", "x\"", "\t", "\x01", "\x7f", "\"\"", "\":[\"",
};
enum { N_TRICKY = sizeof tricky / sizeof tricky[0] };
_Static_assert(N_TRICKY <= 64, "the test copies one mask word");
static void tricky_bytes(void *ctx, int32_t id, ag_buf *out) {
    (void)ctx;
    ag_buf_append_str(out, tricky[id]);
}

/*
 * At every byte of documents of a schema, each tricky token's bit in the
 * mask equals whether the token's bytes are accepted from there (a brute
 * force per token), and greedy's one-token check agrees.
 */
static void test_tricky_tokens(void **state) {
    (void)state;
    const char *s = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"number\"},"
                    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":[\"string\",\"boolean\",\"null\"]}}},"
                    "\"required\":[\"name\",\"age\",\"tags\"],\"additionalProperties\":false}";
    const char *docs[] = {"{\"name\":\"Ann\\u00e9\\\"x\\n日本\",\"age\":-12.5e+3,\"tags\":[\"ab\",true,null]}",
                          "{ \"name\": \"\", \"age\": 0, \"tags\": [] }",
                          "{\n  \"name\": \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ é\",\n  \"age\": 1.5E-2,\n  \"tags\": [\"\"]\n}"};
    ag_grammar *g = schema_grammar(s), *g_probe = schema_grammar(s); /* a cache per vocabulary */
    ag_grammar_vocab *v = ag_grammar_vocab_create(N_TRICKY, tricky_bytes, NULL, NULL);
    ag_grammar_vocab *bytes = bytes_vocab();
    for (size_t d = 0; d < sizeof docs / sizeof docs[0]; d++) {
        size_t len = strlen(docs[d]);
        ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
        for (size_t i = 0; i <= len; i++) {
            size_t n;
            uint64_t mask[1] = {ag_grammar_matcher_mask(m, &n)[0]}; /* borrowed until the next call: copied */
            for (int id = 0; id < N_TRICKY; id++) {
                ag_grammar_matcher *probe = ag_grammar_matcher_create(g_probe, bytes);
                bool ok = ag_grammar_matcher_accept_bytes(probe, (const uint8_t *)docs[d], i) &&
                          ag_grammar_matcher_accept_bytes(probe, (const uint8_t *)tricky[id], strlen(tricky[id]));
                ag_grammar_matcher_free(probe);
                bool bit = mask[id >> 6] >> (id & 63) & 1;
                if (bit != ok || bit != ag_grammar_matcher_allows(m, id))
                    fail_msg("doc %zu at %zu: token '%s' mask %d, bytes %d", d, i, tricky[id], bit, ok);
            }
            if (i < len) assert_true(ag_grammar_matcher_accept_bytes(m, (const uint8_t *)docs[d] + i, 1));
        }
        assert_true(ag_grammar_matcher_must_end(m));
        ag_grammar_matcher_free(m);
    }
    ag_grammar_vocab_free(bytes);
    ag_grammar_vocab_free(v);
    ag_grammar_release(g);
    ag_grammar_release(g_probe);
}

static void test_errors(void **state) {
    (void)state;
    schema_fails("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"uniqueItems\":true}}}",
                 "at properties/a: keyword \"uniqueItems\" is not supported");
    schema_fails("{\"not\":{}}", "keyword \"not\"");
    schema_fails("{\"type\":\"strin\"}", "unknown type \"strin\"");
    schema_fails("{\"$ref\":\"#/$defs/missing\"}", "points at nothing");
    schema_fails("{\"$ref\":\"http://x/y\"}", "only local $ref");
    schema_fails("{\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "\"b\", which is not in properties");
    schema_fails("{\"type\":\"string\",\"format\":\"ipv6\"}", "format \"ipv6\" is not supported");
    schema_fails("{\"type\":\"string\",\"pattern\":\"^(?=a)$\"}", "lookarounds");
    schema_fails("{\"type\":\"string\",\"pattern\":\"^(a$\"}", "unbalanced");
    schema_fails("{\"type\":\"string\",\"pattern\":\"^a{3}*$\"}", "nothing to repeat"); /* found by fuzz_schema_compile */
    schema_fails("{\"type\":\"string\",\"pattern\":\"^(*a)$\"}", "nothing to repeat");
    schema_fails("{\"type\":\"string\",\"pattern\":\"^a{,3}$\"}", "bad {m,n}"); /* found by fuzz_schema_compile */
    schema_fails("{\"type\":\"string\",\"pattern\":\"^a{3,2}$\"}", "bad {m,n}");
    schema_fails("{\"type\":\"string\",\"pattern\":\"^a{99999}$\"}", "bad {m,n}");
    schema_fails("{\"type\":\"string\",\"pattern\":\"^[^\\u0000-\\udbff\\udfff]$\"}", "matches no character");
    schema_fails("{\"type\":\"number\",\"minimum\":1}", "type number is not supported");
    schema_fails("{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "no integer lies");
    schema_fails("{\"allOf\":[{},{}]}", "allOf is supported with one schema only");
    schema_fails("{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "maxItems is below minItems");
    schema_fails("{\"type\":\"string\",\"maxLength\":5000}", "maxLength must be an integer from 0 to 2000");
    schema_fails("[1]", "must be an object");
    schema_fails("{\"type\":", "not JSON");
    schema_fails("{\"enum\":[]}", "non-empty");
    schema_fails("{\"type\":\"object\",\"properties\":{\"a\":{}},\"additionalProperties\":true}", "additionalProperties");
    /* limits */
    ag_buf g;
    ag_buf_init(&g);
    ag_err err;
    const char *deep = "{\"items\":{\"items\":{\"items\":{\"items\":{}}}}}";
    ag_schema_opts o = {.max_depth = 2};
    assert_int_equal(ag_schema_to_gbnf(deep, strlen(deep), "root", &o, &g, &err), AG_ELIMIT);
    assert_non_null(strstr(err.msg, "max_depth"));
    o = (ag_schema_opts){.max_enum = 2};
    assert_int_equal(ag_schema_to_gbnf("{\"enum\":[1,2,3]}", 16, "root", &o, &g, &err), AG_ELIMIT);
    ag_buf_deinit(&g);
}

static void test_fuzz_corpus_replays(void **state) {
    (void)state;
    assert_true(ag_test_fuzz_corpus(AG_SOURCE_DIR "/fuzz/corpus/schema", LLVMFuzzerTestOneInput) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuzz_corpus_replays),
        cmocka_unit_test(test_objects),       cmocka_unit_test(test_arrays_enums_anyof_refs),
        cmocka_unit_test(test_strings),       cmocka_unit_test(test_integer_ranges),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_tricky_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
