/*
 * bench_grammar - what constrained decoding costs per token: for each
 * vocabulary and grammar, a valid document is tokenized with the model's own
 * tokenizer and replayed token by token through a matcher, timing the mask
 * (the set of allowed tokens) the sampler would ask for at every position,
 * and the one-token check greedy decoding tries first.
 *
 * Two passes over the same compiled grammar: "first" is a first request
 * (every state's mask is a walk over the vocabulary trie the first time the
 * state is seen), "again" a later request with the same schema (the server
 * keeps compiled grammars, and their masks, by text: --grammar-cache).  Each
 * replay also checks the grammar allows every token of the document (a bench
 * that measured a refusing grammar would measure nothing).
 *
 * usage: bench_grammar MODEL.gguf NAME [MODEL.gguf NAME]...
 */
#include "base/clock.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "grammar/grammar.h"
#include "server/tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char PERSON[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":40},\"age\":{\"type\":\"integer\","
    "\"minimum\":0,\"maximum\":130},\"born\":{\"type\":\"string\",\"format\":\"date\"},\"role\":{\"enum\":[\"admin\",\"user\","
    "\"guest\"]},\"score\":{\"type\":\"number\"},\"address\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
    "\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"}},\"required\":[\"city\",\"zip\"],\"additionalProperties\":false},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":8},\"active\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"age\",\"born\",\"role\",\"score\",\"address\",\"tags\",\"active\"],\"additionalProperties\":false}";
static const char PERSON_DOC[] =
    "{\n  \"name\": \"Ada Lovelace, Countess of Lovelace\",\n  \"age\": 36,\n  \"born\": \"1815-12-10\",\n  \"role\": \"admin\",\n"
    "  \"score\": 97.25,\n  \"address\": {\"city\": \"London\", \"zip\": \"12345\"},\n  \"tags\": [\"mathematics\", "
    "\"analytical engine\", \"notes\", \"poetry \\\"of\\\" science\", \"日本語\"],\n  \"active\": false\n}";

/* OpenAI's structured-outputs guide's example (chain of thought: steps of explanation and output), strict mode */
static const char MATH[] =
    "{\"type\":\"object\",\"properties\":{\"steps\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
    "{\"explanation\":{\"type\":\"string\"},\"output\":{\"type\":\"string\"}},\"required\":[\"explanation\",\"output\"],"
    "\"additionalProperties\":false}},\"final_answer\":{\"type\":\"string\"}},\"required\":[\"steps\",\"final_answer\"],"
    "\"additionalProperties\":false}";
static const char MATH_DOC[] =
    "{\"steps\":[{\"explanation\":\"Subtract 7 from both sides to isolate the term with x.\",\"output\":\"8x = -30\"},"
    "{\"explanation\":\"Divide both sides by 8.\",\"output\":\"x = -30/8 = -3.75\"}],\"final_answer\":\"x = -3.75\"}";

static const char ANY_DOC[] =
    "{\"id\": \"chatcmpl-123\", \"items\": [1, 2.5, -3e10, true, false, null, {\"nested\": [\"a\", \"b\\nc\"]}], "
    "\"text\": \"In the beginning God created the heaven and the earth. And the earth was without form, and void; "
    "and darkness was upon the face of the deep.\", \"unicode\": \"\\u00e9t\\u00e9 ☀ été\", \"count\": 1234567890}";

static const char TOOL_DOC[] =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>\n"
    "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": 9}}\n</tool_call>";

static const char LIST_GBNF[] = "root ::= item (\"\\n\" item){0,9}\nitem ::= \"- \" [A-Z] [a-z ]{0,60} \".\"\n";
static const char LIST_DOC[] = "- The first line of the list.\n- Second item here.\n- And a third one to end with.";

typedef struct stats {
    double sum, max, allows_sum;
    size_t n;
    double *v;
} stats;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void tok_bytes(void *ctx, int32_t id, ag_buf *out) { ag_token_bytes(ctx, id, out); }
static bool tok_skip(void *ctx, int32_t id) { return ag_tokenizer_is_control(ctx, id); }

/* Replay doc's tokens through a new matcher of g, timing each mask and check; false when g refuses a token. */
static bool replay(ag_grammar *g, const ag_grammar_vocab *v, const ag_ids *ids, stats *st) {
    ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
    st->n = 0, st->sum = st->max = st->allows_sum = 0;
    for (size_t i = 0; i < ids->n; i++) {
        uint64_t t0 = ag_clock_mono_ns();
        size_t n_allowed;
        const uint64_t *mask = ag_grammar_matcher_mask(m, &n_allowed);
        uint64_t t1 = ag_clock_mono_ns();
        bool ok = ag_grammar_matcher_allows(m, ids->v[i]);
        uint64_t t2 = ag_clock_mono_ns();
        int32_t id = ids->v[i];
        if (!ok || !(mask[id >> 6] >> (id & 63) & 1) || !ag_grammar_matcher_accept(m, id)) {
            ag_grammar_matcher_free(m);
            return false;
        }
        double us = (double)(t1 - t0) / 1e3;
        st->v[st->n++] = us;
        st->sum += us, st->max = us > st->max ? us : st->max;
        st->allows_sum += (double)(t2 - t1) / 1e3;
    }
    bool end = ag_grammar_matcher_can_end(m);
    ag_grammar_matcher_free(m);
    return end;
}

/*
 * SentencePiece vocabularies encode text with a leading space ("▁{"): what a
 * model generating the document would write first is the token without it.
 */
static void undo_dummy_prefix(const ag_tokenizer *t, const char *doc, ag_ids *ids) {
    ag_buf b;
    ag_buf_init(&b);
    ag_token_bytes(t, ids->v[0], &b);
    if (b.len > 1 && b.data[0] == ' ' && doc[0] != ' ') {
        ag_buf o;
        ag_buf_init(&o);
        for (size_t id = 0; id < ag_tokenizer_n_vocab(t); id++) {
            ag_buf_reset(&o);
            ag_token_bytes(t, (int32_t)id, &o);
            if (o.len == b.len - 1 && memcmp(o.data, b.data + 1, o.len) == 0 && !ag_tokenizer_is_control(t, (int32_t)id)) {
                ids->v[0] = (int32_t)id;
                break;
            }
        }
        ag_buf_deinit(&o);
    }
    ag_buf_deinit(&b);
}

static void row(const char *vocab, size_t n_vocab, const char *name, size_t n_tok, const char *pass, stats *st,
                const ag_grammar *g) {
    qsort(st->v, st->n, sizeof *st->v, cmp_d);
    ag_grammar_cache_stats cs;
    ag_grammar_cache_stats_get(g, &cs);
    printf("| %s (%zu) | %s | %zu | %s | %.1f | %.1f | %.1f | %.0f | %.2f | %zu | %.1f |\n", vocab, n_vocab, name, n_tok,
           pass, st->sum / (double)st->n, st->v[st->n / 2], st->v[(st->n * 99) / 100], st->max,
           st->allows_sum / (double)st->n, cs.states, (double)cs.bytes / (1 << 20));
}

int main(int argc, char **argv) {
    if (argc < 3 || argc % 2 == 0) {
        fprintf(stderr, "usage: bench_grammar MODEL.gguf NAME [MODEL.gguf NAME]...\n");
        return 2;
    }
    printf("| vocabulary | grammar | tokens | pass | mask mean µs | p50 | p99 | max | check mean µs | states | cache MiB |\n");
    printf("|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for (int a = 1; a + 1 < argc; a += 2) {
        ag_gguf_file *f;
        ag_tokenizer *t;
        ag_err err;
        if (ag_gguf_open(argv[a], &f, &err) != AG_OK || ag_tokenizer_load(f, &t, &err) != AG_OK) {
            fprintf(stderr, "bench_grammar: %s: %s\n", argv[a], err.msg);
            return 1;
        }
        ag_gguf_close(f);
        size_t n_vocab = ag_tokenizer_n_vocab(t);
        uint64_t t0 = ag_clock_mono_ns();
        ag_grammar_vocab *v = ag_grammar_vocab_create(n_vocab, tok_bytes, tok_skip, t);
        fprintf(stderr, "%s: vocabulary trie built in %.1f ms\n", argv[a + 1], (double)(ag_clock_mono_ns() - t0) / 1e6);
        /* the grammars: a schema, any JSON object, a tool call (Hermes, two tools), a GBNF list */
        ag_api_tool tools[2] = {
            {.name = AG_STR_LIT("get_weather"), .params_json = AG_STR_LIT("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
                                                                         "\"unit\":{\"enum\":[\"c\",\"f\"]}},\"required\":[\"city\",\"unit\"]}")},
            {.name = AG_STR_LIT("get_time"), .params_json = AG_STR_LIT("{\"type\":\"object\",\"properties\":{\"tz\":{\"type\":\"integer\"}},\"required\":[\"tz\"]}")},
        };
        ag_api_tools ts = {.v = tools, .n = 2, .choice = AG_TOOL_CHOICE_REQUIRED, .parallel = true};
        struct {
            const char *name, *doc;
            ag_buf gbnf;
        } cases[5] = {{"json_schema math (OpenAI's example)", MATH_DOC, {0}}, {"json_schema person", PERSON_DOC, {0}},
                      {"json_object", ANY_DOC, {0}}, {"tool call (Hermes)", TOOL_DOC, {0}}, {"GBNF list", LIST_DOC, {0}}};
        enum { N_CASES = sizeof cases / sizeof cases[0] };
        for (int c = 0; c < N_CASES; c++) ag_buf_init(&cases[c].gbnf);
        ag_schema_gbnf_common(&cases[0].gbnf);
        if (ag_schema_to_gbnf(MATH, sizeof MATH - 1, "root", NULL, &cases[0].gbnf, &err) != AG_OK) return 1;
        ag_schema_gbnf_common(&cases[1].gbnf);
        if (ag_schema_to_gbnf(PERSON, sizeof PERSON - 1, "root", NULL, &cases[1].gbnf, &err) != AG_OK) return 1;
        ag_schema_gbnf_common(&cases[2].gbnf);
        ag_buf_append_str(&cases[2].gbnf, "root ::= json-object\n");
        const char *trigger;
        if (ag_tools_gbnf(AG_CHAT_TEMPLATE_CHATML, &ts, NULL, &cases[3].gbnf, &trigger, &err) != AG_OK) return 1;
        ag_buf_append_str(&cases[4].gbnf, LIST_GBNF);
        for (int c = 0; c < N_CASES; c++) {
            ag_grammar *g;
            if (ag_grammar_compile(cases[c].gbnf.data, cases[c].gbnf.len, NULL, &g, &err) != AG_OK) {
                fprintf(stderr, "bench_grammar: %s: %s\n", cases[c].name, err.msg);
                return 1;
            }
            ag_ids ids = {0};
            if (ag_tokenize(t, cases[c].doc, strlen(cases[c].doc), false, false, &ids, &err) != AG_OK) return 1;
            undo_dummy_prefix(t, cases[c].doc, &ids);
            stats st = {.v = malloc(ids.n * sizeof(double))};
            for (int pass = 0; pass < 2; pass++) {
                if (!replay(g, v, &ids, &st)) {
                    fprintf(stderr, "bench_grammar: %s refuses its own document on %s\n", cases[c].name, argv[a + 1]);
                    return 1;
                }
                row(argv[a + 1], n_vocab, cases[c].name, ids.n, pass ? "again" : "first", &st, g);
            }
            free(st.v);
            free(ids.v);
            ag_grammar_release(g);
            ag_buf_deinit(&cases[c].gbnf);
        }
        ag_grammar_vocab_free(v);
        ag_tokenizer_free(t);
    }
    return 0;
}
