/*
 * Tests for the engine's forward pass (src/engine/model.c, forward.c): each
 * architecture's fixture against a plainly written double-precision
 * reference in this file, batches against sequences run alone, greedy decode
 * against the reference's argmax, and load-time refusals.
 *
 * The reference shares nothing with the engine but the GGUF reader and the
 * dtype decoders: it reads its own hyperparameters, dequantizes every weight
 * to float and computes in double, one sequence at a time, the textbook way.
 */
#include "test.h"

#include "engine/model.h"
#include "engine/sampler.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define FIXTURES AG_SOURCE_DIR "/build/fixtures/"
#ifdef AG_TEST_SANITIZED
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

/* ---- the reference ------------------------------------------------------ */

typedef struct ref_layer {
    float *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down, *bq, *bk, *bv, *q_norm, *k_norm;
    float *post_attn_norm, *post_ffn_norm; /* glm4's sandwich */
    float *fused_up;                       /* GLM: ffn_up holds gate rows then up rows; w_gate/w_up point into it */
} ref_layer;

typedef struct ref_model {
    int E, L, F, H, HKV, D, V, rot;
    double base, eps;
    bool neox;
    float *emb, *out, *out_norm, *freq_factors;
    ref_layer *layers;
} ref_model;

static float *tensor_f32(ag_gguf_file *f, const char *name, int layer) {
    char full[96];
    if (layer >= 0) snprintf(full, sizeof full, "blk.%d.%s", layer, name);
    else snprintf(full, sizeof full, "%s", name);
    const ag_gguf_tensor *t = ag_gguf_find_tensor(f, full);
    if (!t) return NULL;
    size_t n = (size_t)t->ne[0] * t->ne[1];
    float *x = malloc(n * sizeof(float));
    ag_dtype_to_f32(t->type, t->data, x, n);
    return x;
}

static int u32_key(ag_gguf_file *f, const char *arch, const char *k, int dflt) {
    char key[96];
    uint32_t v;
    snprintf(key, sizeof key, "%s.%s", arch, k);
    return ag_gguf_get_u32(f, key, &v) ? (int)v : dflt;
}

static void ref_load(const char *path, ref_model *R) {
    ag_gguf_file *f = NULL;
    ag_err err;
    if (ag_gguf_open(path, &f, &err) != AG_OK) fail_msg("%s: %s (make test builds it)", path, err.msg);
    ag_str a;
    assert_true(ag_gguf_get_str(f, "general.architecture", &a));
    char arch[16];
    snprintf(arch, sizeof arch, "%.*s", (int)a.n, a.p);
    memset(R, 0, sizeof *R);
    R->E = u32_key(f, arch, "embedding_length", 0);
    R->L = u32_key(f, arch, "block_count", 0);
    R->F = u32_key(f, arch, "feed_forward_length", 0);
    R->H = u32_key(f, arch, "attention.head_count", 0);
    R->HKV = u32_key(f, arch, "attention.head_count_kv", R->H);
    R->D = u32_key(f, arch, "attention.key_length", R->E / R->H);
    R->rot = u32_key(f, arch, "rope.dimension_count", R->D);
    char key[96];
    float v;
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    R->base = ag_gguf_get_f32(f, key, &v) ? v : 10000.0;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    R->eps = ag_gguf_get_f32(f, key, &v) ? v : 1e-5;
    bool glm = strcmp(arch, "glm4") == 0 || strcmp(arch, "chatglm") == 0;
    R->neox = strcmp(arch, "llama") != 0 && !glm; /* GLM rotates adjacent pairs, unpermuted */
    R->V = (int)ag_gguf_find_tensor(f, "token_embd.weight")->ne[1];
    R->emb = tensor_f32(f, "token_embd.weight", -1);
    R->out = tensor_f32(f, "output.weight", -1);
    R->out_norm = tensor_f32(f, "output_norm.weight", -1);
    R->freq_factors = tensor_f32(f, "rope_freqs.weight", -1);
    R->layers = calloc((size_t)R->L, sizeof *R->layers);
    for (int l = 0; l < R->L; l++) {
        ref_layer *y = &R->layers[l];
        y->attn_norm = tensor_f32(f, "attn_norm.weight", l), y->ffn_norm = tensor_f32(f, "ffn_norm.weight", l);
        y->wq = tensor_f32(f, "attn_q.weight", l), y->wk = tensor_f32(f, "attn_k.weight", l);
        y->wv = tensor_f32(f, "attn_v.weight", l), y->wo = tensor_f32(f, "attn_output.weight", l);
        y->w_gate = tensor_f32(f, "ffn_gate.weight", l), y->w_up = tensor_f32(f, "ffn_up.weight", l);
        if (!y->w_gate) /* fused gate+up: the first F rows are the gate, as HF's chunk(2) reads them */
            y->fused_up = y->w_up, y->w_gate = y->fused_up, y->w_up = y->fused_up + (size_t)R->F * R->E;
        y->post_attn_norm = tensor_f32(f, "post_attention_norm.weight", l);
        y->post_ffn_norm = tensor_f32(f, "post_ffw_norm.weight", l);
        y->w_down = tensor_f32(f, "ffn_down.weight", l);
        y->bq = tensor_f32(f, "attn_q.bias", l), y->bk = tensor_f32(f, "attn_k.bias", l);
        y->bv = tensor_f32(f, "attn_v.bias", l);
        y->q_norm = tensor_f32(f, "attn_q_norm.weight", l), y->k_norm = tensor_f32(f, "attn_k_norm.weight", l);
    }
    ag_gguf_close(f);
}

static void ref_free(ref_model *R) {
    for (int l = 0; l < R->L; l++) {
        ref_layer *y = &R->layers[l];
        float *all[] = {y->attn_norm, y->ffn_norm, y->wq,     y->wk,     y->wv,     y->wo,
                        y->fused_up ? NULL : y->w_gate,     y->fused_up ? NULL : y->w_up,
                        y->w_down,    y->bq,       y->bk,  y->bv,     y->q_norm, y->k_norm,
                        y->post_attn_norm, y->post_ffn_norm, y->fused_up};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
    }
    free(R->layers), free(R->emb), free(R->out), free(R->out_norm), free(R->freq_factors);
}

/* out[rows] = W[rows][cols] . x (+ bias) */
static void mv(double *out, const float *W, const double *x, int rows, int cols, const float *bias) {
    for (int r = 0; r < rows; r++) {
        double s = bias ? bias[r] : 0;
        for (int c = 0; c < cols; c++) s += (double)W[(size_t)r * cols + c] * x[c];
        out[r] = s;
    }
}

static void rms(double *out, const double *x, const float *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double k = 1 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * k * w[i];
}

static void rotate(const ref_model *R, double *head, int pos) {
    for (int i = 0; i < R->rot / 2; i++) {
        double theta = pos * pow(R->base, -2.0 * i / R->rot) / (R->freq_factors ? R->freq_factors[i] : 1.0);
        int a = R->neox ? i : 2 * i, b = R->neox ? i + R->rot / 2 : 2 * i + 1;
        double x0 = head[a], x1 = head[b];
        head[a] = x0 * cos(theta) - x1 * sin(theta);
        head[b] = x0 * sin(theta) + x1 * cos(theta);
    }
}

/* Logits for every position of one sequence: logits[t][V]. */
static double *ref_forward(const ref_model *R, const int32_t *tok, int n) {
    const int E = R->E, D = R->D, QD = R->H * D, KD = R->HKV * D;
    double *x = calloc((size_t)n * E, sizeof(double)), *xb = malloc(sizeof(double) * (E > QD ? E : QD));
    double *q = malloc(sizeof(double) * (size_t)n * QD), *k = malloc(sizeof(double) * (size_t)n * KD);
    double *v = malloc(sizeof(double) * (size_t)n * KD), *att = malloc(sizeof(double) * (size_t)n * QD);
    double *g = malloc(sizeof(double) * R->F), *u = malloc(sizeof(double) * R->F), *o = malloc(sizeof(double) * E);
    double *p = malloc(sizeof(double) * n), *logits = malloc(sizeof(double) * (size_t)n * R->V);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < E; i++) x[(size_t)t * E + i] = R->emb[(size_t)tok[t] * E + i];
    for (int l = 0; l < R->L; l++) {
        const ref_layer *y = &R->layers[l];
        for (int t = 0; t < n; t++) {
            rms(xb, x + (size_t)t * E, y->attn_norm, E, R->eps);
            mv(q + (size_t)t * QD, y->wq, xb, QD, E, y->bq);
            mv(k + (size_t)t * KD, y->wk, xb, KD, E, y->bk);
            mv(v + (size_t)t * KD, y->wv, xb, KD, E, y->bv);
            for (int h = 0; h < R->H; h++) {
                double *qh = q + (size_t)t * QD + h * D;
                if (y->q_norm) rms(qh, qh, y->q_norm, D, R->eps);
                rotate(R, qh, t);
            }
            for (int h = 0; h < R->HKV; h++) {
                double *kh = k + (size_t)t * KD + h * D;
                if (y->k_norm) rms(kh, kh, y->k_norm, D, R->eps);
                rotate(R, kh, t);
            }
        }
        for (int t = 0; t < n; t++)
            for (int h = 0; h < R->H; h++) {
                int kvh = h / (R->H / R->HKV);
                double mx = -INFINITY, sum = 0;
                for (int s = 0; s <= t; s++) {
                    double d = 0;
                    for (int i = 0; i < D; i++) d += q[(size_t)t * QD + h * D + i] * k[(size_t)s * KD + kvh * D + i];
                    p[s] = d / sqrt((double)D);
                    mx = fmax(mx, p[s]);
                }
                for (int s = 0; s <= t; s++) sum += p[s] = exp(p[s] - mx);
                for (int i = 0; i < D; i++) {
                    double a = 0;
                    for (int s = 0; s <= t; s++) a += p[s] / sum * v[(size_t)s * KD + kvh * D + i];
                    att[(size_t)t * QD + h * D + i] = a;
                }
            }
        for (int t = 0; t < n; t++) {
            double *xt = x + (size_t)t * E;
            mv(o, y->wo, att + (size_t)t * QD, E, QD, NULL);
            if (y->post_attn_norm) rms(o, o, y->post_attn_norm, E, R->eps);
            for (int i = 0; i < E; i++) xt[i] += o[i];
            rms(xb, xt, y->ffn_norm, E, R->eps);
            mv(g, y->w_gate, xb, R->F, E, NULL);
            mv(u, y->w_up, xb, R->F, E, NULL);
            for (int i = 0; i < R->F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            mv(o, y->w_down, g, E, R->F, NULL);
            if (y->post_ffn_norm) rms(o, o, y->post_ffn_norm, E, R->eps);
            for (int i = 0; i < E; i++) xt[i] += o[i];
        }
    }
    for (int t = 0; t < n; t++) {
        rms(xb, x + (size_t)t * E, R->out_norm, E, R->eps);
        mv(logits + (size_t)t * R->V, R->out ? R->out : R->emb, xb, R->V, E, NULL);
    }
    free(x), free(xb), free(q), free(k), free(v), free(att), free(g), free(u), free(o), free(p);
    return logits;
}

/* ---- helpers ------------------------------------------------------------- */

static ag_model *load_with(const char *path, ag_dtype kv, int n_batch, int n_seq, const char *kernels) {
    ag_model_params p = ag_model_params_default();
    p.kernels = kernels;
    p.n_threads = 2;
    p.n_ctx = 64;
    p.kv_type = kv;
    p.n_batch = n_batch;
    p.n_seq = n_seq;
    ag_model *m = NULL;
    ag_err err;
    if (ag_model_load(path, &p, &m, &err) != AG_OK) fail_msg("%s: %s", path, err.msg);
    return m;
}

static ag_model *load(const char *path, ag_dtype kv, int n_batch, int n_seq) {
    return load_with(path, kv, n_batch, n_seq, NULL);
}

/* max |a - b| over max |b|: the error relative to the logits' scale; infinite when a has a NaN */
static double rel_err(const float *a, const double *b, int n) {
    double e = 0, s = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        e = fmax(e, fabs(a[i] - b[i])), s = fmax(s, fabs(b[i]));
    }
    return e / s;
}

static const int32_t prompt[] = {1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889};
enum { N_PROMPT = sizeof prompt / sizeof prompt[0] };

/* A fixture in another weight type: make fixtures (scripts/make-fixtures) quantizes each once. */
static const char *variant_path(const char *name, const char *type, char *buf, size_t cap) {
    if (strcmp(type, "f16") == 0) snprintf(buf, cap, FIXTURES "%s.gguf", name);
    else snprintf(buf, cap, FIXTURES "%s-%s.gguf", name, type);
    return buf;
}

/*
 * Max relative logit error per weight type, engine vs reference.  F16/BF16/F32
 * weights: f32 activations (bf16 for BF16) and an f16 KV cache; quantized:
 * activations are quantized to 8 bits per product, the dominant error.  The
 * fixtures' rows (64, 96, 128) are not whole 256-element super-blocks, so the
 * K-quant presets make llama-quantize's fallback mixes of them: Q4_K_M's
 * Q5_0 and Q8_0, Q2_K's IQ4_NL.  Q5_1 (Q5_K's fallback) runs the generic
 * kernel that test_kernels checks; the K-quant blocks themselves are checked
 * on the default model by test_cli and against ggml's values by test_kernels.
 */
static const struct {
    const char *type;
    double tol;
} dtype_tol[] = {{"f16", 2e-3},  {"f32", 2e-3},    {"bf16", 2e-2},
                 {"q8_0", 4e-2}, {"q4_0", 4e-2},   {"q4_k_m", 4e-2}, {"q2_k", 4e-2}};

static void check_fixture(const char *name) {
    for (size_t d = 0; d < sizeof dtype_tol / sizeof *dtype_tol; d++) {
        char path[512];
        variant_path(name, dtype_tol[d].type, path, sizeof path);
        ref_model R;
        ref_load(path, &R);
        int32_t tok[N_PROMPT];
        for (int i = 0; i < N_PROMPT; i++) tok[i] = prompt[i] % R.V;
        double *want = ref_forward(&R, tok, N_PROMPT);
        /* the best kernels for this CPU, and the scalar generic ones (not under a sanitizer: there test_kernels runs
         * every generic product, and this loop's second pass doubled the slowest unit test) */
        for (int generic = 0; generic < (SANITIZED ? 1 : 2); generic++) {
            ag_model *m = load_with(path, AG_DTYPE_F16, 512, 1, generic ? "generic" : NULL);
            int32_t pos[N_PROMPT];
            bool all[N_PROMPT];
            for (int i = 0; i < N_PROMPT; i++) pos[i] = i, all[i] = true;
            ag_err err;
            assert_int_equal(ag_forward(m, &(ag_batch){.n = N_PROMPT, .token = tok, .pos = pos, .logits = all}, &err),
                             AG_OK);
            assert_int_equal(m->n_logits, N_PROMPT);
            double worst = 0;
            for (int t = 0; t < N_PROMPT; t++)
                worst = fmax(worst, rel_err(ag_model_logits(m, t), want + (size_t)t * R.V, R.V));
            AG_TEST_NOTE("%s %s, %s kernels: max relative logit error %.2e (allowed %.0e)", name, dtype_tol[d].type,
                         m->kern->name, worst, dtype_tol[d].tol);
            if (!(worst <= dtype_tol[d].tol))
                fail_msg("%s %s %s: error %g over %g", name, dtype_tol[d].type, m->kern->name, worst, dtype_tol[d].tol);
            ag_model_free(m);
        }
        free(want);
        ref_free(&R);
    }
}

static void test_llama2_matches_reference(void **state) { (void)state, check_fixture("llama2"); }
static void test_llama3_matches_reference(void **state) { (void)state, check_fixture("llama3"); }
static void test_qwen2_matches_reference(void **state) { (void)state, check_fixture("qwen2"); }
static void test_qwen3_matches_reference(void **state) { (void)state, check_fixture("qwen3"); }
static void test_glm4_matches_reference(void **state) { (void)state, check_fixture("glm4"); }
static void test_chatglm_matches_reference(void **state) { (void)state, check_fixture("chatglm"); }

/*
 * chatglm files converted from GLM's original checkpoints hold one fused
 * attn_qkv (Q rows, then K, then V; the bias likewise).  Fusing the fixture's
 * q/k/v by concatenating their bytes (rows are whole quant blocks) must give
 * bit-identical logits for every weight type, with Q, K and V read in place
 * as row ranges of the fused tensor, not copies.
 */
static void write_fused_qkv(const char *in, const char *out) {
    ag_gguf_file *f = NULL;
    ag_err err;
    assert_int_equal(ag_gguf_open(in, &f, &err), AG_OK);
    ag_gguf_writer *w = ag_gguf_writer_create(0);
    for (size_t i = 0; i < ag_gguf_n_kv(f); i++) ag_gguf_writer_copy_kv(w, ag_gguf_kv_at(f, i));
    void *fused[64];
    size_t n_fused = 0;
    for (size_t i = 0; i < ag_gguf_n_tensors(f); i++) {
        const ag_gguf_tensor *t = ag_gguf_tensor_at(f, i);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.p);
        char *q = strstr(name, ".attn_q.");
        if (strstr(name, ".attn_k.") || strstr(name, ".attn_v.")) continue; /* folded into attn_qkv */
        if (!q) {
            assert_int_equal(ag_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data), AG_OK);
            continue;
        }
        const ag_gguf_tensor *parts[3] = {t, NULL, NULL};
        char part[128];
        for (int k = 1; k < 3; k++) {
            snprintf(part, sizeof part, "%.*s.attn_%c.%s", (int)(q - name), name, "qkv"[k], q + 8);
            parts[k] = ag_gguf_find_tensor(f, part);
            assert_non_null(parts[k]);
        }
        uint64_t ne[AG_GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        ne[t->n_dims - 1] = 0; /* rows (a bias has one dimension: its length) */
        size_t bytes = 0;
        for (int k = 0; k < 3; k++) ne[t->n_dims - 1] += parts[k]->ne[t->n_dims - 1], bytes += parts[k]->n_bytes;
        char *cat = fused[n_fused++] = malloc(bytes);
        for (int k = 0, at = 0; k < 3; at += (int)parts[k]->n_bytes, k++) memcpy(cat + at, parts[k]->data, parts[k]->n_bytes);
        snprintf(part, sizeof part, "%.*s.attn_qkv.%s", (int)(q - name), name, q + 8);
        assert_int_equal(ag_gguf_writer_add_tensor(w, part, t->type, t->n_dims, ne, cat), AG_OK);
    }
    assert_int_equal(ag_gguf_writer_to_file(w, out), AG_OK);
    ag_gguf_writer_destroy(w);
    for (size_t i = 0; i < n_fused; i++) free(fused[i]);
    ag_gguf_close(f);
}

static void test_chatglm_fused_qkv(void **state) {
    (void)state;
    static const char *const types[] = {"f16", "q8_0", "q4_0"};
    for (size_t d = 0; d < sizeof types / sizeof *types; d++) {
        char path[512];
        variant_path("chatglm", types[d], path, sizeof path);
        const char *fused_path = FIXTURES "chatglm-fused.gguf";
        write_fused_qkv(path, fused_path);
        ag_model *sep = load(path, AG_DTYPE_F16, 512, 1), *fus = load(fused_path, AG_DTYPE_F16, 512, 1);
        assert_non_null(ag_gguf_find_tensor(fus->file, "blk.1.attn_qkv.bias"));
        assert_null(ag_gguf_find_tensor(fus->file, "blk.1.attn_k.weight"));
        const ag_layer_weights *lw = &fus->w.layers[1];
        if (lw->wq.stride == lw->wq.row_bytes) { /* in place: views of the fused tensor (repacked ones are copies) */
            assert_ptr_equal(lw->wk.data, (const char *)lw->wq.data + (size_t)lw->wq.rows * lw->wq.row_bytes);
            assert_ptr_equal(lw->wv.data, (const char *)lw->wk.data + (size_t)lw->wk.rows * lw->wk.row_bytes);
        }
        int32_t tok[N_PROMPT], pos[N_PROMPT];
        bool all[N_PROMPT];
        for (int i = 0; i < N_PROMPT; i++) tok[i] = prompt[i], pos[i] = i, all[i] = true;
        ag_err err;
        const ag_batch b = {.n = N_PROMPT, .token = tok, .pos = pos, .logits = all};
        assert_int_equal(ag_forward(sep, &b, &err), AG_OK);
        assert_int_equal(ag_forward(fus, &b, &err), AG_OK);
        for (int t = 0; t < N_PROMPT; t++)
            assert_memory_equal(ag_model_logits(sep, t), ag_model_logits(fus, t), sizeof(float) * sep->cfg.n_vocab);
        ag_model_free(sep), ag_model_free(fus);
        remove(fused_path);
    }
}

/*
 * Three sequences interleaved in one batch (prefill and decode rows mixed,
 * chunked by a small n_batch) give bit-identical logits to each sequence run
 * alone: kernels sum every (row, token) pair in the same order whatever the
 * batch, so a request's output never depends on what it was batched with.
 */
static void check_batch_invariance(const char *path, const char *kernels) {
    ag_model *alone = load_with(path, AG_DTYPE_F16, 512, 1, kernels), *m = load_with(path, AG_DTYPE_F16, 4, 3, kernels);
    enum { N = 9 };
    const int lens[3] = {N, 5, 1};
    int32_t toks[3][N];
    uint64_t seed = 9;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < N; i++) toks[s][i] = (int32_t)(ag_test_rand(&seed) % 128000);
    /* the batch: round-robin rows of the three sequences */
    int32_t bt[3 * N], bp[3 * N], bs[3 * N];
    bool bl[3 * N];
    int n = 0, src[3 * N][2];
    for (int i = 0; i < N; i++)
        for (int s = 0; s < 3; s++)
            if (i < lens[s]) bt[n] = toks[s][i], bp[n] = i, bs[n] = s, bl[n] = true, src[n][0] = s, src[n][1] = i, n++;
    ag_err err;
    assert_int_equal(ag_forward(m, &(ag_batch){.n = n, .token = bt, .pos = bp, .seq = bs, .logits = bl}, &err), AG_OK);
    int V = m->cfg.n_vocab;
    float *batched = malloc(sizeof(float) * (size_t)n * V);
    memcpy(batched, m->s.logits, sizeof(float) * (size_t)n * V);
    for (int s = 0; s < 3; s++) {
        alone->kv->ops->seq_clear(alone->kv, 0);
        int32_t pos[N];
        bool all[N];
        for (int i = 0; i < N; i++) pos[i] = i, all[i] = true;
        assert_int_equal(ag_forward(alone, &(ag_batch){.n = lens[s], .token = toks[s], .pos = pos, .logits = all}, &err),
                         AG_OK);
        for (int r = 0; r < n; r++) {
            if (src[r][0] != s) continue;
            const float *a = batched + (size_t)r * V, *b = ag_model_logits(alone, (size_t)src[r][1]);
            for (int i = 0; i < V; i++)
                if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
                    fail_msg("%s, %s kernels: seq %d pos %d token %d: batched %.9g, alone %.9g", path, m->kern->name, s,
                             src[r][1], i, a[i], b[i]);
        }
    }
    free(batched);
    ag_model_free(m);
    ag_model_free(alone);
}

static void test_batch_rows_equal_sequences_alone(void **state) {
    (void)state;
    char path[512];
    static const char *const types[] = {"f16", "bf16", "q8_0", "q4_0", "q4_k_m"};
    static const char *const kernels[] = {NULL, "avx2", "generic"};
    for (size_t t = 0; t < sizeof types / sizeof *types; t++)
        for (size_t k = 0; k < sizeof kernels / sizeof *kernels; k++) {
            if (kernels[k] && (!ag_kernels_by_name(kernels[k]) || ag_kernels_by_name(kernels[k]) == ag_kernels_get()))
                continue; /* not on this CPU, or the best kernels, which the first pass ran */
            check_batch_invariance(variant_path("llama3", types[t], path, sizeof path), kernels[k]);
            check_batch_invariance(variant_path("glm4", types[t], path, sizeof path), kernels[k]);
        }
}

/*
 * Attention walks the keys in tiles of 64 at fixed positions with an online
 * softmax (forward.c).  A prompt spanning three tiles follows the reference,
 * and each row's logits keep their bits whether the prompt runs as one
 * batch, in uneven chunks and then a token at a time, through a small
 * n_batch, or in a paged cache of 16-token blocks.
 */
static void check_long_prompt(const char *kernels) {
    const char *path = FIXTURES "llama2.gguf"; /* the smallest vocabulary: the logits of every row are compared */
    enum { L = 150 };
    ref_model R;
    ref_load(path, &R);
    int32_t tok[L], pos[L];
    bool all[L];
    uint64_t seed = 5;
    for (int i = 0; i < L; i++) tok[i] = (int32_t)(ag_test_rand(&seed) % (uint64_t)R.V), pos[i] = i, all[i] = true;
    ag_err err;
    ag_model_params p = ag_model_params_default();
    p.kernels = kernels, p.n_threads = 2, p.n_ctx = 256;
    ag_model *m = NULL;
    if (ag_model_load(path, &p, &m, &err) != AG_OK) fail_msg("%s: %s", path, err.msg);
    assert_int_equal(ag_forward(m, &(ag_batch){.n = L, .token = tok, .pos = pos, .logits = all}, &err), AG_OK);
    const size_t V = (size_t)m->cfg.n_vocab;
    float *whole = malloc(sizeof(float) * L * V);
    memcpy(whole, m->s.logits, sizeof(float) * L * V);
    double *want = ref_forward(&R, tok, L);
    static const int rows[] = {0, 63, 64, 65, 127, 128, L - 1};
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        double e = rel_err(whole + rows[i] * V, want + rows[i] * V, (int)V);
        if (!(e <= 2e-3)) fail_msg("%s kernels, row %d of %d: error %g against the reference", m->kern->name, rows[i], L, e);
    }
    free(want);
    ref_free(&R);
    /* the same prompt in chunks of 70, 1 and 33 rows, then a token at a time, in a paged cache of 16-token blocks */
    const int kv_dim = m->cfg.n_head_kv * m->cfg.head_dim;
    ag_kv_cache *paged = NULL;
    assert_int_equal(ag_kv_paged_create(m->cfg.n_layer, kv_dim, 256, 1, 16, 16, AG_DTYPE_F16, &paged, &err), AG_OK);
    assert_int_equal(ag_model_set_kv(m, paged, &err), AG_OK);
    for (int a = 0; a < L;) {
        int n = a == 0 ? 70 : a == 70 ? 1 : a == 71 ? 33 : 1;
        assert_int_equal(ag_forward(m, &(ag_batch){.n = n, .token = tok + a, .pos = pos + a, .logits = all}, &err), AG_OK);
        for (int i = 0; i < n; i++)
            if (memcmp(ag_model_logits(m, (size_t)i), whole + (a + i) * V, sizeof(float) * V) != 0)
                fail_msg("%s kernels: row %d differs in chunks in a paged cache from the whole batch", m->kern->name, a + i);
        a += n;
    }
    ag_model_free(m);
    /* through n_batch 16: ag_forward runs the prompt in chunks of 16 rows */
    p.n_batch = 16;
    if (ag_model_load(path, &p, &m, &err) != AG_OK) fail_msg("%s: %s", path, err.msg);
    assert_int_equal(ag_forward(m, &(ag_batch){.n = L, .token = tok, .pos = pos, .logits = all}, &err), AG_OK);
    for (int i = 0; i < L; i++)
        if (memcmp(ag_model_logits(m, (size_t)i), whole + i * V, sizeof(float) * V) != 0)
            fail_msg("%s kernels: row %d differs through n_batch 16 from the whole batch", m->kern->name, i);
    ag_model_free(m);
    free(whole);
}

static void test_long_prompt_attention(void **state) {
    (void)state;
    check_long_prompt(NULL);
    check_long_prompt("generic");
}

/* Greedy decode (sampler at temperature 0, one token per forward) follows the reference's argmax. */
static void test_greedy_decode_golden(void **state) {
    (void)state;
    const char *path = FIXTURES "llama2.gguf";
    ref_model R;
    ref_load(path, &R);
    ag_model *m = load(path, AG_DTYPE_F16, 512, 1);
    ag_sampler_params sp = ag_sampler_params_default();
    sp.temperature = 0;
    ag_sampler *s = NULL;
    ag_err err;
    assert_int_equal(ag_sampler_create(&sp, m->cfg.n_vocab, &s, &err), AG_OK);
    enum { P = 4, G = 12 };
    int32_t seqv[P + G] = {1, 450, 4996, 17354}, pos[P] = {0, 1, 2, 3};
    assert_int_equal(ag_forward(m, &(ag_batch){.n = P, .token = seqv, .pos = pos}, &err), AG_OK);
    for (int i = 0; i < G; i++) {
        seqv[P + i] = ag_sampler_sample(s, ag_model_logits(m, 0));
        int32_t p = P + i;
        assert_int_equal(ag_forward(m, &(ag_batch){.n = 1, .token = &seqv[P + i], .pos = &p}, &err), AG_OK);
    }
    double *want = ref_forward(&R, seqv, P + G - 1);
    for (int i = 0; i < G; i++) {
        const double *l = want + (size_t)(P - 1 + i) * R.V;
        int best = 0;
        for (int j = 1; j < R.V; j++)
            if (l[j] > l[best]) best = j;
        assert_int_equal(seqv[P + i], best);
    }
    free(want);
    ref_free(&R);
    ag_sampler_free(s);
    ag_model_free(m);
}

static void test_bad_batches_refused(void **state) {
    (void)state;
    ag_model *m = load(FIXTURES "llama2.gguf", AG_DTYPE_F16, 512, 2);
    ag_err err;
    int32_t tok = 32000, pos = 0, seq = 0;
    assert_int_equal(ag_forward(m, &(ag_batch){.n = 1, .token = &tok, .pos = &pos}, &err), AG_EINVAL);
    assert_non_null(strstr(err.msg, "vocabulary"));
    tok = 5, pos = 64; /* n_ctx is 64 */
    assert_int_equal(ag_forward(m, &(ag_batch){.n = 1, .token = &tok, .pos = &pos}, &err), AG_ELIMIT);
    assert_non_null(strstr(err.msg, "context length"));
    pos = 0, seq = 2;
    assert_int_equal(ag_forward(m, &(ag_batch){.n = 1, .token = &tok, .pos = &pos, .seq = &seq}, &err), AG_ELIMIT);
    pos = -1;
    assert_int_equal(ag_forward(m, &(ag_batch){.n = 1, .token = &tok, .pos = &pos}, &err), AG_EINVAL);
    ag_model_free(m);
}

/*
 * A copy of a fixture with one change: a tensor left out (skip_tensor), one
 * metadata key replaced by a u32 or string value, or one tensor's bytes at
 * corrupt_at overwritten by an fp16 NaN (a block scale).  Loading it must
 * fail cleanly with a message containing `expect`.
 */
typedef struct mutation {
    const char *skip_tensor, *key, *str, *corrupt;
    uint32_t u32;
    size_t corrupt_at;
    const char *expect;
} mutation;

static void check_refused(const char *fixture, const mutation *mu) {
    ag_gguf_file *f = NULL;
    ag_err err;
    assert_int_equal(ag_gguf_open(fixture, &f, &err), AG_OK);
    ag_gguf_writer *w = ag_gguf_writer_create(0);
    uint8_t *copy = NULL;
    for (size_t i = 0; i < ag_gguf_n_kv(f); i++) {
        const ag_gguf_kv *kv = ag_gguf_kv_at(f, i);
        if (mu->key && ag_str_eq_cstr(kv->key, mu->key)) {
            if (mu->str) ag_gguf_writer_set_str(w, mu->key, mu->str, strlen(mu->str));
            else ag_gguf_writer_set_u32(w, mu->key, mu->u32);
        } else {
            ag_gguf_writer_copy_kv(w, kv);
        }
    }
    for (size_t i = 0; i < ag_gguf_n_tensors(f); i++) {
        const ag_gguf_tensor *t = ag_gguf_tensor_at(f, i);
        if (mu->skip_tensor && ag_str_eq_cstr(t->name, mu->skip_tensor)) continue;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.p);
        const void *data = t->data;
        if (mu->corrupt && strcmp(name, mu->corrupt) == 0) {
            assert_true(mu->corrupt_at + 2 <= t->n_bytes);
            copy = malloc(t->n_bytes);
            memcpy(copy, t->data, t->n_bytes);
            memcpy(copy + mu->corrupt_at, (const uint8_t[]){0x00, 0x7E}, 2);
            data = copy;
        }
        assert_int_equal(ag_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, data), AG_OK);
    }
    const char *out = FIXTURES "mutated.gguf";
    assert_int_equal(ag_gguf_writer_to_file(w, out), AG_OK);
    ag_gguf_writer_destroy(w);
    ag_gguf_close(f);
    free(copy);
    ag_model *m = NULL;
    ag_status rc = ag_model_load(out, NULL, &m, &err);
    if (rc == AG_OK) fail_msg("loaded despite %s%s", mu->skip_tensor ? mu->skip_tensor : "", mu->key ? mu->key : "");
    assert_null(m);
    if (!strstr(err.msg, mu->expect)) fail_msg("error '%s' lacks '%s'", err.msg, mu->expect);
    remove(out);
}

/* Bad files are refused at load with a message naming what is wrong, never later. */
static void test_bad_models_refused(void **state) {
    (void)state;
    static const mutation qwen3[] = {
        {.skip_tensor = "blk.1.attn_k_norm.weight", .expect = "tensor blk.1.attn_k_norm.weight is missing"},
        {.skip_tensor = "output_norm.weight", .expect = "output_norm.weight is missing"},
        {.key = "general.architecture", .str = "mamba", .expect = "architecture 'mamba' is not supported"},
        {.key = "qwen3.attention.head_count", .u32 = 0, .expect = "head_count is missing or out of range"},
        {.key = "qwen3.attention.head_count_kv", .u32 = 3, .expect = "inconsistent heads"},
        {.key = "qwen3.attention.key_length", .u32 = 16, .expect = "inconsistent heads"},
        {.key = "qwen3.embedding_length", .u32 = 128, .expect = "token_embd.weight is 64 x 151936, expected 128 x 151936"},
        {.key = "qwen3.rope.dimension_count", .u32 = 33, .expect = "inconsistent heads"},
        {.key = "qwen3.feed_forward_length", .u32 = 100, .expect = "blk.0.ffn_gate.weight is 64 x 128, expected 64 x 100"},
        {.key = "qwen3.block_count", .u32 = 3, .expect = "blk.2."},
    };
    for (size_t i = 0; i < sizeof qwen3 / sizeof *qwen3; i++) check_refused(FIXTURES "qwen3.gguf", &qwen3[i]);
    static const mutation qwen2[] = {
        {.skip_tensor = "blk.0.attn_v.bias", .expect = "tensor blk.0.attn_v.bias is missing"},
    };
    check_refused(FIXTURES "qwen2.gguf", &qwen2[0]);
    static const mutation glm4[] = {
        {.skip_tensor = "blk.1.post_ffw_norm.weight", .expect = "tensor blk.1.post_ffw_norm.weight is missing"},
        {.key = "glm4.feed_forward_length", .u32 = 64, .expect = "blk.0.ffn_up.weight is 64 x 192, expected 64 x 128"},
    };
    for (size_t i = 0; i < sizeof glm4 / sizeof *glm4; i++) check_refused(FIXTURES "glm4.gguf", &glm4[i]);
    /* K-quant blocks with a non-finite scale (the default model's rows are whole super-blocks): by name and block */
    char km[512];
    snprintf(km, sizeof km, "%s quantize " AG_SOURCE_DIR "/models/autoglm-tiny.gguf " FIXTURES "tiny-q4_k_m.gguf q4_k_m",
             AG_BIN);
    if (system(km) != 0) fail_msg("cannot run %s", km);
    static const mutation kq[] = {
        {.corrupt = "blk.1.attn_q.weight", .corrupt_at = 3 * 144 + 2, /* block 3's dmin */
         .expect = "tensor blk.1.attn_q.weight (q4_k): block 3 has a scale that is not finite"},
        {.corrupt = "blk.2.ffn_down.weight", .corrupt_at = 5 * 210 + 208, /* Q6_K (use_more_bits): block 5's d */
         .expect = "tensor blk.2.ffn_down.weight (q6_k): block 5 has a scale that is not finite"},
    };
    for (size_t i = 0; i < sizeof kq / sizeof *kq; i++) check_refused(FIXTURES "tiny-q4_k_m.gguf", &kq[i]);
    remove(FIXTURES "tiny-q4_k_m.gguf");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama2_matches_reference),   cmocka_unit_test(test_llama3_matches_reference),
        cmocka_unit_test(test_qwen2_matches_reference),    cmocka_unit_test(test_qwen3_matches_reference),
        cmocka_unit_test(test_glm4_matches_reference),     cmocka_unit_test(test_chatglm_matches_reference),
        cmocka_unit_test(test_chatglm_fused_qkv),
        cmocka_unit_test(test_batch_rows_equal_sequences_alone), cmocka_unit_test(test_long_prompt_attention),
        cmocka_unit_test(test_greedy_decode_golden),
        cmocka_unit_test(test_bad_batches_refused),        cmocka_unit_test(test_bad_models_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
