/*
 * chaos.c - the chaos proxy (see chaos.h): one libuv loop accepts clients,
 * connects each to the upstream, and moves the bytes of each direction
 * through a pipe that holds them as timed chunks.
 *
 * A connection's lifecycle: STALLED (a stall fault: accepted, nothing
 * forwarded, closed when it ends) or CONNECTING -> OPEN -> CLOSING.  A pipe
 * stamps each chunk it reads with the time it may leave (now + latency ±
 * jitter, never before the chunk ahead of it, so order is kept), writes the
 * head chunk once due, at most `slice` bytes a write and as the bandwidth's
 * token bucket allows, one write in flight at a time.  Memory is bounded:
 * past max_buffer bytes held, the pipe stops reading its source until it
 * has written half of them.  A read's EOF travels as a chunk too, so a close
 * reaches the other side after the data before it (and slow-close later).
 * A reset fault or a socket error resets both sides (RST, SO_LINGER 0).
 *
 * HTTP-aware (http-error, http-delay): the upstream direction reads HTTP/1.1
 * request heads and skips their Content-Length bodies; a request that draws
 * http-delay goes up that much later (head and body); one that draws the
 * error is not forwarded: the answer goes down the downstream pipe, behind
 * whatever is still held there, and the connection closes after it.  A
 * chunked request body ends the checks on that connection (its bytes pass).
 */
#define _GNU_SOURCE /* pthread types for uv.h */
#include "tools/chaos_int.h"

#include "base/str.h"
#include "http/http.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const chaos_fault_names[F_N] = {"latency", "bandwidth", "slice", "reset", "drop", "stall", "slow_close",
                                            "http_error", "http_delay"};

typedef struct chunk {
    struct chunk *next;
    uint64_t due; /* when it may leave: microseconds on uv_hrtime()'s clock */
    size_t len, off;
    bool eof; /* the source's end: the destination is shut down when it is due */
    char data[];
} chunk;

typedef struct pipe_ {
    pconn *pc;
    int dir;
    uv_stream_t *from, *to;
    uv_timer_t timer;
    uv_write_t w;
    uv_shutdown_t sd;
    chunk *head, *tail;
    size_t queued, in_write;
    uint64_t last_due, forwarded;
    double tokens;
    uint64_t t_tokens;
    bool paused, writing, shut;
    uint64_t hold_us; /* added to every chunk's time: the request being read drew http-delay */
    ag_chaos_link f;  /* the faults this connection drew for this direction */
} pipe_;

typedef enum { PC_STALLED, PC_CONNECTING, PC_OPEN, PC_CLOSING } pc_state;
typedef enum { H_HEAD, H_BODY, H_PASS } http_state;

struct pconn {
    chaos *x;
    pconn *prev, *next; /* the proxy's open connections */
    pc_state state;
    uv_tcp_t client, upstream;
    uv_connect_t connect;
    uv_timer_t timer; /* stall */
    pipe_ p[2];
    int handles;
    uint64_t slow_close_us;
    /* http-error: the upstream direction's request framing */
    bool http;
    http_state hs;
    uint64_t body_left;
    ag_buf head;
};

static uint64_t now_us(void) { return uv_hrtime() / 1000; }

static double draw(chaos *x) { /* uniform in [0, 1) */
    x->rng ^= x->rng >> 12, x->rng ^= x->rng << 25, x->rng ^= x->rng >> 27;
    return (double)((x->rng * 2685821657736338717ull) >> 11) * 0x1.0p-53;
}
static bool roll(chaos *x, double p) { return p > 0 && draw(x) < p; }

/* ---- closing ---------------------------------------------------------------------------------- */

/* The five handles' close callbacks: the last one frees the connection. */
static void handle_gone(pconn *pc) {
    if (--pc->handles) return;
    for (int d = 0; d < 2; d++)
        for (chunk *c = pc->p[d].head, *n; c; c = n) n = c->next, free(c);
    ag_buf_deinit(&pc->head);
    chaos *x = pc->x;
    if (pc->prev) pc->prev->next = pc->next;
    else x->conns = pc->next;
    if (pc->next) pc->next->prev = pc->prev;
    x->open--;
    free(pc);
}
static void on_conn_handle_closed(uv_handle_t *h) { handle_gone(h->data); }              /* the stall timer */
static void on_pipe_handle_closed(uv_handle_t *h) { handle_gone(((pipe_ *)h->data)->pc); } /* sockets, pipe timers */

/* Both sides go: reset (RST) or a plain close. */
static void pconn_close(pconn *pc, bool reset) {
    if (pc->state == PC_CLOSING) return;
    bool connected = pc->state != PC_STALLED;
    pc->state = PC_CLOSING;
    uv_close((uv_handle_t *)&pc->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&pc->p[0].timer, on_pipe_handle_closed);
    uv_close((uv_handle_t *)&pc->p[1].timer, on_pipe_handle_closed);
    uv_tcp_t *t[2] = {&pc->client, &pc->upstream};
    for (int i = 0; i < 2; i++) {
        bool rst = reset && (i == 0 || connected);
        if (!rst || uv_tcp_close_reset(t[i], on_pipe_handle_closed) != 0) uv_close((uv_handle_t *)t[i], on_pipe_handle_closed);
    }
}

/* ---- pipes -------------------------------------------------------------------------------------- */

static void pump(pipe_ *p);
static void resume(pipe_ *p);

static void on_pipe_timer(uv_timer_t *t) { pump(t->data); }

static void wake_at(pipe_ *p, uint64_t at_us) {
    uint64_t now = now_us();
    uint64_t ms = at_us > now ? (at_us - now + 999) / 1000 : 0;
    uv_timer_start(&p->timer, on_pipe_timer, ms, 0);
}

static void on_shutdown(uv_shutdown_t *r, int status) {
    pipe_ *p = r->data;
    (void)status;
    pconn *pc = p->pc;
    if (pc->state != PC_CLOSING && pc->p[0].shut && pc->p[1].shut) pconn_close(pc, false);
}

static void on_written(uv_write_t *w, int status) {
    pipe_ *p = w->data;
    pconn *pc = p->pc;
    p->writing = false;
    if (pc->state == PC_CLOSING) return;
    if (status < 0) {
        pconn_close(pc, true);
        return;
    }
    chunk *c = p->head;
    c->off += p->in_write;
    p->forwarded += p->in_write;
    pc->x->bytes[p->dir] += p->in_write;
    if (c->off == c->len) {
        p->head = c->next;
        if (!p->head) p->tail = NULL;
        p->queued -= c->len;
        free(c);
    }
    if (p->f.reset_after && p->forwarded >= p->f.reset_after) {
        pc->x->fired[F_RESET]++;
        pconn_close(pc, true);
        return;
    }
    if (p->paused && p->queued <= pc->x->o->max_buffer / 2) {
        p->paused = false;
        resume(p);
    }
    pump(p);
}

/* Write what is due of the head chunk, as slice and bandwidth allow. */
static void pump(pipe_ *p) {
    pconn *pc = p->pc;
    if (p->writing || pc->state == PC_CLOSING || !p->head) return;
    chunk *c = p->head;
    uint64_t now = now_us();
    if (c->due > now) return wake_at(p, c->due);
    if (c->eof) {
        p->head = NULL, p->tail = NULL;
        free(c);
        p->shut = true;
        p->sd.data = p;
        if (uv_shutdown(&p->sd, p->to, on_shutdown) != 0) pconn_close(pc, false);
        return;
    }
    size_t n = c->len - c->off;
    if (p->f.slice && n > p->f.slice) n = p->f.slice;
    if (p->f.reset_after && n > p->f.reset_after - p->forwarded) n = (size_t)(p->f.reset_after - p->forwarded);
    if (p->f.bandwidth > 0) {
        /* a bucket of at most 1/50 s of rate (and one slice): the rate holds over any window past 20 ms */
        double burst = p->f.bandwidth / 50 > (double)p->f.slice ? p->f.bandwidth / 50 : (double)p->f.slice;
        if (burst < 1) burst = 1;
        p->tokens += (double)(now - p->t_tokens) / 1e6 * p->f.bandwidth;
        if (p->tokens > burst) p->tokens = burst;
        p->t_tokens = now;
        if (p->tokens < 1) return wake_at(p, now + (uint64_t)((1 - p->tokens) / p->f.bandwidth * 1e6) + 1);
        if ((double)n > p->tokens) n = (size_t)p->tokens;
        p->tokens -= (double)n;
    }
    uv_buf_t b = uv_buf_init(c->data + c->off, (unsigned)n);
    p->w.data = p;
    p->in_write = n;
    p->writing = true;
    if (uv_write(&p->w, p->to, &b, 1, on_written) != 0) {
        p->writing = false;
        pconn_close(pc, true);
    }
}

static void enqueue(pipe_ *p, const char *data, size_t n, bool eof) {
    pconn *pc = p->pc;
    const ag_chaos_link *f = &p->f;
    if (n && !p->head && !p->writing && !p->hold_us && !f->latency_us && !f->jitter_us && f->bandwidth <= 0 && !f->slice && !f->reset_after) {
        /* nothing to hold or pace: straight out, without a copy, as far as the socket takes it */
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
        int w = uv_try_write(p->to, &b, 1);
        if (w > 0) {
            p->forwarded += (size_t)w, pc->x->bytes[p->dir] += (size_t)w;
            data += w, n -= (size_t)w;
            if (!n) return;
        }
    }
    chunk *c = malloc(sizeof *c + n);
    c->next = NULL, c->len = n, c->off = 0, c->eof = eof;
    if (n) memcpy(c->data, data, n);
    uint64_t due = now_us();
    if (p->f.latency_us || p->f.jitter_us) {
        double j = p->f.jitter_us ? (2 * draw(pc->x) - 1) * (double)p->f.jitter_us : 0;
        double d = (double)p->f.latency_us + j;
        due += d > 0 ? (uint64_t)d : 0;
    }
    if (eof && pc->slow_close_us) due += pc->slow_close_us;
    due += p->hold_us;
    if (due < p->last_due) due = p->last_due;
    c->due = p->last_due = due;
    if (p->tail) p->tail->next = c;
    else p->head = c;
    p->tail = c;
    p->queued += n;
    pump(p);
}

/* ---- HTTP/1.1 requests on the upstream direction (http-error) -------------------------------------- */

/* The error answer goes down behind what is held there; the connection ends after it. */
static void answer_error(pconn *pc) {
    chaos *x = pc->x;
    char b[512];
    const char *reason = ag_http_reason(x->faults.http_error);
    char body[200];
    int bl = snprintf(body, sizeof body, "{\"error\":{\"message\":\"injected by autoglm chaos\",\"type\":\"chaos\",\"code\":%d}}",
                      x->faults.http_error);
    int n = snprintf(b, sizeof b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", x->faults.http_error,
                     reason ? reason : "Error", bl);
    if (x->faults.retry_after_s) n += snprintf(b + n, sizeof b - (size_t)n, "Retry-After: %d\r\n", x->faults.retry_after_s);
    n += snprintf(b + n, sizeof b - (size_t)n, "Connection: close\r\n\r\n%s", body);
    x->fired[F_HTTP_ERROR]++;
    pipe_ *down = &pc->p[AG_CHAOS_DOWN];
    uv_read_stop(pc->p[AG_CHAOS_UP].from);
    uv_read_stop(down->from);
    enqueue(down, b, (size_t)n, false);
    enqueue(down, NULL, 0, true);
    pc->p[AG_CHAOS_UP].shut = true; /* nothing more goes up: the pair closes once the answer is out */
}

/*
 * Bytes read from the client, through the request framing; false once the connection is answered here.
 * What follows a complete head in pc->head is read on as body or the next head: the two buffers trade
 * places (held keeps those bytes alive, pc->head starts empty with the other's storage), so no copy is made
 * and nothing recurses.
 */
static bool http_up(pconn *pc, const char *data, size_t n) {
    pipe_ *up = &pc->p[AG_CHAOS_UP];
    ag_buf held;
    ag_buf_init(&held);
    bool go = true;
    while (n) {
        if (pc->hs == H_PASS) {
            enqueue(up, data, n, false);
            break;
        }
        if (pc->hs == H_BODY) {
            size_t k = n < pc->body_left ? n : (size_t)pc->body_left;
            enqueue(up, data, k, false);
            data += k, n -= k, pc->body_left -= k;
            if (!pc->body_left) pc->hs = H_HEAD;
            continue;
        }
        ag_buf_append(&pc->head, data, n);
        n = 0;
        chaos_head h;
        ag_status st = chaos_head_parse(&h, pc->head.data, pc->head.len);
        const ag_http_request req = h.req;
        if (st == AG_AGAIN) break;
        if (st != AG_OK) { /* not HTTP/1.1 as we read it: pass it on untouched */
            pc->hs = H_PASS;
            enqueue(up, pc->head.data, pc->head.len, false);
            pc->head.len = 0;
            break;
        }
        if (roll(pc->x, pc->x->faults.p_http_error)) {
            answer_error(pc);
            go = false;
            break;
        }
        up->hold_us = 0; /* this request's head and body: held when it draws http-delay */
        if (pc->x->faults.http_delay_us && roll(pc->x, pc->x->faults.p_http_delay))
            up->hold_us = pc->x->faults.http_delay_us, pc->x->fired[F_HTTP_DELAY]++;
        pc->body_left = req.content_length > 0 ? (uint64_t)req.content_length : 0;
        pc->hs = req.chunked ? H_PASS : pc->body_left ? H_BODY : H_HEAD;
        enqueue(up, pc->head.data, req.head_len, false);
        ag_buf t = held;
        held = pc->head, pc->head = t;
        pc->head.len = 0;
        data = held.data + req.head_len, n = held.len - req.head_len;
    }
    ag_buf_deinit(&held);
    return go;
}

/* ---- reading ---------------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    (void)h, (void)hint;
    static char buf[65536]; /* one loop: a read is consumed (copied into a chunk) before the next */
    *b = uv_buf_init(buf, sizeof buf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    pipe_ *p = s->data;
    pconn *pc = p->pc;
    if (n == 0 || pc->state == PC_CLOSING) return;
    if (n < 0) {
        uv_read_stop(s);
        if (n == UV_EOF && pc->head.len) enqueue(p, pc->head.data, pc->head.len, false), pc->head.len = 0; /* a partial head */
        if (n == UV_EOF) enqueue(p, NULL, 0, true);
        else pconn_close(pc, true);
        return;
    }
    if (p->dir == AG_CHAOS_UP && pc->http) {
        if (!http_up(pc, b->base, (size_t)n)) return;
    } else {
        enqueue(p, b->base, (size_t)n, false);
    }
    if (pc->state != PC_CLOSING && p->queued > pc->x->o->max_buffer) {
        p->paused = true;
        uv_read_stop(s);
    }
}

static void resume(pipe_ *p) { uv_read_start(p->from, on_alloc, on_read); }

/* ---- connections ------------------------------------------------------------------------------- */

static void start_pipes(pconn *pc) {
    pc->state = PC_OPEN;
    for (int d = 0; d < 2; d++) resume(&pc->p[d]);
}

static void on_upstream(uv_connect_t *r, int status) {
    pconn *pc = r->data;
    if (pc->state == PC_CLOSING) return;
    if (status < 0) {
        pc->x->upstream_failed++;
        pconn_close(pc, true);
        return;
    }
    start_pipes(pc);
}

static void on_stall_end(uv_timer_t *t) { pconn_close(t->data, false); }

/* The faults this connection draws: each with its toxicity, once. */
static void draw_faults(pconn *pc) {
    chaos *x = pc->x;
    const ag_chaos_faults *f = &x->faults;
    for (int d = 0; d < 2; d++) {
        const ag_chaos_link *l = &f->link[d];
        ag_chaos_link *o = &pc->p[d].f;
        memset(o, 0, sizeof *o);
        if ((l->latency_us || l->jitter_us) && roll(x, l->p_latency))
            o->latency_us = l->latency_us, o->jitter_us = l->jitter_us, x->fired[F_LATENCY]++;
        if (l->bandwidth > 0 && roll(x, l->p_bandwidth)) o->bandwidth = l->bandwidth, x->fired[F_BANDWIDTH]++;
        if (l->slice && roll(x, l->p_slice)) o->slice = l->slice, x->fired[F_SLICE]++;
        if (l->reset_after && roll(x, l->p_reset)) o->reset_after = l->reset_after;
    }
    if (f->slow_close_us && roll(x, f->p_slow_close)) pc->slow_close_us = f->slow_close_us, x->fired[F_SLOW_CLOSE]++;
    pc->http = (f->http_error && f->p_http_error > 0) || (f->http_delay_us && f->p_http_delay > 0);
}

static void on_accept(uv_stream_t *l, int status) {
    chaos *x = l->data;
    if (status < 0) return;
    pconn *pc = calloc(1, sizeof *pc);
    pc->x = x;
    pc->state = PC_CONNECTING;
    pc->handles = 5;
    ag_buf_init(&pc->head);
    uv_tcp_init(&x->loop, &pc->client);
    uv_tcp_init(&x->loop, &pc->upstream);
    uv_timer_init(&x->loop, &pc->timer);
    pc->client.data = &pc->p[AG_CHAOS_UP];
    pc->upstream.data = &pc->p[AG_CHAOS_DOWN];
    pc->timer.data = pc;
    for (int d = 0; d < 2; d++) {
        pipe_ *p = &pc->p[d];
        p->pc = pc, p->dir = d;
        p->from = (uv_stream_t *)(d == AG_CHAOS_UP ? &pc->client : &pc->upstream);
        p->to = (uv_stream_t *)(d == AG_CHAOS_UP ? &pc->upstream : &pc->client);
        uv_timer_init(&x->loop, &p->timer);
        p->timer.data = p;
        p->t_tokens = now_us();
    }
    x->accepted++, x->open++;
    pc->next = x->conns;
    if (x->conns) x->conns->prev = pc;
    x->conns = pc;
    if (uv_accept(l, (uv_stream_t *)&pc->client) != 0) {
        pconn_close(pc, false);
        return;
    }
    uv_tcp_nodelay(&pc->client, 1);
    const ag_chaos_faults *f = &x->faults;
    if (roll(x, f->p_drop)) {
        x->fired[F_DROP]++;
        pc->state = PC_STALLED; /* never connected upstream */
        pconn_close(pc, true);
        return;
    }
    if (f->stall_us && roll(x, f->p_stall)) {
        x->fired[F_STALL]++;
        pc->state = PC_STALLED;
        uv_timer_start(&pc->timer, on_stall_end, (f->stall_us + 999) / 1000, 0);
        return;
    }
    draw_faults(pc);
    uv_tcp_nodelay(&pc->upstream, 1);
    pc->connect.data = pc;
    if (uv_tcp_connect(&pc->connect, &pc->upstream, (const struct sockaddr *)&x->upstream, on_upstream) != 0) {
        x->upstream_failed++;
        pconn_close(pc, true);
    }
}

/* ---- the loop ----------------------------------------------------------------------------------- */

/* SIGINT or SIGTERM: every handle closes through its owner, so the loop ends with nothing left allocated. */
static void on_signal(uv_signal_t *s, int sig) {
    chaos *x = s->data;
    (void)sig;
    if (x->stopping) return;
    x->stopping = true;
    uv_close((uv_handle_t *)&x->listener, NULL);
    uv_close((uv_handle_t *)&x->sigint, NULL);
    uv_close((uv_handle_t *)&x->sigterm, NULL);
    if (x->o->admin_host) chaos_admin_stop(x);
    for (pconn *pc = x->conns; pc; pc = pc->next) pconn_close(pc, false);
}

bool chaos_resolve(const char *host, int port, struct sockaddr_storage *out) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai) return false;
    memcpy(out, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    return true;
}

static void close_any(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

int ag_chaos_run(const ag_chaos_opts *o) {
    chaos *x = calloc(1, sizeof *x);
    x->o = o;
    x->faults = o->faults;
    x->rng = o->seed * 0x9E3779B97F4A7C15ull + 1;
    struct sockaddr_storage listen_addr;
    int rc = 0;
    char msg[256] = "";
    uv_loop_init(&x->loop);
    if (!chaos_resolve(o->upstream_host, o->upstream_port, &x->upstream)) {
        snprintf(msg, sizeof msg, "--upstream %s:%d: cannot resolve", o->upstream_host, o->upstream_port);
    } else if (!chaos_resolve(o->listen_host, o->listen_port, &listen_addr)) {
        snprintf(msg, sizeof msg, "--listen %s:%d: cannot resolve", o->listen_host, o->listen_port);
    } else {
        uv_tcp_init(&x->loop, &x->listener);
        x->listener.data = x;
        int e = uv_tcp_bind(&x->listener, (const struct sockaddr *)&listen_addr, 0);
        if (!e) e = uv_listen((uv_stream_t *)&x->listener, 1024, on_accept);
        if (e) snprintf(msg, sizeof msg, "--listen %s:%d: %s", o->listen_host, o->listen_port, uv_strerror(e));
        else if (o->admin_host) chaos_admin_start(x, msg, sizeof msg);
    }
    if (msg[0]) {
        fprintf(stderr, "autoglm chaos: %s\n", msg);
        rc = 2;
    } else {
        struct sockaddr_storage a;
        int len = sizeof a;
        uv_tcp_getsockname(&x->listener, (struct sockaddr *)&a, &len);
        char ip[64];
        uv_ip_name((struct sockaddr *)&a, ip, sizeof ip);
        int port = ntohs(((struct sockaddr_in *)&a)->sin_port);
        fprintf(stderr, "chaos proxy listening on %s:%d, upstream %s:%d\n", ip, port, o->upstream_host, o->upstream_port);
        uv_signal_init(&x->loop, &x->sigint);
        uv_signal_init(&x->loop, &x->sigterm);
        x->sigint.data = x->sigterm.data = x;
        uv_signal_start(&x->sigint, on_signal, SIGINT);
        uv_signal_start(&x->sigterm, on_signal, SIGTERM);
    }
    if (rc) uv_walk(&x->loop, close_any, NULL); /* the listeners opened before the failure */
    uv_run(&x->loop, UV_RUN_DEFAULT);
    uv_loop_close(&x->loop);
    free(x);
    return rc;
}
