/*
 * metrics.c - counters, histograms and the Prometheus text rendering (see
 * metrics.h).  Bucket bounds follow vLLM's for LLM latencies, extended
 * downwards because a CPU server on small models answers in milliseconds.
 */
#define _POSIX_C_SOURCE 200809L
#include "obs/metrics.h"

#include "base/clock.h"
#include "base/str.h"
#include "json/json.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1,
                                     2.5,   5,     7.5,  10,   20,   40,   80,   160, 640, 2560};
static const double itl_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
                                    0.5,   0.75,   1,     2.5,  5,     7.5,  10,    20,  40,   80};
static const double e2e_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.8, 1,   1.5, 2,   2.5, 5,
                                    10,   15,    20,   30,  40,  50,  60,  120, 240, 480, 960, 1920};

static const int statuses[AG_METRICS_N_STATUS - 1] = {100, 200, 400, 401, 404, 405, 408, 413, 414, 415,
                                                       417, 429, 431, 500, 501, 503, 505, 0};

static const char *const finish_names[AG_METRIC_FINISH_COUNT] = {"stop", "length", "abort", "error"};

static void hist_init(ag_histogram *h, const double *bounds, size_t n) {
    h->bounds = bounds, h->n_bounds = n, h->scale = 1e-9;
}

void ag_metrics_init(ag_metrics *m, const char *const *routes, size_t n_routes) {
    memset(m, 0, sizeof *m);
    m->routes = routes;
    m->n_routes = n_routes < AG_METRICS_MAX_ROUTES ? n_routes : AG_METRICS_MAX_ROUTES;
    hist_init(&m->e2e, e2e_bounds, sizeof e2e_bounds / sizeof e2e_bounds[0]);
    hist_init(&m->queue, e2e_bounds, sizeof e2e_bounds / sizeof e2e_bounds[0]);
    hist_init(&m->prefill, e2e_bounds, sizeof e2e_bounds / sizeof e2e_bounds[0]);
    hist_init(&m->decode, e2e_bounds, sizeof e2e_bounds / sizeof e2e_bounds[0]);
    hist_init(&m->ttft, ttft_bounds, sizeof ttft_bounds / sizeof ttft_bounds[0]);
    hist_init(&m->tpot, itl_bounds, sizeof itl_bounds / sizeof itl_bounds[0]);
    hist_init(&m->itl, itl_bounds, sizeof itl_bounds / sizeof itl_bounds[0]);
    m->start_time = (double)ag_clock_wall_ns() / 1e9;
}

void ag_histogram_observe(ag_histogram *h, uint64_t v) {
    double x = (double)v * h->scale;
    size_t b = 0;
    while (b < h->n_bounds && x > h->bounds[b]) b++;
    atomic_fetch_add_explicit(&h->counts[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

void ag_metrics_http_request(ag_metrics *m, ag_metric_protocol protocol, size_t route, int status) {
    size_t s = 0;
    while (statuses[s] && statuses[s] != status) s++;
    if (route >= m->n_routes) route = m->n_routes - 1;
    atomic_fetch_add_explicit(&m->http_requests[protocol][route][s], 1, memory_order_relaxed);
}

/* ---- rendering ------------------------------------------------------------------ */

static void head(ag_buf *o, const char *name, const char *type, const char *help) {
    ag_buf_appendf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void number(ag_buf *o, double v) {
    char text[40];
    ag_json_format_double(v, text);
    ag_buf_append_str(o, text);
}

static void sample(ag_buf *o, const char *name, const char *labels, double v) {
    ag_buf_appendf(o, "%s%s ", name, labels ? labels : "");
    number(o, v);
    ag_buf_append_char(o, '\n');
}

static void one(ag_buf *o, const char *name, const char *type, const char *help, double v) {
    head(o, name, type, help);
    sample(o, name, NULL, v);
}

/* Cumulative buckets from per-bucket counts; bounds NULL means powers of two from 1. */
static void histogram_rows(ag_buf *o, const char *name, const double *bounds, size_t n, const uint64_t *counts,
                           double sum) {
    uint64_t cum = 0;
    for (size_t b = 0; b <= n; b++) {
        cum += counts[b];
        ag_buf_appendf(o, "%s_bucket{le=\"", name);
        if (b == n) ag_buf_append_str(o, "+Inf");
        else number(o, bounds ? bounds[b] : (double)(1u << b));
        ag_buf_appendf(o, "\"} %llu\n", (unsigned long long)cum);
    }
    ag_buf_appendf(o, "%s_sum ", name);
    number(o, sum);
    ag_buf_appendf(o, "\n%s_count %llu\n", name, (unsigned long long)cum);
}

static void histogram(ag_buf *o, const char *name, const char *help, ag_histogram *h) {
    uint64_t counts[AG_METRICS_MAX_BUCKETS + 1];
    for (size_t b = 0; b <= h->n_bounds; b++) counts[b] = atomic_load_explicit(&h->counts[b], memory_order_relaxed);
    head(o, name, "histogram", help);
    histogram_rows(o, name, h->bounds, h->n_bounds, counts,
                   (double)atomic_load_explicit(&h->sum, memory_order_relaxed) * h->scale);
}

static double load(_Atomic uint64_t *v) { return (double)atomic_load_explicit(v, memory_order_relaxed); }

/* process_* from /proc/self: CPU seconds, resident bytes, open descriptors. */
static void process_metrics(ag_metrics *m, ag_buf *o) {
    double cpu = 0, rss = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
        unsigned long utime = 0, stime = 0;
        long rss_pages = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u %*u %ld",
                        &utime, &stime, &rss_pages) == 3) {
            cpu = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
            rss = (double)rss_pages * (double)sysconf(_SC_PAGESIZE);
        }
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d));) fds += e->d_name[0] != '.';
        closedir(d);
        fds--; /* the directory's own descriptor */
    }
    one(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpu);
    one(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss);
    one(o, "process_open_fds", "gauge", "Number of open file descriptors.", fds);
    one(o, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
        m->start_time);
}

/* The step-time model and the SLO controller (autotune.h): measured with or without --slo. */
static void autotune_metrics(const ag_engine_stats *st, ag_buf *o) {
    head(o, "autoglm_autotune_target_seconds", "gauge", "The --slo targets.");
    if (st->slo.ttft_s) sample(o, "autoglm_autotune_target_seconds", "{slo=\"ttft\"}", st->slo.ttft_s);
    if (st->slo.tpot_s) sample(o, "autoglm_autotune_target_seconds", "{slo=\"tpot\"}", st->slo.tpot_s);
    one(o, "autoglm_autotune_prompt_budget_tokens", "gauge",
        "Prompt rows a step may take beside its decoding rows (the controller's budget).", st->prompt_budget);
    one(o, "autoglm_autotune_step_seconds", "gauge", "Average time of the steps with decoding rows (their TPOT).",
        st->step_seconds);
    one(o, "autoglm_autotune_prompt_rate_tokens_per_second", "gauge",
        "Prompt tokens per second at the current budget and load, for admission.", st->prompt_rate);
    head(o, "autoglm_autotune_model_seconds", "gauge",
         "The fitted step time: base + per_decode_row * decode rows + per_prompt_row * prompt rows.");
    sample(o, "autoglm_autotune_model_seconds", "{term=\"base\"}", st->step_a);
    sample(o, "autoglm_autotune_model_seconds", "{term=\"per_decode_row\"}", st->step_b);
    sample(o, "autoglm_autotune_model_seconds", "{term=\"per_prompt_row\"}", st->step_c);
    one(o, "autoglm_autotune_model_error_ratio", "gauge", "The model's relative prediction error, moving average.",
        st->step_fit_error);
    one(o, "autoglm_autotune_adjustments_total", "counter", "Times the budget moved by a tenth or more.",
        (double)st->budget_adjustments);
    one(o, "autoglm_autotune_refusals_total", "counter", "Requests refused because the TTFT target could not be met.",
        (double)st->slo_refusals);
}

static void engine_metrics(const ag_engine_stats *st, ag_buf *o) {
    ag_engine_stats zero = {0};
    if (!st) st = &zero;
    one(o, "autoglm_num_requests_running", "gauge", "Requests in the engine's running batch.", st->running);
    one(o, "autoglm_num_requests_waiting", "gauge", "Requests waiting to be scheduled.", st->waiting);
    one(o, "autoglm_kv_cache_usage_ratio", "gauge", "Fraction of KV-cache blocks held by requests (0 to 1).",
        st->kv_blocks ? (double)st->kv_used / (double)st->kv_blocks : 0);
    one(o, "autoglm_kv_cache_cached_blocks", "gauge", "KV-cache blocks holding reusable prefixes, unreferenced.",
        (double)st->kv_cached);
    one(o, "autoglm_kv_cache_blocks", "gauge", "KV-cache blocks in the pool.", (double)st->kv_blocks);
    one(o, "autoglm_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
        (double)st->prefix_query_tokens);
    one(o, "autoglm_prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.",
        (double)st->prefix_hit_tokens);
    one(o, "autoglm_num_preemptions_total", "counter", "Requests preempted (KV freed, recomputed later).",
        (double)st->preemptions);
    one(o, "autoglm_engine_steps_total", "counter", "Forward steps the engine ran.", (double)st->steps);
    one(o, "autoglm_queued_prompt_tokens", "gauge", "Prompt positions still to compute, waiting and running.",
        (double)st->queued_prompt_tokens);
    autotune_metrics(st, o);
    head(o, "autoglm_iteration_tokens", "histogram", "Token rows per engine step (the batch size).");
    histogram_rows(o, "autoglm_iteration_tokens", NULL, AG_STEP_ROWS_BUCKETS - 1, st->step_rows_hist,
                   (double)st->batch_rows);
}

void ag_metrics_render(ag_metrics *m, const ag_engine_stats *st, ag_buf *o) {
    static const char *const protocols[AG_METRIC_PROTOCOL_COUNT] = {"http/1.1", "h2"};
    head(o, "autoglm_http_requests_total", "counter", "HTTP requests answered, by route, status and protocol.");
    for (size_t p = 0; p < AG_METRIC_PROTOCOL_COUNT; p++)
        for (size_t r = 0; r < m->n_routes; r++)
            for (size_t s = 0; s < AG_METRICS_N_STATUS - 1; s++) {
                uint64_t v = atomic_load_explicit(&m->http_requests[p][r][s], memory_order_relaxed);
                if (!v) continue;
                char labels[160], st[8];
                snprintf(st, sizeof st, "%d", statuses[s]);
                snprintf(labels, sizeof labels, "{route=\"%s\",status=\"%s\",protocol=\"%s\"}", m->routes[r],
                         statuses[s] ? st : "other", protocols[p]);
                sample(o, "autoglm_http_requests_total", labels, (double)v);
            }
    head(o, "autoglm_request_success_total", "counter", "Generations finished, by finish reason.");
    for (int f = 0; f < AG_METRIC_FINISH_COUNT; f++) {
        char labels[64];
        snprintf(labels, sizeof labels, "{finished_reason=\"%s\"}", finish_names[f]);
        sample(o, "autoglm_request_success_total", labels, load(&m->request_success[f]));
    }
    static const char *const idem_names[AG_METRIC_IDEM_COUNT] = {"new", "replayed", "joined", "conflict", "untracked"};
    head(o, "autoglm_idempotency_requests_total", "counter", "Generation requests with an Idempotency-Key, by result.");
    for (int r = 0; r < AG_METRIC_IDEM_COUNT; r++) {
        char labels[64];
        snprintf(labels, sizeof labels, "{result=\"%s\"}", idem_names[r]);
        sample(o, "autoglm_idempotency_requests_total", labels, load(&m->idempotency[r]));
    }
    one(o, "autoglm_prompt_tokens_total", "counter", "Prompt tokens processed.", load(&m->prompt_tokens));
    one(o, "autoglm_generation_tokens_total", "counter", "Tokens generated.", load(&m->generation_tokens));
    histogram(o, "autoglm_e2e_request_latency_seconds", "End-to-end request latency, arrival to last byte.", &m->e2e);
    histogram(o, "autoglm_time_to_first_token_seconds", "Time from arrival to the first generated token.", &m->ttft);
    histogram(o, "autoglm_request_time_per_output_token_seconds", "Per request: (e2e - ttft) / (tokens - 1).",
              &m->tpot);
    histogram(o, "autoglm_inter_token_latency_seconds", "Time between consecutive tokens of a request.", &m->itl);
    histogram(o, "autoglm_request_queue_time_seconds", "Time a request waited before it was first scheduled.",
              &m->queue);
    histogram(o, "autoglm_request_prefill_time_seconds", "Time from first scheduled to the first token.",
              &m->prefill);
    histogram(o, "autoglm_request_decode_time_seconds", "Time from the first token to the last.", &m->decode);
    engine_metrics(st, o);
    one(o, "autoglm_http_connections", "gauge", "Open HTTP connections.",
        (double)atomic_load_explicit(&m->connections_open, memory_order_relaxed));
    one(o, "autoglm_http_connections_accepted_total", "counter", "HTTP connections accepted.",
        load(&m->connections_accepted));
    one(o, "autoglm_log_lines_dropped_total", "counter", "Log lines dropped because the log buffer was full.",
        load(&m->log_dropped));
    one(o, "autoglm_otlp_spans_exported_total", "counter", "Spans the collector accepted.", load(&m->spans_exported));
    one(o, "autoglm_otlp_spans_dropped_total", "counter",
        "Spans dropped: export buffer full, or the collector failed or was too slow.", load(&m->spans_dropped));
    one(o, "autoglm_internal_errors_total", "counter",
        "Events the server dropped because they came in a state that cannot take them (bugs; logged).",
        load(&m->internal_errors));
    process_metrics(m, o);
}

void ag_metrics_render_cache(const ag_cache_metrics *c, ag_buf *o) {
    enum { PER_TIER, L1_ONLY, UNLABELED, REDIS }; /* each tier's rows only when it is there; REDIS: unlabeled */
    const struct {
        const char *name, *help, *type;
        int shape;
        uint64_t l1, other; /* other: the l2 tier's value, or the unlabeled value */
    } m[] = {
        {"autoglm_cache_hits_total", "Response cache hits by tier.", "counter", PER_TIER, c->l1_hits, c->l2_hits},
        {"autoglm_cache_misses_total", "Response cache lookups that missed, by tier.", "counter", PER_TIER, c->l1_misses,
         c->l2_misses},
        {"autoglm_cache_evictions_total", "Entries evicted to stay within the size bound.", "counter", L1_ONLY,
         c->evictions, 0},
        {"autoglm_cache_admission_rejections_total", "Entries W-TinyLFU declined to admit.", "counter", L1_ONLY,
         c->rejections, 0},
        {"autoglm_cache_bytes", "Bytes held by the in-process tier.", "gauge", L1_ONLY, c->bytes, 0},
        {"autoglm_cache_entries", "Entries in the in-process tier.", "gauge", L1_ONLY, c->entries, 0},
        {"autoglm_cache_bypass_total", "Generation requests not looked up (not cacheable, or no-cache).", "counter",
         UNLABELED, 0, c->bypass},
        {"autoglm_cache_redis_errors_total", "Redis commands that failed.", "counter", REDIS, 0, c->redis_errors},
        {"autoglm_cache_redis_timeouts_total", "Redis commands answered as misses after --redis-timeout-ms.", "counter",
         REDIS, 0, c->redis_timeouts},
        {"autoglm_cache_redis_short_circuits_total", "Redis commands skipped while the breaker was open or Redis gone.",
         "counter", REDIS, 0, c->redis_short_circuits},
        {"autoglm_cache_redis_reconnects_total", "Attempts to reconnect to Redis.", "counter", REDIS, 0,
         c->redis_reconnects},
        {"autoglm_cache_redis_breaker_open", "1 while the Redis circuit breaker is open or half-open.", "gauge", REDIS, 0,
         c->redis_breaker_open},
        {"autoglm_cache_redis_connected", "1 while connected to Redis.", "gauge", REDIS, 0, c->redis_connected},
    };
    for (size_t i = 0; i < sizeof m / sizeof *m; i++) {
        if ((m[i].shape == REDIS && !c->l2) || (m[i].shape == L1_ONLY && !c->l1)) continue;
        head(o, m[i].name, m[i].type, m[i].help);
        if (m[i].shape >= UNLABELED) {
            ag_buf_appendf(o, "%s %llu\n", m[i].name, (unsigned long long)m[i].other);
            continue;
        }
        if (c->l1) ag_buf_appendf(o, "%s{tier=\"l1\"} %llu\n", m[i].name, (unsigned long long)m[i].l1);
        if (m[i].shape == PER_TIER && c->l2)
            ag_buf_appendf(o, "%s{tier=\"l2\"} %llu\n", m[i].name, (unsigned long long)m[i].other);
    }
}
