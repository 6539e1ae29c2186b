/*
 * l2.c - the Redis tier of the response cache (see l2.h).  hiredis 0.14
 * has no command timeouts, so each command is a `pending` record with a
 * deadline that a 10 ms timer checks: a command that times out answers its
 * caller at once (a miss) and its record stays, marked abandoned, until
 * hiredis's reply (or the disconnect that flushes it) frees it.
 * Values are stored as an 8-byte Unix-millisecond timestamp then the
 * zstd-compressed bytes, under "autoglm:rc:" + the namespace tag and the key in hex.
 */
#define _POSIX_C_SOURCE 200809L
#include "cache/l2.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "cache/redis_url.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/*
 * hiredis on libuv.  hiredis 0.14's own adapter (adapters/libuv.h) drops
 * poll events that come with an error status, and a refused connect comes
 * that way: its connect callback then never runs and the client waits
 * forever.  Here an error status is handed to hiredis as writability, which
 * makes it look at the socket, see the error and report it.
 */
typedef struct uv_glue {
    redisAsyncContext *ac;
    uv_poll_t poll;
    int events;
} uv_glue;

static void glue_on_poll(uv_poll_t *h, int status, int events) {
    uv_glue *g = h->data;
    if (status < 0) events = UV_WRITABLE;
    if (g->ac && (events & UV_READABLE)) redisAsyncHandleRead(g->ac);
    if (g->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(g->ac);
}

static void glue_update(uv_glue *g, int add, int del) {
    g->events = (g->events | add) & ~del;
    if (g->events) uv_poll_start(&g->poll, g->events, glue_on_poll);
    else uv_poll_stop(&g->poll);
}

static void glue_add_read(void *p) { glue_update(p, UV_READABLE, 0); }
static void glue_del_read(void *p) { glue_update(p, 0, UV_READABLE); }
static void glue_add_write(void *p) { glue_update(p, UV_WRITABLE, 0); }
static void glue_del_write(void *p) { glue_update(p, 0, UV_WRITABLE); }
static void glue_closed(uv_handle_t *h) { free(h->data); }

static void glue_cleanup(void *p) {
    uv_glue *g = p;
    g->ac = NULL; /* hiredis is freeing the context */
    uv_close((uv_handle_t *)&g->poll, glue_closed);
}

static bool glue_attach(redisAsyncContext *ac, uv_loop_t *loop) {
    uv_glue *g = ag_xcalloc(1, sizeof *g);
    if (uv_poll_init(loop, &g->poll, ac->c.fd) != 0) {
        free(g);
        return false;
    }
    g->ac = ac;
    g->poll.data = g;
    ac->ev.data = g;
    ac->ev.addRead = glue_add_read, ac->ev.delRead = glue_del_read;
    ac->ev.addWrite = glue_add_write, ac->ev.delWrite = glue_del_write;
    ac->ev.cleanup = glue_cleanup;
    return true;
}

enum { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };

typedef struct pending {
    ag_l2 *l;
    ag_l2_get_cb get;
    ag_l2_set_cb set;
    void *ctx;
    uint64_t deadline_ns;
    bool answered; /* the caller has its answer (a timeout came first, or the reply) */
    struct pending *prev, *next;
} pending;

struct ag_l2 {
    uv_loop_t *loop;
    ag_l2_opts o;
    ag_redis_url url;
    redisAsyncContext *ac;
    bool connected, closing;
    uv_timer_t tick, reconnect;
    uint64_t backoff_ms;
    int breaker, failures;
    uint64_t breaker_until_ns;
    bool trial_in_flight;
    int open_timers; /* the timers still to be closed before l can go */
    pending live; /* sentinel of the records awaiting a reply */
    ag_l2_stats st;
};

static void connect_now(ag_l2 *l);

/* ---- the circuit breaker ------------------------------------------------------------- */

/* May a command go to Redis now?  An open breaker lets one trial through after its wait. */
static bool breaker_allows(ag_l2 *l) {
    if (!l->connected) return false;
    if (l->breaker == BREAKER_CLOSED) return true;
    if (l->breaker == BREAKER_OPEN && ag_clock_mono_ns() >= l->breaker_until_ns) l->breaker = BREAKER_HALF_OPEN;
    if (l->breaker == BREAKER_HALF_OPEN && !l->trial_in_flight) return l->trial_in_flight = true;
    return false;
}

static void breaker_result(ag_l2 *l, bool ok) {
    l->trial_in_flight = false;
    if (ok) {
        l->failures = 0;
        l->breaker = BREAKER_CLOSED;
        return;
    }
    if (++l->failures >= l->o.breaker_failures || l->breaker == BREAKER_HALF_OPEN) {
        l->breaker = BREAKER_OPEN;
        l->breaker_until_ns = ag_clock_mono_ns() + l->o.breaker_open_ms * 1000000ull;
    }
}

/* ---- commands ---------------------------------------------------------------------------- */

static void note_error(ag_l2 *l, const char *msg) {
    snprintf(l->st.last_error, sizeof l->st.last_error, "%s", msg ? msg : "unknown error");
}

static void answer_miss(pending *p) {
    if (p->answered) return;
    p->answered = true;
    if (p->get) p->get(p->ctx, NULL);
    if (p->set) p->set(p->ctx, false);
}

static void unlink_pending(pending *p) { p->prev->next = p->next, p->next->prev = p->prev; }

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    (void)ac;
    pending *p = privdata;
    ag_l2 *l = p->l;
    redisReply *r = reply;
    unlink_pending(p);
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    if (r && !ok) note_error(l, r->str);
    if (!p->answered) {
        breaker_result(l, ok);
        if (!ok) l->st.errors++;
        if (p->get) {
            /* a value: 8 bytes of time, then the compressed bytes */
            if (ok && r->type == REDIS_REPLY_STRING && r->len > 8) {
                unsigned long long n = ZSTD_getFrameContentSize(r->str + 8, (size_t)r->len - 8);
                uint64_t stored_ms, now_ms = ag_clock_wall_ns() / 1000000ull;
                memcpy(&stored_ms, r->str, 8);
                uint64_t age_ns = now_ms > stored_ms ? (now_ms - stored_ms) * 1000000ull : 0, mono = ag_clock_mono_ns();
                ag_cache_val *v = n != ZSTD_CONTENTSIZE_ERROR && n != ZSTD_CONTENTSIZE_UNKNOWN && n < (1ull << 31)
                                      ? ag_cache_val_alloc((size_t)n, mono > age_ns ? mono - age_ns : 0)
                                      : NULL;
                if (v && ZSTD_decompress(v->data, n, r->str + 8, (size_t)r->len - 8) == n) {
                    l->st.hits++;
                    p->answered = true;
                    p->get(p->ctx, v);
                }
                ag_cache_val_release(v);
            }
            if (!p->answered) l->st.misses++;
        }
        if (!p->answered) {
            p->answered = true;
            if (p->get) p->get(p->ctx, NULL);
            if (p->set) p->set(p->ctx, ok);
        }
    }
    free(p);
}

static pending *track(ag_l2 *l, ag_l2_get_cb get, ag_l2_set_cb set, void *ctx) {
    pending *p = ag_xcalloc(1, sizeof *p);
    p->l = l, p->get = get, p->set = set, p->ctx = ctx;
    p->deadline_ns = ag_clock_mono_ns() + l->o.timeout_ms * 1000000ull;
    p->next = l->live.next, p->prev = &l->live;
    l->live.next->prev = p, l->live.next = p;
    return p;
}

static void key_name(const uint8_t key[32], uint64_t tag, char out[100]) {
    int n = snprintf(out, 100, "autoglm:rc:%016llx:", (unsigned long long)tag);
    for (int i = 0; i < 32; i++) snprintf(out + n + 2 * i, 3, "%02x", key[i]);
}

void ag_l2_get(ag_l2 *l, const uint8_t key[32], uint64_t tag, ag_l2_get_cb cb, void *ctx) {
    if (!breaker_allows(l)) {
        l->st.short_circuits++;
        cb(ctx, NULL);
        return;
    }
    char name[100];
    key_name(key, tag, name);
    pending *p = track(l, cb, NULL, ctx);
    if (redisAsyncCommand(l->ac, on_reply, p, "GET %s", name) != REDIS_OK) {
        unlink_pending(p);
        breaker_result(l, false);
        l->st.errors++;
        answer_miss(p);
        free(p);
    }
}

void ag_l2_set(ag_l2 *l, const uint8_t key[32], uint64_t tag, const void *data, size_t len, uint64_t ttl_s,
               ag_l2_set_cb cb, void *ctx) {
    if (!breaker_allows(l)) {
        l->st.short_circuits++;
        if (cb) cb(ctx, false);
        return;
    }
    size_t cap = ZSTD_compressBound(len);
    char *buf = ag_xmalloc(8 + cap);
    uint64_t now_ms = ag_clock_wall_ns() / 1000000ull;
    memcpy(buf, &now_ms, 8);
    size_t n = ZSTD_compress(buf + 8, cap, data, len, 3);
    char name[100];
    key_name(key, tag, name);
    pending *p = track(l, NULL, cb, ctx);
    int rc = ZSTD_isError(n) ? REDIS_ERR
                             : redisAsyncCommand(l->ac, on_reply, p, "SET %s %b EX %llu", name, buf, 8 + n,
                                                 (unsigned long long)(ttl_s ? ttl_s : 365ull * 86400));
    free(buf);
    if (rc != REDIS_OK) {
        unlink_pending(p);
        breaker_result(l, false);
        l->st.errors++;
        answer_miss(p);
        free(p);
        return;
    }
    l->st.sets++;
}

/* ---- deletion: SCAN then UNLINK, batch after batch ----------------------------------------- */

typedef struct deletion {
    char pattern[48];
} deletion;

static void on_scan(redisAsyncContext *ac, void *reply, void *privdata) {
    deletion *d = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        free(d); /* disconnected or refused: what is left ages out by TTL */
        return;
    }
    redisReply *keys = r->element[1];
    if (keys->elements) {
        const char **argv = ag_xmalloc((keys->elements + 1) * sizeof *argv);
        size_t *lens = ag_xmalloc((keys->elements + 1) * sizeof *lens);
        argv[0] = "UNLINK", lens[0] = 6;
        for (size_t i = 0; i < keys->elements; i++) argv[i + 1] = keys->element[i]->str, lens[i + 1] = keys->element[i]->len;
        redisAsyncCommandArgv(ac, NULL, NULL, (int)keys->elements + 1, argv, lens);
        free(argv), free(lens);
    }
    if (strcmp(r->element[0]->str, "0") == 0 ||
        redisAsyncCommand(ac, on_scan, d, "SCAN %s MATCH %s COUNT 1000", r->element[0]->str, d->pattern) != REDIS_OK)
        free(d);
}

bool ag_l2_delete(ag_l2 *l, bool all, uint64_t tag) {
    if (!l->connected) return false;
    deletion *d = ag_xcalloc(1, sizeof *d);
    if (all) snprintf(d->pattern, sizeof d->pattern, "autoglm:rc:*");
    else snprintf(d->pattern, sizeof d->pattern, "autoglm:rc:%016llx:*", (unsigned long long)tag);
    if (redisAsyncCommand(l->ac, on_scan, d, "SCAN 0 MATCH %s COUNT 1000", d->pattern) != REDIS_OK) {
        free(d);
        return false;
    }
    return true;
}

/* ---- connection ----------------------------------------------------------------------------- */

static void on_reconnect_timer(uv_timer_t *t) {
    ag_l2 *l = t->data;
    l->st.reconnects++;
    connect_now(l);
}

/* The connection is gone (or never came): try again after a backoff of 100 ms, doubling to 5 s. */
static void lost(ag_l2 *l) {
    l->ac = NULL;
    l->connected = false;
    if (l->closing) return;
    l->backoff_ms = !l->backoff_ms ? 100 : l->backoff_ms >= 2500 ? 5000 : 2 * l->backoff_ms;
    uv_timer_start(&l->reconnect, on_reconnect_timer, l->backoff_ms, 0);
}

/* AUTH's and SELECT's replies: a refusal (WRONGPASS, a bad db) is kept for /v1/cache/stats. */
static void on_setup_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    (void)privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR) note_error(ac->data, r->str);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    ag_l2 *l = ac->data;
    if (status != REDIS_OK) { /* hiredis frees the context after this */
        note_error(l, ac->errstr);
        lost(l);
        return;
    }
    l->connected = true;
    l->backoff_ms = 0;
    l->st.last_error[0] = '\0'; /* what failed before this connection is history; AUTH's refusal comes next */
    if (l->url.user[0]) redisAsyncCommand(l->ac, on_setup_reply, NULL, "AUTH %s %s", l->url.user, l->url.password);
    else if (l->url.password[0]) redisAsyncCommand(l->ac, on_setup_reply, NULL, "AUTH %s", l->url.password);
    if (l->url.db) redisAsyncCommand(l->ac, on_setup_reply, NULL, "SELECT %d", l->url.db);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    if (status != REDIS_OK) note_error(ac->data, ac->errstr);
    lost(ac->data);
}

static void connect_now(ag_l2 *l) {
    redisAsyncContext *ac = redisAsyncConnect(l->url.host, l->url.port);
    if (!ac || ac->err) {
        if (ac) redisAsyncFree(ac);
        lost(l);
        return;
    }
    if (!glue_attach(ac, l->loop)) {
        redisAsyncFree(ac);
        lost(l);
        return;
    }
    ac->data = l;
    l->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

/* Every 10 ms: answer commands past their deadline (as misses); their replies are dropped when they come. */
static void on_tick(uv_timer_t *t) {
    ag_l2 *l = t->data;
    uint64_t now = ag_clock_mono_ns();
    for (pending *p = l->live.next; p != &l->live; p = p->next)
        if (!p->answered && now >= p->deadline_ns) {
            l->st.timeouts++;
            if (p->get) l->st.misses++;
            note_error(l, "a command timed out (--redis-timeout-ms)");
            breaker_result(l, false);
            answer_miss(p);
        }
}

bool ag_l2_create(uv_loop_t *loop, const ag_l2_opts *o, ag_l2 **out, char *msg, size_t msg_cap) {
    ag_redis_url url;
    if (!ag_redis_url_parse(o->url, "--redis-url", &url, msg, msg_cap)) return false;
    ag_l2 *l = ag_xcalloc(1, sizeof *l);
    l->url = url;
    l->loop = loop;
    l->o = *o;
    l->live.next = l->live.prev = &l->live;
    uv_timer_init(loop, &l->tick);
    uv_timer_init(loop, &l->reconnect);
    l->tick.data = l->reconnect.data = l;
    uv_timer_start(&l->tick, on_tick, 10, 10);
    uv_unref((uv_handle_t *)&l->tick);
    uv_unref((uv_handle_t *)&l->reconnect);
    connect_now(l);
    *out = l;
    return true;
}

static void free_when_closed(uv_handle_t *h) {
    ag_l2 *l = h->data;
    if (--l->open_timers == 0) free(l);
}

void ag_l2_destroy(ag_l2 *l) {
    if (!l) return;
    l->closing = true;
    if (l->ac) redisAsyncFree(l->ac); /* runs the pending callbacks with no reply, which free their records */
    l->ac = NULL;
    l->open_timers = 2;
    uv_close((uv_handle_t *)&l->tick, free_when_closed);
    uv_close((uv_handle_t *)&l->reconnect, free_when_closed);
}

ag_l2_stats ag_l2_stats_get(const ag_l2 *l) {
    ag_l2_stats s = l->st;
    s.connected = l->connected;
    s.breaker = l->breaker == BREAKER_CLOSED ? "closed" : l->breaker == BREAKER_OPEN ? "open" : "half-open";
    return s;
}
