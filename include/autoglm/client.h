/*
 * client.h - libautoglm's client: OpenAI-compatible calls (/v1/completions,
 * /v1/chat/completions, or any POST path) that survive a slow or failing API
 * without making it worse.
 *
 * Every call runs through one decision table (docs/client.md; the rows are
 * ag_client_rule): connect errors, connections that end before the answer's
 * first byte, and timeouts are retried with exponential backoff and full
 * jitter; 429 and 503 wait what the server asks (Retry-After in seconds or as
 * an HTTP date, retry-after-ms) or back off; 408 and 409 are retried; other
 * 5xx at most max_5xx_retries times; other 4xx fail at once with the server's
 * message; a stream that delivered a byte is never retried.  A retry budget
 * shared by the client's calls (a token bucket: each call earns budget_ratio
 * of a retry, each retry spends one, starting from and capped at
 * budget_floor) keeps a fleet of clients from multiplying load during an
 * outage.  Each attempt carries the time left as X-Request-Timeout-Ms (the
 * server stops generating when the caller has given up) and one
 * Idempotency-Key per call (the server answers a retry from the first
 * attempt's generation).  With options.compress, answers come gzip- or
 * zstd-coded (streams too) and request bodies go gzipped.
 *
 * Threads: the client owns an I/O thread running a libuv loop; its
 * connections (HTTP/1.1 keep-alive or HTTP/2, TLS for https) are shared by every call,
 * and any thread may call at once.  Stream deltas and async completions are
 * delivered on that I/O thread: keep those callbacks short.  Or, with
 * options.loop, the client runs on the caller's libuv loop instead: no thread,
 * async calls only, made (and the client freed) on that loop's thread.
 */
#ifndef AUTOGLM_CLIENT_H
#define AUTOGLM_CLIENT_H

#include "autoglm/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ag_client ag_client;
struct uv_loop_s;

/* Every number of the decision table; ag_client_options_default() fills these. */
typedef struct ag_client_retry_policy {
    int max_retries;          /* retries of one call after its first attempt (2, as the OpenAI SDKs) */
    int max_5xx_retries;      /* of those, for 5xx other than 503 (2) */
    double backoff_base_s;    /* retry n waits uniform(0, min(cap, base * 2^n)) (0.5) */
    double backoff_cap_s;     /* (8) */
    double max_retry_after_s; /* a longer Retry-After fails the call at once (60) */
    double budget_ratio;      /* retries each call earns for the client (0.1) */
    double budget_floor;      /* the budget at start and its cap (10) */
} ag_client_retry_policy;

typedef struct ag_client_options {
    const char *base_url; /* http://host:port or https://host:port, an optional path prefix after it */
    const char *api_key;  /* sent as Authorization: Bearer KEY; NULL: none */
    const char *model;    /* a request body without "model" gets this one; NULL: the body says */
    uint32_t connect_timeout_ms;    /* TCP connect and TLS handshake (10 s) */
    uint32_t first_byte_timeout_ms; /* request sent -> first byte of the answer (60 s) */
    uint32_t total_timeout_ms;      /* the whole call, retries and waits included (600 s) */
    ag_client_retry_policy retry;
    const char *ca_file; /* https: trust these CAs instead of the system's */
    bool insecure;       /* https: take any certificate */
    bool http2;          /* HTTP/2: many calls per connection, each a stream (h2c by prior knowledge on http://,
                            ALPN h2 on https://); else HTTP/1.1 keep-alive, a call per connection */
    int max_connections; /* open at once; calls beyond wait for one (16) */
    size_t max_response_bytes; /* an answer's body (64 MiB) */
    /* Hedging (off by default): when an attempt has had no answer (a 2xx head) for the hedge delay, a copy of
     * the call goes out on another connection (HTTP/2: another stream) with the same Idempotency-Key; the
     * first 2xx answer wins and the other copy is cancelled.  The delay is hedge_quantile of the client's
     * recent times to a 2xx answer (its last 256), or hedge_initial_ms until hedge_min_samples were seen.  A
     * copy is one attempt, not retried, and spends a token of the retry budget (none left: no copy). */
    bool hedge;
    double hedge_quantile;     /* 0.95 */
    uint32_t hedge_initial_ms; /* 1000 */
    int hedge_min_samples;     /* 20 */
    bool compress;       /* ask for gzip or zstd answers (Accept-Encoding), and send request bodies gzipped */
    size_t compress_min_bytes; /* ... of this size or more (1024) */
    uint64_t seed;       /* the jitter's draws; 0: from the clock */
    struct uv_loop_s *loop; /* NULL: the client's own I/O thread; else run on this loop (see above) */
} ag_client_options;

ag_client_options ag_client_options_default(void);

/* What ended an attempt. */
typedef enum ag_client_outcome {
    AG_CLIENT_OK,            /* a 2xx answer, whole */
    AG_CLIENT_CONNECT_ERROR, /* no connection: refused, unreachable, TLS handshake failed */
    AG_CLIENT_RESET,         /* the connection ended before the answer's first byte */
    AG_CLIENT_TIMEOUT,       /* connect or first byte timeout */
    AG_CLIENT_HTTP_STATUS,   /* a non-2xx answer */
    AG_CLIENT_STREAM_BROKEN, /* the answer stopped after some of it arrived (or an error event in a stream) */
    AG_CLIENT_PROTOCOL,      /* an answer that cannot be read, or over max_response_bytes */
    AG_CLIENT_DEADLINE,      /* the call's total timeout passed */
    AG_CLIENT_CLOSED,        /* the client was freed while the call was under way */
    AG_CLIENT_CERTIFICATE,   /* https: the server's certificate failed verification (not retried) */
    AG_CLIENT_CANCELLED,     /* ag_client_cancel */
} ag_client_outcome;

const char *ag_client_outcome_name(ag_client_outcome o);

/* One attempt, as reported to on_attempt. */
typedef struct ag_client_attempt {
    int number;          /* 1 for the first */
    ag_client_outcome outcome;
    int status;          /* HTTP status; 0 when none came */
    double seconds;      /* the attempt's duration */
    bool retry;          /* another attempt follows */
    double wait_s;       /* ... after this wait */
    const char *rule;    /* the decision table's row that decided, e.g. "503: Retry-After" */
    const char *detail;  /* the cause: the connect error, the server's message */
    const char *stop;    /* when the row allows a retry but none follows: why (max_retries, the budget, ...) */
    const char *coding;  /* the answer's Content-Encoding ("gzip", "zstd"); NULL: none */
    bool hedge;          /* an attempt of the call's hedged copy */
} ag_client_attempt;

typedef void (*ag_client_delta_fn)(const char *text, size_t len, void *ud);
typedef void (*ag_client_attempt_fn)(const ag_client_attempt *a, void *ud);

/* One call's request. */
typedef struct ag_client_request {
    const char *path;             /* "/v1/completions", appended to the base URL's path */
    const char *body;             /* JSON; "stream": true asks for a stream */
    size_t body_len;
    ag_client_delta_fn on_delta;  /* streams: each choice-0 text delta, on the I/O thread */
    ag_client_attempt_fn on_attempt; /* each attempt's outcome and what follows (autoglm complete --verbose) */
    void *ud;
} ag_client_request;

typedef struct ag_client_result {
    ag_client_outcome outcome; /* the last attempt's */
    int status;                /* the last HTTP status, 0 when none */
    int attempts;
    char *body;                /* the last answer's body (a stream's raw events); NUL-terminated */
    size_t body_len;
    char *text;                /* choice 0's text: whole, or the stream's deltas joined; NUL-terminated */
    size_t text_len;
    size_t streamed_bytes;     /* stream bytes that arrived before it broke */
    bool hedged;               /* a hedged copy went out (options.hedge) */
    bool hedge_won;            /* ... and the result is the copy's */
    char error[512];           /* why it failed: the server's message or the fault */
} ag_client_result;

void ag_client_result_free(ag_client_result *r);

ag_status ag_client_new(const ag_client_options *o, ag_client **out, ag_err *err);
/* Calls still under way end as AG_CLIENT_CLOSED (blocking ones return, async ones get their callback).  On a
 * caller's loop it may be called from a done callback; the client's memory goes once its handles have closed. */
void ag_client_free(ag_client *c);

/* End every call under way as AG_CLIENT_CANCELLED (its connection closes, so the server stops generating).
 * From any thread, and async-signal-safe (a SIGINT handler may call it); the client stays usable. */
void ag_client_cancel(ag_client *c);

/* Blocking, from any thread: AG_OK when the call ended (res->outcome says how), AG_EINVAL for a bad request
 * (or on a client that runs on the caller's loop). */
ag_status ag_client_call(ag_client *c, const ag_client_request *req, ag_client_result *res);

/* Asynchronous, from any thread (on the caller's loop: from its thread): done runs on the loop's thread with
 * the result, valid during the call; to keep its body or text, take the pointers and set them to NULL. */
typedef void (*ag_client_done_fn)(ag_client_result *res, void *ud);
ag_status ag_client_call_async(ag_client *c, const ag_client_request *req, ag_client_done_fn done, void *done_ud);

/*
 * ag_batcher: single-prompt completions from any number of callers, sent together as one /v1/completions
 * request with an array "prompt" when max_batch prompts wait or the oldest has waited max_wait_ms.  Each
 * caller's result has its prompt's choice: text, and the choice's JSON object as body; a failed batch fails
 * each of its prompts the same way.  The batch is one call of the client (retried, hedged, deadlined as one).
 * params is the request's JSON object without "prompt" (e.g. {"model":"m","max_tokens":16}); every prompt of a
 * batcher shares it.  Needs a client with its own I/O thread; results arrive on that thread.
 */
typedef struct ag_batcher ag_batcher;
typedef struct ag_batcher_options {
    int max_batch;        /* prompts per request, 1..256 (16) */
    uint32_t max_wait_ms; /* the longest a prompt waits for others (10) */
    int max_pending;      /* prompts at the server at once; a batch waits until it fits (256: autoglm's queue) */
} ag_batcher_options;

ag_batcher_options ag_batcher_options_default(void);
ag_status ag_batcher_new(ag_client *c, const char *params, const ag_batcher_options *o, ag_batcher **out, ag_err *err);
/* From any thread (AG_EINVAL once the batcher is being freed). */
ag_status ag_batcher_complete_async(ag_batcher *b, const char *prompt, size_t len, ag_client_done_fn done, void *ud);
/* Blocking, from any thread but the client's I/O thread. */
ag_status ag_batcher_complete(ag_batcher *b, const char *prompt, size_t len, ag_client_result *res);
/* Sends what waits, waits for the answers of everything sent, then frees; before the client, and not from the
 * client's callbacks (it would wait for its own thread: then it does nothing). */
void ag_batcher_free(ag_batcher *b);

#ifdef __cplusplus
}
#endif

#endif
