/*
 * lg.h - the load generator's insides, shared by its three files:
 *
 *   loadgen.c  the step: arrivals, which connection carries a request,
 *              timeouts, the end of every request and what it counts for
 *   lg_conn.c  a connection: TCP, TLS, its lifecycle, HTTP/1.1 responses
 *   lg_h2.c    an HTTP/2 client session (nghttp2) on a connection
 *
 * A request in flight is an exchange (lg_xchg), apart from the connection
 * that carries it: over HTTP/1.1 a connection has at most one, over HTTP/2
 * any number, one per stream.
 */
#ifndef AG_TOOLS_LG_H
#define AG_TOOLS_LG_H

#include "base/arena.h"
#include "base/buf.h"
#include "http/cio.h"
#include "http/http.h"
#include "http/response.h"
#include "http/tls.h"
#include "tools/loadgen.h"

#include <nghttp2/nghttp2.h>
#include <uv.h>

typedef struct lg lg;
typedef struct lg_conn lg_conn;

/* How an exchange ended.  END_REFUSED: HTTP/2 said the stream was not processed (REFUSED_STREAM, or above a
 * GOAWAY's last stream id), or an HTTP/1.1 connection that had already answered closed before a byte of this
 * answer (a server's idle keep-alive close racing our next request: RFC 9112 9.3.1), so it is sent again at
 * once, uncounted (RFC 9113 8.7), up to LG_MAX_REFUSALS times. */
typedef enum { END_OK, END_HTTP, END_TIMEOUT, END_CONN, END_PROTO, END_ABORT, END_REFUSED } lg_end;
#define LG_MAX_REFUSALS 8

/* One request in flight. */
typedef struct lg_xchg {
    lg *g;
    lg_conn *c;                  /* NULL once its connection let go of it */
    struct lg_xchg *prev, *next; /* the step's exchanges in flight */
    size_t req;                  /* index into the step's requests */
    bool counted;                /* started in the measured window */
    int attempt;                 /* 0, then 1.. for retries (ag_lg_step.retries) */
    int refusals;                /* times the server refused it unprocessed (END_REFUSED) */
    uint64_t t_intended, t_first, t_last_chunk, deadline;
    /* the response */
    int status;
    bool sse;
    size_t scanned; /* SSE: body bytes looked at */
    uint64_t in_tokens, out_tokens;
    /* HTTP/2 only: the stream, its body so far, request body bytes handed to nghttp2 */
    int32_t stream;
    ag_buf body;
    size_t sent;
} lg_xchg;

typedef enum {
    LGC_CONNECTING,  /* TCP connect under way */
    LGC_HANDSHAKING, /* TLS handshake under way */
    LGC_OPEN,        /* requests go out */
    LGC_CLOSING      /* uv_close called; freed in its callback */
} lgc_state;

struct lg_conn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    lg *g;
    lgc_state state;
    bool capped;          /* counted in g->open_conns (an HTTP/2 connection told GOAWAY leaves the count) */
    int active;           /* exchanges it carries */
    lg_conn *next_idle;   /* HTTP/1.1: the step's idle connections */
    ag_cio io;            /* plaintext in, bytes out (TLS on https): http/cio.c */
    bool released;        /* uv_close called */
    /* HTTP/1.1: the exchange in flight and its response's framing */
    lg_xchg *x;
    ag_http_response resp;
    unsigned answered; /* responses it has carried whole: a later close before any byte is a stale connection */
    /* HTTP/2 */
    nghttp2_session *h2;
    bool in_recv; /* inside nghttp2_session_mem_recv: sending and freeing wait until it returns */
    bool goaway;  /* the server said GOAWAY: no new streams */
};

/* A request waiting for a connection: a new one, or a retry of one that failed. */
typedef struct lg_wait {
    uint64_t intended;
    size_t req; /* index into the step's requests: a retry sends the same one */
    int attempt;
    int refusals;
    bool counted;
} lg_wait;

/* The prepared HTTP/2 form of a request (name/value pairs with lowercase names). */
typedef struct lg_h2req {
    nghttp2_nv *nv;
    size_t n;
} lg_h2req;

struct lg {
    const ag_lg_step *s;
    const ag_lg_target *t;
    ag_lg_result *r;
    uv_loop_t loop;
    uv_timer_t tick, arrivals;
    struct sockaddr_storage addr;
    ag_tls_ctx *tls;
    char authority[300]; /* host:port, [v6]:port */
    char **h1_data;      /* HTTP/1.1: each request's bytes */
    size_t *h1_len;
    lg_h2req *h2_req;    /* HTTP/2: each request's header fields */
    ag_arena h2_arena;
    nghttp2_session_callbacks *h2_cbs;
    nghttp2_option *h2_opt;
    lg_conn **conns;
    int n_conns, cap_conns, open_conns, conn_cap;
    lg_conn *idle;
    lg_xchg *flight; /* exchanges in flight */
    uint64_t t0, window_start, window_end, last_end, next_req, inflight;
    uint64_t started_counted, arrived_counted; /* requests mode: closed loop counts starts, open loop arrivals */
    lg_wait *pending; /* requests waiting for a connection, in order */
    size_t n_pending, cap_pending;
    uint64_t next_arrival;
    uint64_t rng;
    bool stopping, refilling;
    bool aborted; /* Ctrl-C seen by the tick: what was in flight is aborted */
    uint64_t now; /* uv_hrtime() at the start of the current callback: one clock read per event */
    ag_arena arena;
    uint64_t last_progress;
    char rbuf[1 << 16]; /* a TLS connection's socket reads land here before OpenSSL takes them */
};

/* loadgen.c: what the connections report */
void lg_xchg_end(lg_xchg *x, lg_end kind); /* x is no longer on a connection */
void lg_body_read(lg_xchg *x, const char *body, size_t len, bool whole);
void lg_note_server(lg *g, const char *p, size_t n);
void lg_conn_error(lg *g, const char *why);
void lg_conn_free(lg_conn *c); /* the connection is closed: forget it */
void lg_conn_released(lg_conn *c); /* its last exchange ended: idle, or closed when the step is over */

/* lg_conn.c */
lg_conn *lg_conn_open(lg *g); /* NULL: the socket could not be opened */
void lg_conn_start(lg_conn *c, lg_xchg *x);
void lg_conn_cancel(lg_conn *c, lg_xchg *x); /* a timeout: the exchange ends, the connection may not */
void lg_conn_finish(lg_conn *c, lg_xchg *x, lg_end kind); /* x's response is over: it leaves c and ends */
void lg_conn_close(lg_conn *c, lg_end kind); /* its exchanges end as kind */
bool lg_conn_usable(const lg_conn *c);
/* HTTP/1.1: the response to c->x so far, in c->in (http/response.c); false on a protocol error; c->resp.done once it is whole. */
bool lg_h1_parse(lg_conn *c);
bool lg_conn_put(lg_conn *c, const void *p, size_t n); /* bytes to send, through TLS on https */
void lg_conn_flush(lg_conn *c);

/* lg_h2.c */
void lg_h2_prepare(lg *g);
void lg_h2_unprepare(lg *g);
bool lg_h2_open(lg_conn *c);
void lg_h2_start(lg_conn *c, lg_xchg *x);
void lg_h2_cancel(lg_conn *c, lg_xchg *x);
void lg_h2_forget(lg_conn *c, lg_xchg *x); /* its stream's callbacks no longer reach x */
bool lg_h2_recv(lg_conn *c); /* consumes c->in; false: the session failed */
void lg_h2_send(lg_conn *c);
void lg_h2_close(lg_conn *c); /* the session goes (no-op over HTTP/1.1) */

#endif
