/*
 * chaos_admin.c - the chaos proxy's admin API on --admin HOST:PORT (see
 * chaos.h), so a test can change faults mid-run: GET /faults, PUT /faults
 * (a JSON object of faults by their flag names, replacing them all; 400
 * naming the bad one), DELETE /faults (none), and GET /metrics (Prometheus
 * text: connections, bytes per direction, faults fired per kind).  One
 * request per connection, answered with Connection: close; a head within
 * the HTTP parser's default limits, a body of at most 64 KiB.
 */
#define _GNU_SOURCE /* pthread types for uv.h */
#include "tools/chaos_int.h"

#include "base/str.h"
#include "http/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_BODY = 1 << 16 };

typedef struct chaos_aconn aconn;
struct chaos_aconn {
    uv_tcp_t tcp;
    aconn *prev, *next; /* the admin API's open connections */
    uv_write_t w;
    chaos *x;
    ag_buf in, out;
    bool answered, closing;
};

static void on_closed(uv_handle_t *h) {
    aconn *c = h->data;
    if (c->prev) c->prev->next = c->next;
    else c->x->aconns = c->next;
    if (c->next) c->next->prev = c->prev;
    ag_buf_deinit(&c->in), ag_buf_deinit(&c->out);
    free(c);
}

static void aconn_close(aconn *c) {
    if (c->closing) return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *w, int status) {
    (void)status;
    aconn_close(w->data);
}

static void respond(aconn *c, int status, const char *type, const char *body, size_t n) {
    c->answered = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    ag_buf_appendf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
                   ag_http_reason(status), type, n);
    ag_buf_append(&c->out, body, n);
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    c->w.data = c;
    if (uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) aconn_close(c);
}

static void respond_error(aconn *c, int status, const char *msg) {
    ag_buf b;
    ag_buf_init(&b);
    ag_buf_append_str(&b, "{\"error\":");
    ag_buf_append_json_str(&b, msg, strlen(msg), AG_UTF8_REPLACE);
    ag_buf_append_char(&b, '}');
    respond(c, status, "application/json", b.data, b.len);
    ag_buf_deinit(&b);
}

static void metrics(chaos *x, ag_buf *o) {
    ag_buf_appendf(o,
                   "# HELP autoglm_chaos_connections_total Client connections accepted.\n"
                   "# TYPE autoglm_chaos_connections_total counter\nautoglm_chaos_connections_total %llu\n"
                   "# HELP autoglm_chaos_connections_open Client connections open.\n"
                   "# TYPE autoglm_chaos_connections_open gauge\nautoglm_chaos_connections_open %llu\n"
                   "# HELP autoglm_chaos_upstream_connect_failures_total Connections to the upstream that failed.\n"
                   "# TYPE autoglm_chaos_upstream_connect_failures_total counter\n"
                   "autoglm_chaos_upstream_connect_failures_total %llu\n"
                   "# HELP autoglm_chaos_bytes_total Bytes forwarded, by direction (up: client to upstream).\n"
                   "# TYPE autoglm_chaos_bytes_total counter\n"
                   "autoglm_chaos_bytes_total{direction=\"up\"} %llu\nautoglm_chaos_bytes_total{direction=\"down\"} %llu\n"
                   "# HELP autoglm_chaos_faults_total Faults fired: connections that drew one, requests for http_error.\n"
                   "# TYPE autoglm_chaos_faults_total counter\n",
                   (unsigned long long)x->accepted, (unsigned long long)x->open, (unsigned long long)x->upstream_failed,
                   (unsigned long long)x->bytes[AG_CHAOS_UP], (unsigned long long)x->bytes[AG_CHAOS_DOWN]);
    for (int k = 0; k < F_N; k++)
        ag_buf_appendf(o, "autoglm_chaos_faults_total{fault=\"%s\"} %llu\n", chaos_fault_names[k], (unsigned long long)x->fired[k]);
}

static void route(aconn *c, const ag_http_request *req, const char *body, size_t n) {
    chaos *x = c->x;
    ag_buf b;
    ag_buf_init(&b);
    bool faults = ag_str_eq_cstr(req->path, "/faults"), get = ag_str_eq_cstr(req->method, "GET");
    if (faults && ag_str_eq_cstr(req->method, "PUT")) {
        char msg[256];
        ag_chaos_faults f;
        if (!ag_chaos_faults_from_json(body, n, &f, msg, sizeof msg)) {
            respond_error(c, 400, msg);
            ag_buf_deinit(&b);
            return;
        }
        x->faults = f;
    } else if (faults && ag_str_eq_cstr(req->method, "DELETE")) {
        memset(&x->faults, 0, sizeof x->faults);
    } else if (ag_str_eq_cstr(req->path, "/metrics") && get) {
        metrics(x, &b);
        respond(c, 200, "text/plain; version=0.0.4", b.data, b.len);
        ag_buf_deinit(&b);
        return;
    } else if (!faults || !get) {
        respond_error(c, faults || ag_str_eq_cstr(req->path, "/metrics") ? 405 : 404, "GET|PUT|DELETE /faults, GET /metrics");
        ag_buf_deinit(&b);
        return;
    }
    ag_chaos_faults_json(&x->faults, &b);
    respond(c, 200, "application/json", b.data, b.len);
    ag_buf_deinit(&b);
}

ag_status chaos_head_parse(chaos_head *h, const char *buf, size_t len) {
    ag_http_head_parser p = {0};
    ag_http_limits lim = ag_http_limits_default();
    h->req = (ag_http_request){.headers = h->headers};
    return ag_http_head_parse(&p, buf, len, &lim, &h->req, &h->err);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    aconn *c = h->data;
    (void)hint;
    ag_buf_reserve(&c->in, 16384);
    *b = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    aconn *c = s->data;
    (void)b;
    if (c->answered || n == 0) return;
    if (n < 0) {
        aconn_close(c);
        return;
    }
    c->in.len += (size_t)n;
    chaos_head h;
    ag_status st = chaos_head_parse(&h, c->in.data, c->in.len);
    if (st == AG_AGAIN) return;
    if (st != AG_OK) return respond_error(c, h.err.status ? h.err.status : 400, h.err.reason ? h.err.reason : "bad request");
    const ag_http_request req = h.req;
    if (req.chunked || req.content_length > MAX_BODY) return respond_error(c, 413, "a Content-Length body of at most 64 KiB");
    size_t len = req.content_length > 0 ? (size_t)req.content_length : 0;
    if (c->in.len - req.head_len < len) return;
    route(c, &req, c->in.data + req.head_len, len);
}

static void on_accept(uv_stream_t *l, int status) {
    chaos *x = l->data;
    if (status < 0) return;
    aconn *c = calloc(1, sizeof *c);
    c->x = x;
    ag_buf_init(&c->in), ag_buf_init(&c->out);
    uv_tcp_init(&x->loop, &c->tcp);
    c->tcp.data = c;
    c->next = x->aconns;
    if (x->aconns) x->aconns->prev = c;
    x->aconns = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        aconn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

bool chaos_admin_start(chaos *x, char *msg, size_t cap) {
    const ag_chaos_opts *o = x->o;
    struct sockaddr_storage addr;
    if (!chaos_resolve(o->admin_host, o->admin_port, &addr)) {
        snprintf(msg, cap, "--admin %s:%d: cannot resolve", o->admin_host, o->admin_port);
        return false;
    }
    uv_tcp_init(&x->loop, &x->admin);
    x->admin.data = x;
    int e = uv_tcp_bind(&x->admin, (const struct sockaddr *)&addr, 0);
    if (!e) e = uv_listen((uv_stream_t *)&x->admin, 64, on_accept);
    if (e) {
        snprintf(msg, cap, "--admin %s:%d: %s", o->admin_host, o->admin_port, uv_strerror(e));
        return false;
    }
    struct sockaddr_storage a;
    int len = sizeof a;
    uv_tcp_getsockname(&x->admin, (struct sockaddr *)&a, &len);
    fprintf(stderr, "chaos admin API on %s:%d\n", o->admin_host, ntohs(((struct sockaddr_in *)&a)->sin_port));
    return true;
}

void chaos_admin_stop(chaos *x) {
    uv_close((uv_handle_t *)&x->admin, NULL);
    for (aconn *c = x->aconns; c; c = c->next) aconn_close(c);
}
