/* Tests for src/engine/sampler.c: each stage of the sampling chain, seeded determinism, and stop strings. */
#include "test.h"

#include "engine/sampler.h"

#include <math.h>
#include <string.h>

static ag_sampler *make(ag_sampler_params p, int32_t n_vocab) {
    ag_sampler *s = NULL;
    ag_err err;
    if (ag_sampler_create(&p, n_vocab, &s, &err) != AG_OK) fail_msg("%s", err.msg);
    return s;
}

static ag_sampler_params params(float temp) {
    ag_sampler_params p = ag_sampler_params_default();
    p.temperature = temp;
    return p;
}

static const float logits5[5] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f};

static void test_greedy_and_degenerate_cutoffs(void **state) {
    (void)state;
    ag_sampler *s = make(params(0), 5);
    assert_int_equal(ag_sampler_sample(s, logits5), 1);
    ag_sampler_free(s);
    /* top_k 1, a tiny top_p and min_p 1 each leave only the best token */
    ag_sampler_params p = params(1.5f);
    p.top_k = 1;
    s = make(p, 5);
    for (int i = 0; i < 50; i++) assert_int_equal(ag_sampler_sample(s, logits5), 1);
    ag_sampler_free(s);
    p = params(1.5f), p.top_p = 1e-6f;
    s = make(p, 5);
    for (int i = 0; i < 50; i++) assert_int_equal(ag_sampler_sample(s, logits5), 1);
    ag_sampler_free(s);
    p = params(1.5f), p.min_p = 1.0f;
    s = make(p, 5);
    for (int i = 0; i < 50; i++) assert_int_equal(ag_sampler_sample(s, logits5), 1);
    ag_sampler_free(s);
}

/*
 * Greedy with no bias or penalty skips the candidates (argmax over the
 * logits); it picks what the candidates' scan picks: the first of tied
 * maxima, a NaN first logit, never a later NaN, signed zeros as equal, -inf
 * everywhere.  A zero logit bias forces the scan, the reference here.
 */
static void test_greedy_argmax_matches_scan(void **state) {
    (void)state;
    enum { N = 21 }; /* past the eight chains and a tail */
    const float nan = NAN, inf = INFINITY;
    static const float cases[][N] = {
        {1, 3, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3},
        {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5},
        {-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf,
         -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf},
    };
    float l[N];
    ag_logit_bias zero = {0, 0.0f};
    ag_sampler_params pb = params(0);
    pb.logit_bias = &zero, pb.n_logit_bias = 1;
    ag_sampler *fast = make(params(0), N), *scan = make(pb, N);
    for (int k = 0; k < 3 + 4; k++) {
        if (k < 3) memcpy(l, cases[k], sizeof l);
        else {
            for (int i = 0; i < N; i++) l[i] = (float)((i * 7) % 5) - 2;
            if (k == 3) l[0] = nan;                /* a NaN first wins */
            if (k == 4) l[9] = nan, l[17] = 2;     /* a later NaN never does; 2 ties with index 3 */
            if (k == 5) l[2] = -0.0f, l[20] = 0.0f; /* zeros of both signs, not the max */
            if (k == 6) {
                for (int i = 0; i < N; i++) l[i] = -1;
                l[6] = -0.0f, l[13] = 0.0f; /* -0 first: equal to +0 */
            }
        }
        const int32_t want = ag_sampler_sample(scan, l), got = ag_sampler_sample(fast, l);
        if (got != want) fail_msg("case %d: argmax %d, the scan %d", k, got, want);
    }
    assert_int_equal(ag_sampler_sample(fast, cases[0]), 1);
    ag_sampler_free(fast), ag_sampler_free(scan);
}

/* Draw frequencies follow softmax(logits / T), within 5 standard deviations. */
static void test_distribution(void **state) {
    (void)state;
    const float T = 0.7f;
    ag_sampler *s = make(params(T), 5);
    enum { N = 40000 };
    int count[5] = {0};
    for (int i = 0; i < N; i++) count[ag_sampler_sample(s, logits5)]++;
    double z = 0;
    for (int i = 0; i < 5; i++) z += exp(logits5[i] / T);
    for (int i = 0; i < 5; i++) {
        double p = exp(logits5[i] / T) / z, sd = sqrt(N * p * (1 - p));
        if (fabs(count[i] - N * p) > 5 * sd + 1) fail_msg("token %d: %d draws, expected %.0f", i, count[i], N * p);
    }
    ag_sampler_free(s);
}

/* top_p keeps the smallest head holding p of the mass; top_k the k best; over a large vocabulary too. */
static void test_top_p_and_top_k_sets(void **state) {
    (void)state;
    enum { V = 5000 };
    static float l[V];
    for (int i = 0; i < V; i++) l[i] = -0.001f * (float)i; /* nearly flat: the head has to grow */
    ag_sampler_params p = params(1.0f);
    p.top_p = 0.5f;
    ag_sampler *s = make(p, V);
    /* mass of the first k tokens ~ k / V for a flat distribution: 0.5 needs about 2300 of 5000 */
    int max_seen = 0;
    for (int i = 0; i < 3000; i++) {
        int t = ag_sampler_sample(s, l);
        if (t > max_seen) max_seen = t;
    }
    double z = 0, cum = 0;
    for (int i = 0; i < V; i++) z += exp(l[i]);
    int cut = 0;
    while (cum < 0.5 * z) cum += exp(l[cut++]);
    assert_true(max_seen < cut && max_seen > cut - 200);
    ag_sampler_free(s);
    p = params(1.0f), p.top_k = 3;
    s = make(p, 5);
    for (int i = 0; i < 500; i++) {
        int t = ag_sampler_sample(s, logits5);
        assert_true(t == 0 || t == 1 || t == 2);
    }
    ag_sampler_free(s);
}

/*
 * top_p's head ends inside a run of equal logits: the ids 4k at 0 and 4k + 1
 * at -0.01 (one bin of top_p_head) for k < 100, interleaved with the rest far
 * below, so moving the head to the front scrambles its order.  0.75 of the
 * mass is the 100 first and 50 of the second run, ties going by id: 1, 5, ...,
 * 197.  Draws come from those alone and reach id 197 (each of the 150 is
 * about 1 in 150, so 5000 draws miss it with odds e^-33).
 */
static void test_top_p_cut_inside_ties(void **state) {
    (void)state;
    enum { V = 2000 };
    static float l[V];
    for (int i = 0; i < V; i++) l[i] = i >= 400 || i % 4 > 1 ? -50.0f : i % 4 == 0 ? 0.0f : -0.01f;
    ag_sampler_params p = params(1.0f);
    p.top_p = 0.75f;
    ag_sampler *s = make(p, V);
    int max_second = -1;
    for (int i = 0; i < 5000; i++) {
        int t = ag_sampler_sample(s, l);
        if (t >= 400 || t % 4 > 1) fail_msg("drew %d, outside the head", t);
        if (t % 4 == 1) max_second = t > max_second ? t : max_second;
    }
    assert_int_equal(max_second, 197);
    ag_sampler_free(s);
}

static void test_seed_determinism(void **state) {
    (void)state;
    ag_sampler_params p = params(1.0f);
    p.seed = 1234;
    ag_sampler *a = make(p, 5), *b = make(p, 5);
    p.seed = 1235;
    ag_sampler *c = make(p, 5);
    int differ = 0;
    for (int i = 0; i < 200; i++) {
        int x = ag_sampler_sample(a, logits5), y = ag_sampler_sample(b, logits5), z = ag_sampler_sample(c, logits5);
        assert_int_equal(x, y);
        differ += x != z;
    }
    assert_true(differ > 0);
    ag_sampler_free(a), ag_sampler_free(b), ag_sampler_free(c);
}

static void test_bias_and_penalties(void **state) {
    (void)state;
    ag_logit_bias ban = {1, -INFINITY};
    ag_sampler_params p = params(0);
    p.logit_bias = &ban;
    p.n_logit_bias = 1;
    ag_sampler *s = make(p, 5);
    assert_int_equal(ag_sampler_sample(s, logits5), 2);
    ag_sampler_free(s);
    /* repetition: 3 / 1.5 = 2 < 2.5 */
    p = params(0), p.repetition_penalty = 1.5f;
    s = make(p, 5);
    ag_sampler_accept(s, 1);
    assert_int_equal(ag_sampler_sample(s, logits5), 2);
    ag_sampler_free(s);
    /* frequency: 3 - 2 * 0.3 = 2.4 < 2.5; once only: 2.7 > 2.5 */
    p = params(0), p.frequency_penalty = 0.3f;
    s = make(p, 5);
    ag_sampler_accept(s, 1);
    assert_int_equal(ag_sampler_sample(s, logits5), 1);
    ag_sampler_accept(s, 1);
    assert_int_equal(ag_sampler_sample(s, logits5), 2);
    ag_sampler_free(s);
    /* presence counts once; a window of 1 forgets older tokens */
    p = params(0), p.presence_penalty = 0.6f, p.penalty_last_n = 1;
    s = make(p, 5);
    ag_sampler_accept(s, 1);
    assert_int_equal(ag_sampler_sample(s, logits5), 2);
    ag_sampler_accept(s, 4);
    assert_int_equal(ag_sampler_sample(s, logits5), 1);
    ag_sampler_free(s);
}

static void test_bad_params_refused(void **state) {
    (void)state;
    ag_sampler *s = NULL;
    ag_err err;
    ag_sampler_params p = params(-1);
    assert_int_equal(ag_sampler_create(&p, 5, &s, &err), AG_EINVAL);
    assert_non_null(strstr(err.msg, "temperature"));
    p = params(1), p.top_p = 0;
    assert_int_equal(ag_sampler_create(&p, 5, &s, &err), AG_EINVAL);
    p = params(1), p.top_p = NAN;
    assert_int_equal(ag_sampler_create(&p, 5, &s, &err), AG_EINVAL);
    ag_logit_bias b = {5, 1};
    p = params(1), p.logit_bias = &b, p.n_logit_bias = 1;
    assert_int_equal(ag_sampler_create(&p, 5, &s, &err), AG_EINVAL);
    assert_null(s);
}

/* Feed pieces; return what came out (and whether it stopped). */
static bool feed(ag_stop *st, const char *const *pieces, ag_buf *out) {
    for (size_t i = 0; pieces[i]; i++)
        if (ag_stop_push(st, pieces[i], strlen(pieces[i]), out)) return true;
    ag_stop_flush(st, out);
    return false;
}

static void test_stop_strings_across_tokens(void **state) {
    (void)state;
    const char *stops[] = {"</s>", "\n\nUser:"};
    ag_buf out;
    ag_buf_init(&out);
    ag_stop st;
    ag_stop_init(&st, stops, 2);
    assert_true(feed(&st, (const char *[]){"Hello", " wor", "ld<", "/", "s>tail", NULL}, &out));
    assert_int_equal(out.len, strlen("Hello world"));
    assert_memory_equal(out.data, "Hello world", out.len);
    ag_stop_free(&st);

    /* a held prefix that turns out not to be a stop comes out in full, in order */
    ag_buf_reset(&out);
    ag_stop_init(&st, stops, 2);
    ag_buf step;
    ag_buf_init(&step);
    assert_false(ag_stop_push(&st, "a\n\nUs", 5, &step));
    assert_int_equal(step.len, 1); /* "\n\nUs" is held */
    assert_false(ag_stop_push(&st, "age", 3, &step));
    ag_stop_flush(&st, &step);
    assert_int_equal(step.len, 8);
    assert_memory_equal(step.data, "a\n\nUsage", 8);
    ag_buf_deinit(&step);
    ag_stop_free(&st);

    /* no stops: everything passes straight through */
    ag_buf_reset(&out);
    ag_stop_init(&st, NULL, 0);
    assert_false(feed(&st, (const char *[]){"x", "</s>", NULL}, &out));
    assert_int_equal(out.len, 5);
    ag_stop_free(&st);
    ag_buf_deinit(&out);
}

/* Log-probabilities against log(softmax) in double, and the top list against a full sort. */
static void test_logprobs(void **state) {
    (void)state;
    uint64_t seed = 5;
    enum { V = 1000 };
    static float logits[V];
    for (int iter = 0; iter < 20; iter++) {
        for (int i = 0; i < V; i++) logits[i] = (float)(ag_test_rand(&seed) % 20000) / 1000.0f - 10.0f;
        logits[iter] = logits[iter + 1]; /* a tie */
        double z = 0;
        for (int i = 0; i < V; i++) z += exp((double)logits[i]);
        int32_t ids[AG_MAX_TOP_LOGPROBS];
        float lp[AG_MAX_TOP_LOGPROBS];
        int32_t k = iter % (AG_MAX_TOP_LOGPROBS + 1), tok = (int32_t)(ag_test_rand(&seed) % V);
        float got = ag_logprobs(logits, V, tok, k, ids, lp);
        assert_float_equal(got, (double)logits[tok] - log(z), 1e-4);
        for (int32_t j = 0; j < k; j++) {
            assert_float_equal(lp[j], (double)logits[ids[j]] - log(z), 1e-4);
            if (j) assert_true(lp[j - 1] >= lp[j]);
            int above = 0; /* exactly j tokens are strictly more likely than the j-th */
            for (int i = 0; i < V; i++) above += logits[i] > logits[ids[j]];
            assert_true(above <= j);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_degenerate_cutoffs), cmocka_unit_test(test_greedy_argmax_matches_scan),
        cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_top_p_and_top_k_sets),          cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_top_p_cut_inside_ties),
        cmocka_unit_test(test_bias_and_penalties),            cmocka_unit_test(test_bad_params_refused),
        cmocka_unit_test(test_stop_strings_across_tokens),    cmocka_unit_test(test_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
