/*
 * server.h - `autoglm serve`: the OpenAI-compatible HTTP server (HTTP/1.1 and HTTP/2, cleartext or TLS).
 *
 * One libuv loop thread owns every socket; the engine (include/autoglm/
 * engine.h) owns compute on its own thread.  The loop hands requests to the
 * engine with ag_engine_submit and learns of tokens by polling the engine's
 * event descriptor beside its sockets, so no socket is touched off the loop
 * thread and a slow client only ever delays its own stream.
 */
#ifndef AG_SERVER_SERVER_H
#define AG_SERVER_SERVER_H

#include "autoglm/engine.h"
#include "http/http.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ag_server_opts {
    ag_engine_params engine;
    const char *host;              /* "127.0.0.1" */
    int port;                      /* 8080; 0 picks a free one (printed) */
    const char *served_model_name; /* NULL: the model file's stem */
    const char *chat_template;     /* NULL: recognized from the model */
    const char *const *api_keys;   /* none: no authentication */
    size_t n_api_keys;
    ag_http_limits limits;
    size_t max_connections;   /* beyond: 503 and close */
    uint64_t read_timeout_ms; /* a request's head and body must arrive within this (408) */
    uint64_t idle_timeout_ms; /* a keep-alive connection with nothing to do is closed after this */
    uint64_t max_requests_per_conn; /* the n-th response on a connection says Connection: close (nginx's
                                       keepalive_requests); 0: no limit */
    uint64_t drain_timeout_ms;
    /* During a drain, requests arriving on connections already open are served, with Connection: close, for
     * this long: a proxy (nginx) may be sending one on a pooled connection as the drain begins.  The process
     * exits once nothing runs and every connection has closed, or this has passed.  0: they are answered 503. */
    uint64_t drain_linger_ms;
    /* TLS: with both, every connection speaks TLS 1.2+ (ALPN h2, http/1.1); NULL: cleartext */
    const char *tls_cert, *tls_key; /* PEM files: the certificate chain and its private key */
    size_t compress_min_bytes; /* JSON answers this size or more go out in the coding Accept-Encoding asks for */
    /* HTTP/2 (by the client preface, on the same listener) */
    uint32_t http2_max_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS; more are refused (REFUSED_STREAM) */
    uint32_t http2_window;      /* each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE), bytes */
    /* observability */
    const char *otlp_endpoint; /* NULL: no span export */
    double trace_sample_ratio; /* of new traces (an incoming traceparent's flag decides for its trace) */
    const char *log_file;      /* NULL: stderr */
    int log_format;            /* ag_log_format */
    int log_level;             /* ag_log_level */
    /* response cache (L1, in process); off when cache_mb is 0 */
    size_t cache_mb;
    uint64_t cache_ttl_s;        /* an entry's life unless the request's cache.ttl says */
    bool cache_nondeterministic; /* also cache sampled requests without a seed */
    bool cache_public;           /* deterministic answers say Cache-Control: public (shared caches may keep
                                    them), not private */
    uint64_t cache_coalesce_ms;  /* identical requests wait this long for the first one's answer (0: never) */
    /* Idempotency-Key: a retried request answered from its first attempt's generation (off when max_keys is 0) */
    size_t idempotency_max_keys;   /* keys remembered at once */
    size_t idempotency_mb;         /* bytes of kept answers, MiB */
    uint64_t idempotency_ttl_ms;   /* how long a key's answer is kept */
    uint64_t idempotency_grace_ms; /* a keyed generation goes on this long after its client left, for a retry */
    /* structured output (src/grammar) */
    size_t grammar_cache;           /* compiled grammars kept by text, with their token masks */
    size_t grammar_cache_mb;        /* the kept grammars' states and masks together, MiB (least recent go past it) */
    uint32_t schema_max_depth;      /* a JSON schema's nesting */
    uint32_t schema_max_properties; /* a JSON schema's properties, all objects together */
    const char *admin_key;       /* DELETE /v1/cache needs 'Authorization: Bearer' this; NULL: refused */
    const char *redis_url;       /* the shared tier (redis://...); NULL: none */
    uint64_t redis_timeout_ms;   /* a Redis command's limit: past it, a miss */
    bool cache_write_through;    /* write both tiers before answering (default: fill after, cache-aside) */
    /* the Batch API (docs/batch.md): files and batches in the Redis of batch_redis_url (else redis_url's; without
     * either, 501): a Redis for jobs should keep everything (noeviction, appendonly), one for a cache should not */
    const char *batch_redis_url;
    size_t max_file_bytes;          /* an uploaded file's bytes (413 past it) */
    int batch_workers;              /* batch requests this replica runs at once (0: it runs none, serves the API) */
    uint64_t batch_claim_idle_ms;   /* a request another worker has held this long without a heartbeat is taken */
    uint64_t batch_max_deliveries;  /* a request delivered this often without a result goes to the error file */
    uint64_t batch_window_ms;       /* a batch's completion window ("24h" is the API's only value; this is how long
                                       it really is here: requests not run by its end are expired) */
    bool no_ui;                  /* GET / and /ui/... answer 404 instead of the web UI */
    bool fault_injection;        /* tests only: POST /debug/fail-alloc?n=N fails the loop's N-th try-allocation */
} ag_server_opts;

/* The defaults above, with 30 s read, 60 s idle and 30 s drain timeouts, 1024 connections, text logs at info, sample ratio 1. */
void ag_server_opts_default(ag_server_opts *o);

/* Run until SIGTERM/SIGINT and a drain; returns the process exit code (0 after a clean drain). */
int ag_server_run(const ag_server_opts *o);

#endif
