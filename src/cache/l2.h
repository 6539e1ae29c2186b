/*
 * l2.h - the shared response cache tier: Redis through hiredis's async API
 * on the server's libuv loop, values zstd-compressed with a TTL.
 *
 * Redis is an optimisation, never a dependency: every get and set ends in
 * its callback exactly once, within --redis-timeout-ms, whatever Redis does.
 * A slow, dead or absent Redis reads as a miss.  After `breaker_failures`
 * consecutive failures (errors, timeouts) a circuit breaker opens: calls
 * short-circuit to a miss for `breaker_open_ms`, then one trial call decides
 * whether it closes.  A lost connection is re-made with exponential backoff
 * (100 ms doubling to 5 s).
 */
#ifndef AG_CACHE_L2_H
#define AG_CACHE_L2_H

#include "cache/cache.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ag_l2 ag_l2;

typedef struct ag_l2_opts {
    const char *url;          /* redis://[[user]:password@]host[:port][/db] */
    uint64_t timeout_ms;      /* per command */
    int breaker_failures;     /* consecutive failures that open the breaker */
    uint64_t breaker_open_ms; /* how long it stays open before a trial */
} ag_l2_opts;

typedef struct ag_l2_stats {
    uint64_t hits, misses, sets, errors, timeouts, short_circuits, reconnects;
    bool connected;
    const char *breaker; /* "closed", "open", "half-open" */
    char last_error[128]; /* the latest error since the connection was made ("" for none), e.g. WRONGPASS */
} ag_l2_stats;

/*
 * Starts connecting (in the background); false with msg when the URL is
 * malformed or asks for TLS (redis_url.h).
 */
bool ag_l2_create(uv_loop_t *loop, const ag_l2_opts *o, ag_l2 **out, char *msg, size_t msg_cap);
/* Closes the connection; pending callbacks run (as misses) before it returns or from the loop. */
void ag_l2_destroy(ag_l2 *l);

/*
 * v is the value, NULL on a miss, error, timeout or open breaker; its
 * stored_ns is when it was set, on this process's monotonic clock (so its
 * age reads as an L1 value's).  v is lent for the call: retain it to keep it.
 */
typedef void (*ag_l2_get_cb)(void *ctx, ag_cache_val *v);
typedef void (*ag_l2_set_cb)(void *ctx, bool ok);

/* Entries live under their namespace's tag (ag_l2_delete drops one namespace). */
void ag_l2_get(ag_l2 *l, const uint8_t key[32], uint64_t tag, ag_l2_get_cb cb, void *ctx);
/* cb may be NULL (fire and forget). */
void ag_l2_set(ag_l2 *l, const uint8_t key[32], uint64_t tag, const void *data, size_t len, uint64_t ttl_s,
               ag_l2_set_cb cb, void *ctx);
/*
 * Delete every entry (all) or a namespace's, in the background: SCAN
 * batches, each UNLINKed, until the cursor returns to 0.  False when Redis
 * is not connected (nothing started).
 */
bool ag_l2_delete(ag_l2 *l, bool all, uint64_t tag);
ag_l2_stats ag_l2_stats_get(const ag_l2 *l);

#endif
