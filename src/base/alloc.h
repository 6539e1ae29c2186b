/*
 * alloc.h - the two allocation tiers, and fault injection for tests.
 *
 * Small control objects use ag_xmalloc and friends, which abort on OOM: a
 * process that cannot allocate a few hundred bytes cannot do anything useful,
 * and NULL checks after them would be dead code.  Request-sized or
 * attacker-influenced sizes use ag_try_malloc and friends, whose NULL the
 * caller turns into AG_NOMEM (and the server into 503).
 *
 * Fault injection (SQLite's discipline): ag_alloc_fail_at(n) makes the n-th
 * try-allocation from now fail (n >= 1), so a test can walk n = 1, 2, ... and
 * check that every failure path is clean.  The counter is the calling
 * thread's: arming it never fails another thread's allocations, so a
 * threaded program (the server's loop beside its engine thread) is tested
 * deterministically and without data races.
 */
#ifndef AG_BASE_ALLOC_H
#define AG_BASE_ALLOC_H

#include <stddef.h>

void *ag_xmalloc(size_t n);
void *ag_xcalloc(size_t count, size_t size);
void *ag_xrealloc(void *p, size_t n);
char *ag_xstrdup(const char *s);
char *ag_xstrndup(const char *s, size_t n); /* the first n bytes of s, NUL-terminated */

void *ag_try_malloc(size_t n);
void *ag_try_realloc(void *p, size_t n);

/* Fail the n-th try-allocation from now; 0 turns injection off. */
void ag_alloc_fail_at(unsigned long n);
/* How many try-allocations were failed by injection since the last call to ag_alloc_fail_at. */
unsigned long ag_alloc_failed_count(void);

#endif
