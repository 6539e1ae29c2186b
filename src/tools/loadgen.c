/*
 * loadgen.c - the load generator's step (see loadgen.h and lg.h): requests
 * arrive (closed loop: one as another ends; open loop: drawn ahead of time
 * and released by a timer), each goes to a connection that can carry it
 * (lg_conn.c, lg_h2.c) or waits for one, and ends in exactly one bucket.  A
 * 1 ms check timer enforces per-request timeouts and the step's end.
 */
#define _GNU_SOURCE /* getaddrinfo, pthread types for uv.h */
#include "tools/lg.h"

#include "base/alloc.h"
#include "base/str.h"
#include "json/json.h"

#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t g_interrupted;
void ag_lg_interrupt(void) { g_interrupted = 1; }
bool ag_lg_interrupted(void) { return g_interrupted != 0; }

/* ---- requests ------------------------------------------------------------------------ */

void ag_lg_requests_add(ag_lg_requests *q, const char *method, const char *path, const char *headers, const char *body,
                        size_t body_len) {
    q->v = realloc(q->v, (q->n + 1) * sizeof *q->v);
    ag_lg_request *r = &q->v[q->n++];
    r->method = ag_xstrdup(method), r->path = ag_xstrdup(path), r->headers = ag_xstrdup(headers ? headers : "");
    r->body = body ? memcpy(ag_xmalloc(body_len + 1), body, body_len) : NULL, r->body_len = body ? body_len : 0;
}

void ag_lg_requests_free(ag_lg_requests *q) {
    for (size_t i = 0; i < q->n; i++) free(q->v[i].method), free(q->v[i].path), free(q->v[i].headers), free(q->v[i].body);
    free(q->v);
    q->v = NULL, q->n = 0;
}

/* Each request's HTTP/1.1 bytes, made once for the step. */
static void h1_prepare(lg *g) {
    const ag_lg_requests *q = g->s->reqs;
    g->h1_data = calloc(q->n, sizeof *g->h1_data);
    g->h1_len = calloc(q->n, sizeof *g->h1_len);
    for (size_t i = 0; i < q->n; i++) {
        const ag_lg_request *r = &q->v[i];
        ag_buf b;
        ag_buf_init(&b);
        ag_buf_appendf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n%s", r->method, r->path, g->authority, r->headers);
        if (r->body) ag_buf_appendf(&b, "Content-Length: %zu\r\n", r->body_len);
        ag_buf_append_str(&b, "\r\n");
        if (r->body) ag_buf_append(&b, r->body, r->body_len);
        g->h1_data[i] = ag_buf_detach(&b, &g->h1_len[i]);
    }
}

static void h1_unprepare(lg *g) {
    for (size_t i = 0; g->h1_data && i < g->s->reqs->n; i++) free(g->h1_data[i]);
    free(g->h1_data), free(g->h1_len);
}

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

void lg_note_server(lg *g, const char *p, size_t n) {
    char *sv = g->r->server;
    if (!sv[0] && n) snprintf(sv, sizeof g->r->server, "%.*s", (int)n, p);
}

void lg_conn_error(lg *g, const char *why) {
    if (!g->r->conn_why[0]) snprintf(g->r->conn_why, sizeof g->r->conn_why, "%s", why);
}

static void refill(lg *g);

static void wait_for_conn(lg *g, lg_wait w);

/* What a naive client retries: no answer in time, no connection, or the server saying "later" or failing. */
static bool retryable(const lg_xchg *x, lg_end kind) {
    return kind == END_TIMEOUT || kind == END_CONN || (kind == END_HTTP && (x->status == 429 || x->status >= 500));
}

void lg_xchg_end(lg_xchg *x, lg_end kind) {
    lg *g = x->g;
    ag_lg_result *r = g->r;
    uint64_t now = g->now;
    g->inflight--;
    if (kind == END_REFUSED && x->refusals >= LG_MAX_REFUSALS) kind = END_PROTO;
    if (kind == END_REFUSED && !g_interrupted) {
        r->refused += x->counted;
        wait_for_conn(g, (lg_wait){x->t_intended, x->req, x->attempt, x->refusals + 1, x->counted});
    } else if (x->attempt < g->s->retries && !g_interrupted && retryable(x, kind)) {
        r->retries += x->counted;
        wait_for_conn(g, (lg_wait){x->t_intended, x->req, x->attempt + 1, x->refusals, x->counted});
    } else if (x->counted) {
        if (now > g->last_end) g->last_end = now;
        double e2e = (double)(now - x->t_intended) / 1e3;
        switch (kind) {
        case END_OK: r->ok++; break;
        case END_HTTP: r->http_error++, count_status(r, x->status); break;
        case END_TIMEOUT: r->timeout++; break;
        case END_CONN: r->conn_error++; break;
        case END_PROTO: r->proto_error++; break;
        case END_ABORT: r->aborted++; break;
        case END_REFUSED: r->proto_error++; break; /* interrupted before it could be sent again */
        }
        if (kind == END_OK) {
            ag_hist_add(&r->e2e, (uint64_t)e2e);
            r->in_tokens += x->in_tokens, r->out_tokens += x->out_tokens;
            double ttft = x->t_first ? (double)(x->t_first - x->t_intended) / 1e3 : e2e;
            double tpot = x->out_tokens > 1 && x->t_first ? (e2e - ttft) / (double)(x->out_tokens - 1) : 0;
            if (x->t_first) ag_hist_add(&r->ttft, (uint64_t)ttft);
            if (tpot > 0) ag_hist_add(&r->tpot, (uint64_t)tpot);
            const ag_lg_slo *slo = &g->s->slo;
            if ((!slo->ttft_us || ttft <= slo->ttft_us) && (!slo->tpot_us || tpot <= slo->tpot_us) &&
                (!slo->e2e_us || e2e <= slo->e2e_us))
                r->good++;
        }
    }
    if (x->prev) x->prev->next = x->next;
    else g->flight = x->next;
    if (x->next) x->next->prev = x->prev;
    ag_buf_deinit(&x->body);
    free(x);
    refill(g);
}

/* ---- response bodies ------------------------------------------------------------------- */

/* usage.{prompt,completion}_tokens of a JSON object, when present. */
static void read_usage(lg_xchg *x, const char *p, size_t n) {
    if (!x->g->s->openai) return;
    ag_arena_reset(&x->g->arena);
    ag_json_val *root;
    if (ag_json_parse(p, n, NULL, &x->g->arena, &root, NULL) != AG_OK) return;
    const ag_json_val *u = ag_json_obj_getc(root, "usage");
    int64_t v;
    if (ag_json_get_int(ag_json_obj_getc(u, "completion_tokens"), &v)) x->out_tokens = (uint64_t)v;
    if (ag_json_get_int(ag_json_obj_getc(u, "prompt_tokens"), &v)) x->in_tokens = (uint64_t)v;
    /* a stream chunk carrying output text: chat's delta.content or completions' text */
    const ag_json_val *ch = ag_json_arr_at(ag_json_obj_getc(root, "choices"), 0);
    ag_str text = ag_json_str(ag_json_obj_getc(ag_json_obj_getc(ch, "delta"), "content"));
    if (!text.n) text = ag_json_str(ag_json_obj_getc(ch, "text"));
    if (text.n && x->sse) {
        uint64_t now = x->g->now;
        if (!x->t_first) x->t_first = now;
        else if (x->counted) ag_hist_add(&x->g->r->itl, (now - x->t_last_chunk) / 1000);
        x->t_last_chunk = now;
    }
}

/* Events of an SSE body found so far: body[scanned..len). */
static void scan_sse(lg_xchg *x, const char *body, size_t len) {
    ag_str d;
    while (ag_sse_next(body, len, &x->scanned, &d))
        if (d.p) read_usage(x, d.p, d.n);
}

void lg_body_read(lg_xchg *x, const char *body, size_t len, bool whole) {
    if (x->sse) scan_sse(x, body, len);
    else if (whole) read_usage(x, body, len);
}

/* ---- which connection carries a request ---------------------------------------------- */

static bool more_to_send(lg *g) {
    if (g->stopping || g_interrupted) return false;
    if (g->s->duration_ns) return g->now < g->window_end;
    return (g->s->concurrency > 0 ? g->started_counted : g->arrived_counted) < g->s->requests;
}

/*
 * A connection that can take a request now, opened when the cap allows;
 * NULL: none (the request waits).  HTTP/1.1: an idle connection.  HTTP/2:
 * the connection carrying the fewest streams, a new one while there are
 * fewer than --connections and every open one is busy (nghttp2 holds
 * streams past the server's SETTINGS_MAX_CONCURRENT_STREAMS until one ends).
 */
static lg_conn *pick_conn(lg *g) {
    if (!g->t->http2) {
        lg_conn *c = g->idle;
        if (c) g->idle = c->next_idle;
        else if (g->open_conns < g->conn_cap) c = lg_conn_open(g);
        return c;
    }
    lg_conn *best = NULL;
    for (int i = 0; i < g->n_conns; i++)
        if (lg_conn_usable(g->conns[i]) && (!best || g->conns[i]->active < best->active)) best = g->conns[i];
    if ((!best || best->active > 0) && g->open_conns < g->conn_cap) {
        lg_conn *c = lg_conn_open(g);
        if (c) return c;
    }
    return best;
}

/* A new request intended at `intended`: counted when that falls in the window. */
static lg_wait arrival(lg *g, uint64_t intended) {
    lg_wait w = {.intended = intended, .req = (size_t)(g->next_req++ % g->s->reqs->n)};
    w.counted = intended >= g->window_start && intended < g->window_end &&
                (g->s->duration_ns || g->s->concurrency <= 0 || g->started_counted < g->s->requests);
    if (w.counted) g->started_counted++, g->r->counted++;
    return w;
}

/* Send a request (a new one or a retry) on c. */
static void start(lg *g, lg_conn *c, lg_wait w) {
    lg_xchg *x = calloc(1, sizeof *x);
    x->g = g, x->c = c;
    x->t_intended = w.intended;
    x->attempt = w.attempt, x->refusals = w.refusals;
    x->counted = w.counted;
    x->req = w.req;
    x->deadline = g->now + g->s->timeout_ns;
    ag_buf_init(&x->body);
    x->next = g->flight;
    if (g->flight) g->flight->prev = x;
    g->flight = x;
    g->inflight++;
    c->active++;
    lg_conn_start(c, x);
}

static void wait_for_conn(lg *g, lg_wait w) {
    if (g->n_pending == g->cap_pending) {
        g->cap_pending = g->cap_pending ? 2 * g->cap_pending : 256;
        g->pending = realloc(g->pending, g->cap_pending * sizeof *g->pending);
    }
    g->pending[g->n_pending++] = w;
}

static void arrive(lg *g, uint64_t intended) {
    lg_conn *c = g->n_pending ? NULL : pick_conn(g); /* those waiting go first */
    if (c) start(g, c, arrival(g, intended));
    else wait_for_conn(g, arrival(g, intended));
}

static void stop_sending(lg *g);

/*
 * After anything ends: requests waiting for a connection get one, in order
 * (their wait is part of their latency); a closed loop starts the next
 * request while it has fewer in flight than its concurrency.  Not re-entered
 * (a start that fails at once ends its request, which calls here).
 */
static void refill(lg *g) {
    if (g->refilling) return;
    g->refilling = true;
    for (;;) {
        if (!more_to_send(g)) stop_sending(g); /* in-flight and waiting requests still finish */
        if (g->n_pending) {
            lg_conn *c = pick_conn(g);
            if (!c) break;
            lg_wait w = g->pending[0];
            memmove(g->pending, g->pending + 1, --g->n_pending * sizeof *g->pending);
            start(g, c, w);
        } else if (g->s->concurrency > 0 && g->inflight + g->n_pending < (uint64_t)g->s->concurrency && more_to_send(g)) {
            lg_conn *c = pick_conn(g);
            if (!c) break; /* tried again on the next tick */
            start(g, c, arrival(g, g->now));
        } else {
            break;
        }
    }
    g->refilling = false;
}

void lg_conn_released(lg_conn *c) {
    lg *g = c->g;
    if (g->stopping && !g->n_pending) lg_conn_close(c, END_CONN);
    else if (!g->t->http2) c->next_idle = g->idle, g->idle = c;
}

static void maybe_finish(lg *g);

void lg_conn_free(lg_conn *c) {
    lg *g = c->g;
    for (int i = 0; i < g->n_conns; i++)
        if (g->conns[i] == c) g->conns[i] = g->conns[--g->n_conns];
    for (lg_conn **p = &g->idle; *p; p = &(*p)->next_idle)
        if (*p == c) {
            *p = c->next_idle;
            break;
        }
    free(c);
    maybe_finish(g);
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

/*
 * Whoever first sees the signal marks the step: a request's end (refill) may
 * see it before the tick does, and then the step can finish, its last
 * connection closed, before the tick ever runs.
 */
static void stop_sending(lg *g) {
    if (g->stopping) return;
    g->stopping = true;
    if (g_interrupted) g->r->interrupted = true;
    uv_timer_stop(&g->arrivals);
    for (int i = g->n_conns - 1; i >= 0; i--)
        if (g->conns[i]->active == 0) lg_conn_close(g->conns[i], END_CONN);
}

static void maybe_finish(lg *g) {
    if (!g->stopping) return;
    if (g->n_pending == 0 && g->inflight == 0 && g->n_conns == 0) {
        uv_timer_stop(&g->tick);
        uv_close((uv_handle_t *)&g->tick, NULL);
        uv_close((uv_handle_t *)&g->arrivals, NULL);
    }
}

static void on_tick(uv_timer_t *t) {
    lg *g = t->data;
    uint64_t now = g->now = uv_hrtime();
    print_progress(g, false);
    if (g_interrupted && !g->aborted) {
        g->aborted = g->r->interrupted = true;
        stop_sending(g);
        g->n_pending = 0;
        for (int i = g->n_conns - 1; i >= 0; i--) lg_conn_close(g->conns[i], END_ABORT);
    }
    for (lg_xchg *x = g->flight; x;) {
        if (now > x->deadline) {
            lg_conn_cancel(x->c, x);
            x = g->flight; /* the cancel may have ended others and started new ones: from the top */
        } else {
            x = x->next;
        }
    }
    refill(g);
    maybe_finish(g);
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
    const ag_lg_target *t = s->target;
    char port[16];
    snprintf(port, sizeof port, "%d", t->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(t->host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(msg, msg_cap, "cannot resolve %s: %s", t->host, gai_strerror(gai));
        return AG_EINVAL;
    }
    lg *g = calloc(1, sizeof *g);
    g->s = s, g->t = t, g->r = r;
    memcpy(&g->addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (t->tls && !(g->tls = ag_tls_ctx_new_client(t->http2 ? "h2" : "http/1.1", !t->insecure, t->cacert, msg, msg_cap))) {
        free(g);
        return AG_EINVAL;
    }
    snprintf(g->authority, sizeof g->authority, strchr(t->host, ':') ? "[%s]:%d" : "%s:%d", t->host, t->port);
    g->conn_cap = t->http2 ? (t->connections > 0 ? t->connections : 1)
                           : s->concurrency > 0 ? s->concurrency : s->max_connections;
    if (t->http2) lg_h2_prepare(g);
    else h1_prepare(g);
    g->rng = s->seed * 0x9E3779B97F4A7C15ull + 1;
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
        refill(g);
    } else {
        g->next_arrival = g->t0;
        on_arrivals(&g->arrivals);
    }
    uv_run(&g->loop, UV_RUN_DEFAULT);
    print_progress(g, true);
    uv_loop_close(&g->loop);
    r->seconds = (double)(g->last_end - g->window_start) / 1e9;
    ag_arena_deinit(&g->arena);
    if (t->http2) lg_h2_unprepare(g);
    else h1_unprepare(g);
    ag_tls_ctx_free(g->tls);
    free(g->conns);
    free(g->pending);
    free(g);
    return AG_OK;
}
