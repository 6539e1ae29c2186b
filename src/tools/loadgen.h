/*
 * loadgen.h - the load generator behind `autoglm bench`: one libuv loop
 * driving connections at a target, in closed loop (N requests in flight, each
 * one followed by the next when it ends) or open loop (requests arrive at a
 * rate, Poisson or Gamma-distributed, and each one's latency runs from its
 * intended send time, so a stalled server cannot hide the queue it causes: no
 * coordinated omission).
 *
 * Over HTTP/1.1 a connection carries one request at a time (keep-alive, no
 * pipelining), so there are as many connections as requests in flight.  Over
 * HTTP/2 (nghttp2) every request is a stream multiplexed over a fixed number
 * of connections, each new one going to the connection carrying the fewest.
 * Either may run over TLS (https:// targets).
 *
 * Responses are read as they stream: for OpenAI streams (SSE) the time of
 * every chunk carrying output text is taken, giving time to first token, the
 * gaps between chunks, and time per output token = (e2e - ttft) / (output
 * tokens - 1) with the token count from the response's usage.  Every request
 * ends in exactly one bucket: ok, an HTTP status, timeout, connection error,
 * protocol error, or aborted (in flight at Ctrl-C).
 */
#ifndef AG_TOOLS_LOADGEN_H
#define AG_TOOLS_LOADGEN_H

#include "autoglm/status.h"
#include "tools/hist.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One request to send; the loop adds the Host (:authority), and Content-Length when there is a body. */
typedef struct ag_lg_request {
    char *method, *path;
    char *headers; /* more header lines, "Name: value\r\n" each */
    char *body;    /* NULL: none */
    size_t body_len;
} ag_lg_request;

/* What to send, used in turn. */
typedef struct ag_lg_requests {
    ag_lg_request *v;
    size_t n;
} ag_lg_requests;

/* Copies of the arguments appended (body may be NULL); ag_lg_requests_free frees them all. */
void ag_lg_requests_add(ag_lg_requests *q, const char *method, const char *path, const char *headers, const char *body,
                        size_t body_len);
void ag_lg_requests_free(ag_lg_requests *q);

/* Where the requests go and how. */
typedef struct ag_lg_target {
    const char *host;    /* a numeric address or a name */
    int port;
    bool tls;            /* https */
    bool insecure;       /* TLS: take any certificate */
    const char *cacert;  /* TLS: trust these CAs instead of the system's */
    bool http2;          /* HTTP/2: prior knowledge on cleartext, ALPN h2 over TLS */
    int connections;     /* HTTP/2: the connections the streams share */
} ag_lg_target;

/* Service-level objectives for goodput; 0 leaves one out. */
typedef struct ag_lg_slo {
    double ttft_us, tpot_us, e2e_us;
} ag_lg_slo;

typedef struct ag_lg_step {
    const ag_lg_target *target;
    const ag_lg_requests *reqs;
    int concurrency;     /* closed loop when > 0 */
    double rate;         /* open loop (requests/s) when > 0 */
    double burstiness;   /* open loop: Gamma shape of the gaps; 1 is Poisson */
    uint64_t duration_ns; /* measured time after warm-up; 0: count requests instead */
    uint64_t requests;   /* measured requests when duration_ns is 0 */
    uint64_t warmup_ns;  /* requests started before this are not counted */
    uint64_t timeout_ns; /* per request (per attempt when retrying) */
    int retries;         /* a naive client's retries: a request that timed out, could not connect or got 429 or
                            5xx is sent again at once, up to this many times; its latency runs from the first */
    int max_connections; /* HTTP/1.1 open loop's cap; arrivals beyond it wait (their wait counts) */
    uint64_t seed;
    ag_lg_slo slo;
    bool openai;         /* read usage and stream chunks from bodies (off for plain URLs) */
    bool progress;       /* a live line on stderr */
    const char *label;   /* for the progress line */
} ag_lg_step;

enum { AG_LG_STATUS_SLOTS = 8 };

typedef struct ag_lg_result {
    uint64_t counted;  /* requests started in the measured window */
    uint64_t ok, http_error, timeout, conn_error, proto_error, aborted;
    uint64_t retries;  /* attempts after the first, of counted requests (each reached, or tried to reach, the server) */
    uint64_t refused;  /* HTTP/2 streams the server refused unprocessed, sent again at once (not retries) */
    struct {
        int status;
        uint64_t n;
    } statuses[AG_LG_STATUS_SLOTS]; /* non-2xx statuses seen, first ones */
    uint64_t good;                  /* ok and within every SLO */
    uint64_t in_tokens, out_tokens; /* from usage, when responses have it */
    uint64_t bytes;                 /* response bytes read (HTTP/2: header fields and DATA payloads) */
    double seconds;                 /* from the window's start to the last counted request's end */
    ag_hist e2e, ttft, tpot, itl;   /* microseconds; ttft/tpot/itl only when measurable */
    bool interrupted;               /* Ctrl-C */
    char server[64];                /* the first response's Server header (a report names the target's version) */
    char conn_why[160];             /* the first connection error's cause (refused, a TLS alert, no h2 by ALPN) */
} ag_lg_result;

/* Run one step; AG_EINVAL with msg when the target cannot be resolved or its TLS settings cannot be used. */
ag_status ag_lg_run(const ag_lg_step *s, ag_lg_result *r, char *msg, size_t msg_cap);

/* Ask a running ag_lg_run to stop (async-signal-safe). */
void ag_lg_interrupt(void);
bool ag_lg_interrupted(void);

#endif
