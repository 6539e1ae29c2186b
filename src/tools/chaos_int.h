/*
 * chaos_int.h - the chaos proxy's insides, shared by chaos.c (the proxy:
 * connections and the two pipes of each) and chaos_admin.c (the admin API:
 * faults read and replaced, counters as Prometheus text).
 */
#ifndef AG_TOOLS_CHAOS_INT_H
#define AG_TOOLS_CHAOS_INT_H

#include "tools/chaos.h"

#include "http/http.h"

#include <uv.h>

/* What the counters count a fault firing as: per connection that drew it, per request for the HTTP ones. */
typedef enum { F_LATENCY, F_BANDWIDTH, F_SLICE, F_RESET, F_DROP, F_STALL, F_SLOW_CLOSE, F_HTTP_ERROR, F_HTTP_DELAY,
               F_N } chaos_fault;
extern const char *const chaos_fault_names[F_N];

typedef struct pconn pconn;           /* a proxied connection (chaos.c) */
typedef struct chaos_aconn chaos_aconn; /* an admin API connection (chaos_admin.c) */

typedef struct chaos {
    const ag_chaos_opts *o;
    uv_loop_t loop;
    uv_tcp_t listener, admin;
    uv_signal_t sigint, sigterm;
    struct sockaddr_storage upstream;
    ag_chaos_faults faults; /* what new connections draw from */
    uint64_t rng;
    bool stopping;
    pconn *conns;         /* open, for the stop */
    chaos_aconn *aconns;
    /* counters */
    uint64_t accepted, open, upstream_failed, bytes[2], fired[F_N];
} chaos;

/* An HTTP/1.1 request head, parsed whole from the start of a buffer with the parser's default limits. */
typedef struct chaos_head {
    ag_http_header headers[AG_HTTP_MAX_HEADERS_CAP];
    ag_http_request req;
    ag_http_error err;
} chaos_head;
ag_status chaos_head_parse(chaos_head *h, const char *buf, size_t len); /* AG_AGAIN: not whole yet */

/* chaos.c: host and port to an address (getaddrinfo, the first answer); false when it does not resolve. */
bool chaos_resolve(const char *host, int port, struct sockaddr_storage *out);

/* chaos_admin.c: listen on o->admin_host:admin_port; false with msg when it cannot. */
bool chaos_admin_start(chaos *x, char *msg, size_t cap);
/* The admin listener and its connections close (the stop). */
void chaos_admin_stop(chaos *x);

#endif
