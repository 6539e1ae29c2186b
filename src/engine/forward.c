/*
 * forward.c - the batched forward pass, on one page (see model.h).
 *
 *   x = embed(tokens)
 *   per layer:  xb = rmsnorm(x) ; q,k,v = xb.Wq,Wk,Wv (+bias) ; [qk-norm] ; rope(q,k)
 *               cache <- k,v ; xb2 = attention(q, cache) ; x += xb2.Wo
 *               xb = rmsnorm(x) ; hb = silu(xb.Wgate) * xb.Wup ; x += hb.Wdown
 *   logits = rmsnorm(x).Wout   for the rows that asked
 *
 * Each step is one ag_pool_run over rows (elementwise steps), over weight
 * rows (matrix products, every thread taking all tokens against its share of
 * the rows), or over (token, head) pairs (attention).  A batch larger than
 * n_batch runs in chunks; a chunk's keys and values are in the cache before
 * the next chunk attends to them.
 */
#include "engine/model.h"

#include "base/alloc.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

typedef struct step {
    ag_model *m;
    int T;                 /* rows in this chunk */
    const int32_t *token, *pos, *seq;
    int layer;
    /* matmul: y_i = x . W_i for i < n_mats, all sharing one input */
    const ag_matrix *mats[3];
    float *ys[3];
    int n_mats;
    ag_wtype act_for;      /* the type the activation rows are prepared for: a repacked one when any is */
    const float *in;       /* matmul input [T][cols] */
    float *delta;          /* residual: x += delta, [T][n_embd] (a post-norm normalizes it in place) */
    const float *post_norm; /* glm4's sandwich norm of delta before the residual, or NULL */
    atomic_long next_chunk; /* matmul: the next chunk of weight rows to claim */
    long chunk_rows[3];     /* matmul: rows per chunk of each matrix */
    int n_runs;             /* attention: runs of rows in m->s.runs */
    /* the step's row function, for elementwise steps */
    void (*row_fn)(struct step *st, int t);
} step;

/* ---- elementwise steps: one row of the batch at a time ------------------ */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

static void run_rows(void *ctx, int ith, int nth) {
    step *st = ctx;
    long lo, hi;
    ag_pool_split(st->T, ith, nth, 1, &lo, &hi);
    for (long t = lo; t < hi; t++) st->row_fn(st, (int)t);
}

static void for_each_row(step *st, void (*fn)(step *, int)) {
    st->row_fn = fn;
    ag_pool_run(st->m->pool, run_rows, st);
}

static void row_embed(step *st, int t) {
    const ag_matrix *e = &st->m->w.tok_embd;
    ag_dtype_to_f32(e->type, (const char *)e->data + (size_t)st->token[t] * e->row_bytes,
                    st->m->s.x + (size_t)t * e->cols, (size_t)e->cols);
}

static void row_attn_norm(step *st, int t) {
    const ag_config *c = &st->m->cfg;
    size_t o = (size_t)t * c->n_embd;
    rmsnorm(st->m->s.xb + o, st->m->s.x + o, st->m->w.layers[st->layer].attn_norm, c->n_embd, c->eps);
}

static void row_ffn_norm(step *st, int t) {
    const ag_config *c = &st->m->cfg;
    size_t o = (size_t)t * c->n_embd;
    rmsnorm(st->m->s.xb + o, st->m->s.x + o, st->m->w.layers[st->layer].ffn_norm, c->n_embd, c->eps);
}

/* Row t's RoPE rotations, cos and sin per pair, computed once per chunk: every layer and head reuses them. */
static void row_rope_table(step *st, int t) {
    const ag_model *m = st->m;
    ag_rope_table(st->pos[t], m->s.inv_freq, m->cfg.n_rot, m->s.rope_cs + (size_t)t * m->cfg.n_rot);
}

/* Biases, Q/K norms and RoPE on row t's q and k, then k and v into the cache. */
static void row_qkv_post(step *st, int t) {
    ag_model *m = st->m;
    const ag_config *c = &m->cfg;
    const ag_layer_weights *lw = &m->w.layers[st->layer];
    int q_dim = c->n_head * c->head_dim, kv_dim = c->n_head_kv * c->head_dim;
    float *q = m->s.q + (size_t)t * q_dim, *k = m->s.k + (size_t)t * kv_dim, *v = m->s.v + (size_t)t * kv_dim;
    if (lw->bq) {
        for (int i = 0; i < q_dim; i++) q[i] += lw->bq[i];
        for (int i = 0; i < kv_dim; i++) k[i] += lw->bk[i], v[i] += lw->bv[i];
    }
    if (lw->q_norm) {
        for (int h = 0; h < c->n_head; h++) rmsnorm(q + h * c->head_dim, q + h * c->head_dim, lw->q_norm, c->head_dim, c->eps);
        for (int h = 0; h < c->n_head_kv; h++)
            rmsnorm(k + h * c->head_dim, k + h * c->head_dim, lw->k_norm, c->head_dim, c->eps);
    }
    const float *cs = m->s.rope_cs + (size_t)t * c->n_rot;
    ag_rope_apply(q, c->n_head, c->head_dim, c->n_rot, c->rope_neox, cs);
    ag_rope_apply(k, c->n_head_kv, c->head_dim, c->n_rot, c->rope_neox, cs);
    ag_kv_cache *kv = m->kv;
    int32_t s = st->seq[t], blk = st->pos[t] / kv->block_tokens, off = st->pos[t] % kv->block_tokens;
    char *kd = kv->ops->k_block(kv, st->layer, s, blk), *vd = kv->ops->v_block(kv, st->layer, s, blk);
    const int hd = c->head_dim;
    for (int h = 0; h < c->n_head_kv; h++) { /* head-major: head h's rows of the block are consecutive */
        const size_t at = ((size_t)h * kv->block_tokens + (size_t)off) * (size_t)hd;
        if (kv->type == AG_DTYPE_F32) {
            memcpy(kd + at * 4, k + (size_t)h * hd, (size_t)hd * 4);
            memcpy(vd + at * 4, v + (size_t)h * hd, (size_t)hd * 4);
        } else {
            m->kern->f32_to_f16(k + (size_t)h * hd, kd + at * 2, (size_t)hd);
            m->kern->f32_to_f16(v + (size_t)h * hd, vd + at * 2, (size_t)hd);
        }
    }
}

/* x += delta, after RMS-normalizing delta in place when the layer has a post-norm (glm4's sandwich). */
static void row_residual(step *st, int t) {
    int n = st->m->cfg.n_embd;
    float *x = st->m->s.x + (size_t)t * n;
    float *d = st->delta + (size_t)t * n;
    if (st->post_norm) rmsnorm(d, d, st->post_norm, n, st->m->cfg.eps);
    for (int i = 0; i < n; i++) x[i] += d[i];
}

static void row_swiglu(step *st, int t) {
    int n = st->m->cfg.n_ff;
    float *g = st->m->s.hb + (size_t)t * n, *u = st->m->s.hb2 + (size_t)t * n;
    st->m->kern->silu_mul(g, u, (size_t)n);
}

/* ---- matrix products: threads split the weight rows ------------------- */

/* Activation rows start on cache lines: a vector load that splits two lines costs two. */
static size_t act_stride(const ag_matrix *W) {
    return (ag_kern_act_row_bytes(W->wtype, (size_t)W->cols) + 63) / 64 * 64;
}

static void run_act_prepare(void *ctx, int ith, int nth) {
    step *st = ctx;
    const ag_matrix *W = st->mats[0];
    size_t cols = (size_t)W->cols, rb = act_stride(W);
    long lo, hi;
    ag_pool_split(st->T, ith, nth, 1, &lo, &hi);
    for (long t = lo; t < hi; t++)
        ag_kern_act_prepare(st->m->kern, st->act_for, st->in + t * cols, (char *)st->m->s.act + t * rb, cols);
}

/*
 * Threads claim chunks of weight rows from a shared counter instead of taking
 * fixed shares: a thread slowed by anything (a busy sibling core, a noisy
 * neighbour on a VM, its serial work) simply claims fewer chunks, so nobody
 * waits at the barrier for a straggler.
 */
static void run_matmul(void *ctx, int ith, int nth) {
    (void)ith, (void)nth;
    step *st = ctx;
    for (;;) {
        long c = atomic_fetch_add_explicit(&st->next_chunk, 1, memory_order_relaxed);
        int i = 0;
        for (; i < st->n_mats; i++) {
            long n_chunks = (st->mats[i]->rows + st->chunk_rows[i] - 1) / st->chunk_rows[i];
            if (c < n_chunks) break;
            c -= n_chunks;
        }
        if (i == st->n_mats) return;
        const ag_matrix *W = st->mats[i];
        long lo = c * st->chunk_rows[i], hi = lo + st->chunk_rows[i] < W->rows ? lo + st->chunk_rows[i] : W->rows;
        st->m->kern->matmul[W->wtype](W->data, W->stride, st->m->s.act, act_stride(W), (size_t)W->cols, (size_t)lo,
                                      (size_t)hi, (size_t)st->T, st->ys[i], (size_t)W->rows);
    }
}

/*
 * ys[i][T][rows_i] = in[T][cols] . mats[i]; the matrices share cols (q/k/v,
 * gate/up).  Those whose types read the same activation dtype share one
 * preparation and one work queue; a mixed file (Q4_K_M's Q6_K attn_v beside
 * Q4_K q and k, or a Q5_0 fallback beside K-quants) runs one product per run
 * of matching dtypes.
 */
static void matmul(step *st, const float *in, int n, const ag_matrix *const *mats, float *const *ys) {
    int nth = ag_pool_size(st->m->pool);
    for (int first = 0; first < n;) {
        ag_dtype act = ag_wtype_act(mats[first]->wtype);
        int k = 0;
        for (; first + k < n && ag_wtype_act(mats[first + k]->wtype) == act; k++) {
            const ag_matrix *M = mats[first + k];
            st->mats[k] = M, st->ys[k] = ys[first + k];
            if (k == 0 || ag_wtype_reads_sides(M->wtype)) st->act_for = M->wtype;
            /* about 8 chunks per thread, whole register tiles */
            long rows = (M->rows + 8L * nth - 1) / (8L * nth);
            st->chunk_rows[k] = (rows + 15) / 16 * 16;
        }
        st->in = in;
        st->n_mats = k;
        atomic_store_explicit(&st->next_chunk, 0, memory_order_relaxed);
        ag_pool_run(st->m->pool, run_act_prepare, st);
        ag_pool_run(st->m->pool, run_matmul, st);
        first += k;
    }
}

/* ---- attention: threads claim (query run, head) items -------------------- */

/*
 * Rows of one sequence at consecutive positions (a prompt's chunk, or one
 * decode row) form a run; each run of up to ATTN_ROWS rows and each head is
 * one work item, which walks the keys in tiles of ATTN_KEYS at fixed
 * positions (0, ATTN_KEYS, ...), flash-attention style:
 *   S = Q . K^T for the tile, a matrix product with the weights' kernels
 *       (K's rows are the "weights", read in place block by block as the
 *       cache hands them out);
 *   per row, over the keys it sees (causal): the running max m and sum l of
 *       the online softmax, P = exp(S - m), the row's output rescaled by
 *       exp(m_old - m) when the max grew;
 *   O += P . V for all the run's rows at once (the kernels' attn_pv), with
 *       the tile's V rows converted to f32 once; a run of one row (decode)
 *       reads fp16 V as it is (attn_pv_f16, the same bits), as it uses each
 *       value once;
 *   at the end O /= l.
 * Scratch is per thread and bounded by the tile, not the context: no score
 * row as long as the context.  A row's result depends only on its own
 * position and the keys, never on the run it is in (the tiles start at fixed
 * positions and the kernels are batch-invariant), so a row's logits keep
 * their bits however it is batched.
 */
enum { ATTN_ROWS = 64, ATTN_KEYS = 64 };

/* The first row of each run of st's rows, in st->m->s.runs; returns the number of runs. */
static int find_runs(step *st) {
    int n = 0;
    for (int t = 0; t < st->T; t++)
        if (t == 0 || st->seq[t] != st->seq[t - 1] || st->pos[t] != st->pos[t - 1] + 1 ||
            t - st->m->s.runs[n - 1] == ATTN_ROWS)
            st->m->s.runs[n++] = t;
    st->m->s.runs[n] = st->T;
    return n;
}

/* A thread's attention scratch: scores, the tile's values as f32, each row's running max and sum, keys seen. */
typedef struct attn_scratch {
    float *S;  /* [ATTN_ROWS][ATTN_KEYS] */
    float *V;  /* [ATTN_KEYS][head_dim] */
    float *mx; /* [ATTN_ROWS] */
    float *l;  /* [ATTN_ROWS] */
    int *n;    /* [ATTN_ROWS] keys of the tile the row sees */
} attn_scratch;

size_t ag_forward_attn_scratch_floats(int head_dim) {
    return (size_t)ATTN_ROWS * ATTN_KEYS + (size_t)ATTN_KEYS * head_dim + 3 * ATTN_ROWS; /* an int takes a float's room */
}

static attn_scratch attn_scratch_of(float *base, int head_dim) {
    attn_scratch z = {.S = base, .V = base + ATTN_ROWS * ATTN_KEYS};
    z.mx = z.V + (size_t)ATTN_KEYS * head_dim, z.l = z.mx + ATTN_ROWS, z.n = (int *)(z.l + ATTN_ROWS);
    return z;
}

/* Keys from p0 that lie in p0's cache block, up to `end`. */
static int key_part(const ag_kv_cache *kv, int p0, int end) {
    const int left = kv->block_tokens - p0 % kv->block_tokens;
    return end - p0 < left ? end - p0 : left;
}

/*
 * Where key or value p0 of row a's sequence starts for kv head kvh, in the
 * block `block_of` hands out.  A block is head-major, [n_head_kv]
 * [block_tokens][head_dim]: a head's keys in the block are one contiguous
 * run (rows head_dim elements apart), which the hardware prefetchers follow;
 * token-major rows put each head's 128 bytes a whole kv_dim row apart.
 */
static const char *cache_at(const step *st, void *(*block_of)(ag_kv_cache *, int, int32_t, int32_t), int a, int kvh,
                            int p0) {
    ag_kv_cache *kv = st->m->kv;
    const int bt = kv->block_tokens, hd = st->m->cfg.head_dim;
    const size_t el = kv->type == AG_DTYPE_F32 ? 4 : 2;
    return (const char *)block_of(kv, st->layer, st->seq[a], p0 / bt) + ((size_t)kvh * bt + (size_t)(p0 % bt)) * hd * el;
}

/* A key tile's run in one cache block: where its keys and values start, its first position and length. */
typedef struct key_run {
    const char *k, *v;
    int p0, rows;
} key_run;

/*
 * The runs of keys t0..t0+nk of row a's sequence for kv head kvh (one per
 * cache block; at most ATTN_KEYS), found once for the tile's Q.K^T and P.V,
 * and each asked for before the tile reads it.  With many sequences the
 * cache is far larger than the L3 (16 streams of 80 tokens on the 219.7M
 * model: 60 MB), so every decode step reads it from memory, and each run is
 * a new stream the hardware prefetchers only pick up after its first
 * misses: Q.K^T and P.V of a decode row waited on those loads (14% of a
 * 16-stream step in perf, most of it on the FMAs waiting for the keys).
 * Asked for together, the misses of a tile's runs overlap.
 */
static int key_tile_runs(const step *st, int a, int kvh, int t0, int nk, key_run *run) {
    ag_kv_cache *kv = st->m->kv;
    const size_t row = (size_t)st->m->cfg.head_dim * (kv->type == AG_DTYPE_F32 ? 4 : 2);
    int n = 0;
    for (int p0 = t0; p0 < t0 + nk; p0 += run[n++].rows) {
        run[n] = (key_run){cache_at(st, kv->ops->k_block, a, kvh, p0), cache_at(st, kv->ops->v_block, a, kvh, p0), p0,
                           key_part(kv, p0, t0 + nk)};
        for (size_t o = 0; o < (size_t)run[n].rows * row; o += 64)
            __builtin_prefetch(run[n].k + o), __builtin_prefetch(run[n].v + o);
    }
    return n;
}

static void attend(step *st, int a, int b, int h, const attn_scratch *z) {
    ag_model *m = st->m;
    const ag_config *c = &m->cfg;
    ag_kv_cache *kv = m->kv;
    const ag_kernels *K = m->kern;
    const int hd = c->head_dim, q_dim = c->n_head * hd, kvh = h / (c->n_head / c->n_head_kv);
    const int G = b - a, n_keys = st->pos[b - 1] + 1;
    const ag_wtype wt = kv->type == AG_DTYPE_F32 ? AG_W_F32 : AG_W_F16;
    const size_t el = kv->type == AG_DTYPE_F32 ? 4 : 2;
    const float *q = m->s.q + (size_t)a * q_dim + (size_t)h * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int i = 0; i < G; i++) {
        z->mx[i] = -INFINITY, z->l[i] = 0;
        memset(m->s.xb2 + (size_t)(a + i) * q_dim + (size_t)h * hd, 0, (size_t)hd * sizeof(float));
    }
    const bool direct = G == 1 && el == 2; /* a decode row's P . V reads the fp16 values as they are (attn_pv_f16) */
    for (int t0 = 0; t0 < n_keys; t0 += ATTN_KEYS) {
        const int nk = n_keys - t0 < ATTN_KEYS ? n_keys - t0 : ATTN_KEYS;
        key_run run[ATTN_KEYS];
        const int n_runs = key_tile_runs(st, a, kvh, t0, nk, run);
        /* S = Q . K^T and V as f32 for keys t0..t0+nk, a cache block's run at a time */
        for (int r = 0; r < n_runs; r++) {
            const key_run *u = &run[r];
            K->matmul[wt](u->k, (size_t)hd * el, q, (size_t)q_dim * 4, (size_t)hd, 0, (size_t)u->rows, (size_t)G,
                          z->S + (u->p0 - t0), ATTN_KEYS);
            if (!direct) { /* the run's values as f32 (rows head_dim apart, head-major) */
                float *vf = z->V + (size_t)(u->p0 - t0) * hd;
                if (el == 4) memcpy(vf, u->v, (size_t)u->rows * hd * sizeof(float));
                else K->f16_to_f32(u->v, vf, (size_t)u->rows * hd);
            }
        }
        for (int i = 0; i < G; i++) {
            const int n = st->pos[a + i] + 1 - t0 < nk ? st->pos[a + i] + 1 - t0 : nk; /* causal: keys up to its position */
            z->n[i] = n > 0 ? n : 0;
            if (n <= 0) continue;
            float *row = z->S + (size_t)i * ATTN_KEYS, mx = z->mx[i];
            for (int p = 0; p < n; p++) { /* fmaxf's NaN rule (keep mx), inlined: libm's is a call per key */
                row[p] *= scale;
                mx = row[p] > mx ? row[p] : mx;
            }
            const float sum = K->softmax_exp(row, n, mx);
            float *out = m->s.xb2 + (size_t)(a + i) * q_dim + (size_t)h * hd;
            if (mx > z->mx[i]) { /* the max grew: what the row holds was weighed against the old one */
                const float shrink = ag_kern_exp(z->mx[i] - mx);
                z->l[i] *= shrink;
                for (int d = 0; d < hd; d++) out[d] *= shrink;
            }
            z->mx[i] = mx, z->l[i] += sum;
        }
        float *o = m->s.xb2 + (size_t)a * q_dim + (size_t)h * hd;
        if (!direct) K->attn_pv(o, (size_t)q_dim, z->S, ATTN_KEYS, z->V, (size_t)hd, z->n, (size_t)G);
        else /* one row, the last position: it sees every key of the tile */
            for (int r = 0; r < n_runs; r++)
                K->attn_pv_f16(o, z->S + (run[r].p0 - t0), run[r].v, (size_t)hd * 2, (size_t)hd, run[r].rows);
    }
    for (int i = 0; i < G; i++) {
        float *out = m->s.xb2 + (size_t)(a + i) * q_dim + (size_t)h * hd;
        const float inv = 1.0f / z->l[i];
        for (int d = 0; d < hd; d++) out[d] *= inv;
    }
}

static void run_attention(void *ctx, int ith, int nth) {
    (void)nth;
    step *st = ctx;
    ag_model *m = st->m;
    const int n_head = m->cfg.n_head;
    const attn_scratch z = attn_scratch_of(m->s.att + (size_t)ith * m->s.att_per_thread, m->cfg.head_dim);
    for (;;) {
        long item = atomic_fetch_add_explicit(&st->next_chunk, 1, memory_order_relaxed);
        if (item >= (long)st->n_runs * n_head) return;
        int r = (int)(item / n_head), h = (int)(item % n_head);
        attend(st, m->s.runs[r], m->s.runs[r + 1], h, &z);
    }
}

/* ---- the pass ------------------------------------------------------------ */

static void layer_forward(step *st) {
    ag_model *m = st->m;
    ag_run_state *s = &m->s;
    const ag_layer_weights *lw = &m->w.layers[st->layer];
    for_each_row(st, row_attn_norm);
    matmul(st, s->xb, 3, (const ag_matrix *[]){&lw->wq, &lw->wk, &lw->wv}, (float *[]){s->q, s->k, s->v});
    for_each_row(st, row_qkv_post);
    st->n_runs = find_runs(st);
    atomic_store_explicit(&st->next_chunk, 0, memory_order_relaxed);
    ag_pool_run(m->pool, run_attention, st);
    matmul(st, s->xb2, 1, (const ag_matrix *[]){&lw->wo}, (float *[]){s->xb});
    st->delta = s->xb;
    st->post_norm = lw->post_attn_norm;
    for_each_row(st, row_residual);
    for_each_row(st, row_ffn_norm);
    matmul(st, s->xb, 2, (const ag_matrix *[]){&lw->w_gate, &lw->w_up}, (float *[]){s->hb, s->hb2});
    for_each_row(st, row_swiglu);
    matmul(st, s->hb, 1, (const ag_matrix *[]){&lw->w_down}, (float *[]){s->xb});
    st->delta = s->xb;
    st->post_norm = lw->post_ffn_norm;
    for_each_row(st, row_residual);
}

static ag_status check_batch(ag_model *m, const ag_batch *b, ag_err *err) {
    if (b->n < 0) return ag_err_set(err, AG_EINVAL, "batch has %d rows", b->n);
    for (int i = 0; i < b->n; i++) {
        int32_t seq = b->seq ? b->seq[i] : 0;
        if (b->token[i] < 0 || b->token[i] >= m->cfg.n_vocab)
            return ag_err_set(err, AG_EINVAL, "row %d: token %d is outside the vocabulary (0..%d)", i, b->token[i],
                              m->cfg.n_vocab - 1);
        if (b->pos[i] < 0) return ag_err_set(err, AG_EINVAL, "row %d: negative position %d", i, b->pos[i]);
        ag_status rc = m->kv->ops->reserve(m->kv, seq, b->pos[i] + 1, err);
        if (rc != AG_OK) return rc;
    }
    return AG_OK;
}

ag_status ag_forward(ag_model *m, const ag_batch *b, ag_err *err) {
    m->n_logits = 0;
    ag_status rc = check_batch(m, b, err);
    if (rc != AG_OK) return rc;
    size_t want = 0;
    for (int i = 0; i < b->n; i++) want += b->logits ? b->logits[i] : i == b->n - 1;
    if (want > m->s.logits_cap) {
        float *l = ag_try_realloc(m->s.logits, want * (size_t)m->cfg.n_vocab * sizeof(float));
        if (!l) return ag_err_set(err, AG_NOMEM, "no memory for %zu rows of logits", want);
        m->s.logits = l;
        m->s.logits_cap = want;
    }
    const int n_embd = m->cfg.n_embd;
    for (int r0 = 0; r0 < b->n; r0 += m->n_batch) {
        int T = b->n - r0 < m->n_batch ? b->n - r0 : m->n_batch;
        step st = {.m = m, .T = T, .token = b->token + r0, .pos = b->pos + r0, .seq = b->seq ? b->seq + r0 : m->s.seq_zero};
        for_each_row(&st, row_embed);
        for_each_row(&st, row_rope_table);
        for (st.layer = 0; st.layer < m->cfg.n_layer; st.layer++) layer_forward(&st);
        /* gather the rows that want logits into xb, normalized, then one product with the head */
        int n_out = 0;
        for (int t = 0; t < T; t++) {
            int i = r0 + t;
            if (b->logits ? !b->logits[i] : i != b->n - 1) continue;
            rmsnorm(m->s.xb + (size_t)n_out * n_embd, m->s.x + (size_t)t * n_embd, m->w.output_norm, n_embd,
                    m->cfg.eps);
            n_out++;
        }
        if (n_out) {
            st.T = n_out;
            matmul(&st, m->s.xb, 1, (const ag_matrix *[]){&m->w.output},
                   (float *[]){m->s.logits + m->n_logits * (size_t)m->cfg.n_vocab});
            m->n_logits += (size_t)n_out;
        }
    }
    return AG_OK;
}
