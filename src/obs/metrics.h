/*
 * metrics.h - the server's Prometheus metrics: lock-free counters and
 * histograms updated on the hot path, rendered in the text exposition
 * format (0.0.4) for GET /metrics.
 *
 * Names mirror vLLM's set with the prefix autoglm_ (vllm:time_to_first_token_seconds
 * becomes autoglm_time_to_first_token_seconds), so dashboards translate by a
 * rename; every name passes `promtool check metrics`.  Request metrics are
 * updated with relaxed atomics; engine gauges and counters (running, waiting,
 * KV usage, prefix cache, preemptions, rows per step) are read from the
 * engine's stats at scrape time, and process metrics from /proc.
 */
#ifndef AG_OBS_METRICS_H
#define AG_OBS_METRICS_H

#include "autoglm/engine.h"
#include "base/buf.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AG_METRICS_MAX_BUCKETS 24

typedef struct ag_histogram {
    const double *bounds; /* upper bounds in the metric's unit, increasing; +Inf is implied */
    size_t n_bounds;
    double scale;                                   /* observed value x scale = the unit (1e-9: ns to s) */
    _Atomic uint64_t counts[AG_METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative; the last is +Inf */
    _Atomic uint64_t sum;                           /* of observed values, unscaled */
} ag_histogram;

void ag_histogram_observe(ag_histogram *h, uint64_t v);

typedef enum ag_metric_finish {
    AG_METRIC_FINISH_STOP,
    AG_METRIC_FINISH_LENGTH,
    AG_METRIC_FINISH_ABORT,
    AG_METRIC_FINISH_ERROR,
    AG_METRIC_FINISH_COUNT
} ag_metric_finish;

#define AG_METRICS_MAX_ROUTES 32
/* The protocol a request came over, as its ALPN id: the protocol label of autoglm_http_requests_total. */
typedef enum ag_metric_protocol { AG_METRIC_HTTP1, AG_METRIC_H2, AG_METRIC_PROTOCOL_COUNT } ag_metric_protocol;
#define AG_METRICS_N_STATUS 19
/* What became of a request with an Idempotency-Key: the result label of autoglm_idempotency_requests_total. */
typedef enum ag_metric_idem {
    AG_METRIC_IDEM_NEW,       /* the first with its key: generated */
    AG_METRIC_IDEM_REPLAYED,  /* answered from its key's kept answer */
    AG_METRIC_IDEM_JOINED,    /* waited for its key's generation in flight */
    AG_METRIC_IDEM_CONFLICT,  /* its key came with another body: 422 */
    AG_METRIC_IDEM_UNTRACKED, /* every kept key was generating: served without one */
    AG_METRIC_IDEM_COUNT
} ag_metric_idem;

typedef struct ag_metrics {
    const char *const *routes; /* route label values; the last is "other" */
    size_t n_routes;
    _Atomic uint64_t http_requests[AG_METRIC_PROTOCOL_COUNT][AG_METRICS_MAX_ROUTES][AG_METRICS_N_STATUS];
    _Atomic uint64_t request_success[AG_METRIC_FINISH_COUNT];
    _Atomic uint64_t prompt_tokens, generation_tokens;
    _Atomic uint64_t connections_accepted;
    _Atomic int64_t connections_open;
    _Atomic uint64_t log_dropped, spans_exported, spans_dropped;
    _Atomic uint64_t idempotency[AG_METRIC_IDEM_COUNT];
    _Atomic uint64_t internal_errors; /* events dropped in a state that cannot take them: bugs */
    ag_histogram e2e, ttft, tpot, itl, queue, prefill, decode; /* nanoseconds observed, seconds shown */
    double start_time; /* Unix seconds */
} ag_metrics;

/* routes: the label values of ag_metrics_http_request's route index (borrowed for the metrics' life). */
void ag_metrics_init(ag_metrics *m, const char *const *routes, size_t n_routes);
void ag_metrics_http_request(ag_metrics *m, ag_metric_protocol protocol, size_t route, int status);
/* Append the whole exposition; st: the engine's stats now (NULL before the model is loaded). */
void ag_metrics_render(ag_metrics *m, const ag_engine_stats *st, ag_buf *out);

/* The response cache's numbers, as the server reads them from its tiers (l1/l2: whether the tier is there). */
typedef struct ag_cache_metrics {
    bool l1, l2;
    uint64_t l1_hits, l1_misses, evictions, rejections, bytes, entries, bypass;
    uint64_t l2_hits, l2_misses, redis_errors, redis_timeouts, redis_short_circuits, redis_reconnects;
    bool redis_breaker_open, redis_connected;
} ag_cache_metrics;

/* Append the response cache's families (only the rows of the tiers present). */
void ag_metrics_render_cache(const ag_cache_metrics *c, ag_buf *out);

#endif
