/*
 * kv_cache.c - the simple KV cache (see kv_cache.h): per sequence, one
 * allocation of [layer][K|V][n_ctx][kv_dim], made on first use and freed by
 * seq_clear.  The block is the whole context, so attention reads it as one
 * contiguous run.
 */
#include "engine/kv_cache.h"

#include "base/alloc.h"

#include <stdlib.h>

typedef struct simple_kv {
    ag_kv_cache base;
    size_t elem;
    char **seq_mem; /* n_seq pointers, NULL until reserved */
} simple_kv;

static size_t plane_bytes(const simple_kv *s) { return (size_t)s->base.n_ctx * s->base.kv_dim * s->elem; }

static ag_status simple_reserve(ag_kv_cache *kv, int32_t seq, int32_t n_pos, ag_err *err) {
    simple_kv *s = (simple_kv *)kv;
    if (seq < 0 || seq >= kv->n_seq)
        return ag_err_set(err, AG_ELIMIT, "sequence id %d is outside 0..%d (max sequences)", seq, kv->n_seq - 1);
    if (n_pos > kv->n_ctx)
        return ag_err_set(err, AG_ELIMIT, "position %d is beyond the context length %d", n_pos - 1, kv->n_ctx);
    if (!s->seq_mem[seq]) {
        s->seq_mem[seq] = ag_try_malloc(plane_bytes(s) * 2 * (size_t)kv->n_layer);
        if (!s->seq_mem[seq]) return ag_err_set(err, AG_NOMEM, "no memory for the KV cache of sequence %d", seq);
    }
    return AG_OK;
}

static void *simple_block(ag_kv_cache *kv, int layer, int32_t seq, int32_t block, int which) {
    simple_kv *s = (simple_kv *)kv;
    if (block != 0 || !s->seq_mem[seq]) return NULL;
    return s->seq_mem[seq] + plane_bytes(s) * (2 * (size_t)layer + (size_t)which);
}
static void *simple_k(ag_kv_cache *kv, int layer, int32_t seq, int32_t block) {
    return simple_block(kv, layer, seq, block, 0);
}
static void *simple_v(ag_kv_cache *kv, int layer, int32_t seq, int32_t block) {
    return simple_block(kv, layer, seq, block, 1);
}

static void simple_clear(ag_kv_cache *kv, int32_t seq) {
    simple_kv *s = (simple_kv *)kv;
    if (seq < 0 || seq >= kv->n_seq) return;
    free(s->seq_mem[seq]);
    s->seq_mem[seq] = NULL;
}

static void simple_destroy(ag_kv_cache *kv) {
    simple_kv *s = (simple_kv *)kv;
    for (int32_t i = 0; i < kv->n_seq; i++) free(s->seq_mem[i]);
    free(s->seq_mem);
    free(s);
}

static const ag_kv_cache_ops simple_ops = {simple_reserve, simple_k, simple_v, simple_clear, simple_destroy};

ag_status ag_kv_simple_create(int n_layer, int kv_dim, int32_t n_ctx, int32_t n_seq, ag_dtype type, ag_kv_cache **out,
                              ag_err *err) {
    *out = NULL;
    if (type != AG_DTYPE_F32 && type != AG_DTYPE_F16)
        return ag_err_set(err, AG_EINVAL, "KV cache type must be f32 or f16");
    if (n_layer < 1 || kv_dim < 1 || n_ctx < 1 || n_seq < 1 || n_seq > 1 << 20)
        return ag_err_set(err, AG_EINVAL, "KV cache shape is empty or too large");
    simple_kv *s = ag_xcalloc(1, sizeof *s);
    s->base = (ag_kv_cache){&simple_ops, type, n_layer, kv_dim, n_ctx, n_seq, n_ctx};
    s->elem = type == AG_DTYPE_F32 ? 4 : 2;
    s->seq_mem = ag_xcalloc((size_t)n_seq, sizeof *s->seq_mem);
    *out = &s->base;
    return AG_OK;
}
