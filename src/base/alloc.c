/*
 * alloc.c - aborting and try allocators with test-only fault injection.
 * See alloc.h for when to use which tier.
 */
#include "base/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per thread: a test arms the thread whose allocations it drives (the server's loop), and the others run on. */
static _Thread_local unsigned long fail_countdown; /* 0: off; else the try-alloc that fails */
static _Thread_local unsigned long fail_count;

static void oom_abort(size_t n) {
    fprintf(stderr, "autoglm: out of memory allocating %zu bytes\n", n);
    abort();
}

void *ag_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom_abort(n);
    return p;
}

void *ag_xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom_abort(count * size);
    return p;
}

void *ag_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom_abort(n);
    return q;
}

char *ag_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(ag_xmalloc(n), s, n);
}

char *ag_xstrndup(const char *s, size_t n) {
    char *d = memcpy(ag_xmalloc(n + 1), s, n);
    d[n] = 0;
    return d;
}

static int injected_failure(void) {
    if (fail_countdown == 0) return 0;
    if (--fail_countdown == 0) {
        fail_count++;
        return 1;
    }
    return 0;
}

void *ag_try_malloc(size_t n) {
    if (injected_failure()) return NULL;
    return malloc(n ? n : 1);
}

void *ag_try_realloc(void *p, size_t n) {
    if (injected_failure()) return NULL;
    return realloc(p, n ? n : 1);
}

void ag_alloc_fail_at(unsigned long n) {
    fail_countdown = n;
    fail_count = 0;
}

unsigned long ag_alloc_failed_count(void) { return fail_count; }
