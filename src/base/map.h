/*
 * map.h - open-addressing hash map from byte-string keys to pointers.
 *
 * Linear probing over a power-of-two table kept at most 3/4 full; each slot
 * stores the key's hash so most mismatches cost one integer compare; deletion
 * shifts later entries back instead of leaving tombstones, so lookups never
 * slow down with churn.  Keys are borrowed: the caller keeps them alive and
 * unchanged while they are in the map (typically they live in the same arena
 * as the values).  Growth uses the aborting tier: maps hold control data.
 */
#ifndef AG_BASE_MAP_H
#define AG_BASE_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ag_map_slot {
    const char *key; /* NULL: empty */
    size_t key_len;
    uint64_t hash;
    void *value;
} ag_map_slot;

typedef struct ag_map {
    ag_map_slot *slots;
    size_t mask;  /* capacity - 1; capacity is a power of two or 0 */
    size_t count;
    uint64_t seed;
} ag_map;

void ag_map_init(ag_map *m);
void ag_map_deinit(ag_map *m);
/* The value for key, or NULL when absent (store no NULL values to keep this unambiguous). */
void *ag_map_get(const ag_map *m, const char *key, size_t key_len);
/* Insert or replace; returns the previous value or NULL. */
void *ag_map_put(ag_map *m, const char *key, size_t key_len, void *value);
/* Remove; returns the removed value or NULL. */
void *ag_map_del(ag_map *m, const char *key, size_t key_len);
/*
 * Iterate: start with *pos = 0; each call fills the slot's key and value and
 * returns true, or false at the end.  The map must not change meanwhile.
 */
bool ag_map_next(const ag_map *m, size_t *pos, const char **key, size_t *key_len, void **value);

#endif
