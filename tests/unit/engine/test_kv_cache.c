/*
 * Tests for the paged KV cache and its prefix cache (src/engine/kv_cache.c):
 * the model computes the same bits through it as through the simple cache,
 * attached prefixes give the same logits as computing them, a stale or
 * foreign chain never matches, eviction is LRU, and the block accounting
 * survives a randomized workload.
 */
#include "test.h"

#include "engine/model.h"

#include <string.h>

#define FIXTURES AG_SOURCE_DIR "/build/fixtures/"

static ag_model *load(const char *path, int32_t n_seq) {
    ag_model_params p = ag_model_params_default();
    p.n_threads = 2;
    p.n_ctx = 64;
    p.n_seq = n_seq;
    ag_model *m = NULL;
    ag_err err;
    if (ag_model_load(path, &p, &m, &err) != AG_OK) fail_msg("%s: %s", path, err.msg);
    return m;
}

static ag_kv_cache *paged(const ag_model *m, int bt, size_t n_blocks, int32_t n_seq) {
    ag_kv_cache *kv = NULL;
    ag_err err;
    if (ag_kv_paged_create(m->cfg.n_layer, m->cfg.n_head_kv * m->cfg.head_dim, m->n_ctx, n_seq, bt, n_blocks,
                           AG_DTYPE_F16, &kv, &err) != AG_OK)
        fail_msg("%s", err.msg);
    return kv;
}

/* Logits of every position of tokens[0..n) as sequence seq, starting at position from. */
static float *run(ag_model *m, int32_t seq, const int32_t *tokens, int from, int n) {
    int32_t pos[64], sq[64];
    bool all[64];
    for (int i = 0; i < n - from; i++) pos[i] = from + i, sq[i] = seq, all[i] = true;
    ag_err err;
    if (ag_forward(m, &(ag_batch){.n = n - from, .token = tokens + from, .pos = pos, .seq = sq, .logits = all}, &err) !=
        AG_OK)
        fail_msg("%s", err.msg);
    size_t bytes = (size_t)(n - from) * m->cfg.n_vocab * sizeof(float);
    float *out = malloc(bytes);
    memcpy(out, m->s.logits, bytes);
    return out;
}

static void make_prompt(int32_t *t, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) t[i] = 3 + (int32_t)(ag_test_rand(&seed) % 30000);
}

/* The paged cache, with several block sizes, gives the simple cache's bits. */
static void test_paged_equals_simple(void **state) {
    (void)state;
    int32_t prompt[40];
    make_prompt(prompt, 40, 1);
    ag_model *m = load(FIXTURES "llama2.gguf", 1);
    float *want = run(m, 0, prompt, 0, 40);
    size_t V = (size_t)m->cfg.n_vocab;
    static const int block_sizes[] = {1, 7, 16, 64};
    for (size_t i = 0; i < sizeof block_sizes / sizeof *block_sizes; i++) {
        ag_err err;
        assert_int_equal(ag_model_set_kv(m, paged(m, block_sizes[i], 64, 1), &err), AG_OK);
        /* prefill 25, then one token at a time */
        float *a = run(m, 0, prompt, 0, 25);
        assert_memory_equal(a, want, 25 * V * sizeof(float));
        free(a);
        for (int p = 25; p < 40; p++) {
            float *b = run(m, 0, prompt, p, p + 1);
            assert_memory_equal(b, want + (size_t)p * V, V * sizeof(float));
            free(b);
        }
    }
    free(want);
    ag_model_free(m);
}

/* A prompt sharing 2 full blocks with a published one attaches them and computes only the rest, to the same bits. */
static void test_prefix_attach_gives_same_logits(void **state) {
    (void)state;
    ag_model *m = load(FIXTURES "llama2.gguf", 2);
    ag_err err;
    assert_int_equal(ag_model_set_kv(m, paged(m, 16, 16, 2), &err), AG_OK);
    int32_t a[40], b[40];
    make_prompt(a, 40, 2);
    memcpy(b, a, sizeof a);
    for (int i = 35; i < 40; i++) b[i] = a[i] + 1; /* b shares 35 tokens: 2 full blocks */
    free(run(m, 0, a, 0, 40));
    ag_kv_prefix_publish(m->kv, 0, a, 40, 0);
    ag_kv_stats st;
    ag_kv_paged_stats(m->kv, &st);
    assert_int_equal(st.used, 3);
    float *ref = run(m, 1, b, 0, 40); /* b computed in full on sequence 1 */
    m->kv->ops->seq_clear(m->kv, 1);
    m->kv->ops->seq_clear(m->kv, 0);
    ag_kv_paged_stats(m->kv, &st);
    assert_int_equal(st.cached, 2); /* a's two published blocks stay; its partial third block is free */
    assert_int_equal(st.used, 0);
    int32_t got = ag_kv_prefix_attach(m->kv, 1, b, 40, 0);
    assert_int_equal(got, 32);
    float *tail = run(m, 1, b, 32, 40);
    size_t V = (size_t)m->cfg.n_vocab;
    assert_memory_equal(tail, ref + 32 * V, 8 * V * sizeof(float));
    ag_kv_paged_stats(m->kv, &st);
    assert_int_equal(st.prefix_hit_tokens, 32);
    /* a whole-prompt match still leaves the last token to compute */
    m->kv->ops->seq_clear(m->kv, 1);
    assert_int_equal(ag_kv_prefix_attach(m->kv, 0, a, 32, 0), 16);
    free(tail);
    free(ref);
    ag_model_free(m);
}

/* Driving the cache directly: salt isolation, LRU eviction, stale chains, full pool. */
static void test_prefix_rules(void **state) {
    (void)state;
    ag_kv_cache *kv = NULL;
    ag_err err;
    assert_int_equal(ag_kv_paged_create(1, 4, 64, 4, 4, 6, AG_DTYPE_F16, &kv, &err), AG_OK);
    int32_t x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, y[9] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
    /* publish x (2 full blocks) under salt 7 */
    assert_int_equal(kv->ops->reserve(kv, 0, 9, &err), AG_OK);
    ag_kv_prefix_publish(kv, 0, x, 9, 7);
    kv->ops->seq_clear(kv, 0);
    assert_int_equal(ag_kv_prefix_attach(kv, 1, x, 9, 8), 0); /* another tenant's salt: nothing */
    assert_int_equal(ag_kv_prefix_attach(kv, 1, x, 9, 7), 8);
    kv->ops->seq_clear(kv, 1);
    /* y after x: the LRU list holds x's blocks (older) then y's; a sequence releases its last block first */
    assert_int_equal(kv->ops->reserve(kv, 2, 9, &err), AG_OK);
    ag_kv_prefix_publish(kv, 2, y, 9, 7);
    kv->ops->seq_clear(kv, 2);
    ag_kv_stats st;
    ag_kv_paged_stats(kv, &st);
    assert_int_equal(st.cached, 4);
    assert_int_equal(st.free, 2);
    /* need 3 blocks: 2 free + the least recently used cached one, x's second block */
    assert_int_equal(kv->ops->reserve(kv, 3, 12, &err), AG_OK);
    kv->ops->seq_clear(kv, 3);
    assert_int_equal(ag_kv_prefix_attach(kv, 0, x, 9, 7), 4);  /* x keeps its first block */
    assert_int_equal(ag_kv_prefix_attach(kv, 1, y, 9, 7), 8); /* y is intact */
    assert_int_equal(ag_kv_prefix_attach(kv, 1, y, 9, 7), 0); /* only onto an empty sequence */
    /* the pool is finite: 6 blocks of 4 */
    assert_int_equal(kv->ops->reserve(kv, 2, 64, &err), AG_ELIMIT);
    assert_non_null(strstr(err.msg, "KV cache is full"));
    assert_int_equal(kv->ops->reserve(kv, 3, 65, &err), AG_ELIMIT);
    assert_non_null(strstr(err.msg, "context length"));
    for (int s = 0; s < 4; s++) kv->ops->seq_clear(kv, s);
    ag_kv_paged_stats(kv, &st);
    assert_int_equal(st.used, 0);
    assert_int_equal(st.used + st.cached + st.free, 6);
    ag_kv_destroy(kv);
    assert_int_equal(ag_kv_paged_create(1, 4, 64, 4, 4, 0, AG_DTYPE_F16, &kv, &err), AG_EINVAL);
}

/* Random reserve / publish / attach / clear: the three states always partition the pool. */
static void test_random_workload_accounting(void **state) {
    (void)state;
    enum { SEQS = 8, BT = 4, BLOCKS = 40, CTX = 48 };
    ag_kv_cache *kv = NULL;
    ag_err err;
    assert_int_equal(ag_kv_paged_create(2, 8, CTX, SEQS, BT, BLOCKS, AG_DTYPE_F32, &kv, &err), AG_OK);
    int32_t prompts[4][CTX], len[SEQS] = {0};
    uint64_t seed = 77;
    for (int p = 0; p < 4; p++)
        for (int i = 0; i < CTX; i++) prompts[p][i] = i < 20 ? i : (int32_t)(ag_test_rand(&seed) % 5);
    int which[SEQS] = {0};
    for (int step = 0; step < 20000; step++) {
        int s = (int)(ag_test_rand(&seed) % SEQS);
        switch (ag_test_rand(&seed) % 4) {
        case 0: /* start: attach what is cached, then grow */
            if (len[s] == 0) {
                which[s] = (int)(ag_test_rand(&seed) % 4);
                len[s] = ag_kv_prefix_attach(kv, s, prompts[which[s]], CTX, 1);
                assert_true(len[s] % BT == 0 && len[s] < CTX);
            }
            break;
        case 1: { /* grow by up to 9 positions, if the pool allows */
            int32_t n = len[s] + 1 + (int32_t)(ag_test_rand(&seed) % 9);
            if (n > CTX) n = CTX;
            if (kv->ops->reserve(kv, s, n, &err) == AG_OK) len[s] = n;
            break;
        }
        case 2: ag_kv_prefix_publish(kv, s, prompts[which[s]], len[s], 1); break;
        default:
            kv->ops->seq_clear(kv, s);
            len[s] = 0;
        }
        ag_kv_stats st;
        ag_kv_paged_stats(kv, &st);
        assert_int_equal(st.used + st.cached + st.free, BLOCKS);
    }
    for (int s = 0; s < SEQS; s++) kv->ops->seq_clear(kv, s);
    ag_kv_stats st;
    ag_kv_paged_stats(kv, &st);
    assert_int_equal(st.used, 0);
    assert_true(st.prefix_hit_tokens > 0);
    ag_kv_destroy(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paged_equals_simple),
        cmocka_unit_test(test_prefix_attach_gives_same_logits),
        cmocka_unit_test(test_prefix_rules),
        cmocka_unit_test(test_random_workload_accounting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
