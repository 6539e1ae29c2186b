/*
 * server.c - the HTTP server around the engine: connections, routing,
 * generation exchanges, timeouts and the drain (see server.h).
 *
 * Why libuv and not a hand-written epoll loop: libuv is Debian-packaged and
 * well kept, and gives timers, signals, a thread pool (for loading the model
 * while /health already answers 503) and write queues; a loop of our own
 * would have to win a measurement to be worth its upkeep, and the /health
 * benchmark against nginx (bench/server) shows the loop is not where the time
 * goes.
 *
 * A connection reads into one buffer that holds the current request at its
 * start; the HTTP parser hands back spans into it and the body is decoded in
 * place.  Requests on a connection are served one at a time, in order
 * (pipelined ones wait in the buffer), and the connection keeps reading while
 * a generation runs, so a client that goes away is noticed at once and its
 * generation cancelled.  Responses are appended to the connection's output
 * buffer and handed to the kernel once per loop iteration (a uv_check
 * handle), which coalesces the tokens of one engine step into one write.
 *
 * An exchange is one generation request: its choices (prompts x n) are engine
 * requests, found from engine events through a map keyed by engine id.  An
 * exchange outlives its connection when the client leaves: it cancels its
 * engine requests and frees itself when their last events arrive.
 *
 * Memory: connections and exchanges are malloc'd control objects; a request's
 * parsed JSON and prompts live in the exchange's arena.  A connection is freed
 * only in libuv's close callbacks, never inside its own callbacks.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/server.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/map.h"
#include "engine/tokenizer.h"
#include "json/json.h"
#include "obs/export.h"
#include "obs/metrics.h"
#include "obs/trace.h"
#include "cache/cache.h"
#include "cache/l2.h"
#include "server/chat_template.h"
#include "server/rcache.h"
#include "server/openai.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

typedef struct server server;
typedef struct conn conn;
typedef struct exchange exchange;

typedef struct choice {
    exchange *x;
    uint64_t id; /* the engine's; the inflight map's key points here */
    bool open;   /* submitted and not finished */
    uint64_t t_first_ns, t_last_ns;                   /* loop-side arrival of its first and latest token */
    uint64_t t_submit_ns, t_admit_ns, t_engine_first_ns, t_end_ns; /* engine timings, from the last event */
    ag_finish finish;
    ag_buf text;        /* non-streamed: the whole completion */
    ag_api_logprobs lp; /* non-streamed: all tokens; streamed: the chunk's */
    int32_t prompt_tokens, completion_tokens, cached_tokens;
} choice;

struct exchange {
    server *s;
    conn *c; /* NULL once the client left or was answered with an error */
    ag_arena arena;
    ag_api_request req;
    ag_api_meta meta;
    choice *ch;
    int n_ch, n_open;
    uint64_t t_start_ns, t_first_ns; /* the request's first byte; the first token of any choice */
    /* the response cache: its verdict on this request (X-Cache of a generated answer), and where to store it */
    int cache_verdict; /* CACHE_NONE, CACHE_BYPASS or CACHE_MISS */
    bool cache_store;
    uint8_t cache_key[32];
    uint64_t cache_ttl_ns, cache_tag;
    /* single flight: identical cacheable requests wait for the first (their leader) instead of generating */
    exchange *leader;      /* set while this one waits */
    exchange **followers;  /* the leader's waiting requests */
    int n_followers;
    bool leading;          /* registered in server.leaders under cache_key */
    uint64_t t_follow_ns;  /* when this one began to wait */
    ag_cache_val *value;   /* the finished answer as stored (NULL: not stored); its client is answered from it */
};

/* What is known of the request a connection is serving, for metrics, the access log and its span. */
typedef struct req_obs {
    bool active;
    uint64_t t_start_ns; /* its first byte */
    ag_trace trace;
    int route; /* R_*, or R_COUNT for none */
    const char *cache; /* the response cache's verdict: none, bypass, miss, hit-l1 */
    int status;
    char method[16], path[128];
} req_obs;

enum { C_HEAD, C_BODY, C_BUSY, C_CLOSING };

/* The response cache's verdict on a generated answer, and its X-Cache header. */
enum { CACHE_NONE, CACHE_BYPASS, CACHE_MISS };
static const char *const cache_headers[] = {NULL, "X-Cache: BYPASS\r\n", "X-Cache: MISS\r\n"};

/* Routes, in the order of the routes table and of the metrics' route labels. */
enum { R_HEALTH, R_MODELS, R_MODEL, R_CHAT, R_COMPLETIONS, R_TOKENIZE, R_DETOKENIZE, R_METRICS, R_CACHE_STATS, R_CACHE,
       R_COUNT };

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    server *s;
    int state, handles;
    bool closed, shutting, dirty, keep_alive, chunked_out, head_only, continue_sent;
    ag_buf in;  /* received bytes, the current request at the start */
    ag_buf out; /* response bytes not yet handed to libuv */
    ag_http_head_parser hp;
    ag_http_request req;
    ag_http_header *headers; /* limits.max_headers */
    ag_http_chunked chunks;
    size_t body_len, consumed; /* decoded body bytes (at in.data + head_len); request bytes of in */
    uint64_t t_start;          /* loop time of the current request's first byte; 0 between requests */
    req_obs obs;
    exchange *x;
    conn *prev, *next;
};

struct server {
    const ag_server_opts *o;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_poll_t engine_poll;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    uv_check_t flusher;
    uv_work_t load_work;
    ag_engine *engine;
    ag_status load_status;
    ag_err load_err;
    ag_api_model model;
    char model_name[256];
    bool ready, draining, stopped, poll_started;
    conn *conns;
    size_t n_conns, n_exchanges;
    ag_map inflight; /* engine id -> choice */
    conn **dirty;
    size_t n_dirty, cap_dirty;
    ag_buf scratch;
    uint64_t n_requests;
    time_t date_at;
    char date[40];
    int exit_code;
    ag_metrics metrics;
    ag_otlp *otlp;
    ag_logq *logq;
    int64_t wall_minus_mono; /* ns: converts monotonic times to Unix times for spans */
    ag_cache *cache;         /* the in-process tier; NULL: none (no response cache, or Redis alone) */
    ag_l2 *l2;               /* the Redis tier, or NULL */
    ag_map leaders;          /* cache key -> the exchange generating it (single flight) */
    uv_timer_t follow_timer; /* lets followers whose leader takes too long go their own way */
    uint64_t cache_bypass;   /* generation requests the cache did not look up (not cacheable, or no-cache) */
};

void ag_server_opts_default(ag_server_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->limits = ag_http_limits_default();
    o->max_connections = 1024;
    o->read_timeout_ms = 30000;
    o->idle_timeout_ms = 60000;
    o->drain_timeout_ms = 30000;
    o->trace_sample_ratio = 1.0;
    o->cache_ttl_s = 3600;
    o->cache_coalesce_ms = 30000;
    o->redis_timeout_ms = 100;
    o->log_format = AG_LOG_TEXT;
    o->log_level = AG_LOG_INFO;
}

static void conn_close(conn *c);
static void process(conn *c);
static void finish_obs(conn *c, int status);
static ag_api_usage exchange_usage(const exchange *x);
static void on_timeout(uv_timer_t *t);
static void maybe_stop(server *s);
static void on_follow_timer(uv_timer_t *t);
static void release_follower(exchange *f, ag_cache_val *value);

/* ---- output ---------------------------------------------------------------------- */

static void conn_send(conn *c, const void *p, size_t n) {
    if (c->closed) return;
    ag_buf_append(&c->out, p, n);
    if (!c->dirty) {
        server *s = c->s;
        if (s->n_dirty == s->cap_dirty) {
            s->cap_dirty = s->cap_dirty ? 2 * s->cap_dirty : 64;
            s->dirty = ag_xrealloc(s->dirty, s->cap_dirty * sizeof *s->dirty);
        }
        s->dirty[s->n_dirty++] = c;
        c->dirty = true;
    }
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
    if (status < 0) conn_close(c);
}

/*
 * Hand c->out, then body[0..n) (bytes inside the shared value v, or none),
 * to the kernel in one writev.  What the socket does not take now waits in
 * libuv: c->out's rest as a copy, the body's in place with a reference on v,
 * so a cached answer is never copied however many clients it goes to.
 */
static void conn_write(conn *c, const char *body, size_t n, ag_cache_val *v) {
    if (c->closed || (!c->out.len && !n)) return;
    uv_buf_t b[2];
    unsigned nb = 0;
    if (c->out.len) b[nb++] = uv_buf_init(c->out.data, (unsigned)c->out.len);
    if (n) b[nb++] = uv_buf_init((char *)body, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&c->tcp, b, nb);
    if (r < 0 && r != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    size_t out_rest = done < c->out.len ? c->out.len - done : 0;
    size_t body_done = done > c->out.len ? done - c->out.len : 0;
    if (out_rest || body_done < n) {
        out_write *w = ag_xmalloc(sizeof *w + out_rest);
        memcpy(w->copy, c->out.data + (c->out.len - out_rest), out_rest);
        w->body = body_done < n ? ag_cache_val_retain(v) : NULL;
        w->req.data = c;
        nb = 0;
        if (out_rest) b[nb++] = uv_buf_init(w->copy, (unsigned)out_rest);
        if (body_done < n) b[nb++] = uv_buf_init((char *)body + body_done, (unsigned)(n - body_done));
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, b, nb, on_write) < 0) {
            ag_cache_val_release(w->body);
            free(w);
            conn_close(c);
            return;
        }
    }
    ag_buf_reset(&c->out);
}

static void conn_flush(conn *c) { conn_write(c, NULL, 0, NULL); }

static void on_check(uv_check_t *h) {
    server *s = h->data;
    for (size_t i = 0; i < s->n_dirty; i++) {
        s->dirty[i]->dirty = false;
        conn_flush(s->dirty[i]);
    }
    s->n_dirty = 0;
}

static const char *http_date(server *s) {
    time_t now = time(NULL);
    if (now != s->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_at = now;
    }
    return s->date;
}

/*
 * The status line and headers.  content_length < 0 is a streamed body:
 * chunked on HTTP/1.1, delimited by closing on HTTP/1.0.  extra is zero or
 * more complete header lines.
 */
static void write_head(conn *c, int status, const char *ctype, int64_t content_length, const char *extra) {
    ag_buf *b = &c->s->scratch;
    if (c->s->draining) c->keep_alive = false;
    c->chunked_out = false;
    ag_buf_reset(b);
    ag_buf_appendf(b, "HTTP/1.1 %d %s\r\nServer: autoglm\r\nDate: %s\r\n", status, ag_http_reason(status),
                   http_date(c->s));
    if (c->obs.active) { /* every response, errors included, names its trace */
        char tp[56];
        ag_trace_format(&c->obs.trace, tp);
        ag_buf_appendf(b, "X-Trace-ID: %s\r\ntraceparent: %s\r\n", c->obs.trace.trace_id, tp);
        c->obs.status = status;
    }
    if (ctype) ag_buf_appendf(b, "Content-Type: %s\r\n", ctype);
    if (content_length >= 0) ag_buf_appendf(b, "Content-Length: %lld\r\n", (long long)content_length);
    else if (c->req.version_minor >= 1) ag_buf_append_str(b, "Transfer-Encoding: chunked\r\n"), c->chunked_out = true;
    else c->keep_alive = false;
    if (!c->keep_alive) ag_buf_append_str(b, "Connection: close\r\n");
    else if (c->req.version_minor == 0) ag_buf_append_str(b, "Connection: keep-alive\r\n");
    if (extra) ag_buf_append_str(b, extra);
    ag_buf_append_str(b, "\r\n");
    conn_send(c, b->data, b->len);
}

/* Part of a streamed body, framed as a chunk on HTTP/1.1. */
static void send_body_part(conn *c, const char *p, size_t n) {
    char size[24];
    if (!n) return;
    if (c->chunked_out) conn_send(c, size, (size_t)snprintf(size, sizeof size, "%zx\r\n", n));
    conn_send(c, p, n);
    if (c->chunked_out) conn_send(c, "\r\n", 2);
}

/*
 * Close gracefully: queued output goes out, then our FIN; we keep reading
 * (and dropping) what the peer still sends until its FIN, since closing with
 * unread data would reset the connection and could destroy our last response
 * before the peer read it (nginx's lingering close).  The timer caps the wait.
 */
static void on_shutdown(uv_shutdown_t *req, int status) {
    conn *c = req->data;
    if (status < 0) conn_close(c);
}

static void conn_end(conn *c) {
    if (c->closed || c->shutting) return;
    c->state = C_CLOSING;
    c->shutting = true;
    conn_flush(c);
    if (c->closed) return;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) conn_close(c);
    else uv_timer_start(&c->timer, on_timeout, 5000, 0);
}

/* The current request is answered: drop its bytes, and go on with the next one unless the connection ends. */
static void request_done(conn *c) {
    finish_obs(c, c->obs.status);
    size_t rest = c->in.len - c->consumed;
    if (c->in.data) { /* NULL when the request never sent a byte (an over-the-cap connection) */
        memmove(c->in.data, c->in.data + c->consumed, rest);
        c->in.data[rest] = '\0';
    }
    c->in.len = rest;
    c->consumed = c->body_len = 0;
    c->t_start = 0;
    c->continue_sent = false;
    memset(&c->hp, 0, sizeof c->hp);
    memset(&c->chunks, 0, sizeof c->chunks);
    if (!c->keep_alive || c->s->draining) {
        conn_end(c);
        return;
    }
    c->state = C_HEAD;
}

static void respond(conn *c, int status, const char *ctype, const char *body, size_t len, const char *extra) {
    write_head(c, status, ctype, (int64_t)len, extra);
    if (!c->head_only) conn_send(c, body, len);
    request_done(c);
}

static void respond_json(conn *c, int status, const ag_buf *body, const char *extra) {
    respond(c, status, "application/json", body->data ? body->data : "", body->len, extra);
}

static void respond_error(conn *c, const ag_api_error *e) {
    ag_buf body;
    ag_buf_init(&body);
    ag_api_error_write(e, &body);
    const char *extra = e->status == 429 || e->status == 503 ? "Retry-After: 1\r\n" : NULL;
    respond_json(c, e->status, &body, extra);
    ag_buf_deinit(&body);
}

static void respond_status(conn *c, int status, const char *type, const char *code, const char *msg,
                           const char *extra) {
    ag_api_error e;
    ag_api_fail(&e, status, type, NULL, code, "%s", msg);
    ag_buf body;
    ag_buf_init(&body);
    ag_api_error_write(&e, &body);
    respond_json(c, status, &body, extra);
    ag_buf_deinit(&body);
}

/* A protocol error: answer it and close, since the rest of the stream cannot be trusted. */
static void http_fail(conn *c, int status, const char *reason) {
    c->keep_alive = false;
    c->consumed = c->in.len;
    respond_status(c, status, "invalid_request_error", NULL, reason, NULL);
}

/* ---- observability: metrics, the access log, spans ------------------------------------ */

static const char *const route_labels[] = {"/health", "/v1/models", "/v1/models/{id}", "/v1/chat/completions",
                                           "/v1/completions", "/tokenize", "/detokenize", "/metrics", "/v1/cache/stats",
                                           "/v1/cache", "other"};

static void begin_obs(conn *c, const ag_http_request *req) {
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

static ag_metric_finish metric_finish(ag_finish f) {
    switch (f) {
    case AG_FINISH_STOP: return AG_METRIC_FINISH_STOP;
    case AG_FINISH_LENGTH: return AG_METRIC_FINISH_LENGTH;
    case AG_FINISH_ERROR: return AG_METRIC_FINISH_ERROR;
    default: return AG_METRIC_FINISH_ABORT;
    }
}

/* {"key":key,"value":{"<kind>": ...}}: attr_open writes up to the value, attr_close ends both objects. */
static void attr_open(ag_jw *w, const char *key, const char *kind) {
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "key");
    ag_jw_strc(w, key);
    ag_jw_keyc(w, "value");
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, kind);
}

static void attr_close(ag_jw *w) {
    ag_jw_obj_end(w);
    ag_jw_obj_end(w);
}

static void attr_str(ag_jw *w, const char *key, const char *v) {
    attr_open(w, key, "stringValue");
    ag_jw_strc(w, v);
    attr_close(w);
}

static void attr_int(ag_jw *w, const char *key, int64_t v) {
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)v); /* OTLP JSON: 64-bit integers as strings */
    attr_open(w, key, "intValue");
    ag_jw_strc(w, text);
    attr_close(w);
}

/* One span object, opened and left with its "attributes" array open for the caller to fill and close. */
static void span_open(ag_jw *w, const ag_trace *t, const char *span_id, const char *parent, const char *name, int kind,
                      uint64_t start_unix_ns, uint64_t end_unix_ns) {
    char num[24];
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "traceId");
    ag_jw_strc(w, t->trace_id);
    ag_jw_keyc(w, "spanId");
    ag_jw_strc(w, span_id);
    if (parent && *parent) {
        ag_jw_keyc(w, "parentSpanId");
        ag_jw_strc(w, parent);
    }
    ag_jw_keyc(w, "name");
    ag_jw_strc(w, name);
    ag_jw_keyc(w, "kind");
    ag_jw_int(w, kind);
    ag_jw_keyc(w, "startTimeUnixNano");
    snprintf(num, sizeof num, "%llu", (unsigned long long)start_unix_ns);
    ag_jw_strc(w, num);
    ag_jw_keyc(w, "endTimeUnixNano");
    snprintf(num, sizeof num, "%llu", (unsigned long long)(end_unix_ns > start_unix_ns ? end_unix_ns : start_unix_ns));
    ag_jw_strc(w, num);
    ag_jw_keyc(w, "attributes");
    ag_jw_arr_begin(w);
}

static void submit_span(server *s, ag_buf *b) {
    if (b->err == AG_OK) ag_otlp_submit(s->otlp, ag_buf_detach(b, NULL));
    ag_buf_deinit(b);
}

/* The server span with the OpenTelemetry GenAI attributes, and its queue, prefill and decode children. */
static void export_spans(server *s, const req_obs *q, const exchange *x, int status, uint64_t end_ns) {
    const int64_t off = s->wall_minus_mono;
    char name[160];
    snprintf(name, sizeof name, "%s %s", q->method, q->route < R_COUNT + 1 ? route_labels[q->route] : "other");
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
    span_open(&w, &q->trace, q->trace.span_id, q->trace.parent_id, name, 2, (uint64_t)((int64_t)q->t_start_ns + off),
              (uint64_t)((int64_t)end_ns + off));
    attr_str(&w, "http.request.method", q->method);
    attr_str(&w, "http.route", route_labels[q->route]);
    attr_str(&w, "url.path", q->path);
    attr_str(&w, "url.scheme", "http");
    attr_int(&w, "http.response.status_code", status);
    if (x) {
        ag_api_usage u = exchange_usage(x);
        attr_str(&w, "gen_ai.operation.name", x->req.kind == AG_API_CHAT ? "chat" : "text_completion");
        attr_str(&w, "gen_ai.provider.name", "autoglm");
        attr_str(&w, "gen_ai.request.model", s->model.name);
        attr_str(&w, "gen_ai.response.id", x->meta.id);
        attr_int(&w, "gen_ai.request.max_tokens", x->req.max_tokens);
        attr_open(&w, "gen_ai.request.temperature", "doubleValue");
        ag_jw_double(&w, x->req.sampling.temperature);
        attr_close(&w);
        attr_int(&w, "gen_ai.usage.input_tokens", u.prompt_tokens);
        attr_int(&w, "gen_ai.usage.output_tokens", u.completion_tokens);
        attr_open(&w, "gen_ai.response.finish_reasons", "arrayValue");
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "values");
        ag_jw_arr_begin(&w);
        for (int i = 0; i < x->n_ch; i++) {
            ag_jw_obj_begin(&w);
            ag_jw_keyc(&w, "stringValue");
            ag_jw_strc(&w, x->ch[i].open ? "abort" : ag_api_finish_reason(x->ch[i].finish));
            ag_jw_obj_end(&w);
        }
        ag_jw_arr_end(&w);
        ag_jw_obj_end(&w);
        attr_close(&w);
    }
    ag_jw_arr_end(&w);
    ag_jw_keyc(&w, "status");
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "code");
    ag_jw_int(&w, status >= 500 || status == 499 ? 2 : 0);
    ag_jw_obj_end(&w);
    ag_jw_obj_end(&w);
    submit_span(s, &b);
    if (!x || !x->n_ch || !x->ch[0].t_submit_ns) return;
    /* children from the first choice's engine timings: submit -> admitted -> first token -> end */
    const choice *c0 = &x->ch[0];
    const uint64_t marks[4] = {c0->t_submit_ns, c0->t_admit_ns, c0->t_engine_first_ns, c0->t_end_ns};
    static const char *const names[3] = {"queue", "prefill", "decode"};
    for (int k = 0; k < 3; k++) {
        if (!marks[k] || !marks[k + 1]) break;
        char id[17];
        ag_trace_new_span_id(id);
        ag_buf_init(&b);
        ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
        span_open(&w, &q->trace, id, q->trace.span_id, names[k], 1, (uint64_t)((int64_t)marks[k] + off),
                  (uint64_t)((int64_t)marks[k + 1] + off));
        ag_jw_arr_end(&w);
        ag_jw_obj_end(&w);
        submit_span(s, &b);
    }
}

/* The request ends (answered, or its client gone): count it, log it, export its spans. */
static void finish_obs(conn *c, int status) {
    req_obs *q = &c->obs;
    if (!q->active) return;
    q->active = false;
    server *s = c->s;
    const exchange *x = c->x && c->x->ch ? c->x : NULL; /* a follower has no choices of its own */
    uint64_t now = ag_clock_mono_ns();
    ag_metrics_http_request(&s->metrics, (size_t)q->route, status);
    if (x) ag_histogram_observe(&s->metrics.e2e, now - q->t_start_ns);
    if (ag_log_enabled(AG_LOG_INFO)) {
        ag_api_usage u = x ? exchange_usage(x) : (ag_api_usage){0};
        const char *finish = !x ? "" : x->ch[0].open ? "abort" : ag_api_finish_reason(x->ch[0].finish);
        ag_log_field f[] = {
            AG_LOG_FIELD_STR("trace_id", q->trace.trace_id),
            AG_LOG_FIELD_STR("span_id", q->trace.span_id),
            AG_LOG_FIELD_STR("method", q->method),
            AG_LOG_FIELD_STR("route", q->path),
            AG_LOG_FIELD_INT("status", status),
            AG_LOG_FIELD_DOUBLE("latency_ms", (double)(now - q->t_start_ns) / 1e6),
            AG_LOG_FIELD_DOUBLE("ttft_ms", x && x->t_first_ns ? (double)(x->t_first_ns - q->t_start_ns) / 1e6 : 0),
            AG_LOG_FIELD_INT("prompt_tokens", u.prompt_tokens),
            AG_LOG_FIELD_INT("completion_tokens", u.completion_tokens),
            AG_LOG_FIELD_STR("finish_reason", finish),
            AG_LOG_FIELD_STR("cache", q->cache ? q->cache : "none"),
        };
        ag_log_fields(AG_LOG_INFO, "request", f, sizeof f / sizeof f[0]);
    }
    if (s->otlp && q->trace.sampled) export_spans(s, q, x, status, now);
}

/* ---- exchanges (generation requests) ------------------------------------------------ */

static void exchange_free(exchange *x) {
    for (int i = 0; x->ch && i < x->n_ch; i++) {
        ag_buf_deinit(&x->ch[i].text);
        ag_api_logprobs_deinit(&x->ch[i].lp);
    }
    free(x->ch);
    free(x->followers);
    ag_cache_val_release(x->value);
    ag_arena_deinit(&x->arena);
    x->s->n_exchanges--;
    maybe_stop(x->s);
    free(x);
}

/* Stop every open choice; the exchange frees itself when their last events come. */
static void exchange_cancel(exchange *x) {
    for (int i = 0; x->ch && i < x->n_ch; i++)
        if (x->ch[i].open) ag_engine_cancel(x->s->engine, x->ch[i].id);
}

static void sse_send(conn *c, const ag_buf *json) {
    ag_buf *b = &c->s->scratch;
    ag_buf_reset(b);
    ag_buf_append_str(b, "data: ");
    ag_buf_append(b, json->data, json->len);
    ag_buf_append_str(b, "\n\n");
    send_body_part(c, b->data, b->len);
}

static ag_api_usage exchange_usage(const exchange *x) {
    ag_api_usage u = {0};
    for (int i = 0; i < x->n_ch; i++) {
        if (i % x->req.n == 0) u.prompt_tokens += x->ch[i].prompt_tokens, u.cached_tokens += x->ch[i].cached_tokens;
        u.completion_tokens += x->ch[i].completion_tokens;
    }
    return u;
}

/* The end of an SSE response: the usage chunk when asked, [DONE], the last HTTP chunk. */
static void stream_end(conn *c, const ag_api_meta *meta, const ag_api_usage *u, bool include_usage) {
    if (include_usage) {
        ag_buf json;
        ag_buf_init(&json);
        ag_api_usage_chunk_write(meta, u, &json);
        sse_send(c, &json);
        ag_buf_deinit(&json);
    }
    static const char done[] = "data: [DONE]\n\n";
    send_body_part(c, done, sizeof done - 1);
    if (c->chunked_out) conn_send(c, "0\r\n\r\n", 5);
    request_done(c);
}

/* A finished cacheable generation's cache value, when every choice ended normally (not cancelled or failed). */
static ag_cache_val *cache_value(exchange *x) {
    if (!x->cache_store) return NULL;
    ag_rcache_choice *rc = ag_xcalloc((size_t)x->n_ch, sizeof *rc);
    bool complete = true;
    for (int i = 0; i < x->n_ch; i++) {
        complete &= x->ch[i].finish == AG_FINISH_STOP || x->ch[i].finish == AG_FINISH_LENGTH;
        rc[i] = (ag_rcache_choice){x->ch[i].text.data ? x->ch[i].text.data : "", (uint32_t)x->ch[i].text.len,
                                   (uint8_t)x->ch[i].finish};
    }
    ag_cache_val *v = NULL;
    if (complete) {
        ag_api_usage u = exchange_usage(x);
        ag_buf b;
        ag_buf_init(&b);
        ag_rcache_encode(&x->meta, rc, (uint32_t)x->n_ch, &u, &b);
        if (b.err == AG_OK) v = ag_cache_val_new(b.data, b.len, ag_clock_mono_ns());
        ag_buf_deinit(&b);
    }
    free(rc);
    return v;
}

static void exchange_respond(exchange *x);
static bool send_stored(conn *c, const exchange *x, ag_cache_val *v, const char *extra);

static void on_write_through(void *ctx, bool ok) {
    (void)ok; /* a failed write costs a future hit, never this answer */
    exchange_respond(ctx);
}

/*
 * Every choice finished: store the answer (both tiers), answer the requests
 * that waited for it, then the request's own client, and free the exchange.
 * Write-through holds the answer until Redis has the value (or the timeout).
 */
static void exchange_complete(exchange *x) {
    server *s = x->s;
    ag_cache_val *value = x->value = cache_value(x);
    if (value && s->cache) ag_cache_put_val(s->cache, x->cache_key, value, x->cache_ttl_ns, x->cache_tag);
    if (x->leading) ag_map_del(&s->leaders, (const char *)x->cache_key, 32);
    for (int i = 0; i < x->n_followers; i++) release_follower(x->followers[i], value);
    if (value && s->l2) {
        uint64_t ttl_s = x->cache_ttl_ns / 1000000000ull;
        if (s->o->cache_write_through) {
            ag_l2_set(s->l2, x->cache_key, x->cache_tag, value->data, value->len, ttl_s, on_write_through, x);
            return;
        }
        ag_l2_set(s->l2, x->cache_key, x->cache_tag, value->data, value->len, ttl_s, NULL, NULL);
    }
    exchange_respond(x);
}

/* Send the finished exchange's response (when its client is still there) and free it. */
static void exchange_respond(exchange *x) {
    conn *c = x->c;
    if (c) {
        ag_api_usage u = exchange_usage(x);
        ag_buf json;
        ag_buf_init(&json);
        if (x->req.stream) {
            stream_end(c, &x->meta, &u, x->req.include_usage);
        } else if (x->value && send_stored(c, x, x->value, cache_headers[x->cache_verdict])) {
            /* rendered once, for the cache, and sent from there */
        } else {
            bool failed = false;
            ag_api_choice *ch = ag_xcalloc((size_t)x->n_ch, sizeof *ch);
            for (int i = 0; i < x->n_ch; i++) {
                failed |= x->ch[i].finish == AG_FINISH_ERROR;
                ch[i] = (ag_api_choice){x->ch[i].text.data ? x->ch[i].text.data : "", x->ch[i].text.len,
                                        ag_api_finish_reason(x->ch[i].finish), x->req.logprobs ? &x->ch[i].lp : NULL};
            }
            ag_api_response_write(&x->meta, ch, (size_t)x->n_ch, &u, &json);
            free(ch);
            if (failed) respond_status(c, 500, "server_error", NULL, "the engine failed on this request", NULL);
            else respond_json(c, 200, &json, cache_headers[x->cache_verdict]);
        }
        ag_buf_deinit(&json);
        c->x = NULL;
        process(c); /* a pipelined request may be waiting */
    }
    exchange_free(x);
}

static void on_event(server *s, ag_event *ev) {
    choice *ch = ag_map_get(&s->inflight, (const char *)&ev->id, sizeof ev->id);
    if (!ch) return;
    exchange *x = ch->x;
    conn *c = x->c;
    int index = (int)(ch - x->ch);
    bool has_token = ev->token >= 0;
    uint64_t now = ag_clock_mono_ns();
    if (has_token) {
        if (!ch->t_first_ns) {
            ch->t_first_ns = now;
            if (!x->t_first_ns) x->t_first_ns = now, ag_histogram_observe(&s->metrics.ttft, now - x->t_start_ns);
        } else {
            ag_histogram_observe(&s->metrics.itl, now - ch->t_last_ns);
        }
        ch->t_last_ns = now;
    }
    ch->t_submit_ns = ev->t_submit_ns, ch->t_admit_ns = ev->t_admit_ns;
    ch->t_engine_first_ns = ev->t_first_token_ns, ch->t_end_ns = ev->t_event_ns;
    if (c && x->req.stream) {
        if (x->cache_store) ag_buf_append(&ch->text, ev->text, ev->text_len); /* the cache keeps the whole text */
        if (ev->text_len || (has_token && x->req.logprobs)) {
            ag_buf json;
            ag_buf_init(&json);
            ag_api_logprobs_reset(&ch->lp);
            if (has_token && x->req.logprobs) ag_api_logprobs_add(&ch->lp, x->req.kind, s->model.tok, ev);
            ag_api_chunk_write(&x->meta, index, false, ev->text ? ev->text : "", ev->text_len, NULL,
                               has_token && x->req.logprobs ? &ch->lp : NULL, x->req.include_usage, &json);
            sse_send(c, &json);
            ag_buf_deinit(&json);
        }
    } else if (c) {
        ag_buf_append(&ch->text, ev->text, ev->text_len);
        if (has_token && x->req.logprobs) ag_api_logprobs_add(&ch->lp, x->req.kind, s->model.tok, ev);
    }
    if (!ev->finish) return;
    ch->open = false;
    ch->finish = ev->finish;
    ch->prompt_tokens = ev->prompt_tokens, ch->completion_tokens = ev->completion_tokens;
    ch->cached_tokens = ev->cached_tokens;
    ag_map_del(&s->inflight, (const char *)&ch->id, sizeof ch->id);
    ag_metrics *m = &s->metrics;
    atomic_fetch_add_explicit(&m->request_success[metric_finish(ev->finish)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->prompt_tokens, (uint64_t)ev->prompt_tokens, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->generation_tokens, (uint64_t)ev->completion_tokens, memory_order_relaxed);
    if (ev->t_admit_ns) ag_histogram_observe(&m->queue, ev->t_admit_ns - ev->t_submit_ns);
    if (ev->t_admit_ns && ev->t_first_token_ns) ag_histogram_observe(&m->prefill, ev->t_first_token_ns - ev->t_admit_ns);
    if (ev->t_first_token_ns) ag_histogram_observe(&m->decode, ev->t_event_ns - ev->t_first_token_ns);
    if (ev->completion_tokens > 1)
        ag_histogram_observe(&m->tpot, (ch->t_last_ns - ch->t_first_ns) / (uint64_t)(ev->completion_tokens - 1));
    if (c && x->req.stream) {
        ag_buf json;
        ag_buf_init(&json);
        ag_api_chunk_write(&x->meta, index, false, "", 0, ag_api_finish_reason(ev->finish), NULL,
                           x->req.include_usage, &json);
        sse_send(c, &json);
        ag_buf_deinit(&json);
    }
    if (--x->n_open == 0) exchange_complete(x);
}

static void on_engine_readable(uv_poll_t *h, int status, int events) {
    (void)status, (void)events;
    server *s = h->data;
    ag_event evs[64];
    size_t n;
    do {
        n = ag_engine_poll(s->engine, evs, 64, 0);
        for (size_t i = 0; i < n; i++) {
            on_event(s, &evs[i]);
            ag_event_clear(&evs[i]);
        }
    } while (n == 64);
}

/* The API key a request carries (its tenant for the cache), or an empty span. */
static ag_str bearer(const ag_http_request *req) {
    ag_str h = ag_http_header_get(req, "authorization");
    if (h.n < 7 || !ag_str_ieq((ag_str){h.p, 7}, AG_STR_LIT("bearer "))) return (ag_str){NULL, 0};
    return ag_str_trim((ag_str){h.p + 7, h.n - 7});
}

/*
 * A whole response from a stored value: x's own opening (id and time), then
 * the value's rendered rest, sent by reference.  False when v does not decode
 * to x's choices (nothing was sent).
 */
static bool send_stored(conn *c, const exchange *x, ag_cache_val *v, const char *extra) {
    ag_rcache_value d;
    if (!ag_rcache_decode(v->data, v->len, &d) || (int)d.n != x->n_ch) return false;
    ag_buf open;
    ag_buf_init(&open);
    ag_api_response_open_write(&x->meta, &open);
    write_head(c, 200, "application/json", (int64_t)(open.len + d.rest_len), extra);
    conn_send(c, open.data, open.len);
    conn_write(c, d.rest, d.rest_len, v);
    request_done(c);
    ag_buf_deinit(&open);
    return true;
}

/* Answer from a cached value: a whole response, or the same chunks a generation streams. */
static void serve_cached(conn *c, exchange *x, ag_cache_val *v, const char *tier) {
    ag_rcache_value d;
    char extra[128];
    unsigned long long age = (ag_clock_mono_ns() - v->stored_ns) / 1000000000ull;
    snprintf(extra, sizeof extra, "%sX-Cache: %s\r\nAge: %llu\r\n", x->req.stream ? "Cache-Control: no-cache\r\n" : "",
             tier, age);
    bool ok = x->req.stream ? ag_rcache_decode(v->data, v->len, &d) && (int)d.n == x->n_ch : send_stored(c, x, v, extra);
    if (!ok) {
        respond_status(c, 500, "server_error", NULL, "a response cache entry did not decode", NULL);
        return;
    }
    if (!x->req.stream) return;
    write_head(c, 200, "text/event-stream", -1, extra);
    ag_buf json;
    ag_buf_init(&json);
    for (uint32_t i = 0; i < d.n; i++) {
        if (x->req.kind == AG_API_CHAT) {
            ag_buf_reset(&json);
            ag_api_chunk_write(&x->meta, (int)i, true, "", 0, NULL, NULL, x->req.include_usage, &json);
            sse_send(c, &json);
        }
        ag_buf_reset(&json);
        ag_api_chunk_write(&x->meta, (int)i, false, d.ch[i].text, d.ch[i].len, NULL, NULL, x->req.include_usage, &json);
        sse_send(c, &json);
        ag_buf_reset(&json);
        ag_api_chunk_write(&x->meta, (int)i, false, "", 0, ag_api_finish_reason((ag_finish)d.ch[i].finish), NULL,
                           x->req.include_usage, &json);
        sse_send(c, &json);
    }
    stream_end(c, &x->meta, &d.usage, x->req.include_usage);
    ag_buf_deinit(&json);
}

/*
 * The response cache's part of a generation request: look it up (unless
 * not cacheable, or Cache-Control: no-cache) and answer a hit; otherwise say
 * how a generated answer is labelled and whether it is stored (not with
 * no-store).  True when the request was answered from the cache.
 */
static bool cache_lookup(conn *c, exchange *x) {
    server *s = c->s;
    ag_str cc = ag_http_header_get(&c->req, "cache-control");
    bool no_cache = ag_http_list_has(cc, "no-cache"), no_store = ag_http_list_has(cc, "no-store");
    x->cache_verdict = CACHE_BYPASS;
    c->obs.cache = "bypass";
    if (!ag_rcache_cacheable(&x->req, s->o->cache_nondeterministic)) {
        s->cache_bypass++;
        return false;
    }
    ag_str tenant = bearer(&c->req);
    ag_rcache_key(&x->req, s->model.name, tenant.p, tenant.n, x->cache_key);
    if (no_cache) {
        s->cache_bypass++;
    } else {
        ag_cache_val *v = s->cache ? ag_cache_get(s->cache, x->cache_key, ag_clock_mono_ns()) : NULL;
        if (v) {
            c->obs.cache = "hit-l1";
            serve_cached(c, x, v, "HIT-L1");
            ag_cache_val_release(v);
            return true;
        }
        x->cache_verdict = CACHE_MISS;
        c->obs.cache = "miss";
    }
    x->cache_store = !no_store;
    x->cache_ttl_ns = (x->req.cache_ttl_s >= 0 ? (uint64_t)x->req.cache_ttl_s : s->o->cache_ttl_s) * 1000000000ull;
    x->cache_tag = ag_rcache_tag(x->req.cache_namespace);
    return false;
}

/* Submit every choice of x and start its response; on a refusal, answer the error and free x. */
static void submit_choices(conn *c, exchange *x) {
    server *s = c->s;
    ag_api_error err;
    x->ch = ag_xcalloc((size_t)x->n_ch, sizeof *x->ch);
    for (int i = 0; i < x->n_ch; i++) {
        choice *ch = &x->ch[i];
        ch->x = x;
        ag_buf_init(&ch->text);
        ag_api_logprobs_init(&ch->lp);
        ag_request rq;
        ag_err e;
        ag_api_engine_request(&x->req, &s->model, (size_t)i, &rq);
        ag_status st = ag_engine_submit(s->engine, &rq, &ch->id, &e);
        if (st != AG_OK) {
            if (st == AG_BUSY)
                ag_api_fail(&err, 429, "rate_limit_exceeded", NULL, "rate_limit_exceeded",
                            "The server is busy: %s. Retry later.", e.msg);
            else if (st == AG_NOMEM)
                ag_api_fail(&err, 503, "service_unavailable", NULL, NULL, "out of memory: %s", e.msg);
            else ag_api_fail(&err, 400, "invalid_request_error", NULL, NULL, "%s", e.msg);
            c->x = NULL;
            respond_error(c, &err);
            exchange_cancel(x);
            if (x->n_open == 0) exchange_free(x);
            return;
        }
        ch->open = true;
        x->n_open++;
        ag_map_put(&s->inflight, (const char *)&ch->id, sizeof ch->id, ch);
    }
    x->c = c;
    c->x = x;
    if (x->cache_store && !ag_map_get(&s->leaders, (const char *)x->cache_key, 32)) { /* others may follow it */
        ag_map_put(&s->leaders, (const char *)x->cache_key, 32, x);
        x->leading = true;
    }
    if (!x->req.stream) return;
    char extra[96];
    const char *verdict = cache_headers[x->cache_verdict];
    snprintf(extra, sizeof extra, "Cache-Control: no-cache\r\n%s", verdict ? verdict : "");
    write_head(c, 200, "text/event-stream", -1, extra);
    if (x->req.kind != AG_API_CHAT) return;
    ag_buf json;
    ag_buf_init(&json);
    for (int i = 0; i < x->n_ch; i++) { /* OpenAI's first chunk: the role, and empty content */
        ag_buf_reset(&json);
        ag_api_chunk_write(&x->meta, i, true, "", 0, NULL, NULL, x->req.include_usage, &json);
        sse_send(c, &json);
    }
    ag_buf_deinit(&json);
}

/* Wait for an identical request already generating (single flight); true when x now follows one. */
static bool follow(conn *c, exchange *x) {
    server *s = c->s;
    exchange *l = ag_map_get(&s->leaders, (const char *)x->cache_key, 32);
    if (!l || s->o->cache_coalesce_ms == 0) return false;
    l->followers = ag_xrealloc(l->followers, (size_t)(l->n_followers + 1) * sizeof *l->followers);
    l->followers[l->n_followers++] = x;
    x->leader = l;
    x->t_follow_ns = ag_clock_mono_ns();
    x->c = c;
    c->x = x;
    c->obs.cache = "coalesced";
    if (!uv_is_active((uv_handle_t *)&s->follow_timer)) uv_timer_start(&s->follow_timer, on_follow_timer, 50, 50);
    return true;
}

/* A follower's wait is over: answer it from its leader's result, or (none) let it generate on its own. */
static void release_follower(exchange *f, ag_cache_val *value) {
    conn *c = f->c;
    f->leader = NULL;
    if (!c) {
        exchange_free(f);
        return;
    }
    if (value) {
        c->x = NULL;
        serve_cached(c, f, value, "HIT-L1");
        exchange_free(f);
        process(c); /* a pipelined request may be waiting */
    } else if (c->s->draining) {
        c->x = NULL;
        exchange_free(f);
        respond_status(c, 503, "service_unavailable", NULL, "The server is shutting down.", "Retry-After: 1\r\n");
    } else {
        submit_choices(c, f);
    }
}

/* A cache miss: wait for an identical request in flight, or generate. */
static void generate(conn *c, exchange *x) {
    if (x->cache_store && follow(c, x)) return;
    submit_choices(c, x);
}

/* Redis's answer to an L1 miss: a hit is promoted into L1 and served; otherwise generate. */
static void on_l2_get(void *ctx, ag_cache_val *v) {
    exchange *x = ctx;
    conn *c = x->c;
    server *s = x->s;
    if (!c) { /* the client left while Redis was asked */
        exchange_free(x);
        return;
    }
    c->x = NULL;
    if (v) {
        if (s->cache) ag_cache_put_val(s->cache, x->cache_key, v, x->cache_ttl_ns, x->cache_tag);
        c->obs.cache = "hit-l2";
        serve_cached(c, x, v, "HIT-L2");
        exchange_free(x);
        process(c); /* a pipelined request may be waiting */
        return;
    }
    generate(c, x);
}

/* POST /v1/chat/completions and /v1/completions. */
static void start_generation(conn *c, ag_api_kind kind, const char *body, size_t len) {
    server *s = c->s;
    exchange *x = ag_xcalloc(1, sizeof *x);
    x->s = s;
    x->t_start_ns = c->obs.t_start_ns;
    ag_arena_init(&x->arena, 16384);
    s->n_exchanges++;
    ag_api_error err;
    if (ag_api_request_parse(&s->model, kind, body, len, &x->arena, &x->req, &err) != AG_OK) {
        respond_error(c, &err);
        exchange_free(x);
        return;
    }
    x->n_ch = (int)(x->req.n_prompts * (size_t)x->req.n);
    ag_api_meta_init(&x->meta, kind, s->model.name, ++s->n_requests);
    if ((s->cache || s->l2) && cache_lookup(c, x)) {
        exchange_free(x);
        return;
    }
    if (s->l2 && x->cache_verdict == CACHE_MISS) { /* L1 missed: ask Redis */
        x->c = c;
        c->x = x;
        ag_l2_get(s->l2, x->cache_key, x->cache_tag, on_l2_get, x); /* may answer at once */
        return;
    }
    generate(c, x);
}

/* Followers that waited past --cache-coalesce-timeout generate on their own. */
static void on_follow_timer(uv_timer_t *t) {
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

/* ---- routes --------------------------------------------------------------------------- */

/* key == want in time that depends only on want's length, so timing tells nothing of how much matched. */
static bool key_equal(ag_str key, const char *want) {
    size_t n = strlen(want);
    unsigned diff = (unsigned)(n ^ key.n);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < key.n ? key.p[i] : 0);
    return diff == 0;
}

/* Every key is compared, so timing tells nothing of which one matched. */
static bool authorized(const server *s, const ag_http_request *req) {
    if (!s->o->n_api_keys) return true;
    ag_str key = bearer(req);
    if (!key.p) return false;
    bool ok = false;
    for (size_t k = 0; k < s->o->n_api_keys; k++) ok |= key_equal(key, s->o->api_keys[k]);
    return ok;
}

static void route_health(conn *c) {
    server *s = c->s;
    ag_buf b;
    ag_buf_init(&b);
    const char *state = s->draining ? "draining" : s->ready ? "ok" : "loading";
    ag_buf_appendf(&b, "{\"status\":\"%s\"", state);
    if (s->engine && s->ready) { /* the engine's load, for probes and tests (the metrics issue adds /metrics) */
        ag_engine_stats st;
        ag_engine_stats_get(s->engine, &st);
        ag_buf_appendf(&b, ",\"requests_running\":%d,\"requests_waiting\":%d,\"kv_blocks_used\":%zu,\"kv_blocks_total\":%zu",
                       st.running, st.waiting, st.kv_used, st.kv_blocks);
    }
    ag_buf_append_char(&b, '}');
    respond_json(c, s->ready && !s->draining ? 200 : 503, &b, s->ready && !s->draining ? NULL : "Retry-After: 1\r\n");
    ag_buf_deinit(&b);
}

static void model_object(server *s, ag_jw *w) {
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "id");
    ag_jw_strc(w, s->model.name);
    ag_jw_keyc(w, "object");
    ag_jw_strc(w, "model");
    ag_jw_keyc(w, "created");
    ag_jw_int(w, (int64_t)(ag_clock_wall_ns() / 1000000000ull));
    ag_jw_keyc(w, "owned_by");
    ag_jw_strc(w, "autoglm");
    ag_jw_keyc(w, "max_model_len");
    ag_jw_int(w, s->model.ctx);
    ag_jw_obj_end(w);
}

static void route_models(conn *c, ag_str id) {
    server *s = c->s;
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
    if (id.p) {
        if (!ag_str_eq_cstr(id, s->model.name)) {
            ag_api_error e;
            ag_api_fail(&e, 404, "invalid_request_error", "model", "model_not_found", "The model `%.*s` does not exist.",
                        (int)(id.n > 200 ? 200 : id.n), id.p);
            respond_error(c, &e);
            ag_buf_deinit(&b);
            return;
        }
        model_object(s, &w);
    } else {
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "object");
        ag_jw_strc(&w, "list");
        ag_jw_keyc(&w, "data");
        ag_jw_arr_begin(&w);
        model_object(s, &w);
        ag_jw_arr_end(&w);
        ag_jw_obj_end(&w);
    }
    respond_json(c, 200, &b, NULL);
    ag_buf_deinit(&b);
}

/* The response cache's metrics, in Prometheus text format (promtool-clean: HELP and TYPE for each family). */
static void render_cache_metrics(server *s, ag_buf *b) {
    ag_cache_stats cs = s->cache ? ag_cache_stats_get(s->cache) : (ag_cache_stats){0};
    ag_l2_stats l2 = s->l2 ? ag_l2_stats_get(s->l2) : (ag_l2_stats){0};
    static const char *const kinds[] = {"counter", "gauge"};
    enum { PER_TIER, L1_ONLY, UNLABELED, REDIS }; /* each tier's rows only when it is there; REDIS: unlabeled */
    const struct {
        const char *name, *help;
        int kind, shape;
        uint64_t l1, other; /* other: the l2 tier's value, or the unlabeled value */
    } m[] = {
        {"autoglm_cache_hits_total", "Response cache hits by tier.", 0, PER_TIER, cs.hits, l2.hits},
        {"autoglm_cache_misses_total", "Response cache lookups that missed, by tier.", 0, PER_TIER, cs.misses, l2.misses},
        {"autoglm_cache_evictions_total", "Entries evicted to stay within the size bound.", 0, L1_ONLY, cs.evictions, 0},
        {"autoglm_cache_admission_rejections_total", "Entries W-TinyLFU declined to admit.", 0, L1_ONLY, cs.rejections, 0},
        {"autoglm_cache_bytes", "Bytes held by the in-process tier.", 1, L1_ONLY, cs.bytes, 0},
        {"autoglm_cache_entries", "Entries in the in-process tier.", 1, L1_ONLY, cs.entries, 0},
        {"autoglm_cache_bypass_total", "Generation requests not looked up (not cacheable, or no-cache).", 0, UNLABELED,
         0, s->cache_bypass},
        {"autoglm_cache_redis_errors_total", "Redis commands that failed.", 0, REDIS, 0, l2.errors},
        {"autoglm_cache_redis_timeouts_total", "Redis commands answered as misses after --redis-timeout-ms.", 0, REDIS,
         0, l2.timeouts},
        {"autoglm_cache_redis_short_circuits_total", "Redis commands skipped while the breaker was open or Redis gone.",
         0, REDIS, 0, l2.short_circuits},
        {"autoglm_cache_redis_reconnects_total", "Attempts to reconnect to Redis.", 0, REDIS, 0, l2.reconnects},
        {"autoglm_cache_redis_breaker_open", "1 while the Redis circuit breaker is open or half-open.", 1, REDIS, 0,
         l2.breaker && strcmp(l2.breaker, "closed") != 0},
        {"autoglm_cache_redis_connected", "1 while connected to Redis.", 1, REDIS, 0, l2.connected},
    };
    for (size_t i = 0; i < sizeof m / sizeof *m; i++) {
        if ((m[i].shape == REDIS && !s->l2) || (m[i].shape == L1_ONLY && !s->cache)) continue;
        ag_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", m[i].name, m[i].help, m[i].name, kinds[m[i].kind]);
        if (m[i].shape >= UNLABELED) {
            ag_buf_appendf(b, "%s %llu\n", m[i].name, (unsigned long long)m[i].other);
            continue;
        }
        if (s->cache) ag_buf_appendf(b, "%s{tier=\"l1\"} %llu\n", m[i].name, (unsigned long long)m[i].l1);
        if (m[i].shape == PER_TIER && s->l2) ag_buf_appendf(b, "%s{tier=\"l2\"} %llu\n", m[i].name, (unsigned long long)m[i].other);
    }
}

static void route_metrics(conn *c) {
    server *s = c->s;
    ag_engine_stats st;
    if (s->ready) ag_engine_stats_get(s->engine, &st);
    ag_buf b;
    ag_buf_init(&b);
    ag_metrics_render(&s->metrics, s->ready ? &st : NULL, &b);
    if (s->cache || s->l2) render_cache_metrics(s, &b);
    respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "", b.len, NULL);
    ag_buf_deinit(&b);
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

/* GET /v1/cache/stats: each tier's counters ({"enabled": false} without a cache; "l1": null with Redis
 * alone). */
static void route_cache_stats(conn *c) {
    server *s = c->s;
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
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
            if (l2.last_error[0])
                ag_jw_strc(&w, l2.last_error);
            else
                ag_jw_null(&w);
            ag_jw_obj_end(&w);
        }
        write_counts(&w, &(named_count){"bypass", s->cache_bypass}, 1);
    }
    ag_jw_obj_end(&w);
    respond_json(c, 200, &b, NULL);
    ag_buf_deinit(&b);
}

/* DELETE /v1/cache[?namespace=NAME]: drop a namespace's entries or all; only with the admin key. */
static void route_cache_delete(conn *c) {
    server *s = c->s;
    const char *admin = s->o->admin_key;
    if (!admin || !key_equal(bearer(&c->req), admin)) {
        respond_status(c, admin ? 401 : 403, "invalid_request_error", admin ? "invalid_api_key" : "forbidden",
                       admin ? "DELETE /v1/cache needs the admin key as 'Authorization: Bearer KEY'."
                             : "DELETE /v1/cache is disabled: the server has no --admin-key.",
                       NULL);
        return;
    }
    size_t removed = 0;
    bool l2 = false;
    ag_str q = c->req.query;
    if (ag_str_starts_with(q, AG_STR_LIT("namespace=")) && q.n > 10 && q.n < 10 + 129) {
        char ns[140];
        snprintf(ns, sizeof ns, "%.*s", (int)(q.n - 10), q.p + 10);
        removed = s->cache ? ag_cache_remove_tag(s->cache, ag_rcache_tag(ns)) : 0;
        l2 = s->l2 && ag_l2_delete(s->l2, false, ag_rcache_tag(ns));
    } else {
        if (s->cache) removed = ag_cache_stats_get(s->cache).entries, ag_cache_clear(s->cache);
        l2 = s->l2 && ag_l2_delete(s->l2, true, 0);
    }
    ag_buf b;
    ag_buf_init(&b);
    /* L1 is cleared now; Redis in the background (SCAN and UNLINK batches) */
    ag_buf_appendf(&b, "{\"deleted\":%zu,\"redis\":\"%s\"}", removed, !s->l2 ? "none" : l2 ? "deleting" : "unavailable");
    respond_json(c, 200, &b, NULL);
    ag_buf_deinit(&b);
}

typedef ag_status (*tok_fn)(const ag_api_model *, const char *, size_t, ag_arena *, ag_buf *, ag_api_error *);

static void route_tokens(conn *c, tok_fn fn, const char *body, size_t len) {
    ag_arena a;
    ag_arena_init(&a, 4096);
    ag_buf b;
    ag_buf_init(&b);
    ag_api_error e;
    if (fn(&c->s->model, body, len, &a, &b, &e) == AG_OK) respond_json(c, 200, &b, NULL);
    else respond_error(c, &e);
    ag_buf_deinit(&b);
    ag_arena_deinit(&a);
}


static const struct {
    const char *path, *method, *allow;
    bool prefix;
} routes[R_COUNT] = {
    [R_HEALTH] = {"/health", "GET", "Allow: GET, HEAD\r\n", false},
    [R_MODELS] = {"/v1/models", "GET", "Allow: GET, HEAD\r\n", false},
    [R_MODEL] = {"/v1/models/", "GET", "Allow: GET, HEAD\r\n", true},
    [R_CHAT] = {"/v1/chat/completions", "POST", "Allow: POST\r\n", false},
    [R_COMPLETIONS] = {"/v1/completions", "POST", "Allow: POST\r\n", false},
    [R_TOKENIZE] = {"/tokenize", "POST", "Allow: POST\r\n", false},
    [R_DETOKENIZE] = {"/detokenize", "POST", "Allow: POST\r\n", false},
    [R_METRICS] = {"/metrics", "GET", "Allow: GET, HEAD\r\n", false},
    [R_CACHE_STATS] = {"/v1/cache/stats", "GET", "Allow: GET, HEAD\r\n", false},
    [R_CACHE] = {"/v1/cache", "DELETE", "Allow: DELETE\r\n", false},
};

/* A complete request is in the buffer: route it.  Every path ends in a response or a started exchange. */
static void dispatch(conn *c) {
    server *s = c->s;
    const ag_http_request *req = &c->req;
    const char *body = c->in.data + req->head_len;
    int r = 0;
    for (; r < R_COUNT; r++) {
        ag_str want = ag_str_from_cstr(routes[r].path);
        if (routes[r].prefix ? ag_str_starts_with(req->path, want) && req->path.n > want.n : ag_str_eq(req->path, want))
            break;
    }
    c->obs.route = r;
    if (r == R_COUNT) {
        char msg[160];
        snprintf(msg, sizeof msg, "Unknown route: %.*s %.*s", (int)(req->method.n > 16 ? 16 : req->method.n),
                 req->method.p, (int)(req->path.n > 100 ? 100 : req->path.n), req->path.p);
        respond_status(c, 404, "invalid_request_error", "not_found", msg, NULL);
        return;
    }
    bool get = strcmp(routes[r].method, "GET") == 0;
    if (!ag_str_eq_cstr(req->method, routes[r].method) && !(get && c->head_only)) {
        char msg[160];
        snprintf(msg, sizeof msg, "Method %.*s is not allowed on %s", (int)(req->method.n > 16 ? 16 : req->method.n),
                 req->method.p, routes[r].path);
        respond_status(c, 405, "invalid_request_error", "method_not_allowed", msg, routes[r].allow);
        return;
    }
    if (r == R_HEALTH) return route_health(c);
    if (r == R_METRICS) return route_metrics(c); /* open, like /health: scrapers rarely carry keys */
    if (r == R_CACHE) return route_cache_delete(c);
    if (!authorized(s, req)) {
        respond_status(c, 401, "invalid_request_error", "invalid_api_key",
                       "Incorrect API key provided. Send it as 'Authorization: Bearer KEY'.", NULL);
        return;
    }
    if (!s->ready || s->draining) {
        respond_status(c, 503, "service_unavailable", NULL,
                       s->draining ? "The server is shutting down." : "The model is still loading.",
                       "Retry-After: 1\r\n");
        return;
    }
    switch (r) {
    case R_MODELS: return route_models(c, (ag_str){NULL, 0});
    case R_MODEL: return route_models(c, (ag_str){req->path.p + 11, req->path.n - 11});
    case R_CHAT: return start_generation(c, AG_API_CHAT, body, c->body_len);
    case R_COMPLETIONS: return start_generation(c, AG_API_COMPLETION, body, c->body_len);
    case R_TOKENIZE: return route_tokens(c, ag_api_tokenize, body, c->body_len);
    case R_CACHE_STATS: return route_cache_stats(c);
    default: return route_tokens(c, ag_api_detokenize, body, c->body_len);
    }
}

/* ---- connections ------------------------------------------------------------------------ */

/* Between requests the idle timeout runs; from a request's first byte until it is complete, the read timeout. */
static void arm_timer(conn *c) {
    const ag_server_opts *o = c->s->o;
    if (c->state == C_CLOSING) return;
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
    if (c->state == C_CLOSING) {
        conn_close(c); /* the graceful close took too long */
    } else if (c->t_start) {
        if (!c->obs.active) begin_obs(c, NULL);
        http_fail(c, 408, "the request did not arrive within the read timeout");
        conn_flush(c);
    } else {
        conn_close(c);
    }
}

static void on_conn_closed(uv_handle_t *h) {
    conn *c = h->data;
    if (--c->handles) return;
    ag_buf_deinit(&c->in);
    ag_buf_deinit(&c->out);
    free(c->headers);
    free(c);
}

static void conn_close(conn *c) {
    if (c->closed) return;
    c->closed = true;
    server *s = c->s;
    atomic_fetch_sub_explicit(&s->metrics.connections_open, 1, memory_order_relaxed);
    if (c->obs.active && c->state == C_BUSY) finish_obs(c, 499); /* nginx's "client closed request" */
    if (c->x) { /* the client left mid-generation: stop it, freeing its KV blocks (unless others wait for it) */
        c->x->c = NULL;
        if (!c->x->n_followers) exchange_cancel(c->x);
        c->x = NULL;
    }
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    maybe_stop(s);
}

/* Move the parser as far as the buffered bytes allow, serving each complete request in order. */
static void process(conn *c) {
    const ag_http_limits *lim = &c->s->o->limits;
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
            c->head_only = st == AG_OK && ag_str_eq_cstr(c->req.method, "HEAD");
            begin_obs(c, st == AG_OK ? &c->req : NULL);
            if (st != AG_OK) {
                c->req.version_minor = 1;
                http_fail(c, herr.status, herr.reason);
                break;
            }
            c->keep_alive = c->req.keep_alive;
            if (c->req.content_length > (int64_t)lim->max_body) {
                http_fail(c, 413, "request body too large");
                break;
            }
            c->state = C_BODY;
            bool body_due = c->req.chunked || c->req.content_length > 0;
            if (body_due && c->req.expect_continue && c->in.len == c->req.head_len) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                conn_send(c, cont, sizeof cont - 1);
            }
            continue;
        }
        size_t at = c->req.head_len;
        if (c->req.chunked) {
            ag_http_error herr;
            ag_status st = ag_http_chunked_decode(&c->chunks, c->in.data + at, c->in.len - at, lim->max_body,
                                                  lim->max_header_bytes, &herr);
            if (st == AG_AGAIN) break;
            if (st != AG_OK) {
                http_fail(c, herr.status, herr.reason);
                break;
            }
            c->body_len = c->chunks.dst, c->consumed = at + c->chunks.src;
        } else {
            size_t cl = c->req.content_length > 0 ? (size_t)c->req.content_length : 0;
            if (c->in.len - at < cl) break;
            c->body_len = cl, c->consumed = at + cl;
        }
        c->state = C_BUSY;
        dispatch(c);
    }
    arm_timer(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    conn *c = h->data;
    if (ag_buf_reserve(&c->in, 65536) != AG_OK) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    (void)buf;
    conn *c = st->data;
    if (n < 0) { /* EOF or an error: the client is gone */
        conn_close(c);
        return;
    }
    if (n == 0) return;
    if (c->state == C_CLOSING) return; /* lingering: dropped */
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = '\0';
    if (c->state == C_BUSY) {
        /* pipelined bytes wait; past a whole request's worth, stop reading until this one is done */
        const ag_http_limits *lim = &c->s->o->limits;
        if (c->in.len > lim->max_header_bytes + lim->max_body) uv_read_stop(st);
        return;
    }
    if (c->state != C_CLOSING) process(c);
}

static void on_connection(uv_stream_t *listener, int status) {
    server *s = listener->data;
    if (status < 0) return;
    conn *c = ag_xcalloc(1, sizeof *c);
    c->s = s;
    c->headers = ag_xcalloc(s->o->limits.max_headers ? s->o->limits.max_headers : 1, sizeof *c->headers);
    ag_buf_init(&c->in);
    ag_buf_init(&c->out);
    c->in.max_len = s->o->limits.max_header_bytes + s->o->limits.max_body + 65536 * 2;
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
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (s->n_conns > s->o->max_connections) { /* over the cap: say so and close */
        c->req.version_minor = 1;
        begin_obs(c, NULL);
        respond_status(c, 503, "service_unavailable", NULL, "too many connections", "Retry-After: 1\r\n");
        return;
    }
    arm_timer(c);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void close_handle(uv_handle_t *h) {
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void close_walked(uv_handle_t *h, void *arg) {
    (void)arg;
    close_handle(h);
}

/* Draining and nothing left in flight: end every connection and let the loop run out. */
static void maybe_stop(server *s) {
    if (!s->draining || s->stopped || s->n_exchanges) return;
    s->stopped = true;
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == C_BUSY) continue; /* cannot be: no exchanges are left */
        conn_end(c);
    }
    close_handle((uv_handle_t *)&s->drain_timer);
    close_handle((uv_handle_t *)&s->follow_timer);
    close_handle((uv_handle_t *)&s->sigterm);
    close_handle((uv_handle_t *)&s->sigint);
    ag_l2_destroy(s->l2); /* its connection's handle would keep the loop running */
    s->l2 = NULL;
    if (s->poll_started) close_handle((uv_handle_t *)&s->engine_poll);
    ag_logf(AG_LOG_INFO, "drained; exiting");
}

static void on_drain_timeout(uv_timer_t *t) {
    server *s = t->data;
    ag_logf(AG_LOG_WARN, "drain timeout: cancelling %zu requests still running", s->n_exchanges);
    for (conn *c = s->conns; c; c = c->next)
        if (c->x) exchange_cancel(c->x);
}

static void begin_drain(server *s) {
    if (s->draining) return;
    s->draining = true;
    ag_logf(AG_LOG_INFO, "draining: no new connections, %zu requests in flight", s->n_exchanges);
    close_handle((uv_handle_t *)&s->listener);
    /* open connections stay until the end: a request they send meanwhile is answered 503 and closes them */
    uv_timer_start(&s->drain_timer, on_drain_timeout, s->o->drain_timeout_ms, 0);
    if (!s->load_status && s->engine) maybe_stop(s);
}

static void on_signal(uv_signal_t *h, int signum) {
    server *s = h->data;
    if (s->draining) { /* a second signal: stop now */
        ag_logf(AG_LOG_WARN, "signal %d during drain: exiting now", signum);
        s->exit_code = 1;
        uv_stop(&s->loop);
        return;
    }
    begin_drain(s);
}

static void load_model(uv_work_t *w) {
    server *s = w->data;
    s->load_status = ag_engine_create(&s->o->engine, &s->engine, &s->load_err);
}

static ag_chat_template pick_template(server *s) {
    if (s->o->chat_template) return (ag_chat_template)ag_chat_template_from_name(s->o->chat_template);
    const char *t = NULL;
    size_t n = 0;
    if (!ag_engine_meta_str(s->engine, "tokenizer.chat_template", &t, &n)) return AG_CHAT_TEMPLATE_CHATML;
    return ag_chat_template_detect((ag_str){t, n});
}

/* The chat turn's end marker as one special token, when the vocabulary has it. */
static int32_t end_token(server *s, ag_chat_template t) {
    const char *text = ag_chat_template_end(t);
    ag_ids ids = {0};
    int32_t id = -1;
    if (ag_tokenize(s->model.tok, text, strlen(text), false, true, &ids, NULL) == AG_OK && ids.n == 1) id = ids.v[0];
    free(ids.v);
    return id;
}

static void model_loaded(uv_work_t *w, int status) {
    server *s = w->data;
    (void)status;
    if (s->load_status != AG_OK) {
        ag_logf(AG_LOG_ERROR, "cannot load the model: %s", s->load_err.msg);
        s->exit_code = 1;
        s->draining = true;
        s->stopped = true;
        close_handle((uv_handle_t *)&s->listener);
        close_handle((uv_handle_t *)&s->drain_timer);
        close_handle((uv_handle_t *)&s->follow_timer);
        close_handle((uv_handle_t *)&s->sigterm);
        close_handle((uv_handle_t *)&s->sigint);
        ag_l2_destroy(s->l2);
        s->l2 = NULL;
        for (conn *c = s->conns, *next; c; c = next) next = c->next, conn_close(c);
        return;
    }
    s->model.tok = ag_engine_tokenizer(s->engine);
    s->model.ctx = ag_engine_ctx(s->engine);
    s->model.n_vocab = ag_engine_n_vocab(s->engine);
    s->model.tmpl = pick_template(s);
    s->model.end_token = end_token(s, s->model.tmpl);
    uv_poll_init(&s->loop, &s->engine_poll, ag_engine_event_fd(s->engine));
    s->engine_poll.data = s;
    uv_poll_start(&s->engine_poll, UV_READABLE, on_engine_readable);
    s->poll_started = true;
    s->ready = true;
    ag_logf(AG_LOG_INFO, "ready: model %s, context %d, chat template %s", s->model.name, s->model.ctx,
            ag_chat_template_name(s->model.tmpl));
    if (s->o->log_file) fprintf(stderr, "autoglm serve: ready: model %s\n", s->model.name); /* logs go to the file */
    maybe_stop(s); /* a signal during the load */
}

static void stem(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0) n -= 5;
    snprintf(out, cap, "%.*s", (int)n, base);
}

static int listen_on(server *s) {
    struct sockaddr_storage addr;
    int r = uv_ip4_addr(s->o->host, s->o->port, (struct sockaddr_in *)&addr);
    if (r < 0) r = uv_ip6_addr(s->o->host, s->o->port, (struct sockaddr_in6 *)&addr);
    if (r < 0) {
        ag_logf(AG_LOG_ERROR, "--host %s is not an IP address", s->o->host);
        return -1;
    }
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    if ((r = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) < 0 ||
        (r = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection)) < 0) {
        ag_logf(AG_LOG_ERROR, "cannot listen on %s:%d: %s", s->o->host, s->o->port, uv_strerror(r));
        return -1;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    int port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    ag_logf(AG_LOG_INFO, "listening on http://%s:%d (model loading)", s->o->host, port);
    if (s->o->log_file) fprintf(stderr, "autoglm serve: listening on http://%s:%d (model loading)\n", s->o->host, port);
    return 0;
}

int ag_server_run(const ag_server_opts *o) {
    server *s = ag_xcalloc(1, sizeof *s);
    s->o = o;
    if (o->served_model_name) snprintf(s->model_name, sizeof s->model_name, "%s", o->served_model_name);
    else stem(o->engine.model_path, s->model_name, sizeof s->model_name);
    s->model.name = s->model_name;
    ag_metrics_init(&s->metrics, route_labels, sizeof route_labels / sizeof route_labels[0]);
    if (o->cache_mb) s->cache = ag_cache_create(o->cache_mb << 20, AG_CACHE_WTINYLFU);
    ag_map_init(&s->leaders);
    s->wall_minus_mono = (int64_t)ag_clock_wall_ns() - (int64_t)ag_clock_mono_ns();
    FILE *log_out = stderr;
    if (o->log_file && !(log_out = fopen(o->log_file, "a"))) {
        fprintf(stderr, "autoglm serve: %s: cannot open the log file\n", o->log_file);
        free(s);
        return 1;
    }
    ag_log_configure((ag_log_format)o->log_format, (ag_log_level)o->log_level, log_out);
    s->logq = ag_logq_create(log_out, 4u << 20, &s->metrics.log_dropped);
    if (s->logq) ag_log_set_sink(ag_logq_push, s->logq);
    if (o->otlp_endpoint) {
        ag_err err;
        ag_otlp_params op = {.endpoint = o->otlp_endpoint, .service = "autoglm",
                             .exported = &s->metrics.spans_exported, .dropped = &s->metrics.spans_dropped};
        if (ag_otlp_create(&op, &s->otlp, &err) != AG_OK) {
            ag_logf(AG_LOG_ERROR, "%s", err.msg);
            ag_log_set_sink(NULL, NULL);
            ag_logq_destroy(s->logq);
            if (log_out != stderr) fclose(log_out);
            free(s);
            return 1;
        }
    }
    ag_map_init(&s->inflight);
    ag_buf_init(&s->scratch);
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&s->loop);
    int rc = 0;
    if (o->redis_url) {
        char msg[160];
        ag_l2_opts lo = {.url = o->redis_url, .timeout_ms = o->redis_timeout_ms, .breaker_failures = 5,
                         .breaker_open_ms = 2000};
        if (!ag_l2_create(&s->loop, &lo, &s->l2, msg, sizeof msg)) {
            ag_logf(AG_LOG_ERROR, "%s", msg);
            rc = 1;
            goto done;
        }
    }
    if (listen_on(s) < 0) {
        close_handle((uv_handle_t *)&s->listener);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        rc = 1;
        goto done;
    }
    uv_check_init(&s->loop, &s->flusher);
    s->flusher.data = s;
    uv_check_start(&s->flusher, on_check);
    uv_unref((uv_handle_t *)&s->flusher); /* it never keeps the loop alive by itself */
    uv_timer_init(&s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    uv_timer_init(&s->loop, &s->follow_timer);
    s->follow_timer.data = s;
    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_init(&s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    s->load_work.data = s;
    uv_queue_work(&s->loop, &s->load_work, load_model, model_loaded);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    rc = s->exit_code;
done:
    ag_l2_destroy(s->l2);
    /* after uv_stop (a second signal) handles may still be open: close them so the loop can be closed */
    uv_walk(&s->loop, close_walked, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    ag_engine_destroy(s->engine);
    ag_cache_destroy(s->cache);
    ag_map_deinit(&s->leaders);
    ag_otlp_destroy(s->otlp);
    ag_log_set_sink(NULL, NULL);
    ag_logq_destroy(s->logq);
    if (log_out != stderr) fclose(log_out);
    ag_map_deinit(&s->inflight);
    ag_buf_deinit(&s->scratch);
    free(s->dirty);
    free(s);
    return rc;
}
