/*
 * lg_conn.c - one of the load generator's connections (see lg.h): TCP on
 * the step's libuv loop, TLS (http/tls.c, OpenSSL over memory BIOs) when the
 * target is https, and its lifecycle, CONNECTING -> (HANDSHAKING ->) OPEN ->
 * CLOSING.  Over HTTP/2 its plaintext goes to lg_h2.c; over HTTP/1.1 it
 * reads the response to its one request here: the head, then the body by
 * Content-Length, chunked, or to EOF.
 *
 * Writes go through one buffer being filled (out) and one being written
 * (wbuf), swapped when a write completes, so a connection has at most one
 * write in flight and no allocation per request.
 */
#define _GNU_SOURCE /* pthread types for uv.h */
#include "tools/lg.h"

#include "base/alloc.h"
#include "base/str.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- HTTP/1.1 responses ------------------------------------------------------------------ */

bool lg_h1_parse(lg_conn *c) {
    lg_xchg *x = c->x;
    bool had_head = c->resp.head_done;
    size_t body, n;
    if (ag_http_response_read(&c->resp, c->io.in.data, &c->io.in.len, 65536, &body, &n) != AG_OK) return false;
    if (!c->resp.head_done) return true;
    if (!had_head) {
        x->status = c->resp.status;
        x->sse = ag_http_response_is_sse(&c->resp);
        lg_note_server(c->g, c->resp.server.p, c->resp.server.n);
    }
    lg_body_read(x, c->io.in.data + body, n, c->resp.done);
    return true;
}

/* HTTP/1.1: the request's bytes out (once the connection is open). */
static void h1_transmit(lg_conn *c) {
    lg *g = c->g;
    size_t i = c->x->req;
    if (!lg_conn_put(c, g->h1_data[i], g->h1_len[i])) lg_conn_close(c, END_CONN);
    else lg_conn_flush(c);
}

/* ---- the exchanges a connection carries --------------------------------------------------- */

void lg_conn_start(lg_conn *c, lg_xchg *x) {
    if (c->g->t->http2) {
        lg_h2_start(c, x);
        return;
    }
    c->x = x;
    c->io.in.len = 0;
    ag_http_response_reset(&c->resp);
    if (c->state == LGC_OPEN) h1_transmit(c);
}

void lg_conn_finish(lg_conn *c, lg_xchg *x, lg_end kind) {
    c->active--;
    c->answered += kind == END_OK || kind == END_HTTP;
    x->c = NULL;
    if (c->x == x) c->x = NULL;
    if (c->state != LGC_CLOSING) {
        if (c->resp.close_after) lg_conn_close(c, END_CONN); /* Connection: close, e.g. nginx's keepalive_requests */
        else if (!c->active) lg_conn_released(c);
    }
    lg_xchg_end(x, kind);
}

void lg_conn_cancel(lg_conn *c, lg_xchg *x) {
    if (c->g->t->http2) lg_h2_cancel(c, x);
    else lg_conn_close(c, END_TIMEOUT); /* HTTP/1.1 cannot abandon a response and keep the connection */
}

bool lg_conn_usable(const lg_conn *c) { return c->state != LGC_CLOSING && !c->goaway; }

/* ---- bytes out ---------------------------------------------------------------------------- */

static void on_written(uv_write_t *w, int status) {
    lg_conn *c = w->data;
    c->g->now = uv_hrtime();
    ag_cio_written(&c->io);
    if (c->state == LGC_CLOSING) return;
    if (status < 0) {
        if (c->active) lg_conn_error(c->g, uv_strerror(status));
        lg_conn_close(c, END_CONN);
        return;
    }
    lg_conn_flush(c);
}

bool lg_conn_put(lg_conn *c, const void *p, size_t n) { return ag_cio_put(&c->io, p, n); }

void lg_conn_flush(lg_conn *c) {
    if (c->state == LGC_CONNECTING || c->state == LGC_CLOSING) return;
    c->io.write.data = c;
    if (ag_cio_flush(&c->io, (uv_stream_t *)&c->tcp, on_written) != 0) lg_conn_close(c, END_CONN);
}

/* ---- the lifecycle ------------------------------------------------------------------------ */

static void on_closed(uv_handle_t *h) {
    lg_conn *c = h->data;
    ag_cio_deinit(&c->io);
    lg_conn_free(c);
}

/* The session and the socket go (deferred while nghttp2 is calling us from this connection's bytes). */
static void release(lg_conn *c) {
    if (c->released || c->in_recv) return;
    c->released = true;
    lg_h2_close(c);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void lg_conn_close(lg_conn *c, lg_end kind) {
    lg *g = c->g;
    if (c->state == LGC_CLOSING) return;
    c->state = LGC_CLOSING;
    if (c->capped) c->capped = false, g->open_conns--;
    for (lg_conn **p = &g->idle; *p; p = &(*p)->next_idle)
        if (*p == c) {
            *p = c->next_idle;
            break;
        }
    /* Its exchanges end, found in one pass over those in flight.  Each end may start others (never on this
     * connection) or retry, but ends no other exchange of this one, so the list taken first stays true. */
    lg_xchg *one, **mine = c->active <= 1 ? &one : ag_xmalloc((size_t)c->active * sizeof *mine);
    int n = 0;
    if (c->x) mine[n++] = c->x;
    for (lg_xchg *y = g->flight; !c->x && y && n < c->active; y = y->next)
        if (y->c == c) mine[n++] = y;
    for (int i = 0; i < n; i++) {
        lg_h2_forget(c, mine[i]);
        lg_conn_finish(c, mine[i], kind);
    }
    if (mine != &one) free(mine);
    release(c);
}

/* ---- bytes in ---------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    lg_conn *c = h->data;
    (void)hint;
    ag_cio_alloc(&c->io, c->g->rbuf, sizeof c->g->rbuf, buf);
}

/* The server's end of the connection: EOF, close_notify, or an error. */
static void ended(lg_conn *c, ssize_t n) {
    lg_xchg *x = c->x;
    if (x && n == UV_EOF && c->resp.head_done && c->resp.to_eof) { /* an HTTP/1.1 body delimited by the close */
        lg_body_read(x, c->io.in.data + c->resp.head_len, c->io.in.len - c->resp.head_len, true);
        c->resp.close_after = true;
        lg_conn_finish(c, x, x->status / 100 == 2 ? END_OK : END_HTTP);
        return;
    }
    if (x && c->answered && !c->resp.head_done && !c->io.in.len && (n == UV_EOF || n == UV_ECONNRESET)) {
        /* a reused connection the server had closed (llama-server closes after each streamed answer while saying
         * keep-alive): nothing of this request was answered, so it goes out again on a fresh one */
        lg_conn_close(c, END_REFUSED);
        return;
    }
    if (c->active) lg_conn_error(c->g, n == UV_EOF ? "the server closed the connection" : uv_strerror((int)n));
    lg_conn_close(c, x && (c->resp.head_done || c->io.in.len) ? END_PROTO : END_CONN);
}

static void h1_read(lg_conn *c, size_t added) {
    lg_xchg *x = c->x;
    if (!x) { /* bytes nobody asked for */
        lg_conn_close(c, END_CONN);
        return;
    }
    if (x->counted) c->g->r->bytes += added;
    if (!lg_h1_parse(c)) lg_conn_close(c, END_PROTO);
    else if (c->resp.done) lg_conn_finish(c, x, x->status / 100 == 2 ? END_OK : END_HTTP);
}

static void opened(lg_conn *c);
static void release(lg_conn *c);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    lg_conn *c = s->data;
    lg *g = c->g;
    g->now = uv_hrtime();
    if (n == 0 || c->state == LGC_CLOSING) return;
    if (n < 0) {
        ended(c, n);
        return;
    }
    size_t before = c->io.in.len;
    ag_tls_result tr = AG_TLS_OK;
    if (c->io.tls) {
        tr = ag_tls_recv(c->io.tls, buf->base, (size_t)n, &c->io.in, &c->io.out);
        lg_conn_flush(c); /* the handshake's next flight, alerts */
        if (tr == AG_TLS_FAILED) {
            char why[200];
            snprintf(why, sizeof why, "TLS: %s", ag_tls_why(c->io.tls));
            lg_conn_error(g, why);
            lg_conn_close(c, END_CONN);
            return;
        }
        if (c->state == LGC_HANDSHAKING && ag_tls_ready(c->io.tls)) opened(c);
    } else {
        c->io.in.len += (size_t)n;
    }
    if (c->state == LGC_CLOSING) return;
    if (g->t->http2) {
        if (!lg_h2_recv(c)) lg_conn_close(c, END_PROTO);
        else if (c->state == LGC_CLOSING) release(c); /* closed from within nghttp2's callbacks */
    } else if (c->io.in.len > before) {
        h1_read(c, c->io.in.len - before);
    }
    if (tr == AG_TLS_CLOSED && c->state != LGC_CLOSING) ended(c, UV_EOF);
}

/* Open for requests: HTTP/2 sends its preface and the streams queued meanwhile, HTTP/1.1 its request. */
static void opened(lg_conn *c) {
    lg *g = c->g;
    c->state = LGC_OPEN;
    if (g->t->http2) {
        if (c->io.tls && !ag_tls_alpn_is(c->io.tls, "h2")) {
            lg_conn_error(g, "the server did not agree to HTTP/2 by ALPN");
            lg_conn_close(c, END_PROTO);
            return;
        }
        lg_h2_send(c);
    } else if (c->x) {
        h1_transmit(c);
    }
}

static void on_connect(uv_connect_t *req, int status) {
    lg_conn *c = req->data;
    c->g->now = uv_hrtime();
    if (c->state == LGC_CLOSING) return;
    if (status < 0) {
        lg_conn_error(c->g, uv_strerror(status));
        lg_conn_close(c, END_CONN);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (!c->io.tls) {
        opened(c);
        return;
    }
    c->state = LGC_HANDSHAKING;
    ag_tls_start(c->io.tls, &c->io.out);
    lg_conn_flush(c);
}

lg_conn *lg_conn_open(lg *g) {
    lg_conn *c = calloc(1, sizeof *c);
    c->g = g;
    c->state = LGC_CONNECTING;
    ag_cio_init(&c->io);
    uv_tcp_init(&g->loop, &c->tcp);
    uv_tcp_nodelay(&c->tcp, 1);
    c->tcp.data = c;
    c->connect.data = c;
    if (g->n_conns == g->cap_conns) {
        g->cap_conns = g->cap_conns ? 2 * g->cap_conns : 64;
        g->conns = realloc(g->conns, (size_t)g->cap_conns * sizeof *g->conns);
    }
    g->conns[g->n_conns++] = c;
    g->open_conns++;
    c->capped = true;
    bool ok = (!g->tls || (c->io.tls = ag_tls_new(g->tls, g->t->host))) && (!g->t->http2 || lg_h2_open(c));
    int rc = ok ? uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&g->addr, on_connect) : UV_ENOMEM;
    if (rc != 0) {
        lg_conn_error(g, uv_strerror(rc));
        lg_conn_close(c, END_CONN);
        return NULL;
    }
    return c;
}
