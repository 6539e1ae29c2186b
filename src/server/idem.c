/*
 * idem.c - Idempotency-Key: a request retried with the key of an earlier
 * attempt is answered from that attempt's generation instead of generating
 * again (the IETF httpapi Idempotency-Key header; Stripe's semantics).
 *
 * A key lives per tenant (the API key) in an entry, in one of two states:
 *
 *   RUNNING  an exchange (its leader) is generating the answer; requests
 *            with the key wait for it (FOLLOWING) and get its answer
 *   DONE     the answer, as the response cache encodes it, is kept for
 *            --idempotency-ttl and replayed to a request with the key
 *
 * A request with the key and another body gets 422 (the key was reused for
 * something else).  When the leader ends without a whole answer (cancelled,
 * refused, failed, its deadline passed) the first waiter with a client
 * generates in its place, and the entry is dropped when none is left.
 *
 * Why generations outlive their clients here: a client retries because its
 * attempt timed out or its connection broke, and it has closed that
 * connection; cancelling the generation then (as an unkeyed request is
 * cancelled) would make the retry start over.  So a leader whose client has
 * gone keeps generating for --idempotency-grace; when no retry has come for
 * it by then it is cancelled.  Not a stream that had sent text, though: a
 * client never retries a stream that delivered some (docs/client.md), so its
 * leaving is a cancel (Ctrl-C in `autoglm chat`).  Its deadline (X-Request-Timeout-Ms) still
 * bounds it, and a drain cancels it at once: a retry could not reach it.
 *
 * Limits: --idempotency-max-keys entries (the oldest DONE one is evicted to
 * make room; a request that finds every entry RUNNING is served without
 * idempotency, counted as "untracked"), and --idempotency-mb of kept
 * answers (the oldest go first; a larger answer is given to those waiting
 * for it and not kept).  Requests asking for logprobs are not tracked: the stored
 * form keeps only the text.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "base/clock.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDEM_KEY_MAX 255 /* the header's length; longer keys are refused (400) */
#define IDEM_TIMER_MS 250

typedef enum { IDEM_RUNNING, IDEM_DONE } idem_state;

struct idem_entry {
    uint8_t key[32];       /* SHA-256 of the tenant and the key: the map's key */
    uint8_t body_hash[32]; /* SHA-256 of the route and the request body */
    idem_state state;
    exchange *leader;      /* RUNNING */
    exchange *waiting;     /* RUNNING: requests with the key, oldest first, linked through idem_next */
    uint64_t orphan_ns;    /* RUNNING: when the last client waiting for it left; 0 while one is there */
    ag_cache_val *value;   /* DONE */
    uint64_t expires_ns;   /* DONE */
    idem_entry *prev, *next; /* the server's running list, or its done list (oldest first) */
};

/* ---- the lists --------------------------------------------------------------------------- */

static idem_entry **list_of(server *s, const idem_entry *e) { return e->state == IDEM_DONE ? &s->idem_done : &s->idem_running; }

static void list_remove(server *s, idem_entry *e) {
    if (e->prev) e->prev->next = e->next;
    else *list_of(s, e) = e->next;
    if (e->next) e->next->prev = e->prev;
    else if (e->state == IDEM_DONE) s->idem_done_tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_append(server *s, idem_entry *e) {
    if (e->state == IDEM_DONE) {
        e->prev = s->idem_done_tail, e->next = NULL;
        if (s->idem_done_tail) s->idem_done_tail->next = e;
        else s->idem_done = e;
        s->idem_done_tail = e;
    } else {
        e->prev = NULL, e->next = s->idem_running;
        if (s->idem_running) s->idem_running->prev = e;
        s->idem_running = e;
    }
}

static void entry_drop(server *s, idem_entry *e) {
    if (e->value) s->idem_bytes -= e->value->len;
    list_remove(s, e);
    ag_map_del(&s->idem_keys, (const char *)e->key, 32);
    ag_cache_val_release(e->value);
    free(e);
    s->idem_n--;
}

/* DONE entries past their time go, oldest first. */
static void expire(server *s, uint64_t now) {
    while (s->idem_done && s->idem_done->expires_ns <= now) entry_drop(s, s->idem_done);
}

static void count(server *s, ag_metric_idem r) {
    atomic_fetch_add_explicit(&s->metrics.idempotency[r], 1, memory_order_relaxed);
}

/* ---- a request with a key ------------------------------------------------------------------ */

static void digest(const void *a, size_t an, const void *b, size_t bn, const void *c, size_t cn, uint8_t out[32]) {
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    uint64_t lens[2] = {an, bn}; /* length-prefixed: no two field sequences hash the same bytes */
    unsigned n = 32;
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    EVP_DigestUpdate(h, lens, sizeof lens);
    EVP_DigestUpdate(h, a, an);
    EVP_DigestUpdate(h, b, bn);
    EVP_DigestUpdate(h, c, cn);
    EVP_DigestFinal_ex(h, out, &n);
    EVP_MD_CTX_free(h);
}

/* Answer x (not yet generating) with an error and end it. */
static void refuse(exchange *x, int status, const char *code, const char *msg) {
    conn *c = x->c;
    ag_api_error err;
    ag_api_fail(&err, status, "invalid_request_error", NULL, code, "%s", msg);
    ag_exchange_detach(x);
    ag_conn_respond_error(c, &err);
    ag_exchange_free(x);
    ag_conn_process(c);
}

bool ag_idem_begin(exchange *x, const char *body, size_t len) {
    server *s = x->s;
    const ag_http_request *req = &x->c->req;
    ag_str k = ag_http_header_get(req, "idempotency-key");
    if (!k.p || !s->o->idempotency_max_keys) return false;
    bool printable = k.n > 0 && k.n <= IDEM_KEY_MAX;
    for (size_t i = 0; printable && i < k.n; i++) printable = k.p[i] > 0x20 && k.p[i] < 0x7f;
    if (!printable) {
        refuse(x, 400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters");
        return true;
    }
    if (x->req.logprobs) return false; /* its answer cannot be kept whole (see above) */
    if (x->req.tools.choice != AG_TOOL_CHOICE_NONE) return false; /* nor one with tool calls: the kept form is text */
    uint8_t key[32], body_hash[32];
    ag_str tenant = ag_route_bearer(req);
    digest(tenant.p ? tenant.p : "", tenant.n, k.p, k.n, "", 0, key);
    uint8_t kind = (uint8_t)x->req.kind;
    digest(&kind, 1, body, len, "", 0, body_hash);
    uint64_t now = ag_clock_mono_ns();
    expire(s, now);
    idem_entry *e = ag_map_get(&s->idem_keys, (const char *)key, 32);
    if (e && memcmp(e->body_hash, body_hash, 32) != 0) {
        count(s, AG_METRIC_IDEM_CONFLICT);
        refuse(x, 422, "idempotency_key_reused",
               "This Idempotency-Key was used with a different request; use a new key for a new request");
        return true;
    }
    if (e && e->state == IDEM_DONE) {
        count(s, AG_METRIC_IDEM_REPLAYED);
        x->c->obs.cache = "idempotent";
        ag_respcache_serve(x, e->value, NULL);
        return true;
    }
    if (e) { /* RUNNING: wait for its leader's answer */
        count(s, AG_METRIC_IDEM_JOINED);
        x->state = X_FOLLOWING;
        x->idem = e;
        x->idem_next = NULL;
        exchange **p = &e->waiting;
        while (*p) p = &(*p)->idem_next;
        *p = x;
        e->orphan_ns = 0;
        x->c->obs.cache = "idempotent";
        return true;
    }
    if (s->idem_n >= s->o->idempotency_max_keys) {
        if (!s->idem_done) { /* every entry is generating: serve this one without a key */
            count(s, AG_METRIC_IDEM_UNTRACKED);
            return false;
        }
        entry_drop(s, s->idem_done);
    }
    e = ag_xcalloc(1, sizeof *e);
    memcpy(e->key, key, 32), memcpy(e->body_hash, body_hash, 32);
    e->state = IDEM_RUNNING;
    e->leader = x;
    list_append(s, e);
    ag_map_put(&s->idem_keys, (const char *)e->key, 32, e); /* the map borrows the key: the entry's own copy */
    s->idem_n++;
    x->idem = e;
    count(s, AG_METRIC_IDEM_NEW);
    return false;
}

/* ---- the leader's end -------------------------------------------------------------------------- */

/* Take the first waiter off e's list. */
static exchange *pop_waiter(idem_entry *e) {
    exchange *w = e->waiting;
    if (w) e->waiting = w->idem_next, w->idem_next = NULL;
    return w;
}

/* A waiter leaves FOLLOWING: answered from v, or refused during a drain, or freed when its client has gone. */
static void release(exchange *w, ag_cache_val *v) {
    w->idem = NULL;
    if (!w->c) {
        ag_exchange_free(w);
    } else if (v) {
        ag_respcache_serve(w, v, NULL);
    } else {
        conn *c = w->c;
        ag_exchange_detach(w);
        ag_exchange_free(w);
        ag_conn_respond_status(c, 503, "service_unavailable", NULL, "The server is shutting down.", "Retry-After: 1\r\n");
    }
}

void ag_idem_end(exchange *x) {
    server *s = x->s;
    idem_entry *e = x->idem;
    x->idem = NULL;
    if (!e) return;
    if (e->leader != x) { /* a waiter freed while waiting (the server's end) */
        for (exchange **p = &e->waiting; *p; p = &(*p)->idem_next)
            if (*p == x) {
                *p = x->idem_next;
                break;
            }
        return;
    }
    e->leader = NULL;
    if (x->value) { /* a whole answer: kept within --idempotency-mb, and given to everyone waiting */
        exchange *ws = e->waiting;
        e->waiting = NULL;
        for (exchange *w = ws; w; w = w->idem_next) w->idem = NULL; /* off e before anything can free it */
        ag_cache_val *v = ag_cache_val_retain(x->value);
        list_remove(s, e);
        e->state = IDEM_DONE;
        e->value = ag_cache_val_retain(v);
        s->idem_bytes += v->len;
        e->expires_ns = ag_clock_mono_ns() + s->o->idempotency_ttl_ms * 1000000ull;
        list_append(s, e);
        /* the oldest answers go first, this one last (alone over the limit, it is given out and not kept) */
        while (s->idem_done && s->idem_bytes > s->o->idempotency_mb << 20) entry_drop(s, s->idem_done);
        for (exchange *w = ws, *next; w; w = next) { /* e may be gone: each holds v */
            next = w->idem_next;
            w->idem_next = NULL;
            release(w, v);
        }
        ag_cache_val_release(v);
        return;
    }
    /* no answer: the first waiter still there generates it instead, unless the server is draining */
    for (exchange *w; (w = pop_waiter(e));) {
        if (!w->c || s->draining) {
            release(w, NULL);
            continue;
        }
        e->leader = w;
        ag_exchange_submit(w);
        return;
    }
    entry_drop(s, e);
}

/* ---- leaders whose clients have gone ------------------------------------------------------------ */

static bool waiter_present(const idem_entry *e) {
    for (const exchange *w = e->waiting; w; w = w->idem_next)
        if (w->c) return true;
    return false;
}

static void on_timer(uv_timer_t *t) {
    server *s = t->data;
    uint64_t now = ag_clock_mono_ns(), grace = s->o->idempotency_grace_ms * 1000000ull;
    bool orphans = false;
    for (idem_entry *e = s->idem_running, *next; e; e = next) {
        next = e->next;
        exchange *l = e->leader;
        if (!l || l->c || l->state != X_GENERATING || l->idem_cancelled) continue;
        if (waiter_present(e)) {
            e->orphan_ns = 0;
            continue;
        }
        if (!e->orphan_ns) e->orphan_ns = now;
        if (now - e->orphan_ns >= grace || s->draining) {
            l->idem_cancelled = true;
            ag_exchange_cancel(l); /* its last events end it: ag_idem_end */
        } else {
            orphans = true;
        }
    }
    if (!orphans) uv_timer_stop(t);
}

bool ag_idem_keep_generating(exchange *x) {
    server *s = x->s;
    idem_entry *e = x->idem;
    if (!e || e->leader != x || x->idem_cancelled || s->draining || !s->o->idempotency_grace_ms) return false;
    if (x->req.stream && x->t_first_ns) return false; /* its client had text: it does not retry, it gave up */
    e->orphan_ns = waiter_present(e) ? 0 : ag_clock_mono_ns();
    if (!uv_is_active((uv_handle_t *)&s->idem_timer)) uv_timer_start(&s->idem_timer, on_timer, IDEM_TIMER_MS, IDEM_TIMER_MS);
    return true;
}

void ag_idem_drain(server *s) {
    if (s->idem_running) on_timer(&s->idem_timer);
}

void ag_idem_deinit(server *s) {
    while (s->idem_done) entry_drop(s, s->idem_done);
    while (s->idem_running) entry_drop(s, s->idem_running);
    ag_map_deinit(&s->idem_keys);
}
