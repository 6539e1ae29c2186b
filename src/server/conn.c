/*
 * conn.c - connections: reading HTTP/1.1 requests, framing responses,
 * timeouts, the graceful close, and the SSE stream writer.
 *
 * A connection reads into one buffer that holds the current request at its
 * start; the HTTP parser hands back spans into it and the body is decoded in
 * place.  Requests on a connection are served one at a time, in order
 * (pipelined ones wait in the buffer), and the connection keeps reading while
 * a request is served, so a client that goes away is noticed at once.
 * Responses are appended to the connection's output buffer and handed to the
 * kernel once per loop iteration (a uv_check handle), which coalesces the
 * tokens of one engine step into one write.
 *
 * This layer knows requests and responses, not what they mean: a complete
 * request goes to the server's on_request hook (routes.c), an answered one to
 * on_request_end, a client that leaves mid-request to on_client_gone.
 *
 * A connection whose first bytes are HTTP/2's client preface is handed to
 * h2.c; its requests are streams, conns of their own whose answers the
 * functions below frame through h2.c instead of as HTTP/1.1 text.  Under
 * TLS (tls.c) the socket's bytes are decrypted into the same buffer and the
 * output encrypted on its way out.  Answers are coded (gzip, zstd) here too,
 * as the request's Accept-Encoding allows (src/http/coding.c).
 *
 * A connection is freed only in libuv's close callbacks, never inside its
 * own callbacks.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "base/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_timeout(uv_timer_t *t);

/* ---- output ---------------------------------------------------------------------- */

void ag_conn_mark_dirty(conn *c) {
    if (c->dirty || c->closed || c->kind == CONN_JOB) return; /* a job's answer waits for its end, in out */
    server *s = c->s;
    if (s->n_dirty == s->cap_dirty) {
        s->cap_dirty = s->cap_dirty ? 2 * s->cap_dirty : 64;
        s->dirty = ag_xrealloc(s->dirty, s->cap_dirty * sizeof *s->dirty);
    }
    s->dirty[s->n_dirty++] = c;
    c->dirty = true;
}

void ag_conn_forget_dirty(conn *c) {
    server *s = c->s;
    if (!c->dirty) return;
    for (size_t i = 0; i < s->n_dirty; i++)
        if (s->dirty[i] == c) s->dirty[i] = s->dirty[--s->n_dirty];
    c->dirty = false;
}

void ag_conn_send(conn *c, const void *p, size_t n) {
    if (c->closed) return;
    ag_buf_append(&c->out, p, n);
    ag_conn_mark_dirty(c);
}

/* A write libuv holds: a copy of the bytes the socket did not take, and a reference on a shared body. */
typedef struct out_write {
    uv_write_t req;
    ag_cache_val *body; /* NULL: none */
    char copy[];
} out_write;

static void on_write(uv_write_t *w, int status) {
    conn *c = w->data;
    out_write *ow = (out_write *)w;
    ag_cache_val_release(ow->body);
    free(ow);
    if (status < 0) ag_conn_close(c);
    else if (c->kind == CONN_H2 && !c->closed) ag_conn_mark_dirty(c); /* room again: frame what waits */
}

/*
 * Hand head[0..hn), then body[0..n) (bytes inside the shared value v, or
 * none), to the kernel in one writev.  What the socket does not take now
 * waits in libuv: head's rest as a copy, the body's in place with a
 * reference on v, so a cached answer is never copied however many clients it
 * goes to.
 */
static void sock_write(conn *c, const char *head, size_t hn, const char *body, size_t n, ag_cache_val *v) {
    uv_buf_t b[2];
    unsigned nb = 0;
    if (hn) b[nb++] = uv_buf_init((char *)head, (unsigned)hn);
    if (n) b[nb++] = uv_buf_init((char *)body, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&c->tcp, b, nb);
    if (r < 0 && r != UV_EAGAIN) {
        ag_conn_close(c);
        return;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    size_t out_rest = done < hn ? hn - done : 0;
    size_t body_done = done > hn ? done - hn : 0;
    if (out_rest || body_done < n) {
        out_write *w = ag_xmalloc(sizeof *w + out_rest);
        memcpy(w->copy, head + (hn - out_rest), out_rest);
        w->body = body_done < n ? ag_cache_val_retain(v) : NULL;
        w->req.data = c;
        nb = 0;
        if (out_rest) b[nb++] = uv_buf_init(w->copy, (unsigned)out_rest);
        if (body_done < n) b[nb++] = uv_buf_init((char *)body + body_done, (unsigned)(n - body_done));
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, b, nb, on_write) < 0) {
            ag_cache_val_release(w->body);
            free(w);
            ag_conn_close(c);
        }
    }
}

/* What TLS has to send (handshake, alerts, close_notify) goes out now, ahead of anything after it. */
static void send_wire(conn *c) {
    ag_buf *w = &c->s->tls_wire;
    if (w->len && !c->closed) sock_write(c, w->data, w->len, NULL, 0, NULL);
    ag_buf_reset(w);
}

/*
 * Hand c->out, then body[0..n) (bytes inside the shared value v), to the
 * socket; over TLS both become records first, so the body is copied there.
 */
void ag_conn_write(conn *c, const char *body, size_t n, ag_cache_val *v) {
    if (c->kind == CONN_STREAM || c->kind == CONN_JOB) { /* DATA frames (or the job's answer) are built from the
                                                          * output: the body is copied there */
        ag_conn_send(c, body, n);
        return;
    }
    if (c->closed || (!c->out.len && !n)) return;
    if (c->out.err != AG_OK) { /* a response was cut short by a failed append: the stream cannot be trusted */
        ag_conn_close(c);
        return;
    }
    if (c->tls) {
        bool ok = ag_tls_send(c->tls, c->out.data, c->out.len, &c->s->tls_wire) &&
                  ag_tls_send(c->tls, body, n, &c->s->tls_wire);
        ag_buf_reset(&c->out);
        send_wire(c);
        if (!ok) ag_conn_close(c);
        return;
    }
    sock_write(c, c->out.data, c->out.len, body, n, v);
    ag_buf_reset(&c->out);
}

void ag_conn_flush(conn *c) {
    if (c->kind == CONN_H1) ag_conn_write(c, NULL, 0, NULL);
    else ag_h2_flush(c);
}

void ag_conn_flush_dirty(server *s) {
    for (size_t i = 0; i < s->n_dirty; i++) { /* a stream's flush may add its connection: n_dirty is read each time */
        s->dirty[i]->dirty = false;
        ag_conn_flush(s->dirty[i]);
    }
    s->n_dirty = 0;
}

void ag_conn_write_head(conn *c, int status, const char *ctype, int64_t content_length, const char *extra) {
    if (c->kind == CONN_STREAM) {
        ag_h2_submit_response(c, status, ctype, content_length, extra);
        return;
    }
    if (c->kind == CONN_JOB) { /* no head: the worker takes the status and the body */
        c->obs.status = status;
        return;
    }
    server *s = c->s;
    ag_buf *b = &s->scratch;
    uint64_t max_req = s->o->max_requests_per_conn;
    if (s->draining || (max_req && c->n_served + 1 >= max_req)) c->keep_alive = false;
    c->chunked_out = false;
    ag_buf_reset(b);
    ag_buf_appendf(b, "HTTP/1.1 %d %s\r\nServer: autoglm/" AG_VERSION "\r\nDate: %s\r\n", status, ag_http_reason(status),
                   ag_server_http_date(s));
    if (c->obs.active) { /* every response, errors included, names its trace */
        char tp[56];
        ag_trace_format(&c->obs.trace, tp);
        ag_buf_appendf(b, "X-Trace-ID: %s\r\ntraceparent: %s\r\n", c->obs.trace.trace_id, tp);
        c->obs.status = status;
    }
    if (ctype) ag_buf_appendf(b, "Content-Type: %s\r\n", ctype);
    if (status == 304) {
        /* no content and no framing (RFC 9110 15.4.5) */
    } else if (content_length >= 0) ag_buf_appendf(b, "Content-Length: %lld\r\n", (long long)content_length);
    else if (c->req.version_minor >= 1) ag_buf_append_str(b, "Transfer-Encoding: chunked\r\n"), c->chunked_out = true;
    else c->keep_alive = false;
    if (!c->keep_alive) ag_buf_append_str(b, "Connection: close\r\n");
    else if (c->req.version_minor == 0) ag_buf_append_str(b, "Connection: keep-alive\r\n");
    if (extra) ag_buf_append_str(b, extra);
    ag_buf_append_str(b, "\r\n");
    if (b->err != AG_OK) c->out.err = b->err; /* no memory for the head: the flush closes the connection */
    else ag_conn_send(c, b->data, b->len);
}

/* ---- the SSE stream writer ------------------------------------------------------------ */

/*
 * Each event is one HTTP/1.1 chunk whose size field is written first as
 * eight hex digits (leading zeros are valid chunk-size syntax) and patched
 * when the event ends, so the event's JSON is rendered once, in place.
 */
#define SSE_SIZE_DIGITS 8

/* Event streams are coded only in zstd, each event flushed (gzip's sync flush costs more per event). */
void ag_sse_open(conn *c, const char *extra) {
    ag_buf *hx = &c->s->coded_extra;
    ag_buf_reset(hx);
    if (extra) ag_buf_append_str(hx, extra);
    /* an event stream is never stored, and a proxy passes its events on as they come (nginx buffers, and so
     * may cache, responses unless told) */
    ag_buf_append_str(hx, "Vary: Accept-Encoding\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\n");
    if (c->coding_stream == AG_CODING_ZSTD && (c->sse_enc = ag_http_encoder_new(AG_CODING_ZSTD, true)))
        ag_buf_append_str(hx, "Content-Encoding: zstd\r\n");
    ag_conn_write_head(c, 200, "text/event-stream", -1, hx->err == AG_OK ? hx->data : extra);
}

ag_buf *ag_sse_event_begin(conn *c) {
    c->sse_at = c->out.len;
    if (c->chunked_out) ag_buf_append(&c->out, "00000000\r\n", SSE_SIZE_DIGITS + 2);
    ag_buf_append(&c->out, "data: ", 6);
    return &c->out;
}

/* The open event's bytes, from its start to the end of out, replaced by their coded form (flushed). */
static void code_event(conn *c, size_t at, bool last) {
    ag_buf *z = &c->s->coded;
    ag_buf_reset(z);
    ag_status st = last ? ag_http_encoder_end(c->sse_enc, c->out.data + at, c->out.len - at, z)
                        : ag_http_encoder_push(c->sse_enc, c->out.data + at, c->out.len - at, z);
    if (st != AG_OK || z->err != AG_OK) {
        c->out.err = AG_NOMEM; /* the stream cannot go on: the flush closes the connection */
        return;
    }
    c->out.len = at;
    ag_buf_append(&c->out, z->data, z->len);
}

/* The open event ends: coded when the stream is, then framed as one chunk (its size patched in place). */
static void event_finish(conn *c, bool last) {
    if (c->sse_enc && c->out.err == AG_OK) code_event(c, c->sse_at + (c->chunked_out ? SSE_SIZE_DIGITS + 2 : 0), last);
    if (c->chunked_out && c->out.err == AG_OK) {
        char size[SSE_SIZE_DIGITS + 1];
        snprintf(size, sizeof size, "%08zx", c->out.len - c->sse_at - (SSE_SIZE_DIGITS + 2));
        memcpy(c->out.data + c->sse_at, size, SSE_SIZE_DIGITS);
        ag_buf_append(&c->out, "\r\n", 2);
    }
}

void ag_sse_event_end(conn *c) {
    ag_buf_append(&c->out, "\n\n", 2);
    event_finish(c, false);
    if (c->closed) ag_buf_reset(&c->out); /* nothing will send it */
    else ag_conn_mark_dirty(c);
}

void ag_sse_close(conn *c) {
    ag_buf_append_str(ag_sse_event_begin(c), "[DONE]");
    ag_sse_event_end(c);
    if (c->sse_enc && c->out.err == AG_OK) { /* the coding's end, as one more chunk */
        ag_sse_event_begin(c);
        c->out.len -= 6; /* no "data: " in it */
        event_finish(c, true);
    }
    if (c->chunked_out) ag_conn_send(c, "0\r\n\r\n", 5);
    ag_conn_request_done(c);
}

/* ---- responses ------------------------------------------------------------------------- */

/*
 * Close gracefully: queued output goes out, then our FIN; we keep reading
 * (and dropping) what the peer still sends until its FIN, since closing with
 * unread data would reset the connection and could destroy our last response
 * before the peer read it (nginx's lingering close).  The timer caps the wait.
 */
static void on_shutdown(uv_shutdown_t *req, int status) {
    conn *c = req->data;
    if (status < 0) ag_conn_close(c);
}

void ag_conn_end(conn *c) {
    if (c->closed || c->shutting) return;
    if (c->kind == CONN_H2 && !ag_h2_done(c)) {
        /* GOAWAY; the streams' answers go out and the session ends itself (ag_h2_flush), within the same bound */
        if (c->state != C_CLOSING) c->state = C_CLOSING, uv_timer_start(&c->timer, on_timeout, 5000, 0);
        ag_h2_goaway(c);
        ag_conn_flush(c);
        return;
    }
    c->state = C_CLOSING;
    c->shutting = true;
    ag_conn_flush(c);
    if (c->tls && !c->closed) ag_tls_shutdown(c->tls, &c->s->tls_wire), send_wire(c); /* close_notify */
    if (c->closed) return;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) ag_conn_close(c);
    else uv_timer_start(&c->timer, on_timeout, 5000, 0);
}

void ag_conn_obs_finish(conn *c, int status) {
    if (!c->obs.active) return;
    c->s->on_request_end(c, status);
    c->obs.active = false;
}

void ag_conn_request_done(conn *c) {
    ag_conn_obs_finish(c, c->obs.status);
    c->n_served++;
    ag_http_encoder_free(c->sse_enc);
    c->sse_enc = NULL;
    ag_buf_deinit(&c->body_dec);
    if (c->kind == CONN_STREAM) {
        ag_h2_stream_done(c);
        return;
    }
    if (c->kind == CONN_JOB) {
        c->s->on_job_done(c);
        return;
    }
    size_t rest = c->in.len - c->consumed;
    if (c->in.data) { /* NULL when the request never sent a byte (an over-the-cap connection) */
        memmove(c->in.data, c->in.data + c->consumed, rest);
        c->in.data[rest] = '\0';
    }
    c->in.len = rest;
    c->consumed = c->body_len = 0;
    c->t_start = 0;
    memset(&c->hp, 0, sizeof c->hp);
    memset(&c->chunks, 0, sizeof c->chunks);
    if (!c->keep_alive || c->s->draining) {
        ag_conn_end(c);
        return;
    }
    c->state = C_HEAD;
}

/* p1 then p2 in coding cod into s->coded, with the server's encoder for it; false when it cannot. */
static bool encode_parts(server *s, ag_http_coding cod, const char *p1, size_t n1, const char *p2, size_t n2) {
    if (!s->enc[cod] && !(s->enc[cod] = ag_http_encoder_new(cod, false))) return false;
    ag_http_encoder_reset(s->enc[cod], n1 + n2);
    ag_buf_reset(&s->coded);
    return (!n1 || ag_http_encoder_push(s->enc[cod], p1, n1, &s->coded) == AG_OK) &&
           ag_http_encoder_end(s->enc[cod], p2, n2, &s->coded) == AG_OK && s->coded.err == AG_OK;
}

/* A stored answer's tail (p2 inside v), coded once per coding and kept with the value (its aux). */
typedef struct coded_tails {
    bool made[AG_CODING_UNKNOWN];
    ag_http_coded_tail t[AG_CODING_UNKNOWN];
} coded_tails;

static void coded_tails_free(void *p) {
    coded_tails *ct = p;
    for (int i = 0; i < AG_CODING_UNKNOWN; i++)
        if (ct->made[i]) ag_http_coded_tail_free(&ct->t[i]);
    free(ct);
}

/* p1 then v's tail p2 in coding cod into s->coded: the tail from v's coded forms, made on its first use. */
static bool encode_with_tail(server *s, ag_http_coding cod, const char *p1, size_t n1, const char *p2, size_t n2,
                             ag_cache_val *v) {
    if (!v->aux) {
        if (!(v->aux = ag_try_malloc(sizeof(coded_tails)))) return false;
        memset(v->aux, 0, sizeof(coded_tails));
        v->aux_free = coded_tails_free;
    }
    coded_tails *ct = v->aux;
    if (!ct->made[cod]) {
        if (ag_http_code_tail(cod, p2, n2, &ct->t[cod]) != AG_OK) {
            ag_http_coded_tail_free(&ct->t[cod]);
            return false;
        }
        ct->made[cod] = true;
    }
    ag_buf_reset(&s->coded);
    return ag_http_code_with_tail(&ct->t[cod], p1, n1, &s->coded) == AG_OK;
}

void ag_conn_respond_parts(conn *c, int status, const char *ctype, const char *p1, size_t n1, const char *p2,
                           size_t n2, ag_cache_val *v, const char *extra) {
    server *s = c->s;
    size_t total = n1 + n2;
    bool codable = ctype && strcmp(ctype, "application/json") == 0 && total >= s->o->compress_min_bytes;
    ag_http_coding cod = codable ? c->coding_whole : AG_CODING_IDENTITY;
    ag_buf *hx = &s->coded_extra;
    ag_buf_reset(hx);
    if (extra) ag_buf_append_str(hx, extra);
    if (codable) ag_buf_append_str(hx, "Vary: Accept-Encoding\r\n"); /* caches keep one answer per coding */
    if (cod != AG_CODING_IDENTITY &&
        (v && n2 ? encode_with_tail(s, cod, p1, n1, p2, n2, v) : encode_parts(s, cod, p1, n1, p2, n2))) {
        ag_buf_appendf(hx, "Content-Encoding: %s\r\n", ag_http_coding_name(cod));
        ag_conn_write_head(c, status, ctype, (int64_t)s->coded.len, hx->err == AG_OK ? hx->data : extra);
        if (!c->head_only) ag_conn_send(c, s->coded.data, s->coded.len);
    } else {
        ag_conn_write_head(c, status, ctype, (int64_t)total, hx->err == AG_OK && hx->len ? hx->data : extra);
        if (!c->head_only && n1) ag_conn_send(c, p1, n1);
        if (!c->head_only && n2) ag_conn_write(c, p2, n2, v);
    }
    ag_conn_request_done(c);
}

void ag_conn_server_deinit(server *s) {
    ag_buf_deinit(&s->scratch);
    ag_buf_deinit(&s->tls_wire);
    ag_buf_deinit(&s->coded);
    ag_buf_deinit(&s->coded_extra);
    for (int i = 0; i < AG_CODING_UNKNOWN; i++) ag_http_encoder_free(s->enc[i]);
    free(s->dirty);
}

void ag_conn_respond(conn *c, int status, const char *ctype, const char *body, size_t len, const char *extra) {
    ag_conn_respond_parts(c, status, ctype, body, len, NULL, 0, NULL, extra);
}

void ag_conn_respond_json(conn *c, int status, const ag_buf *body, const char *extra) {
    ag_conn_respond(c, status, "application/json", body->data ? body->data : "", body->len, extra);
}

void ag_conn_respond_error(conn *c, const ag_api_error *e) {
    ag_buf body;
    ag_buf_init(&body);
    ag_api_error_write(e, &body);
    char extra[48];
    snprintf(extra, sizeof extra, "Retry-After: %u\r\n", e->retry_after_s ? e->retry_after_s : 1);
    ag_conn_respond_json(c, e->status, &body, e->status == 429 || e->status == 503 ? extra : NULL);
    ag_buf_deinit(&body);
}

void ag_conn_respond_status(conn *c, int status, const char *type, const char *code, const char *msg,
                            const char *extra) {
    ag_api_error e;
    ag_api_fail(&e, status, type, NULL, code, "%s", msg);
    ag_buf body;
    ag_buf_init(&body);
    ag_api_error_write(&e, &body);
    ag_conn_respond_json(c, status, &body, extra);
    ag_buf_deinit(&body);
}

/* A protocol error: answer it and close, since the rest of the stream cannot be trusted. */
void ag_conn_fail(conn *c, int status, const char *reason) {
    c->keep_alive = false;
    c->consumed = c->in.len;
    ag_conn_respond_status(c, status, "invalid_request_error", NULL, reason, NULL);
}

void ag_conn_obs_begin(conn *c, const ag_http_request *req) {
    /* the codings the answer may use, read now: the head's bytes may move while the request is served */
    ag_str ae = req ? ag_http_header_get(req, "accept-encoding") : (ag_str){NULL, 0};
    c->coding_whole = ag_http_accept_pick(ae, 1u << AG_CODING_GZIP | 1u << AG_CODING_ZSTD);
    c->coding_stream = ag_http_accept_pick(ae, 1u << AG_CODING_ZSTD);
    req_obs *q = &c->obs;
    ag_str tp = {NULL, 0}, xt = {NULL, 0};
    if (req) tp = ag_http_header_get(req, "traceparent"), xt = ag_http_header_get(req, "x-trace-id");
    ag_trace_begin(&q->trace, tp, xt, c->s->o->trace_sample_ratio);
    q->active = true;
    q->route = R_COUNT;
    q->status = 0;
    q->cache = NULL;
    snprintf(q->method, sizeof q->method, "%.*s", req ? (int)req->method.n : 1, req ? req->method.p : "-");
    snprintf(q->path, sizeof q->path, "%.*s", req ? (int)req->path.n : 1, req ? req->path.p : "-");
}

/* ---- reading --------------------------------------------------------------------------- */

/* Between requests the idle timeout runs; from a request's first byte until it is complete, the read timeout.
 * An HTTP/2 connection is idle without streams, and times the oldest stream still arriving. */
void ag_conn_arm_timer(conn *c) {
    const ag_server_opts *o = c->s->o;
    if (c->state == C_CLOSING) return;
    if (c->kind == CONN_H2) {
        uint64_t oldest, now = uv_now(&c->s->loop);
        if (ag_h2_idle(c, &oldest)) uv_timer_start(&c->timer, on_timeout, o->idle_timeout_ms, 0);
        else if (oldest) uv_timer_start(&c->timer, on_timeout, oldest + o->read_timeout_ms > now ? oldest + o->read_timeout_ms - now : 1, 0);
        else uv_timer_stop(&c->timer);
        return;
    }
    if (c->state == C_BUSY) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = uv_now(&c->s->loop), ms = o->idle_timeout_ms;
    if (c->t_start) ms = c->t_start + o->read_timeout_ms > now ? c->t_start + o->read_timeout_ms - now : 1;
    uv_timer_start(&c->timer, on_timeout, ms, 0);
}

static void on_timeout(uv_timer_t *t) {
    conn *c = t->data;
    if (c->kind == CONN_H2 && c->state != C_CLOSING) {
        ag_h2_on_timer(c);
    } else if (c->state == C_CLOSING) {
        ag_conn_close(c); /* the graceful close took too long */
    } else if (c->t_start) {
        if (!c->obs.active) ag_conn_obs_begin(c, NULL);
        ag_conn_fail(c, 408, "the request did not arrive within the read timeout");
        ag_conn_flush(c);
    } else {
        ag_conn_close(c);
    }
}

static void on_conn_closed(uv_handle_t *h) {
    conn *c = h->data;
    if (--c->handles) return;
    ag_buf_deinit(&c->in);
    ag_buf_deinit(&c->out);
    ag_buf_deinit(&c->body_dec);
    ag_http_encoder_free(c->sse_enc); /* a stream whose client left */
    ag_tls_free(c->tls);
    free(c->headers);
    free(c);
}

void ag_conn_close(conn *c) {
    if (c->kind == CONN_STREAM) { /* reset: its client is gone; it is freed when the session closes it */
        ag_h2_stream_reset(c);
        return;
    }
    if (c->closed) return;
    c->closed = true;
    server *s = c->s;
    if (c->kind == CONN_H2) ag_h2_close(c);
    atomic_fetch_sub_explicit(&s->metrics.connections_open, 1, memory_order_relaxed);
    if (c->obs.active && c->state == C_BUSY) ag_conn_obs_finish(c, 499); /* nginx's "client closed request" */
    if (c->x || c->op) s->on_client_gone(c);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    ag_server_maybe_stop(s);
}

/* Re-entrant: a call from inside a request's handler (an answer given at once) leaves the work to the outer loop. */
void ag_conn_process(conn *c) {
    const ag_http_limits *lim = &c->s->o->limits;
    if (c->processing || c->kind != CONN_H1) return; /* streams carry one request; an HTTP/2 connection none */
    c->processing = true;
    while (!c->closed && (c->state == C_HEAD || c->state == C_BODY)) {
        if (c->state == C_HEAD) {
            size_t skip = 0; /* RFC 9112: empty lines before a request line are ignored */
            while (skip < c->in.len && (c->in.data[skip] == '\r' || c->in.data[skip] == '\n')) skip++;
            if (skip) memmove(c->in.data, c->in.data + skip, c->in.len - skip), c->in.len -= skip;
            if (!c->in.len) break;
            if (!c->t_start) c->t_start = uv_now(&c->s->loop), c->obs.t_start_ns = ag_clock_mono_ns();
            ag_http_error herr;
            c->req.headers = c->headers;
            ag_status st = ag_http_head_parse(&c->hp, c->in.data, c->in.len, lim, &c->req, &herr);
            if (st == AG_AGAIN) break;
            c->req_base = (uintptr_t)c->in.data;
            c->head_only = st == AG_OK && ag_str_eq_cstr(c->req.method, "HEAD");
            ag_conn_obs_begin(c, st == AG_OK ? &c->req : NULL);
            if (st != AG_OK) {
                c->req.version_minor = 1;
                ag_conn_fail(c, herr.status, herr.reason);
                break;
            }
            c->keep_alive = c->req.keep_alive;
            if (c->req.content_length > (int64_t)c->s->body_limit(c)) {
                ag_conn_fail(c, 413, "request body too large");
                break;
            }
            c->state = C_BODY;
            bool body_due = c->req.chunked || c->req.content_length > 0;
            if (body_due && c->req.expect_continue && c->in.len == c->req.head_len) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                ag_conn_send(c, cont, sizeof cont - 1);
            }
            continue;
        }
        if ((uintptr_t)c->in.data != c->req_base) { /* the buffer grew for the body and moved: so did the head */
            ag_http_head_parser hp = {0};
            ag_http_error herr;
            ag_http_head_parse(&hp, c->in.data, c->in.len, lim, &c->req, &herr); /* the same bytes: AG_OK again */
            c->req_base = (uintptr_t)c->in.data;
        }
        size_t at = c->req.head_len;
        if (c->req.chunked) {
            ag_http_error herr;
            ag_status st = ag_http_chunked_decode(&c->chunks, c->in.data + at, c->in.len - at, c->s->body_limit(c),
                                                  lim->max_header_bytes, &herr);
            if (st == AG_AGAIN) break;
            if (st != AG_OK) {
                ag_conn_fail(c, herr.status, herr.reason);
                break;
            }
            c->body_len = c->chunks.dst, c->consumed = at + c->chunks.src;
        } else {
            size_t cl = c->req.content_length > 0 ? (size_t)c->req.content_length : 0;
            if (c->in.len - at < cl) break;
            c->body_len = cl, c->consumed = at + cl;
        }
        c->state = C_BUSY;
        c->s->on_request(c);
    }
    c->processing = false;
    if (!c->closed) ag_conn_arm_timer(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    conn *c = h->data;
    if (c->tls) { /* ciphertext: OpenSSL takes it at once, the plaintext goes to c->in */
        *buf = uv_buf_init(c->s->tls_rbuf, sizeof c->s->tls_rbuf);
        return;
    }
    if (ag_buf_reserve(&c->in, 65536) != AG_OK) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

/* Got new bytes at the end of c->in (read there, or decrypted there). */
static void on_bytes(conn *c, size_t got) {
    if (c->kind == CONN_H2 && !c->shutting) { /* its peer's frames matter until the end: window updates */
        c->in.len += got;
        ag_h2_recv(c);
        return;
    }
    if (c->state == C_CLOSING) return; /* lingering: dropped */
    c->in.len += got;
    c->in.data[c->in.len] = '\0';
    if (c->n_served == 0 && c->state == C_HEAD) { /* HTTP/2 by prior knowledge opens with the client preface */
        h2_preface p = ag_h2_sniff(c->in.data, c->in.len);
        if (p == H2_PREFACE_PARTIAL) return;
        if (p == H2_PREFACE_YES) {
            ag_h2_start(c);
            return;
        }
    }
    if (c->state == C_BUSY) {
        /* pipelined bytes wait; past a whole request's worth, stop reading until this one is done */
        if (c->in.len > c->s->max_in) uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    ag_conn_process(c);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    conn *c = st->data;
    if (n == UV_ENOBUFS) { /* no memory for the next read: this request cannot go on */
        if (c->state == C_BUSY || c->state == C_CLOSING || c->kind == CONN_H2) ag_conn_close(c);
        else {
            if (!c->t_start) c->obs.t_start_ns = ag_clock_mono_ns();
            if (!c->obs.active) ag_conn_obs_begin(c, NULL);
            c->req.version_minor = 1;
            ag_conn_fail(c, 503, "out of memory reading the request");
        }
        return;
    }
    if (n < 0) { /* EOF or an error: the client is gone */
        ag_conn_close(c);
        return;
    }
    if (n == 0) return;
    size_t got = (size_t)n;
    ag_tls_result tr = AG_TLS_OK;
    if (c->tls) { /* decrypted into c->in, counted below like bytes read there */
        if (c->shutting) return; /* lingering: dropped */
        size_t at = c->in.len;
        tr = ag_tls_recv(c->tls, buf->base, got, &c->in, &c->s->tls_wire);
        send_wire(c);
        if (tr == AG_TLS_FAILED || c->closed) {
            ag_conn_close(c);
            return;
        }
        got = c->in.len - at;
        c->in.len = at;
    }
    if (got) on_bytes(c, got);
    if (tr == AG_TLS_CLOSED && !c->closed) ag_conn_close(c); /* close_notify: as EOF */
}

static conn *conn_new(server *s) {
    conn *c = ag_xcalloc(1, sizeof *c);
    c->s = s;
    c->headers = ag_xcalloc(s->o->limits.max_headers ? s->o->limits.max_headers : 1, sizeof *c->headers);
    ag_buf_init(&c->in);
    ag_buf_init(&c->out);
    c->in.max_len = s->max_in + 65536 * 2;
    uv_tcp_init(&s->loop, &c->tcp);
    uv_timer_init(&s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    atomic_fetch_add_explicit(&s->metrics.connections_open, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->metrics.connections_accepted, 1, memory_order_relaxed);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    return c;
}

conn *ag_conn_open(server *s, uv_os_sock_t fd) {
    conn *c = conn_new(s);
    if (uv_tcp_open(&c->tcp, fd) < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        ag_conn_close(c);
        return NULL;
    }
    ag_conn_arm_timer(c);
    return c;
}

void ag_conn_accept(server *s, uv_stream_t *listener) {
    conn *c = conn_new(s);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0 || (s->tls && !(c->tls = ag_tls_new(s->tls, NULL)))) {
        ag_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (s->n_conns > s->o->max_connections) { /* over the cap: say so and close */
        c->req.version_minor = 1;
        c->state = C_BUSY;
        c->obs.t_start_ns = ag_clock_mono_ns();
        ag_conn_obs_begin(c, NULL);
        ag_conn_respond_status(c, 503, "service_unavailable", NULL, "too many connections", "Retry-After: 1\r\n");
        return;
    }
    ag_conn_arm_timer(c);
}
