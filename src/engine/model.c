/*
 * model.c - loading a GGUF into Config/Weights/RunState (see model.h).
 *
 * Everything the forward pass relies on is checked here, once: the
 * architecture, every hyperparameter, every tensor's presence, type and
 * shape.  A missing or misshapen tensor is refused by name, so a bad file
 * fails at load and never mid-request.
 */
#define _DEFAULT_SOURCE /* madvise and MADV_HUGEPAGE */
#include "engine/model.h"

#include "base/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

ag_model_params ag_model_params_default(void) {
    return (ag_model_params){.n_threads = 0, .n_ctx = 0, .n_seq = 1, .n_batch = 512, .kv_type = AG_DTYPE_F16};
}

typedef struct loader {
    ag_model *m;
    char arch[32];
    ag_err *err;
} loader;

static bool get_u32(const loader *L, const char *suffix, uint32_t *out) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    return ag_gguf_get_u32(L->m->file, key, out);
}

static bool get_f32(const loader *L, const char *suffix, float *out) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    return ag_gguf_get_f32(L->m->file, key, out);
}

static ag_status read_config(loader *L) {
    ag_config *c = &L->m->cfg;
    ag_str a;
    if (!ag_gguf_get_str(L->m->file, "general.architecture", &a))
        return ag_err_set(L->err, AG_EINVAL, "general.architecture is missing");
    snprintf(L->arch, sizeof L->arch, "%.*s", (int)(a.n < 31 ? a.n : 31), a.p);
    if (strcmp(L->arch, "llama") == 0) c->arch = AG_ARCH_LLAMA;
    else if (strcmp(L->arch, "qwen2") == 0) c->arch = AG_ARCH_QWEN2;
    else if (strcmp(L->arch, "qwen3") == 0) c->arch = AG_ARCH_QWEN3;
    else if (strcmp(L->arch, "glm4") == 0) c->arch = AG_ARCH_GLM4;
    else if (strcmp(L->arch, "chatglm") == 0) c->arch = AG_ARCH_CHATGLM;
    else
        return ag_err_set(L->err, AG_EINVAL, "architecture '%s' is not supported (llama, qwen2, qwen3, glm4, chatglm)",
                          L->arch);
    const bool glm = c->arch == AG_ARCH_GLM4 || c->arch == AG_ARCH_CHATGLM;
    static const struct {
        const char *key;
        size_t off;
    } need[] = {
        {"embedding_length", offsetof(ag_config, n_embd)},
        {"block_count", offsetof(ag_config, n_layer)},
        {"feed_forward_length", offsetof(ag_config, n_ff)},
        {"attention.head_count", offsetof(ag_config, n_head)},
    };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        uint32_t v;
        if (!get_u32(L, need[i].key, &v) || v == 0 || v > (1u << 20))
            return ag_err_set(L->err, AG_EINVAL, "%s.%s is missing or out of range", L->arch, need[i].key);
        *(int *)((char *)c + need[i].off) = (int)v;
    }
    uint32_t v;
    c->n_head_kv = get_u32(L, "attention.head_count_kv", &v) ? (int)v : c->n_head;
    c->head_dim = get_u32(L, "attention.key_length", &v) ? (int)v : c->n_embd / c->n_head;
    c->n_ctx_train = get_u32(L, "context_length", &v) ? (int)v : 2048;
    /* GLM rotates only part of each head; its files always say how much, else half as in every GLM config */
    c->n_rot = get_u32(L, "rope.dimension_count", &v) ? (int)v : glm ? c->head_dim / 2 : c->head_dim;
    if (!get_f32(L, "rope.freq_base", &c->rope_base)) c->rope_base = 10000.0f;
    if (!get_f32(L, "attention.layer_norm_rms_epsilon", &c->eps)) c->eps = 1e-5f;
    if (c->n_head_kv < 1 || c->n_head % c->n_head_kv || c->head_dim < 2 || c->head_dim > 1024 || c->n_rot < 2 ||
        c->n_rot > c->head_dim || c->n_rot % 2 || c->n_ctx_train < 1 ||
        (get_u32(L, "attention.value_length", &v) && (int)v != c->head_dim))
        return ag_err_set(L->err, AG_EINVAL, "%s: inconsistent heads (%d query, %d key/value, head size %d, rope %d)",
                          L->arch, c->n_head, c->n_head_kv, c->head_dim, c->n_rot);
    /* Llama files are converted with Q/K permuted to adjacent pairs; GLM's are adjacent pairs natively */
    c->rope_neox = c->arch != AG_ARCH_LLAMA && !glm;
    c->qkv_bias = c->arch == AG_ARCH_QWEN2 || (glm && (ag_gguf_find_tensor(L->m->file, "blk.0.attn_q.bias") ||
                                                        ag_gguf_find_tensor(L->m->file, "blk.0.attn_qkv.bias")));
    c->qk_norm = c->arch == AG_ARCH_QWEN3;
    c->post_norms = c->arch == AG_ARCH_GLM4;
    c->fused_up = glm;
    return AG_OK;
}

static const ag_gguf_tensor *find(loader *L, const char *name, int layer) {
    char full[96];
    if (layer >= 0) snprintf(full, sizeof full, "blk.%d.%s", layer, name);
    else snprintf(full, sizeof full, "%s", name);
    const ag_gguf_tensor *t = ag_gguf_find_tensor(L->m->file, full);
    if (!t) ag_err_set(L->err, AG_EINVAL, "tensor %s is missing", full);
    return t;
}

static ag_status load_matrix(loader *L, const char *name, int layer, int64_t cols, int64_t rows, ag_matrix *out) {
    const ag_gguf_tensor *t = find(L, name, layer);
    if (!t) return AG_EINVAL;
    int wt = ag_wtype_of(t->type);
    if (wt < 0)
        return ag_err_set(L->err, AG_EINVAL, "tensor %.*s has type %s, which has no matrix kernel", (int)t->name.n,
                          t->name.p, ag_dtype_name(t->type));
    if (t->n_dims != 2 || (int64_t)t->ne[0] != cols || (int64_t)t->ne[1] != rows)
        return ag_err_set(L->err, AG_EINVAL, "tensor %.*s is %llu x %llu, expected %lld x %lld", (int)t->name.n,
                          t->name.p, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], (long long)cols,
                          (long long)rows);
    /* ggml refuses non-finite block scales (ggml_validate_row_data): so do we, before they reach a product */
    int64_t bad = ag_dtype_find_bad_block(t->type, t->data, t->n_bytes);
    if (bad >= 0)
        return ag_err_set(L->err, AG_EINVAL, "tensor %.*s (%s): block %lld has a scale that is not finite",
                          (int)t->name.n, t->name.p, ag_dtype_name(t->type), (long long)bad);
    uint64_t rb = 0;
    ag_dtype_bytes(t->type, (uint64_t)cols, &rb);
    *out = (ag_matrix){t->type, (ag_wtype)wt, t->data, rows, cols, (size_t)rb, (size_t)rb};
    return AG_OK;
}

/* Rows [first, first + n) of m, in place: quant blocks never cross rows, so any row range is a matrix. */
static ag_matrix row_view(const ag_matrix *m, int64_t first, int64_t n) {
    ag_matrix v = *m;
    v.data = (const char *)m->data + (size_t)first * m->row_bytes;
    v.rows = n;
    return v;
}

static bool has_tensor(const loader *L, const char *name, int layer) {
    char full[96];
    snprintf(full, sizeof full, "blk.%d.%s", layer, name);
    return ag_gguf_find_tensor(L->m->file, full) != NULL;
}

/* A 1-D tensor copied to f32 (norm weights and biases are tiny; any float or block type is accepted). */
static ag_status load_vector(loader *L, const char *name, int layer, int64_t n, float **out) {
    const ag_gguf_tensor *t = find(L, name, layer);
    if (!t) return AG_EINVAL;
    if (t->n_dims != 1 || (int64_t)t->ne[0] != n || ag_wtype_of(t->type) < 0)
        return ag_err_set(L->err, AG_EINVAL, "tensor %.*s should be %lld values of a float or block type",
                          (int)t->name.n, t->name.p, (long long)n);
    *out = ag_xmalloc((size_t)n * sizeof(float));
    ag_dtype_to_f32(t->type, t->data, *out, (size_t)n);
    return AG_OK;
}

static ag_status load_weights(loader *L) {
    ag_model *m = L->m;
    const ag_config *c = &m->cfg;
    ag_weights *w = &m->w;
    const int64_t q_dim = (int64_t)c->n_head * c->head_dim, kv_dim = (int64_t)c->n_head_kv * c->head_dim;
    const ag_gguf_tensor *emb = find(L, "token_embd.weight", -1);
    if (!emb) return AG_EINVAL;
    m->cfg.n_vocab = emb->n_dims == 2 ? (int)emb->ne[1] : 0;
    ag_status rc = load_matrix(L, "token_embd.weight", -1, c->n_embd, c->n_vocab, &w->tok_embd);
    if (rc == AG_OK) rc = load_vector(L, "output_norm.weight", -1, c->n_embd, &w->output_norm);
    if (rc != AG_OK) return rc;
    m->cfg.tied_output = !ag_gguf_find_tensor(m->file, "output.weight");
    if (c->tied_output) w->output = w->tok_embd;
    else if ((rc = load_matrix(L, "output.weight", -1, c->n_embd, c->n_vocab, &w->output)) != AG_OK) return rc;
    w->layers = ag_xcalloc((size_t)c->n_layer, sizeof *w->layers);
    for (int l = 0; l < c->n_layer && rc == AG_OK; l++) {
        ag_layer_weights *lw = &w->layers[l];
        rc = load_vector(L, "attn_norm.weight", l, c->n_embd, &lw->attn_norm);
        if (rc == AG_OK) rc = load_vector(L, "ffn_norm.weight", l, c->n_embd, &lw->ffn_norm);
        bool fused_qkv = has_tensor(L, "attn_qkv.weight", l); /* chatglm files from the original checkpoints */
        if (rc == AG_OK && fused_qkv) {
            ag_matrix qkv;
            rc = load_matrix(L, "attn_qkv.weight", l, c->n_embd, q_dim + 2 * kv_dim, &qkv);
            lw->wq = row_view(&qkv, 0, q_dim), lw->wk = row_view(&qkv, q_dim, kv_dim);
            lw->wv = row_view(&qkv, q_dim + kv_dim, kv_dim);
        } else {
            if (rc == AG_OK) rc = load_matrix(L, "attn_q.weight", l, c->n_embd, q_dim, &lw->wq);
            if (rc == AG_OK) rc = load_matrix(L, "attn_k.weight", l, c->n_embd, kv_dim, &lw->wk);
            if (rc == AG_OK) rc = load_matrix(L, "attn_v.weight", l, c->n_embd, kv_dim, &lw->wv);
        }
        if (rc == AG_OK) rc = load_matrix(L, "attn_output.weight", l, q_dim, c->n_embd, &lw->wo);
        if (rc == AG_OK && c->fused_up) {
            ag_matrix up;
            rc = load_matrix(L, "ffn_up.weight", l, c->n_embd, 2 * (int64_t)c->n_ff, &up);
            lw->w_gate = row_view(&up, 0, c->n_ff), lw->w_up = row_view(&up, c->n_ff, c->n_ff);
        } else {
            if (rc == AG_OK) rc = load_matrix(L, "ffn_gate.weight", l, c->n_embd, c->n_ff, &lw->w_gate);
            if (rc == AG_OK) rc = load_matrix(L, "ffn_up.weight", l, c->n_embd, c->n_ff, &lw->w_up);
        }
        if (rc == AG_OK) rc = load_matrix(L, "ffn_down.weight", l, c->n_ff, c->n_embd, &lw->w_down);
        if (rc == AG_OK && c->qkv_bias && fused_qkv) {
            float *b = NULL;
            rc = load_vector(L, "attn_qkv.bias", l, q_dim + 2 * kv_dim, &b);
            if (rc == AG_OK) { /* split by copying: biases are small and kept as f32 anyway */
                lw->bq = ag_xmalloc((size_t)q_dim * sizeof(float)), lw->bk = ag_xmalloc((size_t)kv_dim * sizeof(float));
                lw->bv = ag_xmalloc((size_t)kv_dim * sizeof(float));
                memcpy(lw->bq, b, (size_t)q_dim * sizeof(float));
                memcpy(lw->bk, b + q_dim, (size_t)kv_dim * sizeof(float));
                memcpy(lw->bv, b + q_dim + kv_dim, (size_t)kv_dim * sizeof(float));
            }
            free(b);
        } else if (rc == AG_OK && c->qkv_bias) {
            rc = load_vector(L, "attn_q.bias", l, q_dim, &lw->bq);
            if (rc == AG_OK) rc = load_vector(L, "attn_k.bias", l, kv_dim, &lw->bk);
            if (rc == AG_OK) rc = load_vector(L, "attn_v.bias", l, kv_dim, &lw->bv);
        }
        if (rc == AG_OK && c->post_norms) {
            rc = load_vector(L, "post_attention_norm.weight", l, c->n_embd, &lw->post_attn_norm);
            if (rc == AG_OK) rc = load_vector(L, "post_ffw_norm.weight", l, c->n_embd, &lw->post_ffn_norm);
        }
        if (rc == AG_OK && c->qk_norm) {
            rc = load_vector(L, "attn_q_norm.weight", l, c->head_dim, &lw->q_norm);
            if (rc == AG_OK) rc = load_vector(L, "attn_k_norm.weight", l, c->head_dim, &lw->k_norm);
        }
    }
    return rc;
}

/* RoPE frequency of pair i: base^(-2i/n_rot), divided by rope_freqs[i] when the file has them (Llama 3.1). */
static ag_status init_rope(loader *L) {
    ag_model *m = L->m;
    const ag_config *c = &m->cfg;
    int half = c->n_rot / 2;
    m->s.inv_freq = ag_xmalloc((size_t)half * sizeof(float));
    float *factors = NULL;
    if (ag_gguf_find_tensor(m->file, "rope_freqs.weight")) {
        ag_status rc = load_vector(L, "rope_freqs.weight", -1, half, &factors);
        if (rc != AG_OK) return rc;
    }
    ag_rope_freqs(c->n_rot, c->rope_base, factors, m->s.inv_freq);
    free(factors);
    return AG_OK;
}

uint64_t ag_matrix_repack_bytes(ag_dtype t, int64_t rows, int64_t cols) {
    int wt = ag_wtype_of(t);
    int rt = wt < 0 ? -1 : ag_wtype_repacked((ag_wtype)wt);
    if (rt < 0 || rows <= 0 || rows % AG_REPACK_ROWS != 0 || cols % 32 != 0) return 0;
    return (uint64_t)(rows / AG_REPACK_ROWS) * ag_kern_repack_group_bytes((ag_wtype)rt, (size_t)cols);
}

/* Every product matrix, the head included (tied or not: tok_embd's rows stay in place for the embedding lookup). */
static int product_matrices(ag_model *m, ag_matrix **out) {
    int n = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        ag_layer_weights *lw = &m->w.layers[l];
        ag_matrix *mats[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w_gate, &lw->w_up, &lw->w_down};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) out[n++] = mats[i];
    }
    out[n++] = &m->w.output;
    return n;
}

/*
 * Rewrite the matrices that have a repacked form into one anonymous
 * allocation (kernels.h, repack.c): the products then read 16 rows' blocks
 * side by side.  The mapping stays for the rest (and for tok_embd's rows).
 */
static ag_status repack_weights(loader *L) {
    ag_model *m = L->m;
    ag_matrix **mats = ag_xmalloc(((size_t)m->cfg.n_layer * 7 + 1) * sizeof *mats);
    int n = product_matrices(m, mats);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) total += ag_matrix_repack_bytes(mats[i]->type, mats[i]->rows, mats[i]->cols);
    if (total == 0) {
        free(mats);
        return AG_OK;
    }
    /*
     * Huge pages where the kernel gives them (madvise mode): decode streams
     * every matrix each token, and 4 KiB anonymous pages cost a TLB walk
     * every 4 KiB (measured: Q4_K_M decode 20% slower than the same matrices
     * read in place from the page cache, whose large folios the TLB takes
     * whole).  The size is rounded to whole 2 MiB pages; only advice.
     */
    const size_t huge = (size_t)2 << 20;
    const size_t bytes = total <= SIZE_MAX - huge ? ((size_t)total + huge - 1) / huge * huge : 0;
    char *p = bytes ? aligned_alloc(huge, bytes) : NULL;
#ifdef MADV_HUGEPAGE
    if (p) (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    if (!p) {
        free(mats);
        return ag_err_set(L->err, AG_NOMEM, "no memory for %llu bytes of repacked weights (--no-repack: none needed)",
                          (unsigned long long)total);
    }
    m->repacked = p, m->repacked_bytes = total;
    for (int i = 0; i < n; i++) {
        ag_matrix *W = mats[i];
        uint64_t b = ag_matrix_repack_bytes(W->type, W->rows, W->cols);
        if (!b) continue;
        ag_kern_repack(W->wtype, W->data, W->row_bytes, (size_t)W->rows, (size_t)W->cols, p);
        W->wtype = (ag_wtype)ag_wtype_repacked(W->wtype);
        W->stride = ag_kern_repack_group_bytes(W->wtype, (size_t)W->cols);
        W->data = p;
        p += b;
        m->n_repacked++;
    }
    free(mats);
    return AG_OK;
}

/* Cache-line aligned (kernels load whole lines); NULL clears *ok. */
static void *alloc_floats(size_t n, bool *ok) {
    void *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!p) *ok = false;
    return p;
}

static ag_status init_state(loader *L, int n_threads) {
    ag_model *m = L->m;
    const ag_config *c = &m->cfg;
    ag_run_state *s = &m->s;
    size_t B = (size_t)m->n_batch, q_dim = (size_t)c->n_head * c->head_dim, kv_dim = (size_t)c->n_head_kv * c->head_dim;
    size_t wide = q_dim > (size_t)c->n_embd ? q_dim : (size_t)c->n_embd;
    size_t act_cols = (size_t)c->n_ff > wide ? (size_t)c->n_ff : wide;
    bool ok = true;
    s->x = alloc_floats(B * c->n_embd, &ok);
    s->xb = alloc_floats(B * c->n_embd, &ok);
    s->xb2 = alloc_floats(B * wide, &ok);
    s->q = alloc_floats(B * q_dim, &ok);
    s->k = alloc_floats(B * kv_dim, &ok);
    s->v = alloc_floats(B * kv_dim, &ok);
    s->hb = alloc_floats(B * c->n_ff, &ok);
    s->hb2 = alloc_floats(B * c->n_ff, &ok);
    s->act = alloc_floats(B * (act_cols + 16), &ok); /* f32 is the widest activation dtype; rows padded to 64 bytes */
    s->att_per_thread = (ag_forward_attn_scratch_floats(c->head_dim) + 15) / 16 * 16; /* threads' parts on cache lines */
    s->att = alloc_floats((size_t)n_threads * s->att_per_thread, &ok);
    s->runs = ag_try_malloc(((size_t)m->n_batch + 1) * sizeof *s->runs);
    s->rope_cs = alloc_floats(B * (size_t)c->n_rot, &ok);
    s->seq_zero = calloc(B, sizeof *s->seq_zero);
    if (!s->runs || !s->seq_zero) ok = false;
    if (!ok) return ag_err_set(L->err, AG_NOMEM, "no memory for activations of %d rows", m->n_batch);
    return AG_OK;
}

ag_status ag_model_load(const char *path, const ag_model_params *params, ag_model **out, ag_err *err) {
    *out = NULL;
    ag_model_params p = params ? *params : ag_model_params_default();
    ag_model *m = ag_xcalloc(1, sizeof *m);
    loader L = {.m = m, .err = err};
    ag_status rc = ag_gguf_open(path, &m->file, err);
    if (rc == AG_OK) rc = read_config(&L);
    if (rc == AG_OK) rc = load_weights(&L);
    if (rc == AG_OK) rc = ag_tokenizer_load(m->file, &m->tok, err);
    if (rc == AG_OK && ag_tokenizer_n_vocab(m->tok) > (size_t)m->cfg.n_vocab)
        rc = ag_err_set(err, AG_EINVAL, "the vocabulary has %zu tokens but token_embd only %d rows",
                        ag_tokenizer_n_vocab(m->tok), m->cfg.n_vocab);
    if (rc != AG_OK) goto fail;
    m->kern = p.kernels ? ag_kernels_by_name(p.kernels) : ag_kernels_get();
    if (!m->kern) {
        rc = ag_err_set(err, AG_EINVAL, "kernels '%s' are not available on this CPU", p.kernels);
        goto fail;
    }
    int n_threads = p.n_threads > 0 ? p.n_threads : ag_cpu_physical_cores();
    m->n_ctx = p.n_ctx > 0 ? p.n_ctx : (m->cfg.n_ctx_train < 4096 ? m->cfg.n_ctx_train : 4096);
    m->n_batch = p.n_batch > 0 ? p.n_batch : 512;
    if (m->n_ctx > (1 << 24) || m->n_batch > (1 << 16)) {
        rc = ag_err_set(err, AG_ELIMIT, "context %d or batch %d is too large", m->n_ctx, m->n_batch);
        goto fail;
    }
    if (!p.no_repack && (rc = repack_weights(&L)) != AG_OK) goto fail;
    if ((rc = init_rope(&L)) != AG_OK || (rc = ag_pool_create(n_threads, &m->pool, err)) != AG_OK ||
        (rc = init_state(&L, n_threads)) != AG_OK)
        goto fail;
    rc = ag_kv_simple_create(m->cfg.n_layer, m->cfg.n_head_kv * m->cfg.head_dim, m->n_ctx, p.n_seq > 0 ? p.n_seq : 1,
                             p.kv_type, &m->kv, err);
    if (rc != AG_OK) goto fail;
    *out = m;
    return AG_OK;
fail:
    ag_model_free(m);
    return rc;
}

ag_status ag_model_set_kv(ag_model *m, ag_kv_cache *kv, ag_err *err) {
    if (kv->n_layer != m->cfg.n_layer || kv->kv_dim != m->cfg.n_head_kv * m->cfg.head_dim || kv->n_ctx > m->n_ctx)
        return ag_err_set(err, AG_EINVAL, "the KV cache's shape does not fit the model");
    ag_kv_destroy(m->kv);
    m->kv = kv;
    return AG_OK;
}

void ag_model_free(ag_model *m) {
    if (!m) return;
    ag_kv_destroy(m->kv);
    ag_pool_destroy(m->pool);
    if (m->w.layers) {
        for (int l = 0; l < m->cfg.n_layer; l++) {
            ag_layer_weights *lw = &m->w.layers[l];
            float *v[] = {lw->attn_norm, lw->ffn_norm, lw->bq, lw->bk, lw->bv, lw->q_norm, lw->k_norm,
                          lw->post_attn_norm, lw->post_ffn_norm};
            for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) free(v[i]);
        }
        free(m->w.layers);
    }
    free(m->w.output_norm);
    free(m->repacked);
    ag_run_state *s = &m->s;
    float *v[] = {s->x, s->xb, s->xb2, s->q, s->k, s->v, s->hb, s->hb2, s->act, s->att, s->inv_freq, s->logits};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) free(v[i]);
    free(s->runs);
    free(s->rope_cs);
    free(s->seq_zero);
    ag_tokenizer_free(m->tok);
    ag_gguf_close(m->file);
    free(m);
}

uint64_t ag_model_weight_bytes(const ag_model *m) {
    uint64_t b = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const ag_layer_weights *lw = &m->w.layers[l];
        const ag_matrix *mats[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w_gate, &lw->w_up, &lw->w_down};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) b += (uint64_t)mats[i]->rows * mats[i]->row_bytes;
    }
    return b + (uint64_t)m->w.output.rows * m->w.output.row_bytes;
}
