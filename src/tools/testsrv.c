/*
 * testsrv.c - `autoglm bench --self-test-server`: a target whose timings are
 * known, so the load generator's measurements can be checked against them.
 * Every request (keep-alive, Content-Length bodies) is answered after
 * --delay.  A body asking for "stream": true gets an OpenAI-shaped SSE
 * stream of --chunks text chunks, the first after --delay and the rest
 * --chunk-interval apart, then a usage chunk and [DONE]; any other request
 * gets a completion JSON whose usage says --chunks output tokens.  Single
 * threaded on libuv; timers carry the waits, so thousands of requests can
 * wait at once.
 */
#define _POSIX_C_SOURCE 200809L
#include "tools/testsrv.h"

#include "base/buf.h"
#include "base/str.h"
#include "http/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct srv {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_signal_t sigterm, sigint;
    ag_testsrv_opts o;
} srv;

typedef struct tconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    srv *s;
    ag_buf in;
    bool busy, stream, closing;
    int chunks_sent, open_handles;
} tconn;

typedef struct wreq {
    uv_write_t w;
    char *data;
} wreq;

static void on_write(uv_write_t *w, int status) {
    (void)status;
    wreq *r = (wreq *)w;
    free(r->data);
    free(r);
}

static void send_bytes(tconn *c, ag_buf *b) {
    wreq *r = malloc(sizeof *r);
    size_t n;
    r->data = ag_buf_detach(b, &n);
    uv_buf_t ub = uv_buf_init(r->data, (unsigned)n);
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &ub, 1, on_write) != 0) free(r->data), free(r);
}

static void on_closed(uv_handle_t *h) {
    tconn *c = h->data;
    if (--c->open_handles == 0) {
        ag_buf_deinit(&c->in);
        free(c);
    }
}

static void tconn_close(tconn *c) {
    if (c->closing) return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void chunk(ag_buf *b, const char *data) { /* one HTTP chunk holding one SSE event */
    size_t n = strlen(data) + 8;
    ag_buf_appendf(b, "%zx\r\ndata: %s\n\n\r\n", n, data);
}

static void process(tconn *c);

static void on_timer(uv_timer_t *t) {
    tconn *c = t->data;
    ag_buf b;
    ag_buf_init(&b);
    int n = c->s->o.chunks;
    if (!c->stream) {
        char body[256];
        int len = snprintf(body, sizeof body,
                           "{\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\"x\",\"finish_reason\":"
                           "\"length\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":%d,\"total_tokens\":%d}}",
                           n, n + 1);
        ag_buf_appendf(&b, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len, body);
    } else {
        if (c->chunks_sent == 0)
            ag_buf_append_str(&b, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        chunk(&b, "{\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}");
        if (++c->chunks_sent < n) {
            send_bytes(c, &b);
            uv_timer_start(&c->timer, on_timer, c->s->o.chunk_interval_ms, 0);
            return;
        }
        char usage[160];
        snprintf(usage, sizeof usage,
                 "{\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,"
                 "\"completion_tokens\":%d,\"total_tokens\":%d}}",
                 n, n + 1);
        chunk(&b, usage);
        chunk(&b, "[DONE]");
        ag_buf_append_str(&b, "0\r\n\r\n");
    }
    send_bytes(c, &b);
    c->busy = false;
    process(c); /* a pipelined request may be waiting */
}

/* Start on the request at the front of the buffer, if it is whole. */
static void process(tconn *c) {
    if (c->busy || c->closing) return;
    ag_http_head_parser p = {0};
    ag_http_header headers[100];
    ag_http_request req = {.headers = headers};
    ag_http_limits lim = ag_http_limits_default();
    ag_http_error err;
    ag_status st = ag_http_head_parse(&p, c->in.data ? c->in.data : "", c->in.len, &lim, &req, &err);
    if (st == AG_AGAIN) return;
    if (st != AG_OK || req.chunked) {
        tconn_close(c);
        return;
    }
    size_t body = req.content_length > 0 ? (size_t)req.content_length : 0, total = req.head_len + body;
    if (c->in.len < total) return;
    ag_str b = {c->in.data + req.head_len, body};
    c->stream = false;
    for (size_t i = 0; i + 14 <= b.n; i++) /* "stream": true, however spaced */
        if (memcmp(b.p + i, "\"stream\"", 8) == 0) {
            size_t j = i + 8;
            while (j < b.n && (b.p[j] == ' ' || b.p[j] == ':')) j++;
            c->stream = j + 4 <= b.n && memcmp(b.p + j, "true", 4) == 0;
            break;
        }
    memmove(c->in.data, c->in.data + total, c->in.len - total);
    c->in.len -= total;
    c->busy = true;
    c->chunks_sent = 0;
    if (c->s->o.chunks <= 0) c->stream = false;
    uv_timer_start(&c->timer, on_timer, c->s->o.delay_ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    tconn *c = h->data;
    (void)hint;
    ag_buf_reserve(&c->in, 16384);
    buf->base = c->in.data + c->in.len;
    buf->len = c->in.cap - c->in.len;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    tconn *c = st->data;
    (void)buf;
    if (n < 0) {
        tconn_close(c);
        return;
    }
    c->in.len += (size_t)n;
    process(c);
}

static void on_connection(uv_stream_t *l, int status) {
    srv *s = l->data;
    if (status < 0) return;
    tconn *c = calloc(1, sizeof *c);
    c->s = s;
    ag_buf_init(&c->in);
    uv_tcp_init(&s->loop, &c->tcp);
    uv_timer_init(&s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        tconn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_signal(uv_signal_t *h, int sig) {
    (void)sig;
    uv_stop(h->loop);
}

int ag_testsrv_run(const ag_testsrv_opts *o) {
    srv s = {.o = *o};
    uv_loop_init(&s.loop);
    uv_tcp_init(&s.loop, &s.listener);
    s.listener.data = &s;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", o->port, &addr);
    int rc = uv_tcp_bind(&s.listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s.listener, 4096, on_connection);
    if (rc != 0) {
        fprintf(stderr, "autoglm bench: self-test server: cannot listen on 127.0.0.1:%d: %s\n", o->port, uv_strerror(rc));
        return 1;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s.listener, (struct sockaddr *)&bound, &len);
    fprintf(stderr, "self-test server listening on http://127.0.0.1:%d (delay %d ms, %d chunks %d ms apart)\n",
            ntohs(((struct sockaddr_in *)&bound)->sin_port), o->delay_ms, o->chunks, o->chunk_interval_ms);
    uv_signal_init(&s.loop, &s.sigterm);
    uv_signal_init(&s.loop, &s.sigint);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    return 0; /* exiting closes everything */
}
