/*
 * arena.c - chunked bump allocator; see arena.h.
 */
#include "base/arena.h"

#include "base/alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 16u

struct ag_arena_chunk {
    ag_arena_chunk *prev;
    size_t size; /* payload bytes after the header */
    /* payload follows, aligned to ALIGN */
};

#define HEADER_SIZE ((sizeof(ag_arena_chunk) + ALIGN - 1) & ~(size_t)(ALIGN - 1))

void ag_arena_init(ag_arena *a, size_t first_chunk) {
    memset(a, 0, sizeof *a);
    a->next_size = first_chunk < AG_ARENA_CHUNK_MIN ? AG_ARENA_CHUNK_MIN : first_chunk;
}

void ag_arena_deinit(ag_arena *a) {
    ag_arena_chunk *c = a->head;
    while (c) {
        ag_arena_chunk *prev = c->prev;
        free(c);
        c = prev;
    }
    memset(a, 0, sizeof *a);
}

void ag_arena_reset(ag_arena *a) {
    ag_arena_chunk *keep = a->head;
    if (!keep) return;
    ag_arena_chunk *c = keep->prev;
    while (c) {
        ag_arena_chunk *prev = c->prev;
        free(c);
        c = prev;
    }
    keep->prev = NULL;
    a->pos = (char *)keep + HEADER_SIZE;
    a->end = a->pos + keep->size;
    a->bytes_used = 0;
}

static int grow(ag_arena *a, size_t n) {
    size_t size = a->next_size;
    while (size < n) {
        if (size > SIZE_MAX / 2) return -1;
        size *= 2;
    }
    if (size > SIZE_MAX - HEADER_SIZE) return -1;
    ag_arena_chunk *c = ag_try_malloc(HEADER_SIZE + size);
    if (!c) return -1;
    c->prev = a->head;
    c->size = size;
    a->head = c;
    a->pos = (char *)c + HEADER_SIZE;
    a->end = a->pos + size;
    if (a->next_size < AG_ARENA_CHUNK_MAX) a->next_size *= 2;
    return 0;
}

void *ag_arena_try_alloc_slow(ag_arena *a, size_t n) {
    if (n > SIZE_MAX - ALIGN) return NULL;
    size_t need = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (need == 0) need = ALIGN;
    if ((size_t)(a->end - a->pos) < need && grow(a, need) != 0) return NULL;
    void *p = a->pos;
    a->pos += need;
    a->bytes_used += need;
    return p;
}

void *ag_arena_alloc(ag_arena *a, size_t n) {
    void *p = ag_arena_try_alloc(a, n);
    if (!p) abort();
    return p;
}

char *ag_arena_try_strndup(ag_arena *a, const char *s, size_t n) {
    char *p = ag_arena_try_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
