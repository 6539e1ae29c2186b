/*
 * client_int.h - the client library's insides (see include/autoglm/client.h):
 *
 *   policy.c  the decision table: what an attempt's outcome leads to, the
 *             waits (backoff with full jitter, Retry-After), the retry budget
 *   client.c  the client: its I/O thread and loop, the queue calls arrive
 *             through, the connection pool
 *   call.c    one call's lifecycle over a connection: attempts, timeouts,
 *             the answer (whole or streamed), hedging, the next attempt or
 *             the end
 *   batcher.c ag_batcher: single prompts sent together as one array-prompt
 *             request, its choices split back to their callers
 */
#ifndef AG_CLIENT_INT_H
#define AG_CLIENT_INT_H

#include "autoglm/client.h"
#include "base/arena.h"
#include "base/buf.h"
#include "http/cio.h"
#include "http/coding.h"
#include "http/response.h"
#include "http/tls.h"

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

/* ---- policy.c ---- */

/* What one attempt came to, as the decision table reads it. */
typedef struct agc_outcome {
    ag_client_outcome kind;
    int status;
    ag_str retry_after, retry_after_ms; /* the answer's headers; {NULL, 0} when absent */
    int retries_done, retries_5xx_done; /* before this attempt's decision */
    double remaining_s;                 /* of the call's total timeout */
    int64_t now_unix;                   /* for a Retry-After given as an HTTP date */
} agc_outcome;

typedef struct agc_decision {
    bool retry;
    double wait_s;
    const char *rule; /* the table row */
    char why[160];    /* when it does not retry for a reason of its own (budget, a long Retry-After) */
} agc_decision;

/* The retry budget: a token bucket shared by a client's calls (one thread touches it). */
typedef struct agc_budget {
    double tokens;
} agc_budget;

void agc_budget_init(agc_budget *b, const ag_client_retry_policy *p);
void agc_budget_earn(agc_budget *b, const ag_client_retry_policy *p); /* a call began */
bool agc_budget_spend(agc_budget *b);                                   /* a retry: false when none is left */

/* The decision table (the budget is asked only when the table says retry); u01 draws the jitter. */
agc_decision agc_decide(const ag_client_retry_policy *p, const agc_outcome *o, agc_budget *b, double u01);

/* Recent times to a 2xx answer, for the hedge delay (one thread touches it). */
#define AGC_LATENCY_SAMPLES 256
typedef struct agc_latency {
    uint32_t ms[AGC_LATENCY_SAMPLES];
    int n, at;
} agc_latency;

void agc_latency_add(agc_latency *l, uint64_t ms);
/* o->hedge_quantile of the samples, or o->hedge_initial_ms while fewer than o->hedge_min_samples. */
uint64_t agc_hedge_delay_ms(const agc_latency *l, const ag_client_options *o);

/* Retry-After (seconds or an HTTP date) or retry-after-ms, in seconds; false when absent or unreadable. */
bool agc_retry_after(ag_str retry_after, ag_str retry_after_ms, int64_t now_unix, double *seconds);

/* ---- client.c ---- */

typedef struct agc_call agc_call;
typedef struct agc_conn agc_conn;

typedef enum {
    CC_CONNECTING,  /* TCP connect under way */
    CC_HANDSHAKING, /* TLS handshake under way */
    CC_IDLE,        /* HTTP/1.1: open, in the pool */
    CC_BUSY,        /* HTTP/1.1: carrying a call */
    CC_MUX,         /* HTTP/2: open, carrying any number of calls as streams */
    CC_CLOSING      /* uv_close called; freed in its callback */
} agc_conn_state;

struct agc_conn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    ag_client *cl;
    agc_conn_state state;
    ag_cio io;       /* plaintext in, bytes out (TLS on https): http/cio.c */
    int uses;        /* calls it carried: a reused connection that ends unanswered is retried at once */
    agc_call *call;  /* HTTP/1.1: while BUSY (and CONNECTING/HANDSHAKING for the call that opened it) */
    agc_conn *next;  /* HTTP/1.1: the pool's idle list; HTTP/2: the client's list of its connections */
    /* HTTP/2 (h2.c) */
    bool h2;
    bool goaway;     /* the server sent GOAWAY: no new streams */
    bool in_recv;    /* nghttp2 is reading: sending and closing wait until it returns */
    struct nghttp2_session *ng;
    agc_call **calls; /* the calls on it: waiting for it to open, or each on a stream */
    int n_calls, cap_calls;
    uint64_t ping_at; /* a PING sent after a stream's first-byte timeout, unanswered yet (uv_now; 0: none) */
    char why[160];   /* what broke it, for its calls */
};

struct ag_client {
    ag_client_options o;
    char *host, *path_prefix, *authority, *bearer; /* bearer: "Bearer KEY", the Authorization value */
    char *model_member; /* options.model as the JSON member "model":"...", for bodies without one */
    int port;
    bool https;
    struct sockaddr_storage addr;
    ag_tls_ctx *tls_ctx;
    uv_loop_t own_loop; /* the I/O thread's */
    uv_loop_t *loop;    /* own_loop, or the caller's (options.loop) */
    bool threaded;      /* own loop and I/O thread; else the caller's loop */
    int handles;        /* on the caller's loop: handles open (connections, call timers) */
    bool freeing;       /* on the caller's loop: ag_client_free called; freed when handles reach 0 */
    uv_async_t wake;   /* threaded: a thread queued a call, or the client is closing */
    atomic_bool cancel; /* ag_client_cancel asked (lock-free: a signal handler may ask) */
    pthread_t thread;
    pthread_mutex_t mu;
    agc_call *incoming; /* queued by other threads, under mu */
    bool closing;       /* under mu */
    /* the I/O thread's own state */
    agc_call *waiting;  /* calls waiting for a connection, in order */
    agc_call *active;   /* calls under way (attempting or backing off) */
    agc_conn *idle;
    agc_conn *mux;      /* HTTP/2 connections, open or opening */
    int n_conns;
    agc_budget budget;
    agc_latency latency; /* times to a 2xx answer: the hedge delay */
    ag_arena arena;     /* stream events are parsed here, one at a time */
    uint64_t rng;
    char rbuf[1 << 16]; /* TLS socket reads land here before OpenSSL takes them */
};

double agc_uniform(ag_client *cl);
/* Whether a call could get a connection now (an idle one, an HTTP/2 one with room, or room for a new one). */
bool agc_conn_room(ag_client *cl);
/* A connection for the call: an idle one, an HTTP/2 one with room, a new one; NULL when none can be opened. */
agc_conn *agc_conn_get(ag_client *cl, agc_call *call);
/* The call's attempt is done with c: HTTP/1.1 back to the pool (reusable: its answer was read whole) or closed;
 * HTTP/2 the call leaves it (its stream reset when still open) and the connection goes on. */
void agc_conn_done(agc_conn *c, agc_call *call, bool reusable);
void agc_conn_close(agc_conn *c);        /* its calls are told first (agc_call_conn_lost) */
bool agc_conn_send(agc_conn *c, const void *p, size_t n);
void agc_conn_flush(agc_conn *c);
void agc_client_dispatch(ag_client *cl); /* waiting calls get the connections that came free */

void agc_client_submit(ag_client *cl, agc_call *call); /* from any thread (threaded), or the loop's */
void agc_client_handle_closed(ag_client *cl);          /* a connection's or call timer's close callback ran */

/* ---- h2.c ---- */

bool agc_h2_start(agc_conn *c);  /* the session, its SETTINGS queued; false: no memory */
void agc_h2_free(agc_conn *c);
int agc_h2_room(const agc_conn *c); /* streams it may still take */
bool agc_h2_submit(agc_conn *c, agc_call *call, uint64_t time_left_ms); /* the attempt's request as a stream */
void agc_h2_cancel(agc_conn *c, agc_call *call);                     /* RST_STREAM (CANCEL) if still open */
bool agc_h2_recv(agc_conn *c);   /* feed c->io.in to the session; false: a protocol error (c->why) */
bool agc_h2_send(agc_conn *c);   /* frames out through agc_conn_send (later, while in_recv) */
bool agc_h2_done(const agc_conn *c); /* the session has nothing left to read or write (after GOAWAY) */
void agc_h2_ping(agc_conn *c);   /* is it alive?  its ACK clears ping_at */

/* ---- call.c ---- */

/*
 * A call's lifecycle: WAITING (for a connection) -> CONNECTING (the
 * connection opens) -> SENT (the request is out, the first byte awaited) ->
 * READING (the answer arrives) -> BACKOFF (waiting to try again) and back to
 * WAITING, or DONE (its timers close, then its result is delivered).
 *
 * Hedging: a call (the primary) whose attempt has no 2xx answer by the hedge
 * delay starts a copy, its twin: a call of its own (one attempt) whose result
 * goes back to the primary.  The first 2xx head wins: a winning primary
 * cancels the twin; a winning twin makes the primary yield (DONE at once,
 * its connection closed) and its result becomes the primary's.  The primary
 * is delivered only after its twin is gone (the twin holds one of its
 * open_timers references), so the twin never outlives it.
 */
typedef enum { CALL_WAITING, CALL_CONNECTING, CALL_SENT, CALL_READING, CALL_BACKOFF, CALL_DONE } agc_call_state;

struct agc_call {
    ag_client *cl;
    agc_call_state state;
    agc_call *next;            /* the client's incoming or waiting list */
    agc_call *prev_a, *next_a; /* the client's active list */
    char *path, *body;         /* copies: the full path (prefix included) and the JSON, gzipped with compress */
    size_t body_len;
    bool body_gzip;
    ag_client_delta_fn on_delta;
    ag_client_attempt_fn on_attempt;
    void *ud;
    ag_client_done_fn done;
    void *done_ud;
    char idempotency_key[40];
    bool stream;               /* the body asks for a stream */
    agc_conn *conn;
    uv_timer_t timer;          /* connect, first byte, or backoff */
    uv_timer_t deadline;       /* the total timeout */
    uv_timer_t hedge;          /* the hedge delay (a primary of a client with options.hedge) */
    int open_timers;           /* closing: the result goes out when the three have closed (and any twin ended) */
    uint32_t total_ms;         /* the total timeout: the client's, or for a twin what was left of its primary's */
    agc_call *twin, *primary;  /* hedging: a primary's copy while it runs; a copy's primary */
    bool won;                  /* a 2xx head arrived */
    bool yielded;              /* a primary whose twin won: its result will be the twin's */
    uint64_t t_start, t_attempt; /* uv_now, ms */
    int retries, retries_5xx;
    bool reused;               /* this attempt's connection had carried calls before */
    bool resent;               /* a reused connection's silent end was already resent once */
    /* the answer being read */
    ag_http_response resp;
    bool sse, got_byte;
    char retry_after[64], retry_after_ms[32];
    size_t scanned;            /* SSE: body bytes looked at (decoded ones, with a coding) */
    ag_http_decoder *dec;      /* the answer's Content-Encoding, when not identity */
    const char *coding;        /* ... its name */
    ag_buf plain;              /* ... the body decoded so far */
    size_t fed;                /* ... coded body bytes given to dec */
    /* HTTP/2: the attempt's stream */
    int32_t stream_id;         /* 0: none open */
    size_t h2_sent;            /* body bytes given to nghttp2 */
    int h2_status;
    bool h2_sse, h2_head;
    ag_http_coding h2_coding;
    ag_buf h2body;             /* the answer's body so far (coded, when it has a coding) */
    ag_client_result res;
    ag_buf text;
};

agc_call *agc_call_new(const ag_client *cl, const ag_client_request *req, ag_client_done_fn done, void *done_ud);
void agc_call_start(ag_client *cl, agc_call *call); /* on the I/O thread: an attempt begins */
void agc_call_free_queued(agc_call *call);          /* never started (the client closed): ends as CLOSED */
void agc_call_abort(agc_call *call, ag_client_outcome why); /* under way: ends as CLOSED or CANCELLED */
/* what its connection reports */
void agc_call_conn_ready(agc_call *call);                 /* connected (and handshaken): send */
void agc_call_conn_read(agc_call *call);                  /* more of the answer in conn->in */
void agc_call_conn_lost(agc_call *call, const char *why); /* the connection failed or ended (why NULL: EOF) */
/* HTTP/2: the answer's head is in (h2_status and the fields set), DATA arrived, the stream ended (why NULL: whole;
 * refused: REFUSED_STREAM, the server never started it) */
void agc_call_h2_head(agc_call *call);
void agc_call_h2_data(agc_call *call, const uint8_t *p, size_t n);
void agc_call_h2_closed(agc_call *call, const char *why, bool refused);

/* A blocking call's wait for its asynchronous result (ag_client_call, ag_batcher_complete): agc_sync_done is
 * the done callback; it moves the result into out. */
typedef struct agc_sync {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    ag_client_result *out;
} agc_sync;

void agc_sync_init(agc_sync *w, ag_client_result *out);
void agc_sync_done(ag_client_result *r, void *ud);
void agc_sync_wait(agc_sync *w);
void agc_sync_deinit(agc_sync *w);

#endif
