/*
 * arena.h - bump allocator for memory that dies all at once (per request,
 * per connection, per parsed document).
 *
 * Memory comes from a list of chunks; each chunk is at least twice the size of
 * the one before (up to AG_ARENA_CHUNK_MAX), so a large document costs a
 * handful of malloc calls.  Allocations never move.  ag_arena_reset keeps the
 * newest chunk for reuse, so a long-lived arena reset between requests reaches
 * a steady state with no malloc at all.
 *
 * Chunks are allocated with the try tier (arena sizes follow the input):
 * ag_arena_try_alloc returns NULL on failure, ag_arena_alloc aborts.
 */
#ifndef AG_BASE_ARENA_H
#define AG_BASE_ARENA_H

#include <stddef.h>

#define AG_ARENA_CHUNK_MIN 4096u
#define AG_ARENA_CHUNK_MAX (8u << 20)

typedef struct ag_arena_chunk ag_arena_chunk;

typedef struct ag_arena {
    ag_arena_chunk *head; /* newest chunk; older ones chain through ->prev */
    char *pos;            /* next free byte in head */
    char *end;            /* one past head's last byte */
    size_t next_size;     /* size of the next chunk to allocate */
    size_t bytes_used;    /* payload bytes handed out since init/reset */
} ag_arena;

/* first_chunk: size hint for the first chunk (0: AG_ARENA_CHUNK_MIN). */
void ag_arena_init(ag_arena *a, size_t first_chunk);
void ag_arena_deinit(ag_arena *a);
void ag_arena_reset(ag_arena *a);

/* Slow path of ag_arena_try_alloc: a new chunk. */
void *ag_arena_try_alloc_slow(ag_arena *a, size_t n);

/* n bytes aligned to 16; NULL when memory is exhausted.  Inline: a bump and a compare on the hot path. */
static inline void *ag_arena_try_alloc(ag_arena *a, size_t n) {
    size_t need = (n + 15) & ~(size_t)15;
    if (need - 1 < (size_t)(a->end - a->pos)) { /* need >= 1 and fits (n == 0 and overflow go slow) */
        void *p = a->pos;
        a->pos += need;
        a->bytes_used += need;
        return p;
    }
    return ag_arena_try_alloc_slow(a, n);
}
/* As above but aborts on exhaustion: for small control data only. */
void *ag_arena_alloc(ag_arena *a, size_t n);
/* Copy of [s, s+n) plus a NUL byte; NULL when memory is exhausted. */
char *ag_arena_try_strndup(ag_arena *a, const char *s, size_t n);

#endif
