/*
 * Tests for the scheduler and engine API (src/sched/sched.c): greedy output
 * does not depend on batching, prefix reuse or preemption; priorities and
 * aging order service; cancellation, admission limits, context limits and
 * deadlines; and a randomized stress where every request ends exactly once.
 */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include "autoglm/engine.h"
#include "base/clock.h"
#include "grammar/grammar.h"

#include <string.h>
#include <time.h>

#define FIXTURE AG_SOURCE_DIR "/build/fixtures/llama2.gguf"
#define MAX_REQ 1024
#define MAX_GEN 48

typedef struct outcome {
    int32_t toks[MAX_GEN];
    int n, n_finish, preemptions, cached;
    ag_finish finish;
    uint64_t first_event_order, finish_order;
} outcome;

typedef struct run {
    outcome out[MAX_REQ + 1]; /* by id */
    uint64_t order;
} run;

static ag_engine *engine(int max_seqs, size_t kv_blocks, int max_queue, uint32_t aging_ms) {
    ag_engine_params p = {.model_path = FIXTURE, .n_threads = 2, .ctx = 128, .max_seqs = max_seqs,
                          .max_batch_tokens = 64, .max_queue = max_queue, .kv_blocks = kv_blocks,
                          .aging_ms = aging_ms};
    ag_engine *e = NULL;
    ag_err err;
    if (ag_engine_create(&p, &e, &err) != AG_OK) fail_msg("%s", err.msg);
    return e;
}

static uint64_t submit(ag_engine *e, const int32_t *prompt, int n, int max_tokens, int priority) {
    ag_request r = {.prompt = prompt, .n_prompt = n, .max_tokens = max_tokens, .priority = priority, .ignore_eos = true};
    r.sampling.temperature = 0;
    uint64_t id = 0;
    ag_err err;
    if (ag_engine_submit(e, &r, &id, &err) != AG_OK) fail_msg("submit: %s", err.msg);
    assert_true(id > 0 && id <= MAX_REQ);
    return id;
}

/* Read events until `want` requests have finished. */
static void collect(ag_engine *e, run *rn, int want) {
    int done = 0;
    uint64_t deadline = ag_clock_mono_ns() + 120ull * 1000000000ull;
    ag_event ev[32];
    while (done < want) {
        if (ag_clock_mono_ns() > deadline) fail_msg("only %d of %d requests finished", done, want);
        size_t n = ag_engine_poll(e, ev, 32, 100);
        for (size_t i = 0; i < n; i++) {
            outcome *o = &rn->out[ev[i].id];
            if (!o->first_event_order) o->first_event_order = ++rn->order;
            if (ev[i].token >= 0 && o->n < MAX_GEN) o->toks[o->n++] = ev[i].token;
            if (ev[i].finish != AG_FINISH_NONE) {
                o->n_finish++, done++, o->finish_order = ++rn->order;
                o->finish = ev[i].finish, o->preemptions = ev[i].preemptions, o->cached = ev[i].cached_tokens;
            }
            ag_event_clear(&ev[i]);
        }
    }
}

/* The stats as of the last finish event read (the engine updates them before posting it). */
static ag_engine_stats stats(ag_engine *e) {
    ag_engine_stats st;
    ag_engine_stats_get(e, &st);
    return st;
}

enum { N_PROMPTS = 32, GEN = 10 };
static int32_t prompts[N_PROMPTS][48];
static int prompt_len[N_PROMPTS];

static void make_prompts(void) {
    uint64_t seed = 5;
    for (int i = 0; i < N_PROMPTS; i++) {
        prompt_len[i] = 5 + (int)(ag_test_rand(&seed) % 40);
        for (int k = 0; k < prompt_len[i]; k++)
            prompts[i][k] = k < 20 && i % 2 ? 100 + k : 3 + (int32_t)(ag_test_rand(&seed) % 31000); /* odd ones share 20 */
    }
}

/* All prompts through an engine `at_once` at a time (all submitted, the engine batches up to max_seqs). */
static run *run_all(int max_seqs, size_t kv_blocks, int twice) {
    ag_engine *e = engine(max_seqs, kv_blocks, 256, 1000);
    run *rn = calloc(1, sizeof *rn);
    for (int rep = 0; rep <= twice; rep++) {
        for (int i = 0; i < N_PROMPTS; i++) submit(e, prompts[i], prompt_len[i], GEN, 0);
        collect(e, rn, N_PROMPTS);
    }
    ag_engine_stats st = stats(e);
    assert_int_equal(st.kv_used, 0);
    ag_engine_destroy(e);
    return rn;
}

static void test_greedy_identical_however_batched(void **state) {
    (void)state;
    make_prompts();
    run *alone = run_all(1, 0, 0);
    struct {
        const char *what;
        int max_seqs;
        size_t blocks;
        int twice;
    } cases[] = {{"8 at a time", 8, 0, 0},
                 {"32 at a time", 32, 0, 0},
                 {"32 at a time, then again from the prefix cache", 32, 0, 1},
                 {"8 at a time in a pool of 12 blocks (preemption)", 8, 12, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        run *rn = run_all(cases[c].max_seqs, cases[c].blocks, cases[c].twice);
        int preempted = 0, cached = 0;
        for (int rep = 0; rep <= cases[c].twice; rep++)
            for (int i = 0; i < N_PROMPTS; i++) {
                const outcome *a = &alone->out[1 + i], *b = &rn->out[1 + rep * N_PROMPTS + i];
                assert_int_equal(b->n_finish, 1);
                assert_int_equal(b->finish, AG_FINISH_LENGTH);
                if (b->n != GEN || memcmp(a->toks, b->toks, sizeof a->toks[0] * GEN) != 0)
                    fail_msg("%s: prompt %d generated differently", cases[c].what, i);
                preempted += b->preemptions;
                cached += rep ? b->cached : 0;
            }
        AG_TEST_NOTE("%s: identical; %d preemptions, %d prompt tokens from the prefix cache", cases[c].what, preempted,
                     cached);
        if (cases[c].blocks) assert_true(preempted > 0);
        if (cases[c].twice) assert_true(cached > 0);
        free(rn);
    }
    free(alone);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One sequence at a time behind a long request: priorities decide who goes next; aging lets the old win. */
static void test_priorities_and_aging(void **state) {
    (void)state;
    int32_t p[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (int aging = 0; aging < 2; aging++) {
        ag_engine *e = engine(1, 0, 16, aging ? 1 : 100000);
        run *rn = calloc(1, sizeof *rn);
        uint64_t blocker = submit(e, p, 8, 40, 0);
        uint64_t low = submit(e, p, 4, 2, 10);
        if (aging) sleep_ms(60);
        uint64_t mid = submit(e, p, 5, 2, 5), high = submit(e, p, 6, 2, 1);
        collect(e, rn, 4);
        assert_true(rn->out[blocker].first_event_order < rn->out[high].first_event_order);
        if (!aging) { /* 1, then 5, then 10 */
            assert_true(rn->out[high].first_event_order < rn->out[mid].first_event_order);
            assert_true(rn->out[mid].first_event_order < rn->out[low].first_event_order);
        } else { /* the priority-10 request waited 60+ aging periods: it goes first */
            assert_true(rn->out[low].first_event_order < rn->out[high].first_event_order);
        }
        free(rn);
        ag_engine_destroy(e);
    }
}

/*
 * Every slot taken by a background request (as a batch job's is): another
 * that arrives takes the slot at once and the one it preempted finishes
 * later with the tokens it would have had alone; another background one
 * waits its turn.
 */
static void test_slot_preemption_by_priority(void **state) {
    (void)state;
    int32_t p[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ag_engine *e = engine(1, 0, 16, 100000);
    run *alone = calloc(1, sizeof *alone), *rn = calloc(1, sizeof *rn);
    uint64_t a = submit(e, p, 8, 40, AG_PRIORITY_BACKGROUND);
    collect(e, alone, 1);
    ag_engine_destroy(e);
    e = engine(1, 0, 16, 100000);
    uint64_t low = submit(e, p, 8, 40, AG_PRIORITY_BACKGROUND);
    ag_event ev;
    while (ag_engine_poll(e, &ev, 1, 1000) == 0) {
    }
    assert_int_equal(ev.id, low); /* it runs, and has its first token */
    rn->out[low].toks[rn->out[low].n++] = ev.token;
    rn->out[low].first_event_order = ++rn->order;
    ag_event_clear(&ev);
    uint64_t high = submit(e, p, 4, 2, 7), same = submit(e, p, 4, 2, AG_PRIORITY_BACKGROUND + 1);
    collect(e, rn, 3);
    assert_true(rn->out[high].finish_order < rn->out[low].finish_order);
    assert_true(rn->out[low].preemptions >= 1);
    assert_true(rn->out[same].first_event_order > rn->out[low].finish_order);
    assert_int_equal(rn->out[low].n, alone->out[a].n);
    assert_memory_equal(rn->out[low].toks, alone->out[a].toks, sizeof(int32_t) * (size_t)alone->out[a].n);
    free(alone);
    free(rn);
    ag_engine_destroy(e);
}

/* An engine of one sequence and a queue of two, p[0..n) filled with tokens, one long request running (*a). */
static ag_engine *one_running(int32_t *p, int n, uint64_t *a) {
    for (int i = 0; i < n; i++) p[i] = 10 + i;
    ag_engine *e = engine(1, 0, 2, 1000);
    *a = submit(e, p, 10, 100, 0);
    ag_event ev;
    while (ag_engine_poll(e, &ev, 1, 1000) == 0) {
    }
    assert_int_equal(ev.id, *a);
    ag_event_clear(&ev);
    return e;
}

static void test_cancel_admission_limits_deadline(void **state) {
    (void)state;
    int32_t p[100];
    uint64_t a;
    ag_engine *e = one_running(p, 100, &a);
    run *rn = calloc(1, sizeof *rn);
    uint64_t b = submit(e, p, 10, 5, 0), c = submit(e, p, 10, 5, 0);
    ag_request r = {.prompt = p, .n_prompt = 10, .max_tokens = 5};
    uint64_t id;
    ag_err err;
    assert_int_equal(ag_engine_submit(e, &r, &id, &err), AG_BUSY); /* two wait already */
    r.max_tokens = 30, r.n_prompt = 100;
    assert_int_equal(ag_engine_submit(e, &r, &id, &err), AG_ELIMIT);
    assert_non_null(strstr(err.msg, "context length is 128 tokens; the prompt has 100 and max_tokens asks for 30"));
    r.n_prompt = 0;
    assert_int_equal(ag_engine_submit(e, &r, &id, &err), AG_EINVAL);
    ag_engine_cancel(e, a);
    ag_engine_cancel(e, c);
    ag_engine_cancel(e, 9999); /* unknown: ignored */
    collect(e, rn, 3);
    assert_int_equal(rn->out[a].finish, AG_FINISH_CANCELLED);
    assert_int_equal(rn->out[c].finish, AG_FINISH_CANCELLED);
    assert_int_equal(rn->out[b].finish, AG_FINISH_LENGTH);
    /* a deadline already past ends the request with a timeout */
    r = (ag_request){.prompt = p, .n_prompt = 10, .max_tokens = 50, .deadline_ns = ag_clock_mono_ns() + 1000};
    assert_int_equal(ag_engine_submit(e, &r, &id, &err), AG_OK);
    collect(e, rn, 1);
    assert_int_equal(rn->out[id].finish, AG_FINISH_TIMEOUT);
    ag_engine_stats st = stats(e);
    assert_int_equal(st.kv_used, 0);
    assert_int_equal(st.running + st.waiting, 0);
    free(rn);
    ag_engine_destroy(e);
}

/* 1,000 random requests with random priorities and cancels, in a pool small enough to preempt. */
static void test_random_stress(void **state) {
    (void)state;
    ag_engine *e = engine(8, 20, 2000, 5);
    run *rn = calloc(1, sizeof *rn);
    uint64_t seed = 99;
    int32_t p[40];
    for (int i = 0; i < 1000; i++) {
        int n = 1 + (int)(ag_test_rand(&seed) % 40);
        for (int k = 0; k < n; k++) p[k] = 3 + (int32_t)(ag_test_rand(&seed) % 31000);
        ag_request r = {.prompt = p, .n_prompt = n, .max_tokens = 1 + (int)(ag_test_rand(&seed) % 8),
                        .priority = (int)(ag_test_rand(&seed) % 4), .cache_salt = ag_test_rand(&seed) % 3};
        r.sampling.temperature = 0.8f, r.sampling.top_p = 0.9f, r.sampling.seed = (uint64_t)i;
        uint64_t id;
        ag_err err;
        assert_int_equal(ag_engine_submit(e, &r, &id, &err), AG_OK);
        if (ag_test_rand(&seed) % 10 == 0) ag_engine_cancel(e, id - (ag_test_rand(&seed) % 5 < id ? ag_test_rand(&seed) % 5 : 0));
    }
    collect(e, rn, 1000);
    int by_reason[6] = {0};
    for (int id = 1; id <= 1000; id++) {
        assert_int_equal(rn->out[id].n_finish, 1);
        by_reason[rn->out[id].finish]++;
    }
    ag_event ev;
    assert_int_equal(ag_engine_poll(e, &ev, 1, 50), 0); /* nothing after the finishes */
    ag_engine_stats st = stats(e);
    assert_int_equal(st.kv_used, 0);
    AG_TEST_NOTE("1000 requests: %d stop, %d length, %d cancelled, %d error; %llu preemptions, %llu steps",
                 by_reason[AG_FINISH_STOP], by_reason[AG_FINISH_LENGTH], by_reason[AG_FINISH_CANCELLED],
                 by_reason[AG_FINISH_ERROR], (unsigned long long)st.preemptions, (unsigned long long)st.steps);
    assert_int_equal(by_reason[AG_FINISH_ERROR], 0);
    free(rn);
    ag_engine_destroy(e);
}

/*
 * min_tokens bans the end tokens until that many were generated: with EOS made
 * overwhelmingly likely, a request ends exactly at min_tokens (STOP), one
 * without it at once, and one that ignores EOS runs to max_tokens.  A
 * min_tokens above max_tokens is refused at submit.
 */
static void test_min_tokens(void **state) {
    (void)state;
    ag_engine *e = engine(4, 0, 16, 1000);
    const int32_t prompt[] = {1, 15043, 29892};
    const ag_logit_bias eos_likely = {2, 100}; /* the llama2 fixture's EOS */
    const int32_t mins[] = {0, 1, 7, 12};
    uint64_t ids[4];
    for (int i = 0; i < 4; i++) {
        ag_request r = {.prompt = prompt, .n_prompt = 3, .max_tokens = 12, .logit_bias = &eos_likely,
                        .n_logit_bias = 1, .min_tokens = mins[i]};
        ag_err err;
        if (ag_engine_submit(e, &r, &ids[i], &err) != AG_OK) fail_msg("submit: %s", err.msg);
    }
    ag_request ignoring = {.prompt = prompt, .n_prompt = 3, .max_tokens = 12, .logit_bias = &eos_likely,
                           .n_logit_bias = 1, .ignore_eos = true};
    uint64_t ignoring_id;
    assert_int_equal(ag_engine_submit(e, &ignoring, &ignoring_id, NULL), AG_OK);
    run *rn = calloc(1, sizeof *rn);
    collect(e, rn, 5);
    for (int i = 0; i < 4; i++) {
        const outcome *o = &rn->out[ids[i]];
        assert_int_equal(o->n, mins[i]); /* the end token itself is not part of the completion */
        assert_int_equal(o->finish, mins[i] == 12 ? AG_FINISH_LENGTH : AG_FINISH_STOP);
    }
    assert_int_equal(rn->out[ignoring_id].n, 12);
    ag_request bad = {.prompt = prompt, .n_prompt = 3, .max_tokens = 4, .min_tokens = 5};
    uint64_t id;
    ag_err err;
    assert_int_equal(ag_engine_submit(e, &bad, &id, &err), AG_EINVAL);
    assert_non_null(strstr(err.msg, "min_tokens"));
    free(rn);
    ag_engine_destroy(e);
}

static void one_byte_token(void *ctx, int32_t id, ag_buf *out) {
    (void)ctx;
    ag_buf_append_char(out, (char)id);
}

/* Whether text is whole in g (run over single bytes, apart from any vocabulary). */
static bool grammar_accepts(ag_grammar *g, const char *text, size_t len) {
    ag_grammar_vocab *v = ag_grammar_vocab_create(256, one_byte_token, NULL, NULL);
    ag_grammar_matcher *m = ag_grammar_matcher_create(g, v);
    bool ok = ag_grammar_matcher_accept_bytes(m, (const uint8_t *)text, len) && ag_grammar_matcher_can_end(m);
    ag_grammar_matcher_free(m);
    ag_grammar_vocab_free(v);
    return ok;
}

/*
 * Requests with a grammar: greedy (the model's choice checked first) and
 * sampled (always masked) outputs are whole sentences of the grammar although
 * EOS is made the likeliest token, end as soon as nothing may follow, and a
 * greedy one is the same alone or batched; a lazy grammar leaves the text
 * before its trigger free.
 */
static void test_grammar_constrained(void **state) {
    (void)state;
    ag_engine *e = engine(4, 0, 32, 1000);
    const char *gbnf = "root ::= \"ab\" [0-9]{1,3} (\"x\" | \"yz\")\n";
    ag_grammar *g;
    ag_err err;
    if (ag_grammar_compile(gbnf, strlen(gbnf), NULL, &g, &err) != AG_OK) fail_msg("%s", err.msg);
    const int32_t prompt[] = {1, 15043, 29892};
    const ag_logit_bias eos_likely = {2, 100};
    uint64_t ids[9];
    for (int i = 0; i < 9; i++) {
        ag_request r = {.prompt = prompt, .n_prompt = 3, .max_tokens = 24, .logit_bias = &eos_likely, .n_logit_bias = 1,
                        .grammar = g};
        r.sampling.temperature = i < 3 ? 0.0f : 1.0f, r.sampling.seed = (uint64_t)i;
        if (ag_engine_submit(e, &r, &ids[i], &err) != AG_OK) fail_msg("submit: %s", err.msg);
    }
    ag_grammar_release(g); /* the engine holds its own references */
    run *rn = calloc(1, sizeof *rn);
    collect(e, rn, 9);
    ag_buf text;
    ag_buf_init(&text);
    if (ag_grammar_compile(gbnf, strlen(gbnf), NULL, &g, &err) != AG_OK) fail_msg("%s", err.msg);
    for (int i = 0; i < 9; i++) {
        const outcome *o = &rn->out[ids[i]];
        ag_buf_reset(&text);
        assert_int_equal(ag_engine_detokenize(e, o->toks, (size_t)o->n, &text, &err), AG_OK);
        if (o->finish != AG_FINISH_STOP || !grammar_accepts(g, text.data, text.len))
            fail_msg("request %d: finish %d, '%.*s'", i, o->finish, (int)text.len, text.data);
        if (i > 0 && i < 3) assert_memory_equal(o->toks, rn->out[ids[0]].toks, (size_t)o->n * sizeof *o->toks);
    }
    /* the same greedy request alone: the same tokens */
    ag_request alone = {.prompt = prompt, .n_prompt = 3, .max_tokens = 24, .logit_bias = &eos_likely, .n_logit_bias = 1,
                        .grammar = g};
    uint64_t id;
    assert_int_equal(ag_engine_submit(e, &alone, &id, &err), AG_OK);
    collect(e, rn, 1);
    assert_int_equal(rn->out[id].n, rn->out[ids[0]].n);
    assert_memory_equal(rn->out[id].toks, rn->out[ids[0]].toks, (size_t)rn->out[id].n * sizeof(int32_t));
    ag_grammar_release(g);
    /* lazy: free until the trigger; the EOS bias ends the free text at once, which the untriggered grammar allows */
    const char *lazy = "root ::= \"<t>\" [0-9]+ \"</t>\"\n";
    if (ag_grammar_compile(lazy, strlen(lazy), NULL, &g, &err) != AG_OK) fail_msg("%s", err.msg);
    ag_grammar_set_trigger(g, "<t>", 3);
    ag_request free_text = {.prompt = prompt, .n_prompt = 3, .max_tokens = 5, .logit_bias = &eos_likely, .n_logit_bias = 1,
                            .grammar = g};
    assert_int_equal(ag_engine_submit(e, &free_text, &id, &err), AG_OK);
    collect(e, rn, 1);
    assert_int_equal(rn->out[id].finish, AG_FINISH_STOP);
    assert_int_equal(rn->out[id].n, 0);
    ag_grammar_release(g);
    ag_buf_deinit(&text);
    free(rn);
    ag_engine_destroy(e);
}

/* submit_many: the choices of one API request enter the queue all together or not at all. */
static void test_submit_many_all_or_none(void **state) {
    (void)state;
    int32_t p[10];
    uint64_t a;
    ag_engine *e = one_running(p, 10, &a); /* the queue (2) is empty */
    run *rn = calloc(1, sizeof *rn);
    ag_request rs[3];
    for (int i = 0; i < 3; i++) rs[i] = (ag_request){.prompt = p, .n_prompt = 10, .max_tokens = 5};
    uint64_t ids[3] = {0};
    ag_err err;
    assert_int_equal(ag_engine_submit_many(e, rs, 3, ids, &err), AG_ELIMIT); /* never fits */
    uint64_t b = submit(e, p, 10, 5, 0);
    assert_int_equal(ag_engine_submit_many(e, rs, 2, ids, &err), AG_BUSY); /* room for one of the two */
    assert_int_equal(ids[0], 0);
    rs[1].n_prompt = 0;
    assert_int_equal(ag_engine_submit_many(e, rs, 2, ids, &err), AG_EINVAL); /* one bad request refuses both */
    uint64_t c = submit(e, p, 10, 5, 0); /* the one place left: nothing of the refused pairs took it */
    assert_int_equal(ag_engine_submit(e, &rs[0], &ids[2], &err), AG_BUSY);
    ag_engine_cancel(e, b);
    ag_engine_cancel(e, c);
    collect(e, rn, 2);
    rs[1].n_prompt = 10;
    assert_int_equal(ag_engine_submit_many(e, rs, 2, ids, &err), AG_OK);
    assert_true(ids[0] && ids[1] && ids[0] != ids[1]);
    ag_engine_cancel(e, a);
    collect(e, rn, 3);
    assert_int_equal(rn->out[ids[0]].finish, AG_FINISH_LENGTH);
    assert_int_equal(rn->out[ids[1]].finish, AG_FINISH_LENGTH);
    free(rn);
    ag_engine_destroy(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_identical_however_batched),
        cmocka_unit_test(test_priorities_and_aging),
        cmocka_unit_test(test_slot_preemption_by_priority),
        cmocka_unit_test(test_cancel_admission_limits_deadline),
        cmocka_unit_test(test_submit_many_all_or_none),
        cmocka_unit_test(test_random_stress),
        cmocka_unit_test(test_min_tokens),
        cmocka_unit_test(test_grammar_constrained),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
