/*
 * lg_h2.c - the load generator's HTTP/2 client (nghttp2) on one of its
 * connections (see lg.h): each request a stream, its header fields prepared
 * once per step and its body given by a data provider; each response read
 * into its exchange as DATA arrives (an event stream is scanned and
 * dropped as it goes, so a long stream holds one event at most); a timeout
 * is a RST_STREAM (CANCEL) that leaves the connection's other streams alone.
 *
 * Windows are opened wide (2^30 - 1, h2load's default) so flow control
 * never paces the measurement.  nghttp2 holds streams past the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS until one ends: that wait is part of the
 * request's latency, as waiting for a connection is over HTTP/1.1.
 *
 * nghttp2 must not be re-entered from its callbacks: while it reads a
 * connection's bytes (in_recv), sending waits until it returns, and so does
 * freeing the session of a connection closed from a callback (lg_conn.c).
 */
#define _GNU_SOURCE /* pthread types for uv.h */
#include "tools/lg.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

enum { WINDOW = (1 << 30) - 1 };

static lg_xchg *xchg_of(nghttp2_session *s, int32_t stream) { return nghttp2_session_get_stream_user_data(s, stream); }

/* ---- the requests' header fields, made once for the step ------------------------------------- */

static char *arena_copy(ag_arena *a, const char *p, size_t n, bool lower) {
    char *d = ag_arena_alloc(a, n + 1);
    for (size_t i = 0; i < n; i++) d[i] = lower ? (char)tolower((unsigned char)p[i]) : p[i];
    d[n] = 0;
    return d;
}

static void nv_add(nghttp2_nv *nv, size_t *n, const char *name, const char *value) {
    nv[*n] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                          NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
    (*n)++;
}

/* Fields that are the connection's in HTTP/1.1 and must not be sent over HTTP/2 (RFC 9113 §8.2.2). */
static bool hop_by_hop(const char *name) {
    static const char *const drop[] = {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                       "upgrade", "content-length"};
    for (size_t i = 0; i < sizeof drop / sizeof *drop; i++)
        if (strcmp(name, drop[i]) == 0) return true;
    return false;
}

void lg_h2_prepare(lg *g) {
    const ag_lg_requests *q = g->s->reqs;
    ag_arena_init(&g->h2_arena, 1 << 16);
    g->h2_req = ag_arena_alloc(&g->h2_arena, q->n * sizeof *g->h2_req);
    const char *scheme = g->t->tls ? "https" : "http";
    for (size_t i = 0; i < q->n; i++) {
        const ag_lg_request *r = &q->v[i];
        size_t lines = 0;
        for (const char *p = r->headers; (p = strchr(p, '\n')); p++) lines++;
        nghttp2_nv *nv = ag_arena_alloc(&g->h2_arena, (lines + 5) * sizeof *nv);
        size_t n = 0;
        nv_add(nv, &n, ":method", r->method);
        nv_add(nv, &n, ":scheme", scheme);
        nv_add(nv, &n, ":authority", g->authority);
        nv_add(nv, &n, ":path", r->path);
        for (const char *p = r->headers, *eol; (eol = strchr(p, '\n')); p = eol + 1) {
            const char *colon = memchr(p, ':', (size_t)(eol - p));
            if (!colon) continue;
            const char *v = colon + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) ve--;
            char *name = arena_copy(&g->h2_arena, p, (size_t)(colon - p), true);
            if (!hop_by_hop(name)) nv_add(nv, &n, name, arena_copy(&g->h2_arena, v, (size_t)(ve - v), false));
        }
        if (r->body) {
            char len[24];
            snprintf(len, sizeof len, "%zu", r->body_len);
            nv_add(nv, &n, "content-length", arena_copy(&g->h2_arena, len, strlen(len), false));
        }
        g->h2_req[i] = (lg_h2req){nv, n};
    }
}

/* ---- nghttp2's callbacks ------------------------------------------------------------------------ */

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud) {
    (void)s, (void)flags;
    return lg_conn_put(ud, data, len) ? (ssize_t)len : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud) {
    lg_conn *c = ud;
    (void)flags;
    lg_xchg *x = f->hd.type == NGHTTP2_HEADERS ? xchg_of(s, f->hd.stream_id) : NULL;
    if (!x) return 0;
    if (x->counted) c->g->r->bytes += namelen + valuelen;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        x->status = 0;
        for (size_t i = 0; i < valuelen && isdigit(value[i]); i++) x->status = x->status * 10 + (value[i] - '0');
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        x->sse = valuelen >= 17 && memcmp(value, "text/event-stream", 17) == 0;
    } else if (namelen == 6 && memcmp(name, "server", 6) == 0) {
        lg_note_server(c->g, (const char *)value, valuelen);
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t stream, const uint8_t *data, size_t len, void *ud) {
    lg_conn *c = ud;
    (void)flags;
    lg_xchg *x = xchg_of(s, stream);
    if (!x) return 0;
    if (x->counted) c->g->r->bytes += len;
    ag_buf_append(&x->body, data, len);
    if (x->sse) { /* events read go: the buffer keeps only an event not yet whole */
        lg_body_read(x, x->body.data, x->body.len, false);
        memmove(x->body.data, x->body.data + x->scanned, x->body.len - x->scanned);
        x->body.len -= x->scanned;
        x->scanned = 0;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream, uint32_t error, void *ud) {
    lg_xchg *x = xchg_of(s, stream);
    if (!x) return 0;
    nghttp2_session_set_stream_user_data(s, stream, NULL);
    lg_end kind = error == NGHTTP2_REFUSED_STREAM && !x->status ? END_REFUSED /* not processed: send it again */
                : error || !x->status ? END_PROTO : x->status / 100 == 2 ? END_OK : END_HTTP;
    if (kind != END_PROTO) lg_body_read(x, x->body.data, x->body.len, true);
    lg_conn_finish(ud, x, kind);
    return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
    lg_conn *c = ud;
    (void)s;
    if (f->hd.type == NGHTTP2_GOAWAY && !c->goaway) { /* no new streams here; a new connection may open */
        c->goaway = true;
        if (c->capped) c->capped = false, c->g->open_conns--;
    }
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t stream, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud) {
    (void)src, (void)ud;
    lg_xchg *x = xchg_of(s, stream);
    if (!x) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* ended (a timeout): the stream is reset */
    const ag_lg_request *r = &x->g->s->reqs->v[x->req];
    size_t n = r->body_len - x->sent < len ? r->body_len - x->sent : len;
    memcpy(buf, r->body + x->sent, n);
    x->sent += n;
    if (x->sent == r->body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* ---- sessions ------------------------------------------------------------------------------------ */

bool lg_h2_open(lg_conn *c) {
    lg *g = c->g;
    if (!g->h2_cbs) {
        if (nghttp2_session_callbacks_new(&g->h2_cbs) != 0) return false;
        nghttp2_session_callbacks_set_send_callback(g->h2_cbs, on_send);
        nghttp2_session_callbacks_set_on_header_callback(g->h2_cbs, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g->h2_cbs, on_data);
        nghttp2_session_callbacks_set_on_stream_close_callback(g->h2_cbs, on_stream_close);
        nghttp2_session_callbacks_set_on_frame_recv_callback(g->h2_cbs, on_frame);
    }
    if (!g->h2_opt) {
        /* One stream until the server's SETTINGS say how many it takes (nghttp2 then holds the rest): a first
         * flight of streams past a small limit would be refused (REFUSED_STREAM) and count as errors. */
        if (nghttp2_option_new(&g->h2_opt) != 0) return false;
        nghttp2_option_set_peer_max_concurrent_streams(g->h2_opt, 1);
    }
    if (nghttp2_session_client_new2(&c->h2, g->h2_cbs, c, g->h2_opt) != 0) return false;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}, {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW}};
    return nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) == 0 &&
           nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, WINDOW) == 0;
}

void lg_h2_send(lg_conn *c) {
    if (c->in_recv || c->state != LGC_OPEN) return; /* after nghttp2 returns; once open */
    if (nghttp2_session_send(c->h2) != 0) {
        lg_conn_error(c->g, "HTTP/2: the session failed");
        lg_conn_close(c, END_PROTO);
        return;
    }
    lg_conn_flush(c);
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) lg_conn_close(c, END_CONN);
}

void lg_h2_start(lg_conn *c, lg_xchg *x) {
    const lg_h2req *h = &c->g->h2_req[x->req];
    nghttp2_data_provider body = {.read_callback = read_body};
    int32_t id = nghttp2_submit_request(c->h2, NULL, h->nv, h->n, c->g->s->reqs->v[x->req].body ? &body : NULL, x);
    if (id < 0) {
        lg_conn_finish(c, x, END_PROTO);
        return;
    }
    x->stream = id;
    lg_h2_send(c);
}

void lg_h2_forget(lg_conn *c, lg_xchg *x) {
    if (c->h2 && x->stream > 0) nghttp2_session_set_stream_user_data(c->h2, x->stream, NULL);
}

void lg_h2_cancel(lg_conn *c, lg_xchg *x) {
    lg_h2_forget(c, x);
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, x->stream, NGHTTP2_CANCEL);
    lg_conn_finish(c, x, END_TIMEOUT);
    if (c->state != LGC_CLOSING) lg_h2_send(c);
}

bool lg_h2_recv(lg_conn *c) {
    c->in_recv = true;
    ssize_t n = nghttp2_session_mem_recv(c->h2, (const uint8_t *)c->io.in.data, c->io.in.len);
    c->in_recv = false;
    c->io.in.len = 0;
    if (c->state == LGC_CLOSING) return true; /* closed from a callback: lg_conn.c frees it now */
    if (n < 0) {
        lg_conn_error(c->g, nghttp2_strerror((int)n));
        return false;
    }
    lg_h2_send(c);
    return true;
}

void lg_h2_close(lg_conn *c) {
    nghttp2_session_del(c->h2); /* NULL over HTTP/1.1 */
    c->h2 = NULL;
}

void lg_h2_unprepare(lg *g) {
    nghttp2_session_callbacks_del(g->h2_cbs);
    nghttp2_option_del(g->h2_opt);
    ag_arena_deinit(&g->h2_arena);
}
