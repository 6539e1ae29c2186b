/*
 * chaos.h - `autoglm chaos`: a TCP proxy that injects network faults between
 * any client and any server (Toxiproxy's role; it is not in Debian), so a
 * slow link, a flaky peer or an overloaded upstream can be reproduced on
 * demand, on loopback, without root.
 *
 * Faults on a direction of the byte stream (up: client to upstream, down:
 * upstream to client): latency with jitter per chunk read, a bandwidth cap,
 * writes sliced into small pieces, a reset after N bytes.  Faults on a
 * connection: refused at once (reset), stalled (accepted, then silence, then
 * closed), a slow close.  HTTP/1.1-aware: a request answered with an error
 * status (and Retry-After) instead of being forwarded, or held before it is.  Each fault has a
 * toxicity, the chance that a new connection gets it (drawn once, when it is
 * accepted), so faults changed through the admin API apply from the next
 * connection on.
 */
#ifndef AG_TOOLS_CHAOS_H
#define AG_TOOLS_CHAOS_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { AG_CHAOS_UP = 0, AG_CHAOS_DOWN = 1 };

/* Faults on one direction of every connection; 0 leaves one out.  p_*: toxicity in [0, 1]. */
typedef struct ag_chaos_link {
    uint64_t latency_us, jitter_us; /* each chunk held latency ± jitter (uniform), order kept */
    double bandwidth;               /* bytes/s */
    size_t slice;                   /* bytes per write */
    uint64_t reset_after;           /* bytes forwarded, then both sides reset */
    double p_latency, p_bandwidth, p_slice, p_reset;
} ag_chaos_link;

typedef struct ag_chaos_faults {
    ag_chaos_link link[2];  /* AG_CHAOS_UP, AG_CHAOS_DOWN */
    double p_drop;          /* a new connection reset at once */
    uint64_t stall_us;      /* accepted, nothing forwarded, closed after this long */
    double p_stall;
    uint64_t slow_close_us; /* a side's close reaches the other this much later */
    double p_slow_close;
    int http_error;         /* an HTTP/1.1 request answered with this status, not forwarded */
    double p_http_error;    /* per request */
    int retry_after_s;      /* Retry-After on those answers; 0: none */
    uint64_t http_delay_us; /* an HTTP/1.1 request (head and body) held this long before it goes up */
    double p_http_delay;    /* per request */
} ag_chaos_faults;

/*
 * Set one fault by its flag name without the dashes ("latency", "jitter",
 * "bandwidth", "slice", "reset-after-bytes", "drop-connections", "stall",
 * "slow-close", "http-error", "http-delay", "retry-after"; '_' may stand for '-') from
 * its text:
 *   link faults   VALUE[,up|,down|,both][,p=P]   (direction: down by default)
 *   stall, slow-close   DURATION[,p=P]
 *   drop-connections    P
 *   http-error          CODE:P
 *   http-delay          DURATION:P
 *   retry-after         SECONDS
 * Durations take us, ms, s or m; bandwidth takes bit/s (kbit, mbit, gbit) or
 * byte/s (B, KB, MB) units.  false with msg when the name or text is not one.
 */
bool ag_chaos_fault_set(ag_chaos_faults *f, const char *name, const char *text, char *msg, size_t cap);
/* The faults as a JSON object of the same names and texts (only those set). */
void ag_chaos_faults_json(const ag_chaos_faults *f, ag_buf *out);
/* A JSON object of name: text (or number) pairs into a fresh set; false with msg naming the bad one. */
bool ag_chaos_faults_from_json(const char *json, size_t len, ag_chaos_faults *f, char *msg, size_t cap);

typedef struct ag_chaos_opts {
    const char *listen_host, *upstream_host, *admin_host;
    int listen_port, upstream_port, admin_port; /* admin_port 0 with no admin_host: no admin API */
    ag_chaos_faults faults;
    size_t max_buffer; /* bytes held per direction of a connection before reading pauses */
    uint64_t seed;
} ag_chaos_opts;

/* Run until SIGINT or SIGTERM; the exit code (2 when an address cannot be used, with one line on stderr). */
int ag_chaos_run(const ag_chaos_opts *o);

#endif
