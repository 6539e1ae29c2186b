/*
 * sampler.c - see sampler.h.
 */
#include "engine/sampler.h"

#include "base/alloc.h"
#include "engine/kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    float logit;
    int32_t id;
} cand;

struct ag_sampler {
    ag_sampler_params p;
    ag_logit_bias *bias;
    int32_t n_vocab;
    cand *c;          /* [n_vocab] */
    float *w;         /* [n_vocab]: the candidates' weights exp(logit - max), in c's order */
    const ag_kernels *k;
    int32_t *hist;    /* every accepted token */
    size_t n_hist, cap_hist;
    int32_t *counts;  /* scratch for the penalty window */
    size_t cap_counts;
    uint64_t rng;
};

ag_sampler_params ag_sampler_params_default(void) {
    return (ag_sampler_params){.temperature = 1.0f,
                               .top_p = 1.0f,
                               .repetition_penalty = 1.0f,
                               .penalty_last_n = 64,
                               .seed = 0x5eed};
}

ag_status ag_sampler_create(const ag_sampler_params *p, int32_t n_vocab, ag_sampler **out, ag_err *err) {
    *out = NULL;
    const char *bad = !(p->temperature >= 0 && p->temperature <= 100)              ? "temperature (0..100)"
                      : p->top_k < 0                                              ? "top_k (>= 0)"
                      : !(p->top_p > 0 && p->top_p <= 1)                          ? "top_p (0 < p <= 1)"
                      : !(p->min_p >= 0 && p->min_p <= 1)                         ? "min_p (0..1)"
                      : !(p->repetition_penalty > 0 && p->repetition_penalty <= 100) ? "repetition_penalty (> 0)"
                      : !(fabsf(p->frequency_penalty) <= 2)                       ? "frequency_penalty (-2..2)"
                      : !(fabsf(p->presence_penalty) <= 2)                        ? "presence_penalty (-2..2)"
                      : p->penalty_last_n < -1                                    ? "penalty_last_n (>= -1)"
                      : n_vocab < 1                                               ? "vocabulary size"
                                                                                  : NULL;
    if (bad) return ag_err_set(err, AG_EINVAL, "sampling parameter out of range: %s", bad);
    for (size_t i = 0; i < p->n_logit_bias; i++)
        if (p->logit_bias[i].token < 0 || p->logit_bias[i].token >= n_vocab || isnan(p->logit_bias[i].bias))
            return ag_err_set(err, AG_EINVAL, "logit_bias: token %d is not in the vocabulary or its bias is NaN",
                              p->logit_bias[i].token);
    ag_sampler *s = ag_xcalloc(1, sizeof *s);
    s->c = ag_try_malloc((size_t)n_vocab * sizeof *s->c);
    s->w = ag_try_malloc((size_t)n_vocab * sizeof *s->w);
    if (!s->c || !s->w) {
        free(s->c);
        free(s->w);
        free(s);
        return ag_err_set(err, AG_NOMEM, "no memory for a sampler over %d tokens", n_vocab);
    }
    s->p = *p;
    s->k = ag_kernels_get();
    s->n_vocab = n_vocab;
    if (p->n_logit_bias) {
        s->bias = ag_xmalloc(p->n_logit_bias * sizeof *s->bias);
        memcpy(s->bias, p->logit_bias, p->n_logit_bias * sizeof *s->bias);
    }
    s->p.logit_bias = s->bias;
    s->rng = p->seed;
    *out = s;
    return AG_OK;
}

void ag_sampler_free(ag_sampler *s) {
    if (!s) return;
    free(s->c);
    free(s->w);
    free(s->bias);
    free(s->hist);
    free(s->counts);
    free(s);
}

void ag_sampler_accept(ag_sampler *s, int32_t token) {
    if (s->n_hist == s->cap_hist) {
        s->cap_hist = s->cap_hist ? 2 * s->cap_hist : 256;
        s->hist = ag_xrealloc(s->hist, s->cap_hist * sizeof *s->hist);
    }
    s->hist[s->n_hist++] = token;
}

/* splitmix64: a full-period stream from any seed; 24 random bits as a float in [0, 1). */
static float next_uniform(ag_sampler *s) {
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * 0x1p-24f;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static bool penalties_off(const ag_sampler_params *p) {
    return p->repetition_penalty == 1.0f && p->frequency_penalty == 0 && p->presence_penalty == 0;
}

static void apply_penalties(ag_sampler *s) {
    const ag_sampler_params *p = &s->p;
    if (penalties_off(p)) return;
    size_t n = p->penalty_last_n < 0 ? s->n_hist : (size_t)p->penalty_last_n;
    if (n > s->n_hist) n = s->n_hist;
    if (n == 0) return;
    if (n > s->cap_counts) {
        s->counts = ag_xrealloc(s->counts, n * sizeof *s->counts);
        s->cap_counts = n;
    }
    memcpy(s->counts, s->hist + s->n_hist - n, n * sizeof *s->counts);
    qsort(s->counts, n, sizeof *s->counts, cmp_i32);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s->counts[j] == s->counts[i]) j++;
        int32_t id = s->counts[i];
        if (id >= 0 && id < s->n_vocab) {
            float *l = &s->c[id].logit;
            if (p->repetition_penalty != 1.0f) *l = *l > 0 ? *l / p->repetition_penalty : *l * p->repetition_penalty;
            *l -= (float)(j - i) * p->frequency_penalty + p->presence_penalty;
        }
        i = j;
    }
}

/* Descending by logit, ties by id, so the order (and the draw) never depends on the sort's internals. */
static int cand_before(const cand *a, const cand *b) { return a->logit > b->logit || (a->logit == b->logit && a->id < b->id); }
static int cmp_cand(const void *a, const void *b) {
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

/* Sift c[i] down a heap of n whose root is the worst candidate. */
static void sift_down(cand *c, size_t n, size_t i) {
    for (;;) {
        size_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && cand_before(&c[w], &c[l])) w = l;
        if (r < n && cand_before(&c[w], &c[r])) w = r;
        if (w == i) return;
        cand t = c[i];
        c[i] = c[w];
        c[w] = t;
        i = w;
    }
}

/* Put the k best of c[0..n) at the front, best first: a k-heap over the rest, O(n log k). */
static void top_sorted(cand *c, size_t n, size_t k) {
    for (size_t i = k / 2; i-- > 0;) sift_down(c, k, i);
    for (size_t i = k; i < n; i++)
        if (cand_before(&c[i], &c[0])) {
            cand t = c[0];
            c[0] = c[i];
            c[i] = t;
            sift_down(c, k, 0);
        }
    qsort(c, k, sizeof *c, cmp_cand);
}

/*
 * NAME(v, n): the largest of AT(v, 0..n-1), floats: eight independent
 * maxima, as one chain waits out each compare's latency (a NaN is passed
 * over, as by fmaxf).
 */
#define MAX_OF(NAME, T, AT)                                                                                            \
    static float NAME(const T *v, size_t n) {                                                                          \
        float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};         \
        size_t i = 0;                                                                                                  \
        for (; i + 8 <= n; i += 8)                                                                                     \
            for (int j = 0; j < 8; j++) m[j] = AT(v, i + j) > m[j] ? AT(v, i + j) : m[j];                              \
        for (; i < n; i++) m[0] = AT(v, i) > m[0] ? AT(v, i) : m[0];                                                   \
        for (int j = 1; j < 8; j++) m[0] = m[j] > m[0] ? m[j] : m[0];                                                  \
        return m[0];                                                                                                   \
    }
#define CAND_LOGIT(v, i) (v)[i].logit
#define FLOAT_AT(v, i) (v)[i]
MAX_OF(max_logit, cand, CAND_LOGIT)
MAX_OF(max_float, float, FLOAT_AT)

/*
 * Greedy with nothing added to the logits: the index the candidates' scan
 * below returns (the first of the largest; a NaN first logit wins, a later
 * NaN never does), without copying the vocabulary into candidates: a draw
 * over 32,000 logits 42 -> 5-9 us (bench_sampler).
 */
static int32_t argmax_logits(const float *l, size_t n) {
    if (l[0] != l[0]) return 0;
    const float mx = max_float(l, n);
    size_t i = 0;
    while (l[i] != mx) i++;
    return (int32_t)i;
}

/*
 * w[i] = exp(c[i].logit - mx) for the first n candidates, returning their sum:
 * the kernels' vector exp (within 2 ulp of expf) over the whole vocabulary at
 * once.  libm's double exp, twice over the vocabulary, runs serial on the
 * scheduler's thread while the pool's threads wait: it cost 16 streams through
 * the API a sixth of their tokens/s (docs/bench/batching.md).
 */
static float weigh(ag_sampler *s, size_t n, float mx) {
    for (size_t i = 0; i < n; i++) s->w[i] = s->c[i].logit;
    return s->k->softmax_exp(s->w, (int)n, mx);
}

/*
 * top_p's cut: move the smallest head of c (in cand_before's order) whose
 * weights w (weigh's, in c's order) add up to `target` to the front, and
 * return its size.  Tokens go into bins by how far their logit lies below
 * the max, TOP_P_PER_UNIT bins a unit (a token more than TOP_P_BINS of them
 * down weighs under e^-32 of the best and shares the last bin); the bins'
 * masses, added from the top, find the bin where the head ends, and only
 * that bin is sorted: the bins above it are in the head in any order.
 * Sorting ever larger heads instead took 5 ms a draw when the head was most
 * of a 32,000-token vocabulary (bench_sampler).
 */
enum { TOP_P_BINS = 1024, TOP_P_PER_UNIT = 32 };

static int top_p_bin(float logit, float mx) {
    const float d = (mx - logit) * TOP_P_PER_UNIT;
    return d < TOP_P_BINS - 1 ? (int)d : TOP_P_BINS - 1; /* -inf and NaN fall in the last */
}

static size_t top_p_head(ag_sampler *s, size_t n, float mx, double target) {
    cand *c = s->c;
    double mass[TOP_P_BINS] = {0};
    for (size_t i = 0; i < n; i++) mass[top_p_bin(c[i].logit, mx)] += s->w[i];
    double cum = 0;
    int edge = 0;
    for (; edge < TOP_P_BINS - 1 && cum + mass[edge] < target; edge++) cum += mass[edge];
    size_t above = 0, in_edge;
    for (size_t i = 0; i < n; i++)
        if (top_p_bin(c[i].logit, mx) < edge) {
            cand t = c[above];
            c[above++] = c[i], c[i] = t;
        }
    in_edge = above;
    for (size_t i = above; i < n; i++)
        if (top_p_bin(c[i].logit, mx) == edge) {
            cand t = c[in_edge];
            c[in_edge++] = c[i], c[i] = t;
        }
    qsort(c + above, in_edge - above, sizeof *c, cmp_cand);
    size_t keep = above;
    while (keep < in_edge && cum < target) cum += exp((double)(c[keep++].logit - mx));
    return keep ? keep : 1;
}

int32_t ag_sampler_sample(ag_sampler *s, const float *logits) {
    const ag_sampler_params *p = &s->p;
    cand *c = s->c;
    size_t n = (size_t)s->n_vocab;
    if (p->temperature == 0 && p->n_logit_bias == 0 && penalties_off(p)) return argmax_logits(logits, n);
    for (size_t i = 0; i < n; i++) c[i] = (cand){logits[i], (int32_t)i};
    for (size_t i = 0; i < p->n_logit_bias; i++) c[p->logit_bias[i].token].logit += p->logit_bias[i].bias;
    apply_penalties(s);
    if (p->temperature == 0) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (c[i].logit > c[best].logit) best = i;
        return c[best].id;
    }
    for (size_t i = 0; i < n; i++) c[i].logit /= p->temperature;
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        top_sorted(c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
    }
    float mx = max_logit(c, n);
    if (mx == -INFINITY) return c[0].id; /* everything banned: nothing better to do */
    if (p->top_p < 1.0f) n = top_p_head(s, n, mx, p->top_p * weigh(s, n, mx));
    if (p->min_p > 0) {
        float cut = mx + logf(p->min_p);
        size_t kept = 0;
        for (size_t i = 0; i < n; i++)
            if (c[i].logit >= cut) c[kept++] = c[i];
        n = kept;
    }
    double u = (double)next_uniform(s) * weigh(s, n, mx), acc = 0; /* a double sum costs a float's latency */
    size_t last = 0;
    for (size_t i = 0; i < n; i++) {
        acc += s->w[i];
        if (u < acc) return c[i].id;
        if (s->w[i] > 0) last = i;
    }
    return c[last].id; /* the running sum fell short of the lane-wise total by rounding: the last token with weight */
}

/* ---- stop strings ------------------------------------------------------- */

void ag_stop_init(ag_stop *s, const char *const *stops, size_t n_stops) {
    s->stops = stops;
    s->n_stops = n_stops;
    ag_buf_init(&s->held);
}

void ag_stop_free(ag_stop *s) { ag_buf_deinit(&s->held); }

bool ag_stop_push(ag_stop *s, const char *text, size_t len, ag_buf *out) {
    ag_buf_append(&s->held, text, len);
    const char *h = s->held.data ? s->held.data : "";
    size_t n = s->held.len, first = n;
    for (size_t i = 0; i < s->n_stops; i++) {
        size_t sl = strlen(s->stops[i]);
        if (!sl || sl > n) continue;
        for (size_t at = 0; at + sl <= n && at < first; at++)
            if (memcmp(h + at, s->stops[i], sl) == 0) {
                first = at;
                break;
            }
    }
    if (first < n) {
        ag_buf_append(out, h, first);
        ag_buf_reset(&s->held);
        return true;
    }
    /* hold back the longest tail that is a proper prefix of some stop string */
    size_t hold = 0;
    for (size_t i = 0; i < s->n_stops; i++) {
        size_t sl = strlen(s->stops[i]);
        for (size_t k = sl > n + 1 ? n : sl - 1; k > hold; k--)
            if (memcmp(h + n - k, s->stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    ag_buf_append(out, h, n - hold);
    if (hold) memmove(s->held.data, h + n - hold, hold);
    s->held.len = hold;
    return false;
}

void ag_stop_flush(ag_stop *s, ag_buf *out) {
    if (s->held.len) ag_buf_append(out, s->held.data, s->held.len);
    ag_buf_reset(&s->held);
}

/* Two passes (max, then the sum of exponentials) and a top-k kept by insertion, which rejects nearly every token with one compare. */
float ag_logprobs(const float *logits, int32_t n_vocab, int32_t token, int32_t k, int32_t *top_ids, float *top_lp) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int32_t i = 0; i < n_vocab; i++) sum += exp((double)(logits[i] - mx));
    float log_z = mx + (float)log(sum);
    int32_t n = 0;
    for (int32_t i = 0; i < n_vocab && k > 0; i++) {
        float v = logits[i];
        if (n == k && v <= top_lp[n - 1]) continue;
        int32_t j = n < k ? n++ : k - 1;
        while (j > 0 && top_lp[j - 1] < v) {
            top_lp[j] = top_lp[j - 1], top_ids[j] = top_ids[j - 1];
            j--;
        }
        top_lp[j] = v, top_ids[j] = i;
    }
    for (int32_t j = 0; j < n; j++) top_lp[j] -= log_z;
    return logits[token] - log_z;
}
