/*
 * cache.h - the in-process response cache (L1): entries keyed by a 32-byte
 * digest of the normalized request, bounded in bytes, each with its own TTL,
 * values shared by reference count so one cached answer can be written to
 * many clients at once without copies.
 *
 * Admission and eviction are W-TinyLFU (Einziger, Friedman, Manes; as in
 * Caffeine): new entries enter a small window LRU (1 % of the bytes); what
 * the window pushes out competes with the main area's next victim, and only
 * the one a count-min sketch of recent request frequencies rates higher stays.
 * The main area is a segmented LRU (20 % probation, 80 % protected), so one
 * scan of one-off requests cannot flush the hot set.  The sketch (4-bit
 * counters in 4 rows) halves every counter after 10 x capacity increments,
 * so yesterday's favourites fade.  Every operation is O(1).
 *
 * Plain LRU and a sampled LFU (Redis's allkeys-lfu: evict the least used of
 * 5 random entries) are here too, as yardsticks for tests and benchmarks.
 * Not thread-safe: the server's loop thread owns it.
 */
#ifndef AG_CACHE_CACHE_H
#define AG_CACHE_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ag_cache_policy { AG_CACHE_WTINYLFU, AG_CACHE_LRU, AG_CACHE_LFU } ag_cache_policy;

/* A cached value; readers hold a reference (ag_cache_get) and drop it with ag_cache_val_release. */
typedef struct ag_cache_val {
    atomic_int refs;
    size_t len;
    uint64_t stored_ns; /* when it was put: the Age header */
    /* A form derived from the data that its user keeps with it (the server's coded bodies), set once on the
     * thread that uses the value and freed with it; not counted in the cache's bytes. */
    void *aux;
    void (*aux_free)(void *aux);
    char data[];
} ag_cache_val;

typedef struct ag_cache_stats {
    uint64_t hits, misses, puts, evictions, rejections, expirations;
    size_t bytes, entries;
} ag_cache_stats;

typedef struct ag_cache ag_cache;

/* max_bytes counts values plus a fixed per-entry overhead. */
ag_cache *ag_cache_create(size_t max_bytes, ag_cache_policy policy);
void ag_cache_destroy(ag_cache *c);

/* The value under key, with a reference the caller releases; NULL on a miss (or an expired entry). */
ag_cache_val *ag_cache_get(ag_cache *c, const uint8_t key[32], uint64_t now_ns);
/*
 * Store v under key for ttl_ns from v->stored_ns (0: no expiry), replacing
 * what was there; the cache takes a reference of its own, the caller keeps
 * its own.  tag groups entries for ag_cache_remove_tag (a namespace).  False
 * when the policy declined it at once (larger than the cache).
 */
bool ag_cache_put_val(ag_cache *c, const uint8_t key[32], ag_cache_val *v, uint64_t ttl_ns, uint64_t tag);
/* ag_cache_put_val of a new value holding a copy of data[0..len), stored at now_ns. */
bool ag_cache_put(ag_cache *c, const uint8_t key[32], const void *data, size_t len, uint64_t ttl_ns, uint64_t now_ns,
                  uint64_t tag);
void ag_cache_remove(ag_cache *c, const uint8_t key[32]);
/* Drop every entry with this tag (O(entries)); how many went. */
size_t ag_cache_remove_tag(ag_cache *c, uint64_t tag);
void ag_cache_clear(ag_cache *c);
ag_cache_stats ag_cache_stats_get(const ag_cache *c);

/* A value outside any cache yet, of len bytes for the caller to fill, with one reference (the caller's). */
ag_cache_val *ag_cache_val_alloc(size_t len, uint64_t stored_ns);
/* ag_cache_val_alloc holding a copy of data[0..len). */
ag_cache_val *ag_cache_val_new(const void *data, size_t len, uint64_t stored_ns);
ag_cache_val *ag_cache_val_retain(ag_cache_val *v);
void ag_cache_val_release(ag_cache_val *v);

#endif
