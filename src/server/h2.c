/*
 * h2.c - HTTP/2 on a connection, with nghttp2 (its 1.52 API, Debian 12's).
 *
 * A connection whose first bytes are the client preface ("PRI * HTTP/2.0...":
 * prior knowledge in cleartext, RFC 9113 §3.3, or after ALPN h2 over TLS,
 * whose plaintext is read the same way) becomes a CONN_H2 connection:
 * every byte it reads goes to nghttp2, and every request is a stream, a conn
 * of kind CONN_STREAM that the layers above serve exactly as they serve an
 * HTTP/1.1 request (see internal.h).  A stream collects its headers and body
 * in its own buffer, laid out as conn.c lays out an HTTP/1.1 request (the
 * head's bytes, then the body), so routes read both the same way.
 *
 * Answers: the head becomes a HEADERS frame at once; the body bytes the layers
 * above append to the stream's output leave as DATA frames when the peer's
 * flow-control windows allow (the data callback defers while there is
 * nothing, and is resumed when there is).  What a stream buffers while its
 * window is shut is bounded by its answer, which is bounded by the context.
 * Frames are built into the connection's output once per loop iteration, and
 * not while the socket's own queue is over H2_WRITE_QUEUE_MAX: a peer that
 * stops reading stops the session, not the server.
 *
 * Lifetimes: a stream ends in nghttp2's stream-close callback (or when its
 * connection closes), which can run inside a call from the layers above
 * (an answer that ends the last exchange of a draining server ends the
 * connection, whose last frames close the stream): so it is only retired
 * there, closed to writes, and freed after the loop iteration.  A stream
 * whose client resets it is a client that left: on_client_gone cancels its
 * generation, as a disconnect does.
 *
 * Limits (RFC 9113 §10.5 and the known floods): concurrent streams
 * (--http2-max-streams, SETTINGS_MAX_CONCURRENT_STREAMS; nghttp2 refuses the
 * excess), each stream's receive window (--http2-window), the header list
 * (--max-header-bytes and --max-headers, 431 as on HTTP/1.1), the body
 * (--max-body-bytes, 413); SETTINGS and PING floods end the connection
 * through nghttp2's outbound-ACK limit, rapid reset through its reset rate
 * limit, and frames that do nothing (empty DATA, PRIORITY) past a budget end
 * it with ENHANCE_YOUR_CALM.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H2_WRITE_QUEUE_MAX (1u << 20) /* bytes the socket may hold queued before framing pauses */
#define H2_NOOP_BUDGET 1000           /* frames that do nothing, beyond one per stream opened */

struct h2_session {
    nghttp2_session *ng;
    conn *c;       /* the connection */
    conn *streams; /* its open streams, linked through next/prev */
    size_t n_streams;
    uint64_t opened, noop_frames;
    bool goaway;
};

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

h2_preface ag_h2_sniff(const char *p, size_t n) {
    size_t want = sizeof preface - 1;
    if (memcmp(p, preface, n < want ? n : want) != 0) return H2_PREFACE_NO;
    return n < want ? H2_PREFACE_PARTIAL : H2_PREFACE_YES;
}

/* ---- streams ------------------------------------------------------------------------- */

/*
 * Where a stream's header fields sit in its buffer while they arrive: the
 * buffer may move as the body grows, so spans are made only once the request
 * is complete.  Pseudo-headers come first in HTTP/2; each entry is a name and
 * a value, NUL-terminated, side by side.
 */
struct h2_fields {
    size_t n, regular, bytes; /* fields kept; those the request's header list will hold; size as RFC 7541 counts */
    size_t head_len;          /* bytes of in that hold the fields (the body follows) */
    size_t body_cap;          /* the most body bytes its route takes (server.body_limit, from the complete head) */
    int fail;                 /* 431 once over a limit: the answer, when the head is complete */
    bool complete;            /* the request's END_STREAM arrived */
    size_t at[];              /* offsets of each field's name in the stream's in */
};

static h2_fields *fields_of(conn *st) { return st->fields; }

static conn *stream_new(h2_session *h, int32_t id) {
    server *s = h->c->s;
    conn *st = ag_xcalloc(1, sizeof *st);
    st->kind = CONN_STREAM;
    st->h2 = h;
    st->stream_id = id;
    st->s = s;
    st->state = C_HEAD;
    st->keep_alive = true;
    st->headers = ag_xcalloc(s->o->limits.max_headers ? s->o->limits.max_headers : 1, sizeof *st->headers);
    st->fields = ag_xcalloc(1, sizeof(h2_fields) + (s->o->limits.max_headers + 4) * sizeof(size_t));
    ag_buf_init(&st->in);
    ag_buf_init(&st->out);
    st->in.max_len = s->max_in + 1024;
    st->t_start = uv_now(&s->loop);
    st->obs.t_start_ns = ag_clock_mono_ns();
    st->next = h->streams;
    if (h->streams) h->streams->prev = st;
    h->streams = st;
    h->n_streams++;
    h->opened++;
    return st;
}

/* Off its session's list, closed to writes; freed by ag_h2_free_retired. */
static void stream_retire(conn *st) {
    h2_session *h = st->h2;
    if (st->prev) st->prev->next = st->next;
    else h->streams = st->next;
    if (st->next) st->next->prev = st->prev;
    h->n_streams--;
    ag_conn_forget_dirty(st);
    st->closed = true;
    st->h2 = NULL;
    st->prev = NULL;
    st->next = st->s->retired;
    st->s->retired = st;
}

void ag_h2_free_retired(server *s) {
    while (s->retired) {
        conn *st = s->retired;
        s->retired = st->next;
        ag_buf_deinit(&st->in);
        ag_buf_deinit(&st->out);
        ag_buf_deinit(&st->body_dec);
        ag_http_encoder_free(st->sse_enc); /* a stream whose client reset it */
        free(st->headers);
        free(st->fields);
        free(st);
    }
}

/* The stream's client is gone (a reset, or its connection closed): as a disconnect on HTTP/1.1. */
static void stream_gone(conn *st) {
    if (st->closed) return;
    st->closed = true;
    if (st->obs.active && st->state == C_BUSY) ag_conn_obs_finish(st, 499);
    if (st->x || st->op) st->s->on_client_gone(st);
}

/* The head is complete: spans for the layers above, as the HTTP/1.1 parser would give them. */
static void make_request(conn *st) {
    h2_fields *f = fields_of(st);
    ag_http_request *r = &st->req;
    memset(r, 0, sizeof *r);
    r->headers = st->headers;
    r->version_minor = 1;
    r->keep_alive = true;
    r->content_length = -1;
    for (size_t i = 0; i < f->n; i++) {
        const char *name = st->in.data + f->at[i];
        size_t nl = strlen(name);
        ag_str value = {name + nl + 1, strlen(name + nl + 1)};
        if (strcmp(name, ":method") == 0) r->method = value;
        else if (strcmp(name, ":path") == 0) r->target = value;
        else if (strcmp(name, ":authority") == 0) r->headers[r->n_headers++] = (ag_http_header){{"host", 4}, value};
        else if (name[0] != ':') r->headers[r->n_headers++] = (ag_http_header){{name, nl}, value};
    }
    if (!r->target.p) r->target = (ag_str){"", 0}; /* CONNECT has no :path (nor does a head cut short at 431) */
    if (!r->method.p) r->method = (ag_str){"", 0};
    const char *q = memchr(r->target.p, '?', r->target.n);
    r->path = (ag_str){r->target.p, q ? (size_t)(q - r->target.p) : r->target.n};
    r->query = q ? (ag_str){q + 1, r->target.n - r->path.n - 1} : (ag_str){r->target.p + r->target.n, 0};
    r->head_len = f->head_len;
    st->head_only = ag_str_eq_cstr(r->method, "HEAD");
}

/* The whole request is here (or its head failed a limit): serve it. */
static void serve(conn *st) {
    h2_fields *f = fields_of(st);
    make_request(st);
    ag_conn_obs_begin(st, &st->req);
    st->state = C_BUSY;
    if (f->fail) ag_conn_fail(st, f->fail, "request header fields too large");
    else if (st->s->draining && !ag_server_lingering(st->s)) ag_conn_respond_status(st, 503, "service_unavailable", NULL, "the server is draining", NULL);
    else st->s->on_request(st);
}

/* ---- nghttp2 callbacks ---------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *fr, void *ud) {
    h2_session *h = ud;
    if (fr->hd.type != NGHTTP2_HEADERS || fr->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    conn *st = stream_new(h, fr->hd.stream_id);
    nghttp2_session_set_stream_user_data(ng, fr->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *fr, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud) {
    (void)flags, (void)ud;
    conn *st = nghttp2_session_get_stream_user_data(ng, fr->hd.stream_id);
    if (!st || st->state != C_HEAD || fr->headers.cat != NGHTTP2_HCAT_REQUEST) return 0; /* trailers: ignored */
    h2_fields *f = fields_of(st);
    const ag_http_limits *lim = &st->s->o->limits;
    f->bytes += nl + vl + 32;
    /* the request's header list: regular fields, and :authority as Host */
    bool listed = (nl && name[0] != ':') || (nl == 10 && memcmp(name, ":authority", 10) == 0);
    if (f->fail || f->bytes > lim->max_header_bytes || (listed && f->regular >= lim->max_headers) ||
        f->n >= lim->max_headers + 4) {
        f->fail = 431;
        return 0;
    }
    f->regular += listed;
    f->at[f->n++] = st->in.len;
    ag_buf_append(&st->in, name, nl);
    ag_buf_append_char(&st->in, '\0');
    ag_buf_append(&st->in, value, vl);
    ag_buf_append_char(&st->in, '\0');
    if (st->in.err != AG_OK) f->fail = 431; /* no room: over max_len */
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud) {
    (void)flags, (void)ud;
    conn *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st || st->state != C_BODY) return 0; /* answered early (413, 431): the rest is dropped */
    if (st->body_len + len > fields_of(st)->body_cap) {
        ag_conn_obs_begin(st, NULL);
        st->state = C_BUSY;
        ag_conn_fail(st, 413, "request body too large");
        return 0;
    }
    ag_buf_append(&st->in, data, len);
    st->body_len += len;
    if (st->in.err != AG_OK) { /* no memory for the body */
        ag_conn_obs_begin(st, NULL);
        st->state = C_BUSY;
        ag_conn_respond_status(st, 503, "service_unavailable", NULL, "out of memory reading the request", NULL);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *fr, void *ud) {
    h2_session *h = ud;
    bool end = fr->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if ((fr->hd.type == NGHTTP2_DATA && fr->hd.length == 0 && !end) || fr->hd.type == NGHTTP2_PRIORITY) {
        if (++h->noop_frames > H2_NOOP_BUDGET + h->opened) {
            ag_logf(AG_LOG_WARN, "http2: a flood of empty frames; ending the connection");
            return nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
        }
        return 0;
    }
    if (fr->hd.type != NGHTTP2_HEADERS && fr->hd.type != NGHTTP2_DATA) return 0;
    conn *st = nghttp2_session_get_stream_user_data(ng, fr->hd.stream_id);
    if (!st) return 0; /* it may have closed already */
    if (fr->hd.type == NGHTTP2_HEADERS && st->state == C_HEAD) {
        st->state = C_BODY;
        fields_of(st)->head_len = st->in.len;
        make_request(st); /* spans for the body limit of its route; made again once the body has come */
        fields_of(st)->body_cap = st->s->body_limit(st);
        if (fields_of(st)->fail) { /* too large a head: answered now, whatever body follows is dropped */
            serve(st);
            return 0;
        }
    }
    if (end) {
        fields_of(st)->complete = true;
        if (st->state == C_BODY) serve(st);
    }
    return 0;
}

/* A response that ended before its request did: stop the rest of the upload (RFC 9113 §8.1). */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *fr, void *ud) {
    (void)ud;
    if ((fr->hd.type != NGHTTP2_DATA && fr->hd.type != NGHTTP2_HEADERS) || !(fr->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    conn *st = nghttp2_session_get_stream_user_data(ng, fr->hd.stream_id);
    if (st && !fields_of(st)->complete) nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, fr->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud) {
    (void)code, (void)ud;
    conn *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st) return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if (st->state != C_CLOSING) stream_gone(st); /* reset before its answer was complete */
    stream_retire(st);
    return 0;
}

/* DATA for a stream: what its answer has queued, deferred while there is none and the answer goes on. */
static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud) {
    (void)ng, (void)id, (void)ud;
    conn *st = src->ptr;
    size_t n = st->out.len - st->out_sent;
    if (n > length) n = length;
    if (n) memcpy(buf, st->out.data + st->out_sent, n); /* out.data is NULL while nothing was ever queued */
    st->out_sent += n;
    if (st->out_sent == st->out.len) ag_buf_reset(&st->out), st->out_sent = 0;
    if (st->out.len == 0 && st->state == C_CLOSING) *flags |= NGHTTP2_DATA_FLAG_EOF;
    else if (n == 0) return NGHTTP2_ERR_DEFERRED;
    return (ssize_t)n;
}

/* ---- the session ---------------------------------------------------------------------- */

bool ag_h2_start(conn *c) {
    const ag_server_opts *o = c->s->o;
    h2_session *h = ag_xcalloc(1, sizeof *h);
    h->c = c;
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0) {
        free(h);
        ag_conn_close(c);
        return false;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* rapid reset (CVE-2023-44487): a burst of two streams' worth of resets per allowed stream, then 33/s */
    nghttp2_option_set_stream_reset_rate_limit(opt, 2 * (uint64_t)o->http2_max_streams, 33);
    int rv = nghttp2_session_server_new2(&h->ng, cb, h, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv != 0) {
        free(h);
        ag_conn_close(c);
        return false;
    }
    c->kind = CONN_H2;
    c->h2 = h;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->http2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->http2_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)o->limits.max_header_bytes},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof *iv);
    /* the connection's window: room for sixteen streams' windows at once */
    uint64_t conn_window = 16ull * o->http2_window;
    nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)(conn_window > 0x7fffffff ? 0x7fffffff : conn_window));
    ag_h2_recv(c);
    return true;
}

void ag_h2_recv(conn *c) {
    h2_session *h = c->h2;
    ssize_t n = nghttp2_session_mem_recv(h->ng, (const uint8_t *)c->in.data, c->in.len);
    c->in.len = 0;
    if (c->closed) return;
    if (n < 0) { /* a flood or a broken preface: nothing more is worth sending */
        ag_logf(AG_LOG_DEBUG, "http2: %s; closing the connection", nghttp2_strerror((int)n));
        ag_conn_close(c);
        return;
    }
    ag_h2_flush(c);
    if (!c->closed) ag_conn_arm_timer(c);
}

void ag_h2_flush(conn *c) {
    if (c->kind == CONN_STREAM) c = c->h2->c;
    h2_session *h = c->h2;
    if (c->closed) return;
    /* streams with bytes queued or an end to send: their data callbacks may have deferred */
    for (conn *st = h->streams; st; st = st->next)
        if (!st->closed && (st->out.len > st->out_sent || st->state == C_CLOSING))
            nghttp2_session_resume_data(h->ng, st->stream_id);
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= H2_WRITE_QUEUE_MAX) {
        const uint8_t *data;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(h->ng, &data)) > 0) ag_buf_append(&c->out, data, (size_t)n);
        if (n < 0) {
            ag_conn_close(c);
            return;
        }
    }
    ag_conn_write(c, NULL, 0, NULL);
    if (!c->closed && ag_h2_done(c)) ag_conn_end(c);
}

bool ag_h2_done(const conn *c) { return !nghttp2_session_want_read(c->h2->ng) && !nghttp2_session_want_write(c->h2->ng); }

void ag_h2_submit_response(conn *st, int status, const char *ctype, int64_t content_length, const char *extra) {
    server *s = st->s;
    nghttp2_nv nv[40];
    size_t n = 0;
    char status_s[8], len_s[24], tp[56], names[1024];
    size_t used = 0;
#define NV(nm, nlen, v, vlen) \
    (nv[n++] = (nghttp2_nv){(uint8_t *)(nm), (uint8_t *)(v), (nlen), (vlen), NGHTTP2_NV_FLAG_NONE})
#define NVC(nm, v) NV(nm, sizeof nm - 1, v, strlen(v))
    snprintf(status_s, sizeof status_s, "%d", status);
    NVC(":status", status_s);
    NVC("server", "autoglm/" AG_VERSION);
    NVC("date", ag_server_http_date(s));
    if (st->obs.active) {
        ag_trace_format(&st->obs.trace, tp);
        NVC("x-trace-id", st->obs.trace.trace_id);
        NVC("traceparent", tp);
        st->obs.status = status;
    }
    if (ctype) NVC("content-type", ctype);
    if (content_length >= 0 && status != 304) snprintf(len_s, sizeof len_s, "%lld", (long long)content_length), NVC("content-length", len_s);
    /* the extra lines are HTTP/1.1's "Name: value\r\n": names lowercased, connection-specific ones dropped */
    for (const char *p = extra; p && *p && n < sizeof nv / sizeof *nv;) {
        const char *colon = strchr(p, ':'), *eol = strstr(p, "\r\n");
        if (!colon || !eol || colon > eol) break;
        size_t nl = (size_t)(colon - p);
        const char *v = colon + 1;
        while (*v == ' ') v++;
        if (used + nl > sizeof names) break;
        for (size_t i = 0; i < nl; i++) names[used + i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]);
        static const char *const hop[] = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"};
        bool drop = false;
        for (size_t i = 0; i < sizeof hop / sizeof *hop; i++) drop |= nl == strlen(hop[i]) && !memcmp(names + used, hop[i], nl);
        if (!drop) NV(names + used, nl, v, (size_t)(eol - v)), used += nl;
        p = eol + 2;
    }
#undef NVC
#undef NV
    nghttp2_data_provider body = {.source.ptr = st, .read_callback = read_body};
    if (nghttp2_submit_response(st->h2->ng, st->stream_id, nv, n, &body) != 0) ag_h2_stream_reset(st);
    else ag_conn_mark_dirty(st);
}

void ag_h2_stream_done(conn *st) {
    st->state = C_CLOSING;
    ag_conn_mark_dirty(st); /* nothing for a retired stream */
}

void ag_h2_stream_reset(conn *st) {
    if (st->closed) return;
    stream_gone(st);
    nghttp2_submit_rst_stream(st->h2->ng, NGHTTP2_FLAG_NONE, st->stream_id, NGHTTP2_INTERNAL_ERROR);
    ag_conn_mark_dirty(st->h2->c);
}

void ag_h2_goaway(conn *c) {
    h2_session *h = c->h2;
    if (h->goaway) return;
    h->goaway = true;
    nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ng), NGHTTP2_NO_ERROR,
                          NULL, 0);
    ag_conn_mark_dirty(c);
}

void ag_h2_close(conn *c) {
    h2_session *h = c->h2;
    while (h->streams) {
        conn *st = h->streams;
        nghttp2_session_set_stream_user_data(h->ng, st->stream_id, NULL);
        stream_gone(st);
        stream_retire(st);
    }
    nghttp2_session_del(h->ng);
    free(h);
    c->h2 = NULL;
}

bool ag_h2_idle(const conn *c, uint64_t *oldest_arriving) {
    *oldest_arriving = 0;
    for (const conn *st = c->h2->streams; st; st = st->next)
        if ((st->state == C_HEAD || st->state == C_BODY) && (!*oldest_arriving || st->t_start < *oldest_arriving))
            *oldest_arriving = st->t_start;
    return c->h2->n_streams == 0;
}

void ag_h2_on_timer(conn *c) {
    h2_session *h = c->h2;
    if (!h->n_streams) { /* idle past --idle-timeout */
        ag_conn_end(c);
        return;
    }
    uint64_t now = uv_now(&c->s->loop);
    for (conn *st = h->streams, *next; st; st = next) {
        next = st->next;
        if ((st->state == C_HEAD || st->state == C_BODY) && st->t_start + c->s->o->read_timeout_ms <= now) {
            ag_conn_obs_begin(st, NULL);
            st->state = C_BUSY;
            ag_conn_fail(st, 408, "the request did not arrive within the read timeout");
        }
    }
    ag_h2_flush(c);
    if (!c->closed) ag_conn_arm_timer(c);
}

conn *ag_h2_streams(const conn *c) { return c->h2->streams; }
