/*
 * kv_cache.h - where attention keys and values live, behind an interface so
 * the paged cache of the batching issue replaces this one without touching
 * the model code.
 *
 * The model sees a cache as blocks of `block_tokens` consecutive positions of
 * one sequence in one layer: K and V of kv_dim elements a position, F32 or
 * F16.  The cache owns where blocks are, not what is in them: the model lays
 * a block out head-major, [n_head_kv][block_tokens][head_dim] (forward.c).
 * Before writing positions [0, n) of a sequence the model calls reserve(seq,
 * n); then k_block(layer, seq, i) points at the block holding positions
 * [i * block_tokens, (i + 1) * block_tokens).  Attention walks blocks, so a
 * paged cache only changes where each block is.
 *
 * ag_kv_simple_create makes the simple cache: one contiguous block of n_ctx
 * positions per sequence (allocated on the sequence's first reserve), up to
 * n_seq sequences.
 *
 * ag_kv_paged_create makes the paged cache (PagedAttention's layout): one
 * pool of n_blocks blocks of block_tokens positions, allocated once; each
 * sequence has a block table.  Nothing is allocated per token.  On top of it
 * sits the prefix cache: a full block of a sequence can be published under a
 * chained hash of (salt, every token up to and including the block); a new
 * sequence whose prompt starts with published blocks attaches them (shared,
 * refcounted) instead of computing them.  A published block that no sequence
 * uses stays cached until the pool needs it, evicted least recently used
 * first.  A hit is confirmed by comparing the block's tokens and its parent
 * block (with a generation count, so a reused parent never vouches for a
 * stale child): a hash collision can cost a miss, never wrong keys.
 */
#ifndef AG_ENGINE_KV_CACHE_H
#define AG_ENGINE_KV_CACHE_H

#include "autoglm/status.h"
#include "engine/dtype.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ag_kv_cache ag_kv_cache;

typedef struct ag_kv_cache_ops {
    /* Room for positions [0, n_pos) of seq; AG_ELIMIT naming the limit when there is none. */
    ag_status (*reserve)(ag_kv_cache *kv, int32_t seq, int32_t n_pos, ag_err *err);
    /* K (or V) of block `block` of seq in layer: block_tokens * kv_dim elements. */
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
ag_status ag_kv_paged_create(int n_layer, int kv_dim, int32_t n_ctx, int32_t n_seq, int block_tokens, size_t n_blocks,
                             ag_dtype type, ag_kv_cache **out, ag_err *err);
/* Blocks that fit in mb MiB for this shape (the pool size for --kv-cache-mb). */
size_t ag_kv_paged_blocks_for_mb(int n_layer, int kv_dim, int block_tokens, ag_dtype type, size_t mb);
/* True for a cache made by ag_kv_paged_create (the prefix calls below need one). */
bool ag_kv_is_paged(const ag_kv_cache *kv);

/*
 * For an empty seq: attach the longest run of published blocks matching
 * tokens[0..n), leaving at least one token to compute (its logits are needed).
 * Returns the positions attached, a multiple of block_tokens.
 */
int32_t ag_kv_prefix_attach(ag_kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n, uint64_t salt);
/* Publish seq's full blocks among positions [0, n) whose keys and values are computed; tokens are its ids. */
void ag_kv_prefix_publish(ag_kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n, uint64_t salt);

typedef struct ag_kv_stats {
    size_t n_blocks;   /* the pool */
    size_t used;       /* held by at least one sequence */
    size_t cached;     /* published and held by none: reusable until evicted */
    size_t free;       /* neither */
    uint64_t prefix_query_tokens, prefix_hit_tokens;
} ag_kv_stats;
void ag_kv_paged_stats(const ag_kv_cache *kv, ag_kv_stats *out);

static inline void ag_kv_destroy(ag_kv_cache *kv) {
    if (kv) kv->ops->destroy(kv);
}

#endif
