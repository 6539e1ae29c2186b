/*
 * client.c - the client (see include/autoglm/client.h and client_int.h): its
 * I/O thread running a libuv loop, the queue through which any thread hands
 * it calls, and the connections the calls share.
 *
 * A connection's lifecycle: CONNECTING -> (HANDSHAKING ->) BUSY, carrying the
 * call that opened it, then IDLE in the pool and BUSY again for the next
 * call, until either side closes it: CLOSING, freed in its close callback.
 * A call that finds no idle connection and no room for a new one waits in
 * order; each connection that comes free serves the first waiting call.
 *
 * With options.http2 a connection goes CONNECTING -> (HANDSHAKING ->) MUX
 * and carries calls as streams (h2.c), as many as the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS allow; calls that come while it opens wait
 * on it and send when it is open.
 */
#define _GNU_SOURCE /* getaddrinfo, pthread types for uv.h */
#include "client/client_int.h"

#include "base/alloc.h"
#include "json/json.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double agc_uniform(ag_client *cl) { /* xorshift64* */
    cl->rng ^= cl->rng >> 12, cl->rng ^= cl->rng << 25, cl->rng ^= cl->rng >> 27;
    return (double)((cl->rng * 2685821657736338717ull) >> 11) * 0x1.0p-53;
}

/* ---- connections --------------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h) {
    agc_conn *c = h->data;
    ag_client *cl = c->cl;
    ag_cio_deinit(&c->io);
    if (c->ng) agc_h2_free(c);
    free(c->calls);
    free(c);
    cl->n_conns--;
    agc_client_dispatch(cl); /* room for a waiting call's new connection */
    agc_client_handle_closed(cl);
}

static void unlink_conn(agc_conn **list, agc_conn *c) {
    for (agc_conn **p = list; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
}

static void h2_detach(agc_conn *c, agc_call *call) {
    for (int i = 0; i < c->n_calls; i++)
        if (c->calls[i] == call) {
            c->calls[i] = c->calls[--c->n_calls];
            break;
        }
}

/* Every call on c learns that it is gone (why NULL: the server ended it). */
static void lost(agc_conn *c, const char *why) {
    if (!c->h2) {
        agc_call *call = c->call;
        c->call = NULL;
        if (call) agc_call_conn_lost(call, why);
        return;
    }
    while (c->n_calls) {
        agc_call *call = c->calls[--c->n_calls];
        call->stream_id = 0;
        agc_call_conn_lost(call, why ? why : c->why[0] ? c->why : NULL);
    }
}

void agc_conn_close(agc_conn *c) {
    if (c->state == CC_CLOSING) return;
    if (c->state == CC_IDLE) unlink_conn(&c->cl->idle, c);
    if (c->h2) unlink_conn(&c->cl->mux, c);
    c->state = CC_CLOSING;
    lost(c, NULL);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_written(uv_write_t *w, int status) {
    agc_conn *c = w->data;
    ag_cio_written(&c->io);
    if (c->state == CC_CLOSING) return;
    if (status < 0) {
        lost(c, uv_strerror(status));
        agc_conn_close(c);
        return;
    }
    agc_conn_flush(c);
}

bool agc_conn_send(agc_conn *c, const void *p, size_t n) { return ag_cio_put(&c->io, p, n); }

void agc_conn_flush(agc_conn *c) {
    if (c->state == CC_CONNECTING || c->state == CC_CLOSING) return;
    if (c->ng && !agc_h2_send(c)) { /* frames nghttp2 has queued, into the output */
        agc_conn_close(c);
        return;
    }
    c->io.write.data = c;
    if (ag_cio_flush(&c->io, (uv_stream_t *)&c->tcp, on_written) != 0) {
        lost(c, "write failed");
        agc_conn_close(c);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    agc_conn *c = h->data;
    (void)hint;
    ag_cio_alloc(&c->io, c->cl->rbuf, sizeof c->cl->rbuf, buf);
}

/* The connection is open (connected, and handshaken with TLS): HTTP/1.1 sends its call; HTTP/2 starts its session
 * and every call waiting on it sends. */
static void conn_open_done(agc_conn *c) {
    if (!c->h2) {
        c->state = CC_BUSY;
        agc_call_conn_ready(c->call);
        return;
    }
    if (c->io.tls && !ag_tls_alpn_is(c->io.tls, "h2")) {
        snprintf(c->why, sizeof c->why, "the server did not agree to HTTP/2 (ALPN)");
        agc_conn_close(c);
        return;
    }
    if (!agc_h2_start(c)) {
        snprintf(c->why, sizeof c->why, "no memory for an HTTP/2 session");
        agc_conn_close(c);
        return;
    }
    c->state = CC_MUX;
    int n = c->n_calls;
    agc_call **v = ag_xmalloc((size_t)(n ? n : 1) * sizeof *v); /* a copy: sending may end attempts */
    memcpy(v, c->calls, (size_t)n * sizeof *v);
    for (int i = 0; i < n && c->state == CC_MUX; i++)
        if (v[i]->conn == c && v[i]->state == CALL_CONNECTING) agc_call_conn_ready(v[i]);
    free(v);
    agc_conn_flush(c);
}

/* HTTP/2: what was read goes to the session; its callbacks reach the calls. */
static void h2_read(agc_conn *c) {
    if (!agc_h2_recv(c)) {
        agc_conn_close(c);
        return;
    }
    agc_conn_flush(c); /* what the callbacks queued: WINDOW_UPDATE, RST_STREAM, new requests */
    if (c->state != CC_CLOSING && agc_h2_done(c)) agc_conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    agc_conn *c = s->data;
    if (n == 0 || c->state == CC_CLOSING) return;
    if (n < 0) { /* the server's end: a call still reading learns why */
        lost(c, n == UV_EOF ? NULL : uv_strerror((int)n));
        agc_conn_close(c);
        return;
    }
    size_t before = c->io.in.len;
    if (c->io.tls) {
        ag_tls_result tr = ag_tls_recv(c->io.tls, buf->base, (size_t)n, &c->io.in, &c->io.out);
        agc_conn_flush(c); /* the handshake's next flight, alerts */
        if (tr != AG_TLS_OK) {
            char why[200];
            snprintf(why, sizeof why, "TLS: %s", tr == AG_TLS_CLOSED ? "the server closed the session" : ag_tls_why(c->io.tls));
            lost(c, why);
            agc_conn_close(c);
            return;
        }
        if (c->state == CC_HANDSHAKING && ag_tls_ready(c->io.tls)) conn_open_done(c);
    } else {
        c->io.in.len += (size_t)n;
    }
    if (c->io.in.len == before || c->state == CC_CLOSING) return;
    if (c->h2) {
        if (c->state == CC_MUX) h2_read(c);
        return;
    }
    if (c->state != CC_BUSY || !c->call) { /* bytes nobody asked for */
        agc_conn_close(c);
        return;
    }
    agc_call_conn_read(c->call);
}

static void on_connect(uv_connect_t *req, int status) {
    agc_conn *c = req->data;
    if (c->state == CC_CLOSING) return;
    if (status < 0) {
        lost(c, uv_strerror(status));
        agc_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->io.tls) {
        c->state = CC_HANDSHAKING;
        ag_tls_start(c->io.tls, &c->io.out);
        agc_conn_flush(c);
        return;
    }
    conn_open_done(c);
}

static agc_conn *conn_open(ag_client *cl, agc_call *call) {
    agc_conn *c = ag_xcalloc(1, sizeof *c);
    c->cl = cl, c->call = call, c->state = CC_CONNECTING;
    ag_cio_init(&c->io);
    uv_tcp_init(cl->loop, &c->tcp);
    cl->handles++;
    c->tcp.data = c, c->connect.data = c;
    cl->n_conns++;
    if (cl->tls_ctx && !(c->io.tls = ag_tls_new(cl->tls_ctx, cl->host))) {
        c->call = NULL;
        agc_conn_close(c);
        return NULL;
    }
    int rc = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&cl->addr, on_connect);
    if (rc < 0) {
        c->call = NULL;
        agc_conn_close(c);
        return NULL;
    }
    return c;
}

static void h2_attach(agc_conn *c, agc_call *call) {
    if (c->n_calls == c->cap_calls)
        c->calls = ag_xrealloc(c->calls, (size_t)(c->cap_calls = c->cap_calls ? 2 * c->cap_calls : 8) * sizeof *c->calls);
    c->calls[c->n_calls++] = call;
}

/* An HTTP/2 connection that can take another call, open or opening.  One whose PING (sent when a stream timed
 * out) has had no answer for the connect timeout is dead: closed, its calls retried elsewhere. */
static agc_conn *h2_with_room(ag_client *cl) {
    uint64_t now = uv_now(cl->loop);
    for (agc_conn *c = cl->mux, *next; c; c = next) {
        next = c->next;
        if (c->ping_at && now - c->ping_at > cl->o.connect_timeout_ms && c->state == CC_MUX) {
            snprintf(c->why, sizeof c->why, "no answer to an HTTP/2 PING within %u ms", cl->o.connect_timeout_ms);
            agc_conn_close(c);
            continue;
        }
        if (c->state != CC_CLOSING && agc_h2_room(c) > 0) return c;
    }
    return NULL;
}

bool agc_conn_room(ag_client *cl) {
    if (cl->n_conns < cl->o.max_connections) return true;
    return cl->o.http2 ? h2_with_room(cl) != NULL : cl->idle != NULL;
}

agc_conn *agc_conn_get(ag_client *cl, agc_call *call) {
    if (cl->o.http2) {
        agc_conn *c = h2_with_room(cl);
        if (!c && cl->n_conns < cl->o.max_connections && (c = conn_open(cl, NULL))) {
            c->h2 = true;
            c->next = cl->mux, cl->mux = c;
        }
        if (c) h2_attach(c, call);
        return c;
    }
    agc_conn *c = cl->idle;
    if (c) {
        cl->idle = c->next;
        c->state = CC_BUSY, c->call = call; /* its input was emptied when it was released */
        return c;
    }
    return cl->n_conns < cl->o.max_connections ? conn_open(cl, call) : NULL;
}

static void release(agc_conn *c);

void agc_conn_done(agc_conn *c, agc_call *call, bool reusable) {
    if (c->h2) {
        h2_detach(c, call);
        agc_h2_cancel(c, call);
        c->uses++; /* a call that comes later is on a reused connection */
        if (c->state != CC_MUX && !c->n_calls) { /* still opening, and nobody waits for it (they timed out) */
            agc_conn_close(c);
            return;
        }
        agc_client_dispatch(c->cl); /* a stream's room came free */
        return;
    }
    c->call = NULL;
    if (reusable) release(c);
    else agc_conn_close(c); /* HTTP/1.1 cannot abandon an answer and keep the connection */
}

static void release(agc_conn *c) {
    ag_client *cl = c->cl;
    c->call = NULL;
    c->uses++;
    c->state = CC_IDLE;
    c->io.in.len = 0;
    c->next = cl->idle, cl->idle = c;
    agc_client_dispatch(cl);
}

/* ---- the I/O thread ------------------------------------------------------------------------ */

void agc_client_dispatch(ag_client *cl) {
    while (cl->waiting && agc_conn_room(cl)) {
        agc_call *call = cl->waiting;
        cl->waiting = call->next;
        agc_call_start(cl, call);
    }
}

/* Calls under way end as CLOSED and every connection closes (on the loop's thread). */
static void close_all(ag_client *cl) {
    while (cl->active) agc_call_abort(cl->active, AG_CLIENT_CLOSED); /* each closes its connection or leaves the queue */
    while (cl->idle) agc_conn_close(cl->idle);
    while (cl->mux) agc_conn_close(cl->mux);
}

static void on_wake(uv_async_t *a) {
    ag_client *cl = a->data;
    pthread_mutex_lock(&cl->mu);
    agc_call *in = cl->incoming;
    cl->incoming = NULL;
    bool closing = cl->closing;
    pthread_mutex_unlock(&cl->mu);
    if (atomic_exchange(&cl->cancel, false))
        while (cl->active) agc_call_abort(cl->active, AG_CLIENT_CANCELLED); /* calls queued after it run */
    /* in arrival order: the list was built newest first */
    agc_call *rev = NULL;
    while (in) {
        agc_call *n = in->next;
        in->next = rev, rev = in, in = n;
    }
    for (agc_call *call = rev, *n; call; call = n) {
        n = call->next;
        call->next = NULL;
        if (closing) agc_call_free_queued(call);
        else agc_call_start(cl, call);
    }
    if (!closing) return;
    close_all(cl);
    uv_close((uv_handle_t *)&cl->wake, NULL); /* the loop ends once every close callback has run */
}

static void *io_thread(void *arg) {
    ag_client *cl = arg;
    uv_run(cl->loop, UV_RUN_DEFAULT);
    return NULL;
}

void agc_client_submit(ag_client *cl, agc_call *call) {
    if (!cl->threaded) { /* on the caller's loop, from its thread */
        agc_call_start(cl, call);
        return;
    }
    pthread_mutex_lock(&cl->mu);
    bool closing = cl->closing;
    if (!closing) call->next = cl->incoming, cl->incoming = call;
    pthread_mutex_unlock(&cl->mu);
    if (closing) agc_call_free_queued(call);
    else uv_async_send(&cl->wake);
}

/* ---- the client ------------------------------------------------------------------------------ */

static ag_status parse_base_url(ag_client *cl, const char *url, ag_err *err) {
    if (!url) return ag_err_set(err, AG_EINVAL, "no base URL");
    cl->https = strncmp(url, "https://", 8) == 0;
    if (!cl->https && strncmp(url, "http://", 7) != 0)
        return ag_err_set(err, AG_EINVAL, "base URL '%s' is not http:// or https://", url);
    const char *h = url + (cl->https ? 8 : 7), *slash = strchr(h, '/'), *end = slash ? slash : h + strlen(h);
    const char *hs = h, *he, *colon;
    if (*h == '[') {
        hs = h + 1, he = memchr(hs, ']', (size_t)(end - hs));
        if (!he) return ag_err_set(err, AG_EINVAL, "base URL '%s': unclosed [", url);
        colon = he[1] == ':' ? he + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        he = colon ? colon : end;
    }
    if (he == hs) return ag_err_set(err, AG_EINVAL, "base URL '%s' has no host", url);
    long port = cl->https ? 443 : 80;
    if (colon) {
        char *pe;
        port = strtol(colon + 1, &pe, 10);
        if (pe != end || port <= 0 || port > 65535) return ag_err_set(err, AG_EINVAL, "base URL '%s': bad port", url);
    }
    cl->host = ag_xstrndup(hs, (size_t)(he - hs));
    cl->port = (int)port;
    size_t pl = slash ? strlen(slash) : 0;
    while (pl && slash[pl - 1] == '/') pl--;
    cl->path_prefix = ag_xstrndup(slash ? slash : "", pl);
    size_t an = strlen(cl->host) + 16;
    cl->authority = ag_xmalloc(an);
    snprintf(cl->authority, an, strchr(cl->host, ':') ? "[%s]:%d" : "%s:%d", cl->host, cl->port);
    return AG_OK;
}

static void client_free_fields(ag_client *cl) {
    ag_arena_deinit(&cl->arena);
    free(cl->host), free(cl->path_prefix), free(cl->authority), free(cl->bearer);
    free(cl->model_member);
    ag_tls_ctx_free(cl->tls_ctx);
    free(cl);
}

ag_status ag_client_new(const ag_client_options *o, ag_client **out, ag_err *err) {
    ag_client *cl = ag_xcalloc(1, sizeof *cl);
    cl->o = *o;
    ag_arena_init(&cl->arena, 1 << 14);
    const ag_client_retry_policy *p = &o->retry;
    if (p->max_retries < 0 || p->max_5xx_retries < 0 || !(p->backoff_base_s >= 0) || !(p->backoff_cap_s >= 0) ||
        !(p->max_retry_after_s >= 0) || !(p->budget_ratio >= 0) || !(p->budget_floor >= 0) || o->max_connections < 1 ||
        !o->connect_timeout_ms || !o->first_byte_timeout_ms || !o->total_timeout_ms || !o->max_response_bytes) {
        client_free_fields(cl);
        return ag_err_set(err, AG_EINVAL, "client options out of range (start from ag_client_options_default())");
    }
    ag_status st = parse_base_url(cl, o->base_url, err);
    if (st != AG_OK) {
        client_free_fields(cl);
        return st;
    }
    cl->o.base_url = NULL, cl->o.ca_file = NULL, cl->o.api_key = NULL, cl->o.model = NULL; /* not kept: copies */
    if (o->model) {
        ag_buf b;
        ag_buf_init(&b);
        ag_jw w;
        ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "model"), ag_jw_strc(&w, o->model);
        ag_jw_obj_end(&w);
        size_t n;
        char *obj = ag_buf_detach(&b, &n); /* {"model":"..."}: the member is between the braces */
        cl->model_member = ag_xstrndup(obj + 1, n - 2);
        free(obj);
        ag_buf_deinit(&b);
    }
    if (o->api_key) {
        size_t n = strlen(o->api_key) + 32;
        cl->bearer = ag_xmalloc(n);
        snprintf(cl->bearer, n, "Bearer %s", o->api_key);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", cl->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(cl->host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        ag_err_set(err, AG_EINVAL, "cannot resolve %s: %s", cl->host, gai_strerror(gai));
        client_free_fields(cl);
        return AG_EINVAL;
    }
    memcpy(&cl->addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (cl->https) {
        char msg[256];
        if (!(cl->tls_ctx = ag_tls_ctx_new_client(o->http2 ? "h2" : "http/1.1", !o->insecure, o->ca_file, msg, sizeof msg))) {
            ag_err_set(err, AG_EINVAL, "%s", msg);
            client_free_fields(cl);
            return AG_EINVAL;
        }
    }
    agc_budget_init(&cl->budget, &cl->o.retry);
    cl->rng = o->seed ? o->seed : (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)cl;
    if (!cl->rng) cl->rng = 1;
    pthread_mutex_init(&cl->mu, NULL);
    if (o->loop) {
        cl->loop = o->loop;
        *out = cl;
        return AG_OK;
    }
    cl->threaded = true;
    cl->loop = &cl->own_loop;
    uv_loop_init(cl->loop);
    uv_async_init(cl->loop, &cl->wake, on_wake);
    cl->wake.data = cl;
    if (pthread_create(&cl->thread, NULL, io_thread, cl) != 0) {
        uv_close((uv_handle_t *)&cl->wake, NULL);
        uv_run(cl->loop, UV_RUN_DEFAULT);
        uv_loop_close(cl->loop);
        pthread_mutex_destroy(&cl->mu);
        client_free_fields(cl);
        return ag_err_set(err, AG_NOMEM, "cannot start the client's I/O thread");
    }
    *out = cl;
    return AG_OK;
}

void ag_client_cancel(ag_client *cl) {
    if (!cl->threaded) { /* on the caller's loop, from its thread */
        while (cl->active) agc_call_abort(cl->active, AG_CLIENT_CANCELLED);
        return;
    }
    atomic_store(&cl->cancel, true);
    uv_async_send(&cl->wake); /* async-signal-safe */
}

void agc_client_handle_closed(ag_client *cl) {
    if (--cl->handles == 0 && cl->freeing) {
        pthread_mutex_destroy(&cl->mu);
        client_free_fields(cl);
    }
}

void ag_client_free(ag_client *cl) {
    if (!cl) return;
    if (!cl->threaded) { /* on the caller's loop: the memory goes with the last close callback */
        if (cl->freeing) return;
        cl->freeing = true;
        cl->handles++; /* held while closing, so a close callback run meanwhile cannot free it under us */
        close_all(cl);
        agc_client_handle_closed(cl);
        return;
    }
    pthread_mutex_lock(&cl->mu);
    cl->closing = true;
    pthread_mutex_unlock(&cl->mu);
    uv_async_send(&cl->wake);
    pthread_join(cl->thread, NULL);
    uv_loop_close(cl->loop);
    pthread_mutex_destroy(&cl->mu);
    client_free_fields(cl);
}
