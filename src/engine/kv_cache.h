/*
 * kv_cache.h - where attention keys and values live, behind an interface so
 * the paged cache of the batching issue replaces this one without touching
 * the model code.
 *
 * The model sees a cache as blocks of `block_tokens` consecutive positions of
 * one sequence in one layer: K and V rows of kv_dim elements each, F32 or F16.
 * Before writing positions [0, n) of a sequence the model calls reserve(seq,
 * n); then k_block(layer, seq, i) points at the block holding positions
 * [i * block_tokens, (i + 1) * block_tokens).  Attention walks blocks, so a
 * paged cache only changes where each block is.
 *
 * ag_kv_simple_create makes the simple cache: one contiguous block of n_ctx
 * positions per sequence (allocated on the sequence's first reserve), up to
 * n_seq sequences.
 */
#ifndef AG_ENGINE_KV_CACHE_H
#define AG_ENGINE_KV_CACHE_H

#include "autoglm/status.h"
#include "engine/dtype.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ag_kv_cache ag_kv_cache;

typedef struct ag_kv_cache_ops {
    /* Room for positions [0, n_pos) of seq; AG_ELIMIT naming the limit when there is none. */
    ag_status (*reserve)(ag_kv_cache *kv, int32_t seq, int32_t n_pos, ag_err *err);
    /* K (or V) rows of block `block` of seq in layer: block_tokens rows of kv_dim elements. */
    void *(*k_block)(ag_kv_cache *kv, int layer, int32_t seq, int32_t block);
    void *(*v_block)(ag_kv_cache *kv, int layer, int32_t seq, int32_t block);
    /* Forget every position of seq (its slot may be reused at once). */
    void (*seq_clear)(ag_kv_cache *kv, int32_t seq);
    void (*destroy)(ag_kv_cache *kv);
} ag_kv_cache_ops;

struct ag_kv_cache {
    const ag_kv_cache_ops *ops;
    ag_dtype type; /* AG_DTYPE_F32 or AG_DTYPE_F16 */
    int n_layer;
    int kv_dim;
    int block_tokens;
    int32_t n_seq; /* valid sequence ids are [0, n_seq) */
    int32_t n_ctx; /* positions per sequence */
};

ag_status ag_kv_simple_create(int n_layer, int kv_dim, int32_t n_ctx, int32_t n_seq, ag_dtype type, ag_kv_cache **out,
                              ag_err *err);
static inline void ag_kv_destroy(ag_kv_cache *kv) {
    if (kv) kv->ops->destroy(kv);
}

#endif
