/*
 * h2.c - HTTP/2 (nghttp2) on a client connection, when options.http2 asks
 * for it: prior knowledge on cleartext (h2c, as autoglm and nginx's http2
 * listeners take it), ALPN "h2" over TLS.  One connection carries many
 * calls at once, each attempt a stream; an attempt that ends early resets
 * its stream (RST_STREAM CANCEL) and leaves the others alone, where HTTP/1.1
 * has to close the whole connection.
 *
 * The answer's head and DATA go to the call (call.c) as they arrive; the
 * stream's end says whether the answer was whole.  nghttp2 must not be
 * re-entered from its callbacks: while it reads (in_recv), sending waits
 * until it returns (agc_h2_flush), and so does closing the connection.
 */
#define _GNU_SOURCE /* pthread types for uv.h */
#include "client/client_int.h"

#include "base/alloc.h"

#include <ctype.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <string.h>

enum { WINDOW = (1 << 30) - 1 }; /* wide open: flow control never paces an answer the client reads at once */

static agc_call *call_of(nghttp2_session *s, int32_t stream) { return nghttp2_session_get_stream_user_data(s, stream); }

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud) {
    (void)s, (void)flags;
    return agc_conn_send(ud, data, len) ? (ssize_t)len : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static bool name_is(const uint8_t *name, size_t n, const char *want) { return n == strlen(want) && memcmp(name, want, n) == 0; }

static void keep(const uint8_t *v, size_t n, char *out, size_t cap) {
    if (n < cap) memcpy(out, v, n), out[n] = 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud) {
    (void)flags, (void)ud;
    agc_call *call = f->hd.type == NGHTTP2_HEADERS ? call_of(s, f->hd.stream_id) : NULL;
    if (!call) return 0;
    if (name_is(name, namelen, ":status")) {
        call->h2_status = 0;
        for (size_t i = 0; i < valuelen && isdigit(value[i]); i++) call->h2_status = call->h2_status * 10 + (value[i] - '0');
    } else if (name_is(name, namelen, "content-type")) {
        call->h2_sse = valuelen >= 17 && memcmp(value, "text/event-stream", 17) == 0;
    } else if (name_is(name, namelen, "retry-after")) {
        keep(value, valuelen, call->retry_after, sizeof call->retry_after);
    } else if (name_is(name, namelen, "retry-after-ms")) {
        keep(value, valuelen, call->retry_after_ms, sizeof call->retry_after_ms);
    } else if (name_is(name, namelen, "content-encoding")) {
        call->h2_coding = ag_http_coding_parse((ag_str){(const char *)value, valuelen});
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
    agc_conn *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) c->goaway = true; /* no new streams here; those under way finish */
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) c->ping_at = 0; /* alive */
    agc_call *call = f->hd.type == NGHTTP2_HEADERS ? call_of(s, f->hd.stream_id) : NULL;
    /* the final head (after any 1xx, which nghttp2 files under HCAT_RESPONSE and the final one under HCAT_HEADERS);
     * trailers find the head already taken */
    if (call && call->h2_status >= 200) agc_call_h2_head(call);
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t stream, const uint8_t *data, size_t len, void *ud) {
    (void)flags, (void)ud;
    agc_call *call = call_of(s, stream);
    if (call) agc_call_h2_data(call, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream, uint32_t error_code, void *ud) {
    (void)ud;
    agc_call *call = call_of(s, stream);
    if (!call) return 0;
    nghttp2_session_set_stream_user_data(s, stream, NULL);
    call->stream_id = 0;
    agc_call_h2_closed(call, error_code ? nghttp2_http2_strerror(error_code) : NULL, error_code == NGHTTP2_REFUSED_STREAM);
    return 0;
}

/* The request's body, from the call's copy. */
static ssize_t read_body(nghttp2_session *s, int32_t stream, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud) {
    (void)src, (void)ud;
    agc_call *call = call_of(s, stream);
    if (!call) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the attempt ended: the stream is being reset */
    size_t n = call->body_len - call->h2_sent < len ? call->body_len - call->h2_sent : len;
    memcpy(buf, call->body + call->h2_sent, n);
    call->h2_sent += n;
    if (call->h2_sent == call->body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

bool agc_h2_start(agc_conn *c) {
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) return false;
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_client_new(&c->ng, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) return false;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}, {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW}};
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof *iv);
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, WINDOW);
    return true;
}

void agc_h2_free(agc_conn *c) {
    nghttp2_session_del(c->ng);
    c->ng = NULL;
}

int agc_h2_room(const agc_conn *c) {
    uint32_t max = c->ng ? nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) : 100;
    if (max > 1000) max = 1000; /* unlimited until the server's SETTINGS arrive: open a few, not thousands */
    return c->goaway ? 0 : (int)max - c->n_calls;
}

static void nv_add(nghttp2_nv *nv, size_t *n, const char *name, const char *value) {
    nv[(*n)++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE};
}

bool agc_h2_submit(agc_conn *c, agc_call *call, uint64_t time_left_ms) {
    ag_client *cl = c->cl;
    char len[24], left[24];
    snprintf(len, sizeof len, "%zu", call->body_len);
    snprintf(left, sizeof left, "%llu", (unsigned long long)time_left_ms);
    nghttp2_nv nv[16];
    size_t n = 0;
    nv_add(nv, &n, ":method", "POST");
    nv_add(nv, &n, ":scheme", cl->https ? "https" : "http");
    nv_add(nv, &n, ":authority", cl->authority);
    nv_add(nv, &n, ":path", call->path);
    nv_add(nv, &n, "user-agent", "libautoglm/" AG_VERSION);
    nv_add(nv, &n, "accept", call->stream ? "text/event-stream" : "application/json");
    nv_add(nv, &n, "content-type", "application/json");
    nv_add(nv, &n, "content-length", len);
    if (cl->o.compress) nv_add(nv, &n, "accept-encoding", "zstd, gzip");
    if (call->body_gzip) nv_add(nv, &n, "content-encoding", "gzip");
    if (cl->bearer) nv_add(nv, &n, "authorization", cl->bearer);
    nv_add(nv, &n, "idempotency-key", call->idempotency_key);
    nv_add(nv, &n, "x-request-timeout-ms", left);
    call->h2_sent = 0;
    nghttp2_data_provider body = {.read_callback = read_body};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, &body, call);
    if (id < 0) return false;
    call->stream_id = id;
    agc_conn_flush(c);
    return true;
}

void agc_h2_cancel(agc_conn *c, agc_call *call) {
    if (!call->stream_id) return;
    nghttp2_session_set_stream_user_data(c->ng, call->stream_id, NULL);
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
    call->stream_id = 0;
    agc_conn_flush(c);
}

bool agc_h2_recv(agc_conn *c) {
    c->in_recv = true;
    ssize_t rc = nghttp2_session_mem_recv(c->ng, (const uint8_t *)c->io.in.data, c->io.in.len);
    c->in_recv = false;
    c->io.in.len = 0;
    if (rc < 0) {
        snprintf(c->why, sizeof c->why, "HTTP/2: %s", nghttp2_strerror((int)rc));
        return false;
    }
    return true;
}

bool agc_h2_send(agc_conn *c) {
    if (c->in_recv) return true; /* after nghttp2 returns */
    int rc = nghttp2_session_send(c->ng);
    if (rc != 0) snprintf(c->why, sizeof c->why, "HTTP/2: %s", nghttp2_strerror(rc));
    return rc == 0;
}

void agc_h2_ping(agc_conn *c) {
    c->ping_at = uv_now(c->cl->loop);
    if (!c->ping_at) c->ping_at = 1;
    nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL);
    agc_conn_flush(c);
}

bool agc_h2_done(const agc_conn *c) { return !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng); }
