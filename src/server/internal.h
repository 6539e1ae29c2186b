/*
 * internal.h - the server's own objects, shared by its files and by nothing
 * outside src/server/.
 *
 * The files stack, each using only those below it:
 *
 *   server.c    lifecycle: listen, load the model, signals, the drain
 *   routes.c    dispatch of a complete request to its handler; the small routes
 *   respcache.c the response cache's part of a generation: lookup, single flight, Redis
 *   stats.c     GET /v1/stats: the last minutes' requests, tokens and latencies, for the web UI's dashboard
 *   ui.c        the web UI's files (GET /, /ui/...), built into the binary
 *   idem.c      Idempotency-Key: a retried request answered from its first attempt's generation
 *   exchange.c  one generation request's lifecycle (the state machine below) and engine events
 *   conn.c      connection I/O, HTTP/1.1 request reading and response framing, the SSE writer; with a
 *               certificate, TLS under the connection's bytes (src/http/tls.c, OpenSSL over memory BIOs)
 *   h2.c        HTTP/2 (nghttp2) on a connection that opened with the client preface: its streams
 *   batch_api.c the Files and Batches endpoints: each request's Redis work on the loop's thread pool
 *   batch_worker.c the Batch API's worker: claims queued requests, runs each as a generation at the lowest
 *               priority in capacity interactive requests leave, and writes its result
 *
 * conn.c knows nothing of generations: a connection that is serving one holds
 * an opaque link to it (c->x), set and cleared only by exchange.c's
 * ag_exchange_attach/detach, and tells the exchange layer when the client goes
 * away through the server's on_client_gone hook.
 *
 * The layers above see one request at a time through a conn: an HTTP/1.1
 * connection (requests in turn), or an HTTP/2 stream, which h2.c creates as a
 * conn of kind CONN_STREAM under its connection (kind CONN_H2).  The calls
 * above (ag_conn_respond*, ag_conn_write_head/send/write, ag_sse_*,
 * ag_conn_request_done) frame a stream's answer as HEADERS and DATA frames
 * instead of HTTP/1.1 text, so routes, exchanges and the cache are the same
 * code for both protocols.
 */
#ifndef AG_SERVER_INTERNAL_H
#define AG_SERVER_INTERNAL_H

#include "base/buf.h"
#include "base/map.h"
#include "cache/cache.h"
#include "cache/l2.h"
#include "http/coding.h"
#include "http/http.h"
#include "obs/export.h"
#include "obs/metrics.h"
#include "obs/trace.h"
#include "server/openai.h"
#include "server/server.h"
#include "server/tools.h"
#include "http/tls.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct server server;
typedef struct conn conn;
typedef struct exchange exchange;
typedef struct idem_entry idem_entry;
typedef struct ag_stats ag_stats;

/* Routes, in the order of the routes table and of the metrics' route labels. */
enum { R_HEALTH, R_MODELS, R_MODEL, R_CHAT, R_COMPLETIONS, R_TOKENIZE, R_DETOKENIZE, R_METRICS, R_CACHE_STATS, R_CACHE,
       R_STATS, R_UI_INDEX, R_UI_FILE, R_FAIL_ALLOC, R_FILES, R_FILE, R_BATCHES, R_BATCH, R_COUNT };
extern const char *const ag_route_labels[R_COUNT + 1];

/* What is known of the request a connection is serving, for metrics, the access log and its span. */
typedef struct req_obs {
    bool active;
    uint64_t t_start_ns; /* its first byte */
    ag_trace trace;
    int route;         /* R_*, or R_COUNT for none */
    const char *cache; /* the response cache's verdict: none, bypass, miss, coalesced, hit-l1, hit-l2; or
                        * idempotent: answered from an earlier request with its Idempotency-Key */
    int status;
    char method[16], path[128];
} req_obs;

/* A connection's lifecycle: reading a head, then a body, serving the request, closing gracefully.  A stream
 * goes C_HEAD (HEADERS) -> C_BODY (DATA) -> C_BUSY (answering) -> C_CLOSING (answer complete, frames leaving). */
typedef enum conn_state { C_HEAD, C_BODY, C_BUSY, C_CLOSING } conn_state;

/* What a conn is: an HTTP/1.1 connection, an HTTP/2 connection (its requests are its streams), a stream, or a
 * batch job's request (no socket: its answer, status and body, goes to the worker through on_job_done). */
typedef enum conn_kind { CONN_H1, CONN_H2, CONN_STREAM, CONN_JOB } conn_kind;

typedef struct h2_session h2_session;
typedef struct h2_fields h2_fields;
typedef struct batch_op batch_op;
typedef struct batch_job batch_job;
typedef struct batch_worker batch_worker;

struct conn {
    conn_kind kind;
    h2_session *h2; /* CONN_H2: its session; CONN_STREAM: its connection's */
    int32_t stream_id; /* CONN_STREAM */
    size_t out_sent;   /* CONN_STREAM: bytes of out already framed as DATA */
    h2_fields *fields; /* CONN_STREAM: where its header fields sit in in while they arrive */
    uv_tcp_t tcp;
    ag_tls *tls; /* NULL on a cleartext listener */
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    server *s;
    conn_state state;
    int handles;
    bool closed, shutting, dirty, keep_alive, chunked_out, head_only, processing;
    ag_buf in;  /* received bytes, the current request at the start */
    ag_buf out; /* response bytes not yet handed to libuv */
    ag_http_head_parser hp;
    ag_http_request req;     /* its spans point into in: re-made when in moves as the body arrives (req_base) */
    uintptr_t req_base;      /* where in's bytes were when req was parsed */
    ag_http_header *headers; /* limits.max_headers */
    ag_http_chunked chunks;
    size_t body_len, consumed; /* decoded body bytes (at in.data + head_len); request bytes of in */
    size_t sse_at;             /* c->out offset of the open SSE event's chunk-size field */
    ag_http_coding coding_whole, coding_stream; /* what the request's Accept-Encoding allows, for each kind */
    ag_http_encoder *sse_enc;  /* the current event stream's zstd coding, when the client asked for it */
    ag_buf body_dec;           /* the current request's body decoded from its Content-Encoding */
    uint64_t t_start;          /* loop time of the current request's first byte; 0 between requests */
    uint64_t n_served;         /* requests answered on this connection */
    req_obs obs;
    exchange *x; /* the generation this connection serves; only ag_exchange_attach/detach change it */
    batch_op *op; /* a Files/Batches request's Redis work in flight for it (batch_api.c links and unlinks it) */
    batch_job *job; /* CONN_JOB: the job it is */
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
    uv_timer_t linger_timer; /* running while a drain's linger lasts (--drain-linger): see ag_server_lingering */
    uv_timer_t tune_timer;   /* --slo: logs the controller's state once a second when its budget moved */
    uint64_t tune_logged;    /* the adjustment count last logged */
    conn *conns;
    size_t n_conns, n_exchanges;
    ag_map inflight; /* engine id -> choice */
    conn **dirty;
    size_t n_dirty, cap_dirty;
    conn *retired; /* HTTP/2 streams closed in this loop iteration, freed after it: a caller may still hold one */
    ag_tls_ctx *tls;         /* --tls-cert/--tls-key: every connection speaks TLS; NULL: cleartext */
    ag_buf tls_wire;         /* TLS bytes on their way to a socket (used and emptied within one call) */
    ag_http_encoder *enc[AG_CODING_UNKNOWN]; /* whole-response encoders by coding, made when first needed */
    ag_buf coded, coded_extra; /* a coded body and its head's extra lines (used within one call) */
    char tls_rbuf[1 << 16];  /* a TLS connection's socket reads land here before OpenSSL takes them */
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
    /* Idempotency-Key (idem.c): entries by tenant and key; the generating ones; the answered ones, oldest first */
    ag_map idem_keys;
    idem_entry *idem_running, *idem_done, *idem_done_tail;
    size_t idem_n, idem_bytes; /* entries, and bytes of kept answers */
    uv_timer_t idem_timer; /* cancels keyed generations whose clients left and did not come back */
    ag_stats *stats;       /* the recent past, for GET /v1/stats */
    struct ag_ui *ui;      /* the web UI's files and their coded forms; NULL with --no-ui */
    struct ag_jobs *jobs;  /* the Batch API's store (--redis-url), or NULL: its endpoints answer 501 */
    size_t n_batch_ops;    /* Files/Batches requests whose Redis work is in flight */
    batch_worker *worker;  /* --batch-workers above 0 with a store */
    size_t max_in;         /* the most request bytes a connection buffers: head and the largest body any route takes */
    /* the layers above conn.c, as hooks, so that the calls stack: conn.c never calls up by name */
    void (*on_request)(conn *c);             /* a complete request is in c's buffer: route it */
    void (*on_request_end)(conn *c, int st); /* it was answered (or its client left: 499): count, log, span */
    void (*on_client_gone)(conn *c);         /* the connection closed while serving c->x or c->op */
    void (*on_job_done)(conn *c);            /* a CONN_JOB's answer is complete (status in obs.status, body in out) */
    size_t (*body_limit)(const conn *c);     /* the most body bytes c's request (its head parsed) may send */
};

/* Draining, and requests on connections already open are still served (the linger timer runs). */
static inline bool ag_server_lingering(const server *s) {
    return s->draining && uv_is_active((const uv_handle_t *)&s->linger_timer);
}

/* ---- conn.c: connections and HTTP/1.1 framing ---- */

/* A request's observation starts (req: NULL when its head did not parse; its Accept-Encoding is noted too) and
 * ends (metrics, log, span). */
void ag_conn_obs_begin(conn *c, const ag_http_request *req);
void ag_conn_obs_finish(conn *c, int status);
/* A protocol error: answer it (and, on HTTP/1.1, close). */
void ag_conn_fail(conn *c, int status, const char *reason);
void ag_conn_mark_dirty(conn *c);
/* Between requests the idle timeout runs; while one arrives, the read timeout. */
void ag_conn_arm_timer(conn *c);
/* Remove c from the server's list of connections to flush (a stream about to be freed). */
void ag_conn_forget_dirty(conn *c);

void ag_conn_accept(server *s, uv_stream_t *listener);
/* A connection on a socket already connected (the HTTP/2 fuzz target's socketpair); NULL if libuv refuses it. */
conn *ag_conn_open(server *s, uv_os_sock_t fd);
/* Move the parser as far as the buffered bytes allow, serving each complete request in order. */
void ag_conn_process(conn *c);
void ag_conn_send(conn *c, const void *p, size_t n);
/* Hand c->out, then body[0..n) inside the shared value v, to the kernel; v is held, not copied, while it waits. */
void ag_conn_write(conn *c, const char *body, size_t n, ag_cache_val *v);
void ag_conn_flush(conn *c);
void ag_conn_end(conn *c);   /* graceful: output, then FIN, then a bounded lingering read */
void ag_conn_close(conn *c); /* at once */
/* The status line and headers; content_length < 0 is a streamed body, and a 304 has no body and no framing
 * headers whatever it says.  extra: complete header lines or NULL. */
void ag_conn_write_head(conn *c, int status, const char *ctype, int64_t content_length, const char *extra);
/* The current request is answered: account for it and go on with the next one (or end the connection). */
void ag_conn_request_done(conn *c);
void ag_conn_respond(conn *c, int status, const char *ctype, const char *body, size_t len, const char *extra);
/* A whole answer whose body is p1 then p2 (p2 inside the shared value v, sent by reference when not coded);
 * JSON of --compress-min-bytes or more goes out in the coding the client's Accept-Encoding prefers. */
void ag_conn_respond_parts(conn *c, int status, const char *ctype, const char *p1, size_t n1, const char *p2,
                           size_t n2, ag_cache_val *v, const char *extra);
void ag_conn_respond_json(conn *c, int status, const ag_buf *body, const char *extra);
void ag_conn_respond_error(conn *c, const ag_api_error *e);
void ag_conn_respond_status(conn *c, int status, const char *type, const char *code, const char *msg,
                            const char *extra);
void ag_conn_flush_dirty(server *s);
/* What the connection layer keeps in the server (buffers, encoders, the dirty list), freed at its end. */
void ag_conn_server_deinit(server *s);

/*
 * The SSE stream writer: open sends the head; each event is begun, its JSON
 * appended by the caller straight into the returned buffer (the connection's
 * output, no per-event heap buffer), and ended, which frames it as one
 * HTTP/1.1 chunk; close sends [DONE] and ends the response.
 */
void ag_sse_open(conn *c, const char *extra);
ag_buf *ag_sse_event_begin(conn *c);
void ag_sse_event_end(conn *c);
void ag_sse_close(conn *c);

/* ---- h2.c: HTTP/2 ---- */

/* The first bytes of a connection: the client preface (true), a prefix of it (wait), or not (HTTP/1.1). */
typedef enum { H2_PREFACE_NO, H2_PREFACE_PARTIAL, H2_PREFACE_YES } h2_preface;
h2_preface ag_h2_sniff(const char *p, size_t n);
/* Turn c into an HTTP/2 connection and feed it the bytes it has read (false: no memory; c is closed). */
bool ag_h2_start(conn *c);
/* Feed c->in to the session (CONN_H2's read path); a protocol error or a flood ends the connection. */
void ag_h2_recv(conn *c);
/* Frame what the session has to send (CONN_H2) into the connection's output. */
void ag_h2_flush(conn *c);
/* A stream's answer: its HEADERS now, DATA from c->out as the window allows. */
void ag_h2_submit_response(conn *st, int status, const char *ctype, int64_t content_length, const char *extra);
/* A stream's answer is complete (END_STREAM after what is queued); or reset it (its client is then gone). */
void ag_h2_stream_done(conn *st);
void ag_h2_stream_reset(conn *st);
/* The session has nothing left to read or write (after GOAWAY, its last stream closed; or a protocol error). */
bool ag_h2_done(const conn *c);
/* GOAWAY: no new streams; those in flight finish (drain). */
void ag_h2_goaway(conn *c);
/* The connection closed: every stream's client is gone. */
void ag_h2_close(conn *c);
/* The read timeout for streams still arriving, and whether the connection is idle (no streams). */
void ag_h2_on_timer(conn *c);
bool ag_h2_idle(const conn *c, uint64_t *oldest_arriving);
/* The connection's open streams, linked through next. */
conn *ag_h2_streams(const conn *c);
/* Free the streams closed since the last call (after each loop iteration's flush, and at exit). */
void ag_h2_free_retired(server *s);

/* ---- routes.c ---- */

void ag_route_dispatch(conn *c);
/* --max-body-bytes, or for an upload to POST /v1/files --max-file-bytes and its multipart framing. */
size_t ag_route_body_limit(const conn *c);
/* The API key a request carries (its tenant for the caches), or an empty span. */
ag_str ag_route_bearer(const ag_http_request *req);

/* ---- stats.c: GET /v1/stats ---- */

#define AG_STATS_SECONDS 300       /* the longest window, s: one slot a second */
#define AG_STATS_SAMPLES 4096      /* generations whose latencies are kept for the percentiles: the latest */
#define AG_STATS_DEFAULT_WINDOW 60 /* s, when the query names none */

/* A generation request's numbers as it ends (ttft_ns 0: no token came; tpot_ns 0: fewer than two). */
typedef struct ag_stats_gen {
    uint64_t ttft_ns, tpot_ns, e2e_ns;
    uint64_t prompt_tokens, cached_tokens;
    int cache_hit; /* the response cache: 1 answered from it, 0 looked up and missed, -1 not looked up */
} ag_stats_gen;

/* What the server is now, read by the caller for the answer. */
typedef struct ag_stats_now {
    uint64_t t_ns;                 /* monotonic, the clock of the calls below */
    const char *model, *status;    /* status: ok, loading or draining */
    const ag_engine_stats *engine; /* NULL while the model loads */
} ag_stats_now;

/* t0_ns: the server's start on the monotonic clock (ag_clock_mono_ns), which every call below also uses. */
ag_stats *ag_stats_new(uint64_t t0_ns);
void ag_stats_free(ag_stats *st);
/* A token was sent (or kept for a whole answer); a request was answered (g: NULL unless it was a generation). */
void ag_stats_token(ag_stats *st, uint64_t now_ns);
void ag_stats_request(ag_stats *st, uint64_t now_ns, int status, const ag_stats_gen *g);
/* ?window=S (1..AG_STATS_SECONDS); AG_EINVAL for another value. */
ag_status ag_stats_window_parse(ag_str query, int *window_s);
void ag_stats_json(ag_stats *st, const ag_stats_now *now, int window_s, ag_buf *out);

/* ---- ui.c: the web UI ---- */

/* The UI's files, each coded in every content coding once (NULL: a coding failed; the server runs without a UI). */
struct ag_ui *ag_ui_new(void);
void ag_ui_free(struct ag_ui *ui);
/* GET / and /ui/NAME: true when path is one of the UI's files (answered), false otherwise (not answered). */
bool ag_ui_serve(conn *c, ag_str path);

/* ---- exchange.c: the generation lifecycle ---- */

/*
 * An exchange's state.  Every transition is one function in exchange.c,
 * respcache.c or idem.c, and each checks the state it leaves; an event that finds the
 * exchange in another state is counted in autoglm_internal_errors_total and
 * dropped, never written to a connection.
 *
 *   PARSED --Idempotency-Key answered--> DONE
 *   PARSED --Idempotency-Key generating--> FOLLOWING --its answer--> DONE
 *                                                    --its generation failed--> (submit)
 *   PARSED --lookup--> LOOKUP --l2 miss--> (generate)
 *   PARSED/LOOKUP --hit--> DONE
 *   (generate) --leader in flight--> FOLLOWING --leader's answer--> DONE
 *                                              --timeout, leader failed--> (submit)
 *   (submit) --> GENERATING --last choice's event--> STORING (write-through) --> DONE
 *                          --last choice's event--> DONE
 *   (submit) --refused (the engine's queue takes all of its choices or none)--> DONE, its client answered
 *
 * The connection link (x->c, c->x) is separate from the state: it is cut when
 * the client leaves or has been answered, and an exchange without one never
 * writes.
 */
/*
 * Every generation answer says X-Prefix-Key: a hash of the tenant's prefix-cache namespace and the first
 * AG_PREFIX_KEY_TOKENS tokens of its (first) prompt.  The turns of one conversation, and conversations that
 * open alike (one system prompt), share it; a client that sends it back (or an X-Session-ID) lets nginx's
 * consistent hash put them on the replica whose prefix cache holds that start (deploy/cluster).
 */
#define AG_PREFIX_KEY_TOKENS 64

typedef enum ag_exchange_state { X_PARSED, X_LOOKUP, X_FOLLOWING, X_GENERATING, X_STORING, X_DONE } ag_exchange_state;

typedef struct choice {
    exchange *x;
    uint64_t id; /* the engine's; the inflight map's key points here */
    bool open;   /* submitted and not finished */
    uint64_t t_first_ns, t_last_ns;                                /* loop-side arrival of its first and latest token */
    uint64_t t_submit_ns, t_admit_ns, t_engine_first_ns, t_end_ns; /* engine timings, from the last event */
    ag_finish finish;
    ag_buf text;        /* non-streamed: the whole completion; streamed and stored: the same */
    ag_api_logprobs lp; /* non-streamed: all tokens; streamed: the chunk's */
    ag_toolparse *tp;   /* streamed with tools: the answer parsed as it comes (tools.h) */
    int32_t prompt_tokens, completion_tokens, cached_tokens;
} choice;

/* The response cache's verdict on a generated answer, and its X-Cache header. */
typedef enum { CACHE_NONE, CACHE_BYPASS, CACHE_MISS } cache_verdict;

struct exchange {
    server *s;
    ag_exchange_state state;
    conn *c; /* the client, while attached */
    ag_arena arena;
    ag_api_request req;
    ag_api_meta meta;
    choice *ch;
    int n_ch, n_open;
    uint64_t kv_salt; /* the prefix cache's namespace for this tenant */
    char prefix_hdr[40]; /* "X-Prefix-Key: HEX\r\n": the tenant's first prompt's first AG_PREFIX_KEY_TOKENS tokens */
    uint64_t t_start_ns, t_first_ns; /* the request's first byte; the first token of any choice */
    uint64_t deadline_ns; /* X-Request-Timeout-Ms after the first byte: the engine stops there; 0: none */
    /* the response cache: its verdict on this request (X-Cache of a generated answer), and where to store it */
    cache_verdict verdict;
    bool cache_store;
    uint8_t cache_key[32];
    uint64_t cache_ttl_ns, cache_tag;
    /* single flight: identical cacheable requests wait for the first (their leader) instead of generating */
    exchange *leader;     /* set while FOLLOWING */
    exchange **followers; /* the leader's waiting requests */
    int n_followers;
    bool leading;         /* registered in server.leaders under cache_key */
    uint64_t t_follow_ns; /* when this one began to wait */
    ag_cache_val *value;  /* the finished answer as stored (NULL: not stored); its client is answered from it */
    /* Idempotency-Key: the key's entry, as the exchange generating its answer or one waiting for it */
    idem_entry *idem;
    exchange *idem_next;  /* the entry's waiting list */
    bool idem_cancelled;  /* its client left and did not come back in time */
};

extern const char *const ag_cache_headers[];

/* POST /v1/chat/completions and /v1/completions. */
void ag_exchange_start(conn *c, ag_api_kind kind, const char *body, size_t len);
void ag_exchange_attach(exchange *x, conn *c);
void ag_exchange_detach(exchange *x);
/* The client left: stop generating unless others wait for the answer (server.on_client_gone). */
void ag_exchange_on_client_gone(conn *c);
/* A request ends: metrics, the access log, its spans (server.on_request_end). */
void ag_exchange_on_request_end(conn *c, int status);
/* Submit every choice (a miss that generates); on a refusal the client gets the error. */
void ag_exchange_submit(exchange *x);
void ag_exchange_free(exchange *x);
void ag_exchange_cancel(exchange *x);
void ag_exchange_poll_engine(server *s);
ag_api_usage ag_exchange_usage(const exchange *x);
/* A bug: an event for an exchange in the wrong state (counted, logged, dropped). */
void ag_exchange_bug(exchange *x, const char *what);

/* ---- respcache.c: the response cache's part ---- */

/* Look the request up and answer a hit (true: answered, x is DONE); else set how a generated answer is stored. */
bool ag_respcache_lookup(exchange *x);
/* A miss to generate: ask Redis first (LOOKUP), or follow a leader, or submit. */
void ag_respcache_miss(exchange *x);
/* A whole response from a stored value; false when it does not decode (nothing sent). */
bool ag_respcache_send_stored(conn *c, const exchange *x, ag_cache_val *v, const char *extra);
/*
 * HTTP caching of a whole answer.  A deterministic one (temperature 0 or a seed) carries Cache-Control
 * (private, or public with --cache-public; max-age the cache TTL) and a weak ETag over its content (the model
 * and each choice's text and finish: not the bytes, whose id and created differ per response); any other,
 * no-store.  The content hash starts at ag_respcache_etag_seed and takes each choice in turn.  validators
 * writes extra plus those lines into out; when the request's If-None-Match names the ETag it answers 412
 * itself (RFC 9110 13.1.2: a POST is never answered 304) and returns true.
 */
uint64_t ag_respcache_etag_seed(const exchange *x);
uint64_t ag_respcache_etag_add(uint64_t h, const char *text, size_t len, int finish);
bool ag_respcache_validators(const exchange *x, conn *c, uint64_t content, const char *extra, char *out, size_t cap);
/* Answer x from the stored value v and end x (-> DONE): a cache hit of the named tier, or (tier NULL) an
 * idempotent replay. */
void ag_respcache_serve(exchange *x, ag_cache_val *v, const char *tier);
/* A leader finished: store its value, answer its followers. */
void ag_respcache_publish(exchange *x);
void ag_respcache_on_follow_timer(uv_timer_t *t);
/* The cache's counters for /metrics and /v1/cache/stats. */
void ag_respcache_render_metrics(server *s, ag_buf *out);
void ag_respcache_stats_json(server *s, ag_buf *out);
/* DELETE /v1/cache[?namespace=NAME]'s work and answer: L1 now, Redis in the background. */
void ag_respcache_delete_json(server *s, ag_str query, ag_buf *out);

/* ---- idem.c: Idempotency-Key ---- */

/* A parsed request with the header: true when it has been dealt with (answered from its key's answer,
 * refused, or waiting for the key's generation); false to go on (x generates the key's answer, or has none). */
bool ag_idem_begin(exchange *x, const char *body, size_t len);
/* x ends (from ag_exchange_free): a generator's whole answer is kept and given to those waiting, or another
 * waiter generates. */
void ag_idem_end(exchange *x);
/* x's client left: true when x keeps generating for a retry (within --idempotency-grace). */
bool ag_idem_keep_generating(exchange *x);
/* The drain: generations kept for retries are cancelled (no retry can reach them). */
void ag_idem_drain(server *s);
void ag_idem_deinit(server *s);

/* ---- batch_api.c, batch_worker.c: the Batch API (docs/batch.md) ---- */

/* Batch requests run at this priority, below any a client may ask for (engine.h: lower values first), in the
 * engine's background class: they give up their sequence slot to any other request that wants one. */
#define AG_BATCH_PRIORITY INT32_MAX
/* multipart framing allowed around an uploaded file's bytes */
#define AG_BATCH_UPLOAD_SLACK 65536

/* The routes /v1/files[/{id}[/content]] and /v1/batches[/{id}[/cancel]] (the method is checked there). */
void ag_batch_route(conn *c, int route, const char *body, size_t len);
/* c's client left while its Redis work ran: the answer is dropped. */
void ag_batch_on_client_gone(conn *c);

/* Start the worker (claims begin once the model is loaded); false with msg when it cannot. */
bool ag_batch_worker_start(server *s, char *msg, size_t cap);
/* The drain: no new claims; jobs running finish and write their results. */
void ag_batch_worker_drain(server *s);
/* The drain's timeout: running jobs stop unwritten (their entries stay pending, for another replica to claim). */
void ag_batch_worker_abandon(server *s);
/* Nothing of the worker is in flight (its handles close once this is true during a drain). */
bool ag_batch_worker_idle(const server *s);
void ag_batch_worker_close(server *s);
/* CONN_JOB's answer (server.on_job_done). */
void ag_batch_worker_on_job_done(conn *c);
void ag_batch_render_metrics(server *s, ag_buf *out);

/* ---- server.c ---- */

void ag_server_maybe_stop(server *s);
const char *ag_server_http_date(server *s);

#endif
