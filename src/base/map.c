/*
 * map.c - linear-probing hash map with backward-shift deletion; see map.h.
 */
#include "base/map.h"

#include "base/alloc.h"
#include "base/hash.h"

#include <stdlib.h>
#include <string.h>

void ag_map_init(ag_map *m) {
    memset(m, 0, sizeof *m);
    m->seed = (uint64_t)(uintptr_t)m * 0x9e3779b97f4a7c15ull;
}

void ag_map_deinit(ag_map *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static inline bool slot_matches(const ag_map_slot *s, const char *key, size_t key_len, uint64_t h) {
    return s->hash == h && s->key_len == key_len && memcmp(s->key, key, key_len) == 0;
}

/* Index of key's slot, or of the empty slot where it would go. */
static size_t find(const ag_map *m, const char *key, size_t key_len, uint64_t h) {
    size_t i = (size_t)h & m->mask;
    while (m->slots[i].key && !slot_matches(&m->slots[i], key, key_len, h)) i = (i + 1) & m->mask;
    return i;
}

void *ag_map_get(const ag_map *m, const char *key, size_t key_len) {
    if (m->count == 0) return NULL;
    uint64_t h = ag_hash_bytes(key, key_len, m->seed);
    const ag_map_slot *s = &m->slots[find(m, key, key_len, h)];
    return s->key ? s->value : NULL;
}

static void grow(ag_map *m) {
    size_t cap = m->slots ? (m->mask + 1) * 2 : 16;
    ag_map_slot *old = m->slots;
    size_t old_cap = m->slots ? m->mask + 1 : 0;
    m->slots = ag_xcalloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].key) continue;
        size_t j = (size_t)old[i].hash & m->mask;
        while (m->slots[j].key) j = (j + 1) & m->mask;
        m->slots[j] = old[i];
    }
    free(old);
}

void *ag_map_put(ag_map *m, const char *key, size_t key_len, void *value) {
    if (!m->slots || (m->count + 1) * 4 > (m->mask + 1) * 3) grow(m);
    uint64_t h = ag_hash_bytes(key, key_len, m->seed);
    ag_map_slot *s = &m->slots[find(m, key, key_len, h)];
    if (s->key) {
        void *prev = s->value;
        s->value = value;
        return prev;
    }
    *s = (ag_map_slot){key, key_len, h, value};
    m->count++;
    return NULL;
}

void *ag_map_del(ag_map *m, const char *key, size_t key_len) {
    if (m->count == 0) return NULL;
    uint64_t h = ag_hash_bytes(key, key_len, m->seed);
    size_t i = find(m, key, key_len, h);
    if (!m->slots[i].key) return NULL;
    void *prev = m->slots[i].value;
    /* Backward shift: pull each later entry of the probe run into the hole
     * unless its home slot lies cyclically in (hole, j]. */
    size_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        if (!m->slots[j].key) break;
        size_t home = (size_t)m->slots[j].hash & m->mask;
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays) continue;
        m->slots[hole] = m->slots[j];
        hole = j;
    }
    m->slots[hole].key = NULL;
    m->count--;
    return prev;
}

bool ag_map_next(const ag_map *m, size_t *pos, const char **key, size_t *key_len, void **value) {
    size_t cap = m->slots ? m->mask + 1 : 0;
    while (*pos < cap) {
        const ag_map_slot *s = &m->slots[(*pos)++];
        if (s->key) {
            *key = s->key;
            *key_len = s->key_len;
            *value = s->value;
            return true;
        }
    }
    return false;
}
