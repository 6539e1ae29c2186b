/*
 * kv_cache.c - the two KV caches (see kv_cache.h).
 *
 * Simple: per sequence, one allocation of [layer][K|V][n_ctx * kv_dim], made
 * on first use and freed by seq_clear.  The block is the whole context, so
 * attention reads it as one contiguous run.
 *
 * Paged: one pool of blocks, each [layer][K|V][block_tokens * kv_dim]; a
 * block's metadata says who holds it and whether it is published in the
 * prefix map.  A block is in exactly one of three states: held (ref > 0),
 * cached (published, ref 0, on the LRU list) or free (on the free list).
 */
#include "engine/kv_cache.h"

#include "base/alloc.h"
#include "base/hash.h"
#include "base/map.h"

#include <stdlib.h>
#include <string.h>

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

/* ---- the paged cache and its prefix cache --------------------------------- */

typedef struct block_meta {
    int32_t ref;         /* sequences holding it */
    uint32_t gen;        /* bumped when the block is reused, so children that recorded an older one are stale */
    bool published;      /* in the prefix map under `hash` */
    uint64_t hash;       /* chained hash of (salt, every token up to this block's end) */
    int32_t parent;      /* previous block of its chain, -1 for the first */
    uint32_t parent_gen;
    int32_t prev, next;  /* links in the free list or the LRU list of cached blocks */
} block_meta;

typedef struct seq_state {
    int32_t *table;      /* [max_blocks] block ids */
    int32_t n_blocks;
    int32_t n_chained;   /* leading blocks whose chain hash is known (published or attached) */
    uint64_t chain;      /* the hash of the last of them */
} seq_state;

typedef struct paged_kv {
    ag_kv_cache base;
    size_t plane_bytes;  /* one layer's K (or V) of one block */
    size_t block_bytes;
    char *pool;
    size_t n_blocks;
    block_meta *meta;
    int32_t *tokens;     /* [n_blocks][block_tokens] ids of published blocks */
    int32_t free_head;   /* singly linked through next */
    int32_t lru_head, lru_tail; /* cached blocks, least recently used first */
    size_t n_free, n_cached;
    seq_state *seqs;
    int32_t max_blocks;
    ag_map map;          /* hash -> block_meta */
    uint64_t query_tokens, hit_tokens;
} paged_kv;

static const ag_kv_cache_ops paged_ops;

static void lru_unlink(paged_kv *p, int32_t b) {
    block_meta *m = &p->meta[b];
    if (m->prev >= 0) p->meta[m->prev].next = m->next;
    else p->lru_head = m->next;
    if (m->next >= 0) p->meta[m->next].prev = m->prev;
    else p->lru_tail = m->prev;
    m->prev = m->next = -1;
    p->n_cached--;
}

static void unpublish(paged_kv *p, int32_t b) {
    block_meta *m = &p->meta[b];
    if (!m->published) return;
    if (ag_map_get(&p->map, (const char *)&m->hash, sizeof m->hash) == m)
        ag_map_del(&p->map, (const char *)&m->hash, sizeof m->hash);
    m->published = false;
}

/* A block for a sequence: a free one, else the least recently used cached one; -1 when all are held. */
static int32_t block_alloc(paged_kv *p) {
    int32_t b = p->free_head;
    if (b >= 0) {
        p->free_head = p->meta[b].next;
        p->n_free--;
    } else if ((b = p->lru_head) >= 0) {
        lru_unlink(p, b);
        unpublish(p, b);
    } else {
        return -1;
    }
    block_meta *m = &p->meta[b];
    m->gen++;
    m->ref = 1;
    m->prev = m->next = -1;
    return b;
}

static void block_release(paged_kv *p, int32_t b) {
    block_meta *m = &p->meta[b];
    if (--m->ref > 0) return;
    if (m->published) { /* stays reusable by a later prompt until the pool needs it */
        m->prev = p->lru_tail, m->next = -1;
        if (p->lru_tail >= 0) p->meta[p->lru_tail].next = b;
        else p->lru_head = b;
        p->lru_tail = b;
        p->n_cached++;
    } else {
        m->next = p->free_head;
        p->free_head = b;
        p->n_free++;
    }
}

static ag_status paged_reserve(ag_kv_cache *kv, int32_t seq, int32_t n_pos, ag_err *err) {
    paged_kv *p = (paged_kv *)kv;
    if (seq < 0 || seq >= kv->n_seq)
        return ag_err_set(err, AG_ELIMIT, "sequence id %d is outside 0..%d (max sequences)", seq, kv->n_seq - 1);
    if (n_pos > kv->n_ctx)
        return ag_err_set(err, AG_ELIMIT, "position %d is beyond the context length %d", n_pos - 1, kv->n_ctx);
    seq_state *s = &p->seqs[seq];
    int32_t need = (n_pos + kv->block_tokens - 1) / kv->block_tokens;
    while (s->n_blocks < need) {
        int32_t b = block_alloc(p);
        if (b < 0)
            return ag_err_set(err, AG_ELIMIT, "the KV cache is full (%zu blocks of %d tokens, all in use)", p->n_blocks,
                              kv->block_tokens);
        s->table[s->n_blocks++] = b;
    }
    return AG_OK;
}

static void *paged_block(ag_kv_cache *kv, int layer, int32_t seq, int32_t block, int which) {
    paged_kv *p = (paged_kv *)kv;
    const seq_state *s = &p->seqs[seq];
    if (block < 0 || block >= s->n_blocks) return NULL;
    return p->pool + (size_t)s->table[block] * p->block_bytes + p->plane_bytes * (2 * (size_t)layer + (size_t)which);
}
static void *paged_k(ag_kv_cache *kv, int layer, int32_t seq, int32_t block) { return paged_block(kv, layer, seq, block, 0); }
static void *paged_v(ag_kv_cache *kv, int layer, int32_t seq, int32_t block) { return paged_block(kv, layer, seq, block, 1); }

static void paged_clear(ag_kv_cache *kv, int32_t seq) {
    paged_kv *p = (paged_kv *)kv;
    if (seq < 0 || seq >= kv->n_seq) return;
    seq_state *s = &p->seqs[seq];
    for (int32_t i = s->n_blocks; i-- > 0;) block_release(p, s->table[i]); /* last first: the prefix stays longest */
    s->n_blocks = s->n_chained = 0;
    s->chain = 0;
}

static void paged_destroy(ag_kv_cache *kv) {
    paged_kv *p = (paged_kv *)kv;
    for (int32_t i = 0; i < kv->n_seq; i++) free(p->seqs[i].table);
    free(p->seqs);
    ag_map_deinit(&p->map);
    free(p->tokens);
    free(p->meta);
    free(p->pool);
    free(p);
}

static const ag_kv_cache_ops paged_ops = {paged_reserve, paged_k, paged_v, paged_clear, paged_destroy};

bool ag_kv_is_paged(const ag_kv_cache *kv) { return kv && kv->ops == &paged_ops; }

size_t ag_kv_paged_blocks_for_mb(int n_layer, int kv_dim, int block_tokens, ag_dtype type, size_t mb) {
    size_t block = (size_t)n_layer * 2 * (size_t)block_tokens * (size_t)kv_dim * (type == AG_DTYPE_F32 ? 4 : 2);
    return block ? (mb << 20) / block : 0;
}

ag_status ag_kv_paged_create(int n_layer, int kv_dim, int32_t n_ctx, int32_t n_seq, int block_tokens, size_t n_blocks,
                             ag_dtype type, ag_kv_cache **out, ag_err *err) {
    *out = NULL;
    if (type != AG_DTYPE_F32 && type != AG_DTYPE_F16)
        return ag_err_set(err, AG_EINVAL, "KV cache type must be f32 or f16");
    if (n_layer < 1 || kv_dim < 1 || n_ctx < 1 || n_seq < 1 || n_seq > 1 << 20 || block_tokens < 1 ||
        block_tokens > 1 << 16 || n_blocks < 1 || n_blocks > (size_t)INT32_MAX)
        return ag_err_set(err, AG_EINVAL, "KV cache shape is empty or too large");
    paged_kv *p = ag_xcalloc(1, sizeof *p);
    p->base = (ag_kv_cache){&paged_ops, type, n_layer, kv_dim, block_tokens, n_seq, n_ctx};
    p->plane_bytes = (size_t)block_tokens * (size_t)kv_dim * (type == AG_DTYPE_F32 ? 4 : 2);
    p->block_bytes = p->plane_bytes * 2 * (size_t)n_layer;
    p->n_blocks = n_blocks;
    p->max_blocks = (n_ctx + block_tokens - 1) / block_tokens;
    bool ok = n_blocks <= SIZE_MAX / p->block_bytes;
    p->pool = ok ? ag_try_malloc(n_blocks * p->block_bytes) : NULL;
    p->meta = ag_try_malloc(n_blocks * sizeof *p->meta);
    p->tokens = ag_try_malloc(n_blocks * (size_t)block_tokens * sizeof *p->tokens);
    p->seqs = ag_xcalloc((size_t)n_seq, sizeof *p->seqs);
    for (int32_t i = 0; i < n_seq && p->pool; i++)
        if (!(p->seqs[i].table = ag_try_malloc((size_t)p->max_blocks * sizeof(int32_t)))) ok = false;
    ag_map_init(&p->map);
    if (!ok || !p->pool || !p->meta || !p->tokens) {
        paged_destroy(&p->base);
        return ag_err_set(err, AG_NOMEM, "no memory for a KV cache of %zu blocks", n_blocks);
    }
    for (size_t b = 0; b < n_blocks; b++)
        p->meta[b] = (block_meta){.parent = -1, .prev = -1, .next = b + 1 < n_blocks ? (int32_t)(b + 1) : -1};
    p->free_head = 0;
    p->n_free = n_blocks;
    p->lru_head = p->lru_tail = -1;
    *out = &p->base;
    return AG_OK;
}

/* The chain: each block's hash covers its tokens and, through the seed, everything before it and the salt. */
static uint64_t chain_start(uint64_t salt) { return ag_hash_bytes(&salt, sizeof salt, 0x70726566697863ull); }
static uint64_t chain_next(uint64_t h, const int32_t *tokens, int bt) {
    return ag_hash_bytes(tokens, (size_t)bt * sizeof *tokens, h);
}

int32_t ag_kv_prefix_attach(ag_kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n, uint64_t salt) {
    if (!ag_kv_is_paged(kv) || seq < 0 || seq >= kv->n_seq) return 0;
    paged_kv *p = (paged_kv *)kv;
    seq_state *s = &p->seqs[seq];
    const int bt = kv->block_tokens;
    if (s->n_blocks) return 0; /* only onto an empty sequence */
    p->query_tokens += (uint64_t)(n > 0 ? n : 0);
    uint64_t h = chain_start(salt);
    int32_t parent = -1;
    while ((s->n_blocks + 1) * bt <= n - 1 && s->n_blocks < p->max_blocks) {
        const int32_t *t = tokens + (size_t)s->n_blocks * bt;
        uint64_t nh = chain_next(h, t, bt);
        block_meta *m = ag_map_get(&p->map, (const char *)&nh, sizeof nh);
        int32_t b = m ? (int32_t)(m - p->meta) : -1;
        if (!m || m->parent != parent || (parent >= 0 && m->parent_gen != p->meta[parent].gen) ||
            memcmp(p->tokens + (size_t)b * bt, t, (size_t)bt * sizeof *t) != 0)
            break; /* a miss, or a collision: compute from here */
        if (m->ref++ == 0) lru_unlink(p, b);
        s->table[s->n_blocks++] = b;
        parent = b;
        h = nh;
    }
    s->n_chained = s->n_blocks;
    s->chain = h;
    p->hit_tokens += (uint64_t)s->n_blocks * bt;
    return s->n_blocks * bt;
}

void ag_kv_prefix_publish(ag_kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n, uint64_t salt) {
    if (!ag_kv_is_paged(kv) || seq < 0 || seq >= kv->n_seq) return;
    paged_kv *p = (paged_kv *)kv;
    seq_state *s = &p->seqs[seq];
    const int bt = kv->block_tokens;
    int32_t full = n / bt < s->n_blocks ? n / bt : s->n_blocks;
    uint64_t h = s->n_chained ? s->chain : chain_start(salt);
    int32_t parent = s->n_chained ? s->table[s->n_chained - 1] : -1;
    for (int32_t i = s->n_chained; i < full; i++) {
        int32_t b = s->table[i];
        block_meta *m = &p->meta[b];
        h = chain_next(h, tokens + (size_t)i * bt, bt);
        if (!m->published && !ag_map_get(&p->map, (const char *)&h, sizeof h)) {
            m->hash = h;
            m->parent = parent;
            m->parent_gen = parent >= 0 ? p->meta[parent].gen : 0;
            memcpy(p->tokens + (size_t)b * bt, tokens + (size_t)i * bt, (size_t)bt * sizeof *tokens);
            m->published = true;
            ag_map_put(&p->map, (const char *)&m->hash, sizeof m->hash, m);
        }
        parent = b;
    }
    if (full > s->n_chained) {
        s->n_chained = full;
        s->chain = h;
    }
}

void ag_kv_paged_stats(const ag_kv_cache *kv, ag_kv_stats *out) {
    memset(out, 0, sizeof *out);
    if (!ag_kv_is_paged(kv)) return;
    const paged_kv *p = (const paged_kv *)kv;
    *out = (ag_kv_stats){.n_blocks = p->n_blocks,
                         .used = p->n_blocks - p->n_free - p->n_cached,
                         .cached = p->n_cached,
                         .free = p->n_free,
                         .prefix_query_tokens = p->query_tokens,
                         .prefix_hit_tokens = p->hit_tokens};
}
