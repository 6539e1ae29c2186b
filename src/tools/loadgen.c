/*
 * loadgen.c - the load generator's loop (see loadgen.h).  One libuv loop
 * owns every connection.  A connection carries one request at a time
 * (keep-alive, no pipelining): it writes the request, reads the response
 * head, then the body (Content-Length, chunked, or to EOF), and for
 * text/event-stream bodies timestamps each event that carries output text.
 * A 1 ms-resolution check timer enforces per-request timeouts and the step's
 * end; open-loop arrivals are drawn ahead of time and released by a timer.
 */
#define _GNU_SOURCE /* memmem */
#include "tools/loadgen.h"

#include "base/arena.h"
#include "base/buf.h"
#include "base/str.h"
#include "http/http.h"
#include "json/json.h"

#include <math.h>
#include <netdb.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

static volatile sig_atomic_t g_interrupted;
void ag_lg_interrupt(void) { g_interrupted = 1; }
bool ag_lg_interrupted(void) { return g_interrupted != 0; }

typedef struct lg lg;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    lg *g;
    bool connected, busy, closing;
    struct conn *next_idle;
    ag_buf in;
    /* the request in flight */
    uint64_t t_intended, t_first, t_last_chunk, deadline;
    bool counted;
    size_t req; /* index into the step's requests */
    /* the response */
    bool head_done, chunked, to_eof, sse, close_after, done;
    int status;
    size_t body_off, content_length, scanned;
    ag_http_chunked dec;
    uint64_t in_tokens, out_tokens;
} conn;

struct lg {
    const ag_lg_step *s;
    ag_lg_result *r;
    uv_loop_t loop;
    uv_timer_t tick, arrivals;
    struct sockaddr_storage addr;
    conn **conns;
    int n_conns, cap_conns, open_conns;
    conn *idle;
    uint64_t t0, window_start, window_end, last_end, next_req, inflight;
    uint64_t started_counted, arrived_counted; /* requests mode: closed loop counts starts, open loop arrivals */
    uint64_t *pending; /* open loop: intended times of arrivals waiting for a connection */
    size_t n_pending, cap_pending;
    uint64_t next_arrival;
    uint64_t rng;
    bool stopping;
    uint64_t now; /* uv_hrtime() at the start of the current callback: one clock read per event */
    ag_arena arena;
    uint64_t last_progress;
};

/* ---- randomness for arrivals (xorshift64*, Marsaglia-Tsang Gamma) --------- */

static double uniform(lg *g) {
    g->rng ^= g->rng >> 12, g->rng ^= g->rng << 25, g->rng ^= g->rng >> 27;
    return ((g->rng * 2685821657736338717ull) >> 11) * 0x1.0p-53 + 0x1.0p-54;
}

static double normal(lg *g) { return sqrt(-2 * log(uniform(g))) * cos(6.283185307179586 * uniform(g)); }

static double gamma_draw(lg *g, double k) {
    if (k < 1) return gamma_draw(g, k + 1) * pow(uniform(g), 1 / k);
    double d = k - 1.0 / 3, c = 1 / sqrt(9 * d);
    for (;;) {
        double x = normal(g), v = 1 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = uniform(g);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v;
    }
}

/* The gap to the next arrival: mean 1/rate, Gamma(shape k) shaped; k = 1 is exponential (Poisson). */
static uint64_t next_gap_ns(lg *g) {
    double k = g->s->burstiness > 0 ? g->s->burstiness : 1;
    return (uint64_t)(gamma_draw(g, k) / (k * g->s->rate) * 1e9);
}

/* ---- accounting ---------------------------------------------------------------------- */

static void count_status(ag_lg_result *r, int status) {
    for (int i = 0; i < AG_LG_STATUS_SLOTS; i++) {
        if (r->statuses[i].status == status || r->statuses[i].status == 0) {
            r->statuses[i].status = status;
            r->statuses[i].n++;
            return;
        }
    }
}

typedef enum { END_OK, END_HTTP, END_TIMEOUT, END_CONN, END_PROTO, END_ABORT } end_kind;

static void send_next(conn *c);
static void conn_close(conn *c);
static void maybe_finish(lg *g);

static void request_end(conn *c, end_kind kind) {
    lg *g = c->g;
    ag_lg_result *r = g->r;
    uint64_t now = g->now;
    c->busy = false;
    g->inflight--;
    if (c->counted) {
        if (now > g->last_end) g->last_end = now;
        double e2e = (double)(now - c->t_intended) / 1e3;
        switch (kind) {
        case END_OK: r->ok++; break;
        case END_HTTP: r->http_error++, count_status(r, c->status); break;
        case END_TIMEOUT: r->timeout++; break;
        case END_CONN: r->conn_error++; break;
        case END_PROTO: r->proto_error++; break;
        case END_ABORT: r->aborted++; break;
        }
        if (kind == END_OK) {
            ag_hist_add(&r->e2e, (uint64_t)e2e);
            r->in_tokens += c->in_tokens, r->out_tokens += c->out_tokens;
            double ttft = c->t_first ? (double)(c->t_first - c->t_intended) / 1e3 : e2e;
            double tpot = c->out_tokens > 1 && c->t_first ? (e2e - ttft) / (double)(c->out_tokens - 1) : 0;
            if (c->t_first) ag_hist_add(&r->ttft, (uint64_t)ttft);
            if (tpot > 0) ag_hist_add(&r->tpot, (uint64_t)tpot);
            const ag_lg_slo *slo = &g->s->slo;
            if ((!slo->ttft_us || ttft <= slo->ttft_us) && (!slo->tpot_us || tpot <= slo->tpot_us) &&
                (!slo->e2e_us || e2e <= slo->e2e_us))
                r->good++;
        }
    }
}

/* ---- response parsing ------------------------------------------------------------------ */

typedef struct head_fields {
    ag_str content_length, transfer_encoding, content_type, connection, server;
} head_fields;

/* The response head's fields we act on, in one pass over its lines. */
static void read_head(const char *head, size_t len, head_fields *f) {
    static const struct {
        const char *name;
        size_t n, off;
    } want[] = {{"content-length", 14, offsetof(head_fields, content_length)},
                {"transfer-encoding", 17, offsetof(head_fields, transfer_encoding)},
                {"content-type", 12, offsetof(head_fields, content_type)},
                {"connection", 10, offsetof(head_fields, connection)},
                {"server", 6, offsetof(head_fields, server)}};
    memset(f, 0, sizeof *f);
    const char *p = memchr(head, '\n', len), *end = head + len;
    while (p && ++p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p)), *colon;
        if (!eol) break;
        if ((colon = memchr(p, ':', (size_t)(eol - p))))
            for (size_t i = 0; i < sizeof want / sizeof *want; i++)
                if ((size_t)(colon - p) == want[i].n && strncasecmp(p, want[i].name, want[i].n) == 0) {
                    ag_str *v = (ag_str *)((char *)f + want[i].off);
                    *v = ag_str_trim((ag_str){colon + 1, (size_t)(eol - colon - 1)});
                }
        p = eol;
    }
}

/* usage.{prompt,completion}_tokens of a JSON object, when present. */
static void read_usage(conn *c, const char *p, size_t n) {
    if (!c->g->s->openai) return;
    ag_arena_reset(&c->g->arena);
    ag_json_val *root;
    if (ag_json_parse(p, n, NULL, &c->g->arena, &root, NULL) != AG_OK) return;
    const ag_json_val *u = ag_json_obj_getc(root, "usage");
    int64_t v;
    if (ag_json_get_int(ag_json_obj_getc(u, "completion_tokens"), &v)) c->out_tokens = (uint64_t)v;
    if (ag_json_get_int(ag_json_obj_getc(u, "prompt_tokens"), &v)) c->in_tokens = (uint64_t)v;
    /* a stream chunk carrying output text: chat's delta.content or completions' text */
    const ag_json_val *ch = ag_json_arr_at(ag_json_obj_getc(root, "choices"), 0);
    ag_str text = ag_json_str(ag_json_obj_getc(ag_json_obj_getc(ch, "delta"), "content"));
    if (!text.n) text = ag_json_str(ag_json_obj_getc(ch, "text"));
    if (text.n && c->sse) {
        uint64_t now = c->g->now;
        if (!c->t_first) c->t_first = now;
        else if (c->counted) ag_hist_add(&c->g->r->itl, (now - c->t_last_chunk) / 1000);
        c->t_last_chunk = now;
    }
}

/* Events of an SSE body found so far: body[scanned..len). */
static void scan_sse(conn *c, const char *body, size_t len) {
    for (;;) {
        const char *p = body + c->scanned;
        size_t left = len - c->scanned;
        const char *end = NULL;
        for (size_t i = 0; i + 1 < left; i++)
            if (p[i] == '\n' && p[i + 1] == '\n') {
                end = p + i;
                break;
            }
        if (!end) return;
        if (end - p > 6 && memcmp(p, "data: ", 6) == 0 && !(end - p == 12 && memcmp(p + 6, "[DONE]", 6) == 0))
            read_usage(c, p + 6, (size_t)(end - p - 6));
        c->scanned += (size_t)(end - p) + 2;
    }
}

/* Returns false on a protocol error; sets c->done when the response is complete. */
static bool parse_response(conn *c) {
    char *d = c->in.data;
    if (!c->head_done) {
        char *e = memmem(d, c->in.len, "\r\n\r\n", 4);
        if (!e) return c->in.len < 65536;
        if (c->in.len < 12 || memcmp(d, "HTTP/1.", 7) != 0) return false;
        c->status = atoi(d + 9);
        size_t hl = (size_t)(e - d) + 4;
        head_fields h;
        read_head(d, hl, &h);
        ag_str cl = h.content_length, te = h.transfer_encoding, ct = h.content_type, cn = h.connection;
        c->chunked = te.n && ag_str_eq_cstr(te, "chunked");
        c->sse = ct.n >= 17 && strncmp(ct.p, "text/event-stream", 17) == 0;
        c->close_after = cn.n && strncasecmp(cn.p, "close", 5) == 0;
        char *sv = c->g->r->server;
        if (!sv[0] && h.server.n) snprintf(sv, sizeof c->g->r->server, "%.*s", (int)h.server.n, h.server.p);
        c->to_eof = !c->chunked && !cl.n;
        c->content_length = cl.n ? (size_t)strtoull(cl.p, NULL, 10) : 0;
        c->body_off = hl;
        c->head_done = true;
        if (c->status == 100) { /* an interim response: the real one follows */
            memmove(d, d + hl, c->in.len - hl);
            c->in.len -= hl;
            c->head_done = false;
            return parse_response(c);
        }
    }
    char *body = d + c->body_off;
    size_t raw = c->in.len - c->body_off;
    if (c->chunked) {
        ag_http_error err;
        ag_status st = ag_http_chunked_decode(&c->dec, body, raw, SIZE_MAX / 2, 4096, &err);
        if (st != AG_OK && st != AG_AGAIN) return false;
        if (c->sse) scan_sse(c, body, c->dec.dst);
        if (st == AG_OK) {
            if (!c->sse) read_usage(c, body, c->dec.dst);
            c->done = true;
        }
        return true;
    }
    if (c->sse) scan_sse(c, body, raw);
    if (!c->to_eof && raw >= c->content_length) {
        if (raw > c->content_length) return false; /* bytes nobody asked for */
        if (!c->sse) read_usage(c, body, raw);
        c->done = true;
    }
    return true;
}

/* ---- connections ------------------------------------------------------------------------ */

static void on_closed(uv_handle_t *h) {
    conn *c = h->data;
    lg *g = c->g;
    ag_buf_deinit(&c->in);
    for (int i = 0; i < g->n_conns; i++)
        if (g->conns[i] == c) g->conns[i] = g->conns[--g->n_conns];
    free(c);
    maybe_finish(g);
}

static void conn_close(conn *c) {
    if (c->closing) return;
    c->closing = true;
    c->g->open_conns--;
    if (c->busy) request_end(c, END_CONN);
    /* drop it from the idle list */
    for (conn **p = &c->g->idle; *p; p = &(*p)->next_idle)
        if (*p == c) {
            *p = c->next_idle;
            break;
        }
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static conn *conn_open(lg *g);

static bool more_to_send(lg *g) {
    if (g->stopping || g_interrupted) return false;
    if (g->s->duration_ns) return g->now < g->window_end;
    return (g->s->concurrency > 0 ? g->started_counted : g->arrived_counted) < g->s->requests;
}

/* Closed loop: the connection's next request; open loop: the next waiting arrival, else idle. */
static void after_response(conn *c) {
    lg *g = c->g;
    if (g->s->concurrency > 0) {
        if (more_to_send(g)) {
            c->t_intended = g->now;
            send_next(c);
        } else {
            conn_close(c);
        }
        return;
    }
    if (g->n_pending) { /* arrivals waiting for a connection, in order; their wait is part of their latency */
        c->t_intended = g->pending[0];
        memmove(g->pending, g->pending + 1, --g->n_pending * sizeof *g->pending);
        send_next(c);
    } else if (g->stopping) {
        conn_close(c);
    } else {
        c->next_idle = g->idle, g->idle = c;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    conn *c = h->data;
    (void)hint;
    if (ag_buf_reserve(&c->in, 65536) != AG_OK) {
        buf->base = NULL, buf->len = 0;
        return;
    }
    buf->base = c->in.data + c->in.len;
    buf->len = c->in.cap - c->in.len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    conn *c = s->data;
    (void)buf;
    c->g->now = uv_hrtime();
    if (n == 0) return;
    if (n < 0) {
        if (c->busy && n == UV_EOF && c->head_done && c->to_eof) { /* a body delimited by the close */
            parse_response(c);
            if (!c->sse) read_usage(c, c->in.data + c->body_off, c->in.len - c->body_off);
            request_end(c, c->status / 100 == 2 ? END_OK : END_HTTP);
        } else if (c->busy) {
            request_end(c, c->head_done || c->in.len ? END_PROTO : END_CONN);
        }
        conn_close(c);
        return;
    }
    c->in.len += (size_t)n;
    if (c->counted) c->g->r->bytes += (uint64_t)n;
    if (!c->busy) { /* bytes nobody asked for */
        conn_close(c);
        return;
    }
    if (!parse_response(c)) {
        request_end(c, END_PROTO);
        conn_close(c);
        return;
    }
    if (!c->done) return;
    request_end(c, c->status / 100 == 2 ? END_OK : END_HTTP);
    if (c->close_after) {
        /*
         * The server ends the connection after this response (Connection:
         * close, nginx's keepalive_requests): the next request goes on a new
         * one.  The new connection must be given its request here, or it
         * would sit open with nothing to send and the run would never end.
         */
        lg *g = c->g;
        conn_close(c);
        bool next = g->s->concurrency > 0 ? more_to_send(g) : g->n_pending > 0;
        conn *fresh = next ? conn_open(g) : NULL;
        if (fresh) after_response(fresh);
        return;
    }
    after_response(c);
}

static void on_written(uv_write_t *w, int status) {
    conn *c = w->data;
    c->g->now = uv_hrtime();
    if (status < 0 && c->busy && !c->closing) {
        request_end(c, END_CONN);
        conn_close(c);
    }
}

/* Write the assigned request (once connected). */
static void transmit(conn *c) {
    const ag_lg_requests *q = c->g->s->reqs;
    uv_buf_t b = uv_buf_init(q->data[c->req], (unsigned)q->len[c->req]);
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        request_end(c, END_CONN);
        conn_close(c);
    }
}

/* Give the connection the next request, intended at c->t_intended; counted when that falls in the window. */
static void send_next(conn *c) {
    lg *g = c->g;
    const ag_lg_requests *q = g->s->reqs;
    c->req = (size_t)(g->next_req++ % q->n);
    c->busy = true;
    g->inflight++;
    c->counted = c->t_intended >= g->window_start && c->t_intended < g->window_end &&
                 (g->s->duration_ns || g->s->concurrency <= 0 || g->started_counted < g->s->requests);
    if (c->counted) g->started_counted++, g->r->counted++;
    c->deadline = g->now + g->s->timeout_ns;
    c->in.len = 0;
    c->head_done = c->chunked = c->to_eof = c->sse = c->close_after = c->done = false;
    c->status = 0;
    c->body_off = c->content_length = c->scanned = 0;
    memset(&c->dec, 0, sizeof c->dec);
    c->in_tokens = c->out_tokens = 0;
    c->t_first = c->t_last_chunk = 0;
    if (c->connected) transmit(c); /* else on_connect does */
}

static void on_connect(uv_connect_t *req, int status) {
    conn *c = req->data;
    c->g->now = uv_hrtime();
    if (c->closing) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->connected = true;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->busy) transmit(c); /* the request assigned while connecting */
}

static conn *conn_open(lg *g) {
    conn *c = calloc(1, sizeof *c);
    c->g = g;
    ag_buf_init(&c->in);
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
    if (uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&g->addr, on_connect) != 0) {
        c->closing = true, g->open_conns--;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return NULL;
    }
    return c;
}

/* ---- the step's clock ---------------------------------------------------------------- */

static void print_progress(lg *g, bool final) {
    uint64_t now = uv_hrtime();
    if (!g->s->progress || (!final && now - g->last_progress < 250000000ull)) return;
    g->last_progress = now;
    const ag_lg_result *r = g->r;
    double el = now > g->window_start ? (double)(now - g->window_start) / 1e9 : 0;
    uint64_t done = r->ok + r->http_error + r->timeout + r->conn_error + r->proto_error;
    fprintf(stderr, "\r\033[K[%s] %s %.1f s: %.1f req/s, %llu done, %llu errors, %llu in flight", g->s->label,
            now < g->window_start ? "warm-up" : "measuring", el, el > 0 ? (double)done / el : 0.0,
            (unsigned long long)done, (unsigned long long)(done - r->ok), (unsigned long long)g->inflight);
    if (final) fputs("\r\033[K", stderr);
}

static void stop_sending(lg *g) {
    if (g->stopping) return;
    g->stopping = true;
    uv_timer_stop(&g->arrivals);
    while (g->idle) {
        conn *c = g->idle;
        g->idle = c->next_idle;
        conn_close(c);
    }
}

static void maybe_finish(lg *g) {
    if (!g->stopping) return;
    if (g->n_pending == 0 && g->inflight == 0 && g->open_conns == 0 && g->n_conns == 0) {
        uv_timer_stop(&g->tick);
        uv_close((uv_handle_t *)&g->tick, NULL);
        uv_close((uv_handle_t *)&g->arrivals, NULL);
    }
}

static void on_tick(uv_timer_t *t) {
    lg *g = t->data;
    uint64_t now = g->now = uv_hrtime();
    print_progress(g, false);
    if (g_interrupted) {
        stop_sending(g);
        g->n_pending = 0;
        g->r->interrupted = true;
        for (int i = g->n_conns - 1; i >= 0; i--) {
            conn *c = g->conns[i];
            if (c->busy) request_end(c, END_ABORT);
            conn_close(c);
        }
    }
    if (!more_to_send(g)) stop_sending(g); /* in-flight and waiting requests still finish */
    for (int i = g->n_conns - 1; i >= 0; i--) {
        conn *c = g->conns[i];
        if (c->busy && now > c->deadline) {
            request_end(c, END_TIMEOUT);
            conn_close(c);
        }
    }
    /* closed loop: keep the connection count (a connection lost is replaced) */
    if (g->s->concurrency > 0 && !g->stopping)
        for (int i = g->open_conns; i < g->s->concurrency; i++) {
            conn *c = conn_open(g);
            if (c) c->t_intended = g->now, send_next(c);
        }
    maybe_finish(g);
}

static void arrive(lg *g, uint64_t intended) {
    if (g->idle) {
        conn *c = g->idle;
        g->idle = c->next_idle;
        c->t_intended = intended;
        send_next(c);
    } else if (g->open_conns < g->s->max_connections) {
        conn *c = conn_open(g);
        if (c) c->t_intended = intended, send_next(c);
    } else {
        if (g->n_pending == g->cap_pending) {
            g->cap_pending = g->cap_pending ? 2 * g->cap_pending : 256;
            g->pending = realloc(g->pending, g->cap_pending * sizeof *g->pending);
        }
        g->pending[g->n_pending++] = intended;
    }
}

/* Open loop: release every arrival whose time has come, then sleep until the next. */
static void on_arrivals(uv_timer_t *t) {
    lg *g = t->data;
    uint64_t now = g->now = uv_hrtime();
    while (g->next_arrival <= now && more_to_send(g)) {
        if (g->next_arrival >= g->window_start) g->arrived_counted++;
        arrive(g, g->next_arrival);
        g->next_arrival += next_gap_ns(g);
    }
    if (!more_to_send(g)) return;
    uint64_t wait_ms = (g->next_arrival - now) / 1000000;
    uv_timer_start(&g->arrivals, on_arrivals, wait_ms, 0);
}

ag_status ag_lg_run(const ag_lg_step *s, ag_lg_result *r, char *msg, size_t msg_cap) {
    memset(r, 0, sizeof *r);
    ag_hist_init(&r->e2e), ag_hist_init(&r->ttft), ag_hist_init(&r->tpot), ag_hist_init(&r->itl);
    lg *g = calloc(1, sizeof *g);
    g->s = s, g->r = r;
    g->rng = s->seed * 0x9E3779B97F4A7C15ull + 1;
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(s->host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(msg, msg_cap, "cannot resolve %s: %s", s->host, gai_strerror(gai));
        free(g);
        return AG_EINVAL;
    }
    memcpy(&g->addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    ag_arena_init(&g->arena, 1 << 16);
    uv_loop_init(&g->loop);
    uv_timer_init(&g->loop, &g->tick);
    uv_timer_init(&g->loop, &g->arrivals);
    g->tick.data = g->arrivals.data = g;
    g->t0 = g->now = uv_hrtime();
    g->window_start = g->t0 + s->warmup_ns;
    g->window_end = s->duration_ns ? g->window_start + s->duration_ns : UINT64_MAX;
    g->last_end = g->window_start;
    uv_timer_start(&g->tick, on_tick, 1, 1);
    if (s->concurrency > 0) {
        for (int i = 0; i < s->concurrency; i++) {
            conn *c = conn_open(g);
            if (c) c->t_intended = g->now, send_next(c);
        }
    } else {
        g->next_arrival = g->t0;
        on_arrivals(&g->arrivals);
    }
    uv_run(&g->loop, UV_RUN_DEFAULT);
    print_progress(g, true);
    uv_loop_close(&g->loop);
    r->seconds = (double)(g->last_end - g->window_start) / 1e9;
    ag_arena_deinit(&g->arena);
    free(g->conns);
    free(g->pending);
    free(g);
    return AG_OK;
}
