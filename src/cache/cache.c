/*
 * cache.c - the L1 response cache: W-TinyLFU over a map of digests
 * (see cache.h).  Each entry sits on exactly one list: the window, main's
 * probation or protected segment (W-TinyLFU), or main alone (LRU, LFU).
 * Lists are circular with a sentinel; the LRU end is head.next.
 */
#include "cache/cache.h"

#include "base/alloc.h"
#include "base/map.h"

#include <stdlib.h>
#include <string.h>

enum { ENTRY_OVERHEAD = 128, LFU_SAMPLES = 5, SKETCH_ROWS = 4 };
enum { IN_WINDOW, IN_PROBATION, IN_PROTECTED };

typedef struct entry {
    uint8_t key[32];
    uint64_t hash, expire_ns, tag;
    ag_cache_val *val;
    size_t size; /* value bytes + ENTRY_OVERHEAD: what counts against the bound */
    int where;
    uint32_t uses;     /* sampled LFU's count */
    size_t slot;       /* index in c->all (sampled LFU picks from it at random) */
    struct entry *prev, *next;
} entry;

typedef struct list {
    entry head;
    size_t bytes;
} list;

struct ag_cache {
    ag_cache_policy policy;
    size_t max, window_max, main_max, protected_max;
    ag_map map;   /* key -> entry; the keys live in the entries */
    size_t count; /* entries, in all[] */
    list seg[3]; /* by where; LRU and LFU use seg[IN_PROBATION] alone */
    uint8_t *sketch; /* SKETCH_ROWS rows of 4-bit counters kept in bytes */
    size_t sketch_mask;
    uint64_t additions, sample_size;
    entry **all;
    size_t cap_all;
    uint64_t rng;
    ag_cache_stats st;
};

static void list_init(list *l) { l->head.prev = l->head.next = &l->head, l->bytes = 0; }

static void list_unlink(list *l, entry *e) {
    e->prev->next = e->next, e->next->prev = e->prev;
    l->bytes -= e->size;
}

static void list_push_mru(list *l, entry *e) {
    e->prev = l->head.prev, e->next = &l->head;
    l->head.prev->next = e, l->head.prev = e;
    l->bytes += e->size;
}

static entry *list_lru(list *l) { return l->head.next == &l->head ? NULL : l->head.next; }

static uint64_t key_hash(const uint8_t key[32]) {
    uint64_t h;
    memcpy(&h, key, sizeof h); /* a cryptographic digest: its bytes are already uniform */
    return h;
}

ag_cache *ag_cache_create(size_t max_bytes, ag_cache_policy policy) {
    ag_cache *c = ag_xcalloc(1, sizeof *c);
    c->policy = policy;
    c->max = max_bytes;
    c->window_max = policy == AG_CACHE_WTINYLFU ? max_bytes / 100 : 0;
    c->main_max = max_bytes - c->window_max;
    c->protected_max = c->main_max / 5 * 4;
    ag_map_init(&c->map);
    for (int i = 0; i < 3; i++) list_init(&c->seg[i]);
    /* the sketch: a counter per expected entry per row (entries of ~1 KB), at least 1024 */
    size_t width = 1024;
    while (width < max_bytes / 1024 && width < (1u << 24)) width <<= 1;
    c->sketch = ag_xcalloc(SKETCH_ROWS * width, 1);
    c->sketch_mask = width - 1;
    c->sample_size = 10 * (uint64_t)width;
    c->rng = 0x9E3779B97F4A7C15ull;
    return c;
}

ag_cache_val *ag_cache_val_alloc(size_t len, uint64_t stored_ns) {
    ag_cache_val *v = ag_xmalloc(sizeof *v + len);
    atomic_init(&v->refs, 1);
    v->len = len;
    v->stored_ns = stored_ns;
    v->aux = NULL;
    v->aux_free = NULL;
    return v;
}

ag_cache_val *ag_cache_val_new(const void *data, size_t len, uint64_t stored_ns) {
    ag_cache_val *v = ag_cache_val_alloc(len, stored_ns);
    memcpy(v->data, data, len);
    return v;
}

ag_cache_val *ag_cache_val_retain(ag_cache_val *v) {
    atomic_fetch_add(&v->refs, 1);
    return v;
}

void ag_cache_val_release(ag_cache_val *v) {
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1) return;
    if (v->aux_free) v->aux_free(v->aux);
    free(v);
}

/* ---- frequency sketch ----------------------------------------------------------------- */

static size_t sketch_index(const ag_cache *c, uint64_t hash, int row) {
    static const uint64_t seeds[SKETCH_ROWS] = {0xc3a5c85c97cb3127ull, 0xb492b66fbe98f273ull, 0x9ae16a3b2f90404full,
                                                0xcbf29ce484222325ull};
    uint64_t h = (hash ^ (hash >> 29)) * seeds[row];
    return (size_t)row * (c->sketch_mask + 1) + (size_t)((h >> 32) & c->sketch_mask);
}

static void sketch_add(ag_cache *c, uint64_t hash) {
    bool added = false;
    for (int r = 0; r < SKETCH_ROWS; r++) {
        uint8_t *v = &c->sketch[sketch_index(c, hash, r)];
        if (*v < 15) (*v)++, added = true;
    }
    if (added && ++c->additions >= c->sample_size) { /* aging: halve everything */
        for (size_t i = 0; i < SKETCH_ROWS * (c->sketch_mask + 1); i++) c->sketch[i] >>= 1;
        c->additions /= 2;
    }
}

static unsigned sketch_freq(const ag_cache *c, uint64_t hash) {
    unsigned f = 15;
    for (int r = 0; r < SKETCH_ROWS; r++) {
        unsigned v = c->sketch[sketch_index(c, hash, r)];
        if (v < f) f = v;
    }
    return f;
}

static entry *find(const ag_cache *c, const uint8_t key[32]) { return ag_map_get(&c->map, (const char *)key, 32); }

static void entry_free(ag_cache *c, entry *e) {
    ag_map_del(&c->map, (const char *)e->key, 32);
    list_unlink(&c->seg[e->where], e);
    c->all[e->slot] = c->all[--c->count];
    c->all[e->slot]->slot = e->slot;
    c->st.bytes -= e->size;
    ag_cache_val_release(e->val);
    free(e);
}

static void evict(ag_cache *c, entry *e) {
    c->st.evictions++;
    entry_free(c, e);
}

/* ---- policies --------------------------------------------------------------------------- */

static size_t main_bytes(const ag_cache *c) { return c->seg[IN_PROBATION].bytes + c->seg[IN_PROTECTED].bytes; }

/* W-TinyLFU's next main victim: probation's LRU, else protected's. */
static entry *main_victim(ag_cache *c) {
    entry *v = list_lru(&c->seg[IN_PROBATION]);
    return v ? v : list_lru(&c->seg[IN_PROTECTED]);
}

/* A candidate leaving the window: into probation if main has room or it is used more than what it would evict. */
static void admit(ag_cache *c, entry *cand) {
    if (main_bytes(c) + cand->size > c->main_max) {
        entry *victim = main_victim(c);
        if (victim && sketch_freq(c, cand->hash) <= sketch_freq(c, victim->hash)) {
            c->st.rejections++;
            entry_free(c, cand); /* still on the window's list */
            return;
        }
        while (main_bytes(c) + cand->size > c->main_max && (victim = main_victim(c))) evict(c, victim);
    }
    list_unlink(&c->seg[IN_WINDOW], cand);
    cand->where = IN_PROBATION;
    list_push_mru(&c->seg[IN_PROBATION], cand);
}

/* Sampled LFU: the least used of a few random entries other than the newcomer. */
static entry *lfu_victim(ag_cache *c, const entry *newcomer) {
    entry *best = NULL;
    for (int i = 0; i < LFU_SAMPLES && c->count > 1; i++) {
        c->rng ^= c->rng << 13, c->rng ^= c->rng >> 7, c->rng ^= c->rng << 17;
        entry *e = c->all[c->rng % c->count];
        if (e != newcomer && (!best || e->uses < best->uses)) best = e;
    }
    return best;
}

/* Bring the cache back within its bounds after e (just inserted) grew it. */
static void rebalance(ag_cache *c, entry *e) {
    if (c->policy == AG_CACHE_WTINYLFU) {
        entry *cand;
        while (c->seg[IN_WINDOW].bytes > c->window_max && (cand = list_lru(&c->seg[IN_WINDOW]))) admit(c, cand);
        return;
    }
    while (c->st.bytes > c->max) {
        entry *v = c->policy == AG_CACHE_LRU ? list_lru(&c->seg[IN_PROBATION]) : lfu_victim(c, e);
        if (!v) v = e; /* nothing else left to evict */
        evict(c, v);
        if (v == e) break;
    }
}

/* A hit: W-TinyLFU promotes probation to protected (demoting protected's LRU when over), others move to MRU. */
static void touch(ag_cache *c, entry *e) {
    e->uses++;
    list_unlink(&c->seg[e->where], e);
    if (e->where == IN_PROBATION && c->policy == AG_CACHE_WTINYLFU) {
        e->where = IN_PROTECTED;
        list_push_mru(&c->seg[IN_PROTECTED], e);
        entry *d;
        while (c->seg[IN_PROTECTED].bytes > c->protected_max && (d = list_lru(&c->seg[IN_PROTECTED])) != e) {
            list_unlink(&c->seg[IN_PROTECTED], d);
            d->where = IN_PROBATION;
            list_push_mru(&c->seg[IN_PROBATION], d);
        }
        return;
    }
    list_push_mru(&c->seg[e->where], e);
}

/* ---- the interface ------------------------------------------------------------------------ */

ag_cache_val *ag_cache_get(ag_cache *c, const uint8_t key[32], uint64_t now_ns) {
    uint64_t h = key_hash(key);
    if (c->policy == AG_CACHE_WTINYLFU) sketch_add(c, h);
    entry *e = find(c, key);
    if (e && e->expire_ns && now_ns >= e->expire_ns) {
        c->st.expirations++;
        entry_free(c, e);
        e = NULL;
    }
    if (!e) {
        c->st.misses++;
        return NULL;
    }
    c->st.hits++;
    touch(c, e);
    return ag_cache_val_retain(e->val);
}

bool ag_cache_put(ag_cache *c, const uint8_t key[32], const void *data, size_t len, uint64_t ttl_ns, uint64_t now_ns,
                  uint64_t tag) {
    ag_cache_val *v = ag_cache_val_new(data, len, now_ns);
    bool kept = ag_cache_put_val(c, key, v, ttl_ns, tag);
    ag_cache_val_release(v);
    return kept;
}

bool ag_cache_put_val(ag_cache *c, const uint8_t key[32], ag_cache_val *v, uint64_t ttl_ns, uint64_t tag) {
    size_t size = v->len + ENTRY_OVERHEAD;
    uint64_t h = key_hash(key);
    entry *old = find(c, key);
    if (old) entry_free(c, old); /* a replacement starts over */
    if (size > (c->policy == AG_CACHE_WTINYLFU ? c->main_max : c->max)) {
        c->st.rejections++;
        return false;
    }
    entry *e = ag_xcalloc(1, sizeof *e);
    memcpy(e->key, key, 32);
    e->hash = h, e->val = ag_cache_val_retain(v), e->size = size, e->tag = tag;
    e->expire_ns = ttl_ns ? v->stored_ns + ttl_ns : 0;
    ag_map_put(&c->map, (const char *)e->key, 32, e);
    if (c->count == c->cap_all) {
        c->cap_all = c->cap_all ? 2 * c->cap_all : 64;
        c->all = ag_xrealloc(c->all, c->cap_all * sizeof *c->all);
    }
    e->slot = c->count;
    c->all[c->count++] = e;
    c->st.bytes += size;
    c->st.puts++;
    e->where = c->policy == AG_CACHE_WTINYLFU ? IN_WINDOW : IN_PROBATION;
    list_push_mru(&c->seg[e->where], e);
    rebalance(c, e);
    return find(c, key) != NULL;
}

void ag_cache_remove(ag_cache *c, const uint8_t key[32]) {
    entry *e = find(c, key);
    if (e) entry_free(c, e);
}

size_t ag_cache_remove_tag(ag_cache *c, uint64_t tag) {
    size_t n = 0;
    for (size_t i = c->count; i-- > 0;)
        if (i < c->count && c->all[i]->tag == tag) entry_free(c, c->all[i]), n++;
    return n;
}

void ag_cache_clear(ag_cache *c) {
    while (c->count) entry_free(c, c->all[c->count - 1]);
}

ag_cache_stats ag_cache_stats_get(const ag_cache *c) {
    ag_cache_stats s = c->st;
    s.entries = c->count;
    return s;
}

void ag_cache_destroy(ag_cache *c) {
    if (!c) return;
    ag_cache_clear(c);
    ag_map_deinit(&c->map);
    free(c->sketch), free(c->all);
    free(c);
}
