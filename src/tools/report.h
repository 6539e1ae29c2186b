/*
 * report.h - what `autoglm bench` makes of its steps: the baseline table,
 * the knee, the highest load within the SLOs, JSON and CSV files, baseline
 * comparison, and a self-contained HTML report (inline SVG, no scripts).
 */
#ifndef AG_TOOLS_REPORT_H
#define AG_TOOLS_REPORT_H

#include "base/buf.h"
#include "tools/loadgen.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct ag_bench_row {
    double load; /* the step's concurrency or rate */
    ag_lg_result r;
} ag_bench_row;

typedef struct ag_bench_run {
    const char *target, *mode; /* mode: "concurrency" or "rate" */
    ag_bench_row *rows;
    size_t n;
    ag_lg_slo slo;
    bool has_slo;
    double knee_throughput, knee_latency; /* knee thresholds: growth below / above these fractions */
    /* The report's header: what was sent, when, by what (NULL leaves a line out). The target's
     * version is the Server header its first response carried (ag_lg_result.server). */
    const char *steps;    /* the sweep's values, e.g. "1, 2, 4" */
    const char *workload; /* e.g. "chat, model autoglm-tiny, ~128 input tokens, max 64 output tokens, streamed" */
    const char *per_step; /* e.g. "30 s measured after 2 s warm-up, timeout 60 s" */
    const char *started;  /* UTC, ISO 8601 */
    double wall_s;        /* the whole sweep, warm-ups included */
    const char *client;   /* e.g. "autoglm bench 0.1.0" */
} ag_bench_run;

/* Per-step figures derived from a result. */
typedef struct ag_bench_stats {
    double req_s, out_tok_s, goodput_s, error_rate, in_tokens_mean, out_tokens_mean;
    double e2e[6], ttft[6], tpot[6], itl[6]; /* ms: mean, p50, p90, p95, p99, p99.9 */
} ag_bench_stats;

void ag_bench_stats_of(const ag_lg_result *r, ag_bench_stats *s);
/* Index of the knee row (after which throughput stalls while p99 latency climbs), or -1. */
int ag_bench_knee(const ag_bench_run *run);
/* Index of the highest-load row whose p99s are within the SLOs with no errors, or -1 (or no SLOs). */
int ag_bench_slo_max(const ag_bench_run *run);

void ag_bench_print_table(const ag_bench_run *run, FILE *out);
void ag_bench_json(const ag_bench_run *run, ag_buf *out);
void ag_bench_csv(const ag_bench_run *run, ag_buf *out);
void ag_bench_html(const ag_bench_run *run, ag_buf *out);

/*
 * Compare with a baseline written by ag_bench_json: for steps of equal load,
 * each metric's change, printed as a table; returns how many regressed past
 * tolerance (a fraction), or -1 with msg when the file is not a baseline.
 */
int ag_bench_compare(const ag_bench_run *run, const char *json, size_t len, double tolerance, FILE *out, char *msg,
                     size_t msg_cap);

#endif
