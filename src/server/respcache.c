/*
 * respcache.c - the response cache's part of a generation request: the
 * lookup in both tiers, answering a hit (whole or replayed as a stream),
 * single flight (identical requests wait for the first one, their leader),
 * storing a finished answer, and the cache's counters.
 *
 * The cache itself (src/cache/) knows keys and values; what is cacheable and
 * how a value is encoded is rcache.c; this file moves an exchange through the
 * LOOKUP and FOLLOWING states and back to exchange.c to generate.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"
#include "server/rcache.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/hash.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const ag_cache_headers[] = {NULL, "X-Cache: BYPASS\r\n", "X-Cache: MISS\r\n"};

/* ---- answering from a value -------------------------------------------------------- */

uint64_t ag_respcache_etag_seed(const exchange *x) {
    const char *model = x->s->model.name;
    return ag_hash_bytes(model, strlen(model), 0xe7a9 + (uint64_t)x->req.kind);
}

uint64_t ag_respcache_etag_add(uint64_t h, const char *text, size_t len, int finish) {
    return ag_hash_bytes(text, len, h * 31 + (uint64_t)finish + 1);
}

bool ag_respcache_validators(const exchange *x, conn *c, uint64_t content, const char *extra, char *out, size_t cap) {
    server *s = x->s;
    if (!ag_rcache_cacheable(&x->req, false)) { /* sampled: another request gets another answer */
        snprintf(out, cap, "%s%sCache-Control: no-store\r\n", extra ? extra : "", x->prefix_hdr);
        return false;
    }
    uint64_t ttl = x->req.cache_ttl_s >= 0 ? (uint64_t)x->req.cache_ttl_s : s->o->cache_ttl_s;
    char etag[24];
    snprintf(etag, sizeof etag, "W/\"%016llx\"", (unsigned long long)content);
    snprintf(out, cap, "%s%sCache-Control: %s, max-age=%llu\r\nETag: %s\r\n", extra ? extra : "", x->prefix_hdr,
             s->o->cache_public ? "public" : "private", (unsigned long long)ttl, etag);
    if (!ag_http_etag_match(ag_http_header_get(&c->req, "if-none-match"), ag_str_from_cstr(etag))) return false;
    ag_conn_respond_status(c, 412, "invalid_request_error", "precondition_failed",
                           "If-None-Match names this answer's ETag: the client already has it.", out);
    return true;
}

bool ag_respcache_send_stored(conn *c, const exchange *x, ag_cache_val *v, const char *extra) {
    ag_rcache_value d;
    if (!ag_rcache_decode(v->data, v->len, &d) || (int)d.n != x->n_ch) return false;
    uint64_t h = ag_respcache_etag_seed(x);
    for (uint32_t i = 0; i < d.n; i++) h = ag_respcache_etag_add(h, d.ch[i].text, d.ch[i].len, d.ch[i].finish);
    char hdrs[512];
    if (ag_respcache_validators(x, c, h, extra, hdrs, sizeof hdrs)) return true; /* answered 412 */
    ag_buf open;
    ag_buf_init(&open);
    ag_api_response_open_write(&x->meta, &open);
    ag_conn_respond_parts(c, 200, "application/json", open.data, open.len, d.rest, d.rest_len, v, hdrs);
    ag_buf_deinit(&open);
    return true;
}

/* Replay a value as the chunks a generation streams: per choice, the role, the text, the finish. */
static void replay_stream(conn *c, const exchange *x, const ag_rcache_value *d, const char *extra) {
    ag_sse_open(c, extra);
    for (uint32_t i = 0; i < d->n; i++) {
        if (x->req.kind == AG_API_CHAT) {
            ag_api_chunk_write(&x->meta, (int)i, true, "", 0, NULL, NULL, x->req.include_usage, ag_sse_event_begin(c));
            ag_sse_event_end(c);
        }
        ag_api_chunk_write(&x->meta, (int)i, false, d->ch[i].text, d->ch[i].len, NULL, NULL, x->req.include_usage,
                           ag_sse_event_begin(c));
        ag_sse_event_end(c);
        ag_api_chunk_write(&x->meta, (int)i, false, "", 0, ag_api_finish_reason((ag_finish)d->ch[i].finish), NULL,
                           x->req.include_usage, ag_sse_event_begin(c));
        ag_sse_event_end(c);
    }
    if (x->req.include_usage) {
        ag_api_usage_chunk_write(&x->meta, &d->usage, ag_sse_event_begin(c));
        ag_sse_event_end(c);
    }
    ag_sse_close(c);
}

/* Answer x's client from a stored value and end x (-> DONE); a pipelined request may follow. */
void ag_respcache_serve(exchange *x, ag_cache_val *v, const char *tier) {
    conn *c = x->c;
    char extra[128];
    unsigned long long age = (ag_clock_mono_ns() - v->stored_ns) / 1000000000ull;
    snprintf(extra, sizeof extra, "%s%s%sAge: %llu\r\n", tier ? "X-Cache: " : "Idempotent-Replayed: true\r\n",
             tier ? tier : "", tier ? "\r\n" : "", age);
    if (x->idem && !x->value) x->value = ag_cache_val_retain(v); /* its key's answer, for the key's retries */
    ag_exchange_detach(x);
    ag_rcache_value d;
    char sse_extra[192];
    snprintf(sse_extra, sizeof sse_extra, "%s%s", extra, x->prefix_hdr);
    if (x->req.stream && ag_rcache_decode(v->data, v->len, &d) && (int)d.n == x->n_ch) replay_stream(c, x, &d, sse_extra);
    else if (x->req.stream || !ag_respcache_send_stored(c, x, v, extra))
        ag_conn_respond_status(c, 500, "server_error", NULL, "a response cache entry did not decode", NULL);
    ag_exchange_free(x);
    ag_conn_process(c);
}

/* ---- lookup --------------------------------------------------------------------------- */

bool ag_respcache_lookup(exchange *x) {
    server *s = x->s;
    conn *c = x->c;
    ag_str cc = ag_http_header_get(&c->req, "cache-control");
    bool no_cache = ag_http_list_has(cc, "no-cache"), no_store = ag_http_list_has(cc, "no-store");
    x->verdict = CACHE_BYPASS;
    c->obs.cache = "bypass";
    if (!ag_rcache_cacheable(&x->req, s->o->cache_nondeterministic)) {
        s->cache_bypass++;
        return false;
    }
    ag_str tenant = ag_route_bearer(&c->req);
    ag_rcache_key(&x->req, s->model.name, tenant.p, tenant.n, x->cache_key);
    if (no_cache) {
        s->cache_bypass++;
    } else {
        ag_cache_val *v = s->cache ? ag_cache_get(s->cache, x->cache_key, ag_clock_mono_ns()) : NULL;
        if (v) {
            c->obs.cache = "hit-l1";
            ag_respcache_serve(x, v, "HIT-L1");
            ag_cache_val_release(v);
            return true;
        }
        x->verdict = CACHE_MISS;
        c->obs.cache = "miss";
    }
    x->cache_store = !no_store;
    x->cache_ttl_ns = (x->req.cache_ttl_s >= 0 ? (uint64_t)x->req.cache_ttl_s : s->o->cache_ttl_s) * 1000000000ull;
    x->cache_tag = ag_rcache_tag(x->req.cache_namespace);
    return false;
}

/* Wait for an identical request already generating (single flight); true when x now follows one (FOLLOWING). */
static bool follow(exchange *x) {
    server *s = x->s;
    exchange *l = ag_map_get(&s->leaders, (const char *)x->cache_key, 32);
    if (!l || s->o->cache_coalesce_ms == 0) return false;
    l->followers = ag_xrealloc(l->followers, (size_t)(l->n_followers + 1) * sizeof *l->followers);
    l->followers[l->n_followers++] = x;
    x->leader = l;
    x->state = X_FOLLOWING;
    x->t_follow_ns = ag_clock_mono_ns();
    x->c->obs.cache = "coalesced";
    if (!uv_is_active((uv_handle_t *)&s->follow_timer))
        uv_timer_start(&s->follow_timer, ag_respcache_on_follow_timer, 50, 50);
    return true;
}

/* A cache miss that generates: wait for an identical request in flight, or submit. */
static void generate(exchange *x) {
    if (x->cache_store && follow(x)) return;
    ag_exchange_submit(x);
}

/* FOLLOWING -> DONE (its leader's answer, or its client left) or -> GENERATING (no answer came). */
static void release_follower(exchange *f, ag_cache_val *value) {
    if (f->state != X_FOLLOWING) {
        ag_exchange_bug(f, "follower released");
        return;
    }
    f->leader = NULL;
    if (!f->c) ag_exchange_free(f);
    else if (value) ag_respcache_serve(f, value, "HIT-L1");
    else if (f->s->draining) {
        conn *c = f->c;
        ag_exchange_detach(f);
        ag_exchange_free(f);
        ag_conn_respond_status(c, 503, "service_unavailable", NULL, "The server is shutting down.", "Retry-After: 1\r\n");
    } else {
        ag_exchange_submit(f);
    }
}

/* LOOKUP -> DONE (a Redis hit, promoted into L1, or the client left) or on to generate. */
static void on_l2_get(void *ctx, ag_cache_val *v) {
    exchange *x = ctx;
    server *s = x->s;
    if (x->state != X_LOOKUP) {
        ag_exchange_bug(x, "Redis answer");
        return;
    }
    if (!x->c) { /* the client left while Redis was asked */
        ag_exchange_free(x);
        return;
    }
    if (v) {
        if (s->cache) ag_cache_put_val(s->cache, x->cache_key, v, x->cache_ttl_ns, x->cache_tag);
        x->c->obs.cache = "hit-l2";
        ag_respcache_serve(x, v, "HIT-L2");
        return;
    }
    generate(x);
}

void ag_respcache_miss(exchange *x) {
    server *s = x->s;
    if (s->l2 && x->verdict == CACHE_MISS) { /* L1 missed: ask Redis */
        x->state = X_LOOKUP;
        ag_l2_get(s->l2, x->cache_key, x->cache_tag, on_l2_get, x); /* may answer at once */
        return;
    }
    generate(x);
}

void ag_respcache_on_follow_timer(uv_timer_t *t) {
    server *s = t->data;
    uint64_t now = ag_clock_mono_ns(), limit = s->o->cache_coalesce_ms * 1000000ull;
    size_t pos = 0, n_waiting = 0;
    const char *k;
    size_t kl;
    void *v;
    while (ag_map_next(&s->leaders, &pos, &k, &kl, &v)) {
        exchange *l = v;
        for (int i = 0; i < l->n_followers;) {
            exchange *f = l->followers[i];
            if (now - f->t_follow_ns < limit) {
                i++, n_waiting++;
                continue;
            }
            l->followers[i] = l->followers[--l->n_followers];
            release_follower(f, NULL);
        }
    }
    if (!n_waiting) uv_timer_stop(t);
}

/* ---- storing ------------------------------------------------------------------------------ */

/* A finished cacheable generation's value, when every choice ended normally (not cancelled or failed). */
static ag_cache_val *cache_value(exchange *x) {
    if (!x->cache_store && !x->idem) return NULL;
    ag_rcache_choice *rc = ag_xcalloc((size_t)x->n_ch, sizeof *rc);
    bool complete = true;
    for (int i = 0; i < x->n_ch; i++) {
        complete &= x->ch[i].finish == AG_FINISH_STOP || x->ch[i].finish == AG_FINISH_LENGTH;
        complete &= x->ch[i].text.err == AG_OK;
        rc[i] = (ag_rcache_choice){x->ch[i].text.data ? x->ch[i].text.data : "", (uint32_t)x->ch[i].text.len,
                                   (uint8_t)x->ch[i].finish};
    }
    ag_cache_val *v = NULL;
    if (complete) {
        ag_api_usage u = ag_exchange_usage(x);
        ag_buf b;
        ag_buf_init(&b);
        ag_rcache_encode(&x->meta, rc, (uint32_t)x->n_ch, &u, &b);
        if (b.err == AG_OK) v = ag_cache_val_new(b.data, b.len, ag_clock_mono_ns());
        ag_buf_deinit(&b);
    }
    free(rc);
    return v;
}

void ag_respcache_publish(exchange *x) {
    server *s = x->s;
    ag_cache_val *value = x->value = cache_value(x);
    if (value && x->cache_store && s->cache) ag_cache_put_val(s->cache, x->cache_key, value, x->cache_ttl_ns, x->cache_tag);
    if (x->leading) ag_map_del(&s->leaders, (const char *)x->cache_key, 32), x->leading = false;
    int n = x->n_followers;
    x->n_followers = 0;
    for (int i = 0; i < n; i++) release_follower(x->followers[i], value);
}

/* ---- counters ------------------------------------------------------------------------------ */

void ag_respcache_render_metrics(server *s, ag_buf *out) {
    ag_cache_metrics m = {.l1 = s->cache != NULL, .l2 = s->l2 != NULL, .bypass = s->cache_bypass};
    if (s->cache) {
        ag_cache_stats cs = ag_cache_stats_get(s->cache);
        m.l1_hits = cs.hits, m.l1_misses = cs.misses, m.evictions = cs.evictions, m.rejections = cs.rejections;
        m.bytes = cs.bytes, m.entries = cs.entries;
    }
    if (s->l2) {
        ag_l2_stats l2 = ag_l2_stats_get(s->l2);
        m.l2_hits = l2.hits, m.l2_misses = l2.misses, m.redis_errors = l2.errors, m.redis_timeouts = l2.timeouts;
        m.redis_short_circuits = l2.short_circuits, m.redis_reconnects = l2.reconnects;
        m.redis_breaker_open = l2.breaker && strcmp(l2.breaker, "closed") != 0;
        m.redis_connected = l2.connected;
    }
    ag_metrics_render_cache(&m, out);
}

typedef struct named_count {
    const char *name;
    uint64_t n;
} named_count;

static void write_counts(ag_jw *w, const named_count *c, size_t n) {
    for (size_t i = 0; i < n; i++) {
        ag_jw_keyc(w, c[i].name);
        ag_jw_int(w, (int64_t)c[i].n);
    }
}

/* GET /v1/cache/stats: each tier's counters ({"enabled": false} without a cache; "l1": null with Redis alone). */
void ag_respcache_stats_json(server *s, ag_buf *out) {
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "enabled");
    ag_jw_bool(&w, s->cache || s->l2);
    if (s->cache || s->l2) {
        ag_jw_keyc(&w, "l1");
        if (s->cache) {
            ag_cache_stats st = ag_cache_stats_get(s->cache);
            uint64_t lookups = st.hits + st.misses;
            ag_jw_obj_begin(&w);
            write_counts(&w, (named_count[]){{"hits", st.hits}, {"misses", st.misses}}, 2);
            ag_jw_keyc(&w, "hit_ratio");
            ag_jw_double(&w, lookups ? (double)st.hits / (double)lookups : 0.0);
            const named_count rest[] = {{"puts", st.puts},
                                        {"evictions", st.evictions},
                                        {"rejections", st.rejections},
                                        {"expirations", st.expirations},
                                        {"entries", st.entries},
                                        {"bytes", st.bytes},
                                        {"max_bytes", s->o->cache_mb << 20}};
            write_counts(&w, rest, sizeof rest / sizeof *rest);
            ag_jw_obj_end(&w);
        } else {
            ag_jw_null(&w);
        }
        if (s->l2) {
            ag_l2_stats l2 = ag_l2_stats_get(s->l2);
            ag_jw_keyc(&w, "l2");
            ag_jw_obj_begin(&w);
            ag_jw_keyc(&w, "connected");
            ag_jw_bool(&w, l2.connected);
            ag_jw_keyc(&w, "breaker");
            ag_jw_strc(&w, l2.breaker);
            const named_count counts[] = {{"hits", l2.hits},
                                          {"misses", l2.misses},
                                          {"sets", l2.sets},
                                          {"errors", l2.errors},
                                          {"timeouts", l2.timeouts},
                                          {"short_circuits", l2.short_circuits},
                                          {"reconnects", l2.reconnects}};
            write_counts(&w, counts, sizeof counts / sizeof *counts);
            ag_jw_keyc(&w, "last_error");
            if (l2.last_error[0]) ag_jw_strc(&w, l2.last_error);
            else ag_jw_null(&w);
            ag_jw_obj_end(&w);
        }
        write_counts(&w, &(named_count){"bypass", s->cache_bypass}, 1);
    }
    ag_jw_obj_end(&w);
}

void ag_respcache_delete_json(server *s, ag_str query, ag_buf *out) {
    size_t removed = 0;
    bool l2 = false;
    if (ag_str_starts_with(query, AG_STR_LIT("namespace=")) && query.n > 10 && query.n < 10 + 129) {
        char ns[140];
        snprintf(ns, sizeof ns, "%.*s", (int)(query.n - 10), query.p + 10);
        removed = s->cache ? ag_cache_remove_tag(s->cache, ag_rcache_tag(ns)) : 0;
        l2 = s->l2 && ag_l2_delete(s->l2, false, ag_rcache_tag(ns));
    } else {
        if (s->cache) removed = ag_cache_stats_get(s->cache).entries, ag_cache_clear(s->cache);
        l2 = s->l2 && ag_l2_delete(s->l2, true, 0);
    }
    /* L1 is cleared now; Redis in the background (SCAN and UNLINK batches) */
    ag_buf_appendf(out, "{\"deleted\":%zu,\"redis\":\"%s\"}", removed, !s->l2 ? "none" : l2 ? "deleting" : "unavailable");
}
