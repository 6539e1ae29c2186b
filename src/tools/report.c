/*
 * report.c - tables, files and the HTML report of `autoglm bench` (see
 * report.h).  The HTML is one file: a header with the run's parameters (target,
 * sweep, workload, timing, SLOs, start, duration, both ends' versions), the
 * summary table with the knee's row marked, inline SVG charts drawn here
 * (throughput and p99 latency against load with the knee and the SLO limit as
 * dashed lines, a latency CDF per step) and the distribution tables; each
 * table once, as HTML.  No script or stylesheet from elsewhere, so it can be
 * mailed or committed.
 */
#define _POSIX_C_SOURCE 200809L
#include "tools/report.h"

#include "base/arena.h"
#include "json/json.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const double quantiles[] = {0.50, 0.90, 0.95, 0.99, 0.999};
static const char *const qnames[] = {"mean", "p50", "p90", "p95", "p99", "p99.9"};

static void fill_ms(const ag_hist *h, double out[6]) {
    out[0] = ag_hist_mean(h) / 1e3;
    for (int i = 0; i < 5; i++) out[i + 1] = ag_hist_quantile(h, quantiles[i]) / 1e3;
}

void ag_bench_stats_of(const ag_lg_result *r, ag_bench_stats *s) {
    memset(s, 0, sizeof *s);
    double t = r->seconds > 0 ? r->seconds : 1e-9;
    s->req_s = (double)r->ok / t;
    s->out_tok_s = (double)r->out_tokens / t;
    s->goodput_s = (double)r->good / t;
    s->error_rate = r->counted ? (double)(r->counted - r->ok) / (double)r->counted : 0;
    s->in_tokens_mean = r->ok ? (double)r->in_tokens / (double)r->ok : 0;
    s->out_tokens_mean = r->ok ? (double)r->out_tokens / (double)r->ok : 0;
    fill_ms(&r->e2e, s->e2e), fill_ms(&r->ttft, s->ttft), fill_ms(&r->tpot, s->tpot), fill_ms(&r->itl, s->itl);
}

int ag_bench_knee(const ag_bench_run *run) {
    for (size_t i = 1; i < run->n; i++) {
        ag_bench_stats a, b;
        ag_bench_stats_of(&run->rows[i - 1].r, &a), ag_bench_stats_of(&run->rows[i].r, &b);
        if (a.req_s <= 0 || a.e2e[4] <= 0) continue;
        if (b.req_s < a.req_s * (1 + run->knee_throughput) && b.e2e[4] > a.e2e[4] * (1 + run->knee_latency))
            return (int)i - 1;
    }
    return -1;
}

int ag_bench_slo_max(const ag_bench_run *run) {
    if (!run->has_slo) return -1;
    int best = -1;
    for (size_t i = 0; i < run->n; i++) {
        ag_bench_stats s;
        ag_bench_stats_of(&run->rows[i].r, &s);
        const ag_lg_slo *o = &run->slo;
        if (run->rows[i].r.ok && s.error_rate == 0 && (!o->ttft_us || s.ttft[4] * 1e3 <= o->ttft_us) &&
            (!o->tpot_us || s.tpot[4] * 1e3 <= o->tpot_us) && (!o->e2e_us || s.e2e[4] * 1e3 <= o->e2e_us) &&
            (best < 0 || run->rows[i].load > run->rows[best].load))
            best = (int)i;
    }
    return best;
}

/* The summary table's columns, shared by the text table and the HTML report. */
static const struct {
    const char *head, *fmt;
} columns[] = {{"req/s", "%.1f"},          {"output tok/s", "%.1f"}, {"p50 latency ms", "%.1f"},
               {"p99 latency ms", "%.1f"}, {"p99 TTFT ms", "%.1f"},  {"p99 TPOT ms", "%.2f"},
               {"error rate", "%.2f%%"},   {"goodput req/s", "%.1f"}};
enum { N_COLUMNS = sizeof columns / sizeof *columns };

static double column_value(const ag_bench_stats *s, int c) {
    const double v[N_COLUMNS] = {s->req_s,   s->out_tok_s, s->e2e[1], s->e2e[4], s->ttft[4],
                                 s->tpot[4], 100 * s->error_rate,    s->goodput_s};
    return v[c];
}

/* One sentence each on the knee and the SLOs, and one per step whose requests did not all succeed. */
static void knee_text(const ag_bench_run *run, char *out, size_t cap) {
    int k = ag_bench_knee(run);
    if (k >= 0)
        snprintf(out, cap, "knee: %s %g (beyond it throughput grows < %.0f%% while p99 latency grows > %.0f%%)",
                 run->mode, run->rows[k].load, 100 * run->knee_throughput, 100 * run->knee_latency);
    else snprintf(out, cap, "knee: not reached (throughput kept growing, or latency held, at every step)");
}

static void slo_text(const ag_bench_run *run, char *out, size_t cap) {
    int m = ag_bench_slo_max(run);
    if (m >= 0) snprintf(out, cap, "highest load within the SLOs: %s %g", run->mode, run->rows[m].load);
    else snprintf(out, cap, "highest load within the SLOs: none of the steps");
}

static void failure_text(const ag_bench_run *run, size_t i, ag_buf *o) {
    const ag_lg_result *r = &run->rows[i].r;
    ag_buf_appendf(o, "%s %g: %llu requests: %llu ok, %llu HTTP errors", run->mode, run->rows[i].load,
                   (unsigned long long)r->counted, (unsigned long long)r->ok, (unsigned long long)r->http_error);
    for (int j = 0; j < AG_LG_STATUS_SLOTS && r->statuses[j].status; j++)
        ag_buf_appendf(o, "%s%d x%llu", j ? ", " : " (", r->statuses[j].status, (unsigned long long)r->statuses[j].n);
    ag_buf_appendf(o, "%s, %llu timeouts, %llu connection errors, %llu protocol errors, %llu aborted",
                   r->statuses[0].status ? ")" : "", (unsigned long long)r->timeout, (unsigned long long)r->conn_error,
                   (unsigned long long)r->proto_error, (unsigned long long)r->aborted);
    if (r->retries) ag_buf_appendf(o, "; %llu retries", (unsigned long long)r->retries);
    if (r->refused)
        ag_buf_appendf(o, "; %llu sent again unanswered (HTTP/2 refused streams, closed keep-alive connections)",
                       (unsigned long long)r->refused);
}

void ag_bench_print_table(const ag_bench_run *run, FILE *out) {
    fprintf(out, "| %s |", run->mode);
    for (int c = 0; c < N_COLUMNS; c++) fprintf(out, " %s |", columns[c].head);
    fputs("\n|--:|", out);
    for (int c = 0; c < N_COLUMNS; c++) fputs("--:|", out);
    fputc('\n', out);
    for (size_t i = 0; i < run->n; i++) {
        ag_bench_stats s;
        ag_bench_stats_of(&run->rows[i].r, &s);
        fprintf(out, "| %g |", run->rows[i].load);
        for (int c = 0; c < N_COLUMNS; c++) fputc(' ', out), fprintf(out, columns[c].fmt, column_value(&s, c)), fputs(" |", out);
        fputc('\n', out);
    }
    fprintf(out, "\nlatency distributions, ms\n| %s | metric | mean | p50 | p90 | p95 | p99 | p99.9 |\n|--:|---|--:|--:|--:|--:|--:|--:|\n",
            run->mode);
    for (size_t i = 0; i < run->n; i++) {
        ag_bench_stats s;
        ag_bench_stats_of(&run->rows[i].r, &s);
        const struct {
            const char *name;
            const double *v;
            uint64_t n;
        } d[] = {{"e2e", s.e2e, run->rows[i].r.e2e.n}, {"TTFT", s.ttft, run->rows[i].r.ttft.n},
                 {"TPOT", s.tpot, run->rows[i].r.tpot.n}, {"chunk gap", s.itl, run->rows[i].r.itl.n}};
        for (size_t j = 0; j < sizeof d / sizeof *d; j++)
            if (d[j].n)
                fprintf(out, "| %g | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", run->rows[i].load, d[j].name,
                        d[j].v[0], d[j].v[1], d[j].v[2], d[j].v[3], d[j].v[4], d[j].v[5]);
    }
    char line[256];
    knee_text(run, line, sizeof line);
    fprintf(out, "\n%s\n", line);
    if (run->has_slo) slo_text(run, line, sizeof line), fprintf(out, "%s\n", line);
    ag_buf b;
    ag_buf_init(&b);
    for (size_t i = 0; i < run->n; i++) {
        if (run->rows[i].r.counted == run->rows[i].r.ok && !run->rows[i].r.retries && !run->rows[i].r.refused) continue;
        ag_buf_reset(&b);
        failure_text(run, i, &b);
        fprintf(out, "%.*s\n", (int)b.len, b.data);
    }
    ag_buf_deinit(&b);
}

static void json_dist(ag_jw *w, const char *key, const double v[6]) {
    ag_jw_keyc(w, key);
    ag_jw_obj_begin(w);
    for (int i = 0; i < 6; i++) ag_jw_keyc(w, qnames[i]), ag_jw_double(w, round(v[i] * 1000) / 1000);
    ag_jw_obj_end(w);
}

#define JNUM(k, v) (ag_jw_keyc(&w, k), ag_jw_double(&w, v))
#define JINT(k, v) (ag_jw_keyc(&w, k), ag_jw_int(&w, (int64_t)(v)))

void ag_bench_json(const ag_bench_run *run, ag_buf *out) {
    ag_jw w;
    ag_jw_init(&w, out, 1, AG_UTF8_REPLACE);
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "target"), ag_jw_strc(&w, run->target);
    ag_jw_keyc(&w, "mode"), ag_jw_strc(&w, run->mode);
    if (run->per_step) ag_jw_keyc(&w, "each_step"), ag_jw_strc(&w, run->per_step);
    ag_jw_keyc(&w, "steps");
    ag_jw_arr_begin(&w);
    for (size_t i = 0; i < run->n; i++) {
        const ag_lg_result *r = &run->rows[i].r;
        ag_bench_stats s;
        ag_bench_stats_of(r, &s);
        ag_jw_obj_begin(&w);
        JNUM("load", run->rows[i].load);
        JINT("requests", r->counted), JINT("ok", r->ok), JINT("http_errors", r->http_error);
        JINT("timeouts", r->timeout), JINT("connection_errors", r->conn_error), JINT("protocol_errors", r->proto_error);
        JINT("aborted", r->aborted), JINT("retries", r->retries), JINT("refused_resent", r->refused);
        if (r->conn_why[0]) ag_jw_keyc(&w, "first_connection_error"), ag_jw_strc(&w, r->conn_why);
        ag_jw_keyc(&w, "statuses");
        ag_jw_obj_begin(&w);
        for (int j = 0; j < AG_LG_STATUS_SLOTS && r->statuses[j].status; j++) {
            char k[8];
            snprintf(k, sizeof k, "%d", r->statuses[j].status);
            JINT(k, r->statuses[j].n);
        }
        ag_jw_obj_end(&w);
        JNUM("seconds", r->seconds), JNUM("req_s", s.req_s), JNUM("output_tok_s", s.out_tok_s);
        JNUM("goodput_req_s", s.goodput_s), JNUM("error_rate", s.error_rate);
        JNUM("input_tokens_mean", s.in_tokens_mean), JNUM("output_tokens_mean", s.out_tokens_mean);
        JINT("bytes", r->bytes);
        json_dist(&w, "e2e_ms", s.e2e), json_dist(&w, "ttft_ms", s.ttft), json_dist(&w, "tpot_ms", s.tpot);
        json_dist(&w, "itl_ms", s.itl);
        ag_jw_obj_end(&w);
    }
    ag_jw_arr_end(&w);
    int k = ag_bench_knee(run), m = ag_bench_slo_max(run);
    ag_jw_keyc(&w, "knee");
    k >= 0 ? ag_jw_double(&w, run->rows[k].load) : ag_jw_null(&w);
    ag_jw_keyc(&w, "slo_max_load");
    m >= 0 ? ag_jw_double(&w, run->rows[m].load) : ag_jw_null(&w);
    ag_jw_obj_end(&w);
    ag_buf_append_char(out, '\n');
}

void ag_bench_csv(const ag_bench_run *run, ag_buf *out) {
    ag_buf_appendf(out, "%s,requests,ok,errors,req_s,output_tok_s,goodput_req_s,error_rate,e2e_p50_ms,e2e_p90_ms,"
                        "e2e_p99_ms,e2e_p999_ms,ttft_p50_ms,ttft_p99_ms,tpot_p50_ms,tpot_p99_ms,itl_p99_ms\n",
                   run->mode);
    for (size_t i = 0; i < run->n; i++) {
        const ag_lg_result *r = &run->rows[i].r;
        ag_bench_stats s;
        ag_bench_stats_of(r, &s);
        ag_buf_appendf(out, "%g,%llu,%llu,%llu,%.3f,%.3f,%.3f,%.5f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n",
                       run->rows[i].load, (unsigned long long)r->counted, (unsigned long long)r->ok,
                       (unsigned long long)(r->counted - r->ok), s.req_s, s.out_tok_s, s.goodput_s, s.error_rate,
                       s.e2e[1], s.e2e[2], s.e2e[4], s.e2e[5], s.ttft[1], s.ttft[4], s.tpot[1], s.tpot[4], s.itl[4]);
    }
}

/* ---- HTML ------------------------------------------------------------------------------ */

typedef struct series {
    const char *name, *color;
    const double *x, *y;
    size_t n;
} series;

static double nice_max(double v) {
    if (v <= 0) return 1;
    double p = pow(10, floor(log10(v))), m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/* A vertical dashed line at x with a label: the knee, the highest load within the SLOs. */
typedef struct chart_mark {
    double x;
    const char *label, *color;
} chart_mark;

/* A line chart, 560 x 300, linear axes from 0 (log x when log_x, from the smallest x). */
static void svg_chart(ag_buf *o, const char *title, const char *xlabel, const char *ylabel, const series *s, size_t ns,
                      bool log_x, const chart_mark *marks, size_t nm) {
    const double W = 560, H = 300, L = 60, R = 20, T = 30, B = 45;
    double xmin = log_x ? INFINITY : 0, xmax = 0, ymax = 0;
    for (size_t i = 0; i < ns; i++)
        for (size_t j = 0; j < s[i].n; j++) {
            if (s[i].x[j] > xmax) xmax = s[i].x[j];
            if (log_x && s[i].x[j] > 0 && s[i].x[j] < xmin) xmin = s[i].x[j];
            if (s[i].y[j] > ymax) ymax = s[i].y[j];
        }
    if (log_x) xmin = isfinite(xmin) ? pow(10, floor(log10(xmin))) : 0.1, xmax = pow(10, ceil(log10(xmax > xmin ? xmax : xmin * 10)));
    else xmax = nice_max(xmax);
    ymax = nice_max(ymax);
#define PX(v) (L + (log_x ? (log10(v) - log10(xmin)) / (log10(xmax) - log10(xmin)) : (v) / xmax) * (W - L - R))
#define PY(v) (H - B - (v) / ymax * (H - T - B))
    ag_buf_appendf(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
                      "font-size=\"11\"><text x=\"%.0f\" y=\"18\" font-size=\"13\" font-weight=\"bold\">%s</text>",
                   W, H, L, title);
    for (int t = 0; t <= 4; t++) {
        double yv = ymax * t / 4;
        ag_buf_appendf(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>",
                       L, PY(yv), W - R, PY(yv), L - 5, PY(yv) + 4, yv);
    }
    if (log_x)
        for (double xv = xmin; xv <= xmax * 1.001; xv *= 10)
            ag_buf_appendf(o, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>", PX(xv), H - B + 15, xv);
    else
        for (int t = 0; t <= 4; t++)
            ag_buf_appendf(o, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>", PX(xmax * t / 4), H - B + 15,
                           xmax * t / 4);
    ag_buf_appendf(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
                      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>"
                      "<text x=\"12\" y=\"%.1f\" transform=\"rotate(-90 12 %.1f)\" text-anchor=\"middle\">%s</text>",
                   L, H - B, W - R, H - B, L, T, L, H - B, (L + W - R) / 2, H - 8, xlabel, (T + H - B) / 2,
                   (T + H - B) / 2, ylabel);
    for (size_t i = 0; i < ns; i++) {
        ag_buf_appendf(o, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", s[i].color);
        for (size_t j = 0; j < s[i].n; j++)
            if (!log_x || s[i].x[j] > 0) ag_buf_appendf(o, "%.1f,%.1f ", PX(s[i].x[j]), PY(s[i].y[j]));
        ag_buf_append_str(o, "\"/>");
        if (s[i].n <= 16)
            for (size_t j = 0; j < s[i].n; j++)
                ag_buf_appendf(o, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", PX(s[i].x[j]), PY(s[i].y[j]),
                               s[i].color);
        ag_buf_appendf(o, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\">%s</text>", W - R - 150, T + 14.0 * (double)(i + 1),
                       s[i].color, s[i].name);
    }
    for (size_t i = 0; i < nm; i++) { /* labelled at the foot, away from the legend; leftwards past mid-width */
        double mx = PX(marks[i].x);
        bool left = mx > (L + W - R) / 2;
        ag_buf_appendf(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-dasharray=\"5,4\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\" text-anchor=\"%s\">%s</text>",
                       mx, T, mx, H - B, marks[i].color, left ? mx - 4 : mx + 4, H - B - 6 - 13.0 * (double)i,
                       marks[i].color, left ? "end" : "start", marks[i].label);
    }
    ag_buf_append_str(o, "</svg>\n");
#undef PX
#undef PY
}

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

static void html_dist_table(ag_buf *o, const ag_bench_run *run, const char *title, size_t off) {
    ag_buf_appendf(o, "<h3>%s (ms)</h3><table><tr><th>%s</th>", title, run->mode);
    for (int q = 0; q < 6; q++) ag_buf_appendf(o, "<th>%s</th>", qnames[q]);
    ag_buf_append_str(o, "</tr>");
    for (size_t i = 0; i < run->n; i++) {
        ag_bench_stats s;
        ag_bench_stats_of(&run->rows[i].r, &s);
        const double *v = (const double *)((const char *)&s + off);
        ag_buf_appendf(o, "<tr><td>%g</td>", run->rows[i].load);
        for (int q = 0; q < 6; q++) ag_buf_appendf(o, "<td>%.2f</td>", v[q]);
        ag_buf_append_str(o, "</tr>");
    }
    ag_buf_append_str(o, "</table>\n");
}

/* Text as HTML: the target URL, the Server header and the workload come from outside. */
static void html_text(ag_buf *o, const char *t) {
    for (; *t; t++) {
        switch (*t) {
        case '<': ag_buf_append_str(o, "&lt;"); break;
        case '>': ag_buf_append_str(o, "&gt;"); break;
        case '&': ag_buf_append_str(o, "&amp;"); break;
        case '"': ag_buf_append_str(o, "&quot;"); break;
        default: ag_buf_append_char(o, *t);
        }
    }
}

static void html_param(ag_buf *o, const char *name, const char *value) {
    if (!value || !*value) return;
    ag_buf_appendf(o, "<tr><th>%s</th><td>", name);
    html_text(o, value);
    ag_buf_append_str(o, "</td></tr>");
}

/* The run's parameters: target, sweep, workload, timing, SLOs, when, and both ends' versions. */
static void html_header(const ag_bench_run *run, ag_buf *o) {
    char line[512], slo[160] = "";
    ag_buf_append_str(o, "<table class=\"params\">");
    html_param(o, "target", run->target);
    snprintf(line, sizeof line, "%s %s (%zu step%s)", run->mode, run->steps ? run->steps : "", run->n,
             run->n == 1 ? "" : "s");
    html_param(o, "sweep", line);
    html_param(o, "workload", run->workload);
    html_param(o, "each step", run->per_step);
    if (run->has_slo) {
        size_t n = 0;
        const struct {
            const char *name;
            double us;
        } sl[] = {{"TTFT", run->slo.ttft_us}, {"TPOT", run->slo.tpot_us}, {"e2e", run->slo.e2e_us}};
        for (size_t i = 0; i < 3; i++)
            if (sl[i].us > 0 && n < sizeof slo)
                n += (size_t)snprintf(slo + n, sizeof slo - n, "%sp99 %s &le; %g ms", n ? ", " : "", sl[i].name, sl[i].us / 1e3);
        ag_buf_appendf(o, "<tr><th>SLOs</th><td>%s</td></tr>", slo);
    }
    html_param(o, "started", run->started);
    if (run->wall_s > 0) snprintf(line, sizeof line, "%.1f s", run->wall_s), html_param(o, "duration", line);
    const char *server = "";
    for (size_t i = 0; i < run->n && !*server; i++) server = run->rows[i].r.server;
    snprintf(line, sizeof line, "%s; target: %s", run->client ? run->client : "autoglm bench",
             *server ? server : "(no Server header)");
    html_param(o, "versions", line);
    ag_buf_append_str(o, "</table>\n");
}

/* The summary table, the knee's and the SLOs' rows marked, then the sentences and the failures. */
static void html_summary(const ag_bench_run *run, ag_buf *o) {
    int k = ag_bench_knee(run), m = ag_bench_slo_max(run);
    ag_buf_appendf(o, "<h2>Summary</h2><table class=\"summary\"><tr><th>%s</th>", run->mode);
    for (int c = 0; c < N_COLUMNS; c++) ag_buf_appendf(o, "<th>%s</th>", columns[c].head);
    ag_buf_append_str(o, "<th></th></tr>");
    for (size_t i = 0; i < run->n; i++) {
        ag_bench_stats s;
        ag_bench_stats_of(&run->rows[i].r, &s);
        ag_buf_appendf(o, "<tr%s><td>%g</td>", (int)i == k ? " class=\"knee\"" : "", run->rows[i].load);
        for (int c = 0; c < N_COLUMNS; c++) {
            ag_buf_append_str(o, "<td>");
            ag_buf_appendf(o, columns[c].fmt, column_value(&s, c));
            ag_buf_append_str(o, "</td>");
        }
        ag_buf_appendf(o, "<td>%s%s%s</td></tr>", (int)i == k ? "knee" : "", (int)i == k && (int)i == m ? ", " : "",
                       (int)i == m ? "highest within SLOs" : "");
    }
    char line[256];
    knee_text(run, line, sizeof line);
    ag_buf_append_str(o, "</table>\n<p>");
    html_text(o, line);
    if (run->has_slo) slo_text(run, line, sizeof line), ag_buf_append_str(o, "<br>"), html_text(o, line);
    ag_buf_append_str(o, "</p>\n");
    ag_buf f;
    ag_buf_init(&f);
    for (size_t i = 0; i < run->n; i++) {
        if (run->rows[i].r.counted == run->rows[i].r.ok && !run->rows[i].r.retries && !run->rows[i].r.refused) continue;
        ag_buf_reset(&f);
        failure_text(run, i, &f);
        ag_buf_append_char(&f, 0);
        ag_buf_append_str(o, "<p class=\"failed\">");
        html_text(o, f.data);
        ag_buf_append_str(o, "</p>\n");
    }
    ag_buf_deinit(&f);
}

void ag_bench_html(const ag_bench_run *run, ag_buf *o) {
    size_t n = run->n;
    double *x = calloc(n + 1, sizeof *x), *rps = calloc(n + 1, sizeof *x), *tps = calloc(n + 1, sizeof *x);
    double *p99 = calloc(n + 1, sizeof *x), *p50 = calloc(n + 1, sizeof *x), *ttft = calloc(n + 1, sizeof *x);
    for (size_t i = 0; i < n; i++) {
        ag_bench_stats s;
        ag_bench_stats_of(&run->rows[i].r, &s);
        x[i] = run->rows[i].load, rps[i] = s.req_s, tps[i] = s.out_tok_s;
        p99[i] = s.e2e[4], p50[i] = s.e2e[1], ttft[i] = s.ttft[4];
    }
    ag_buf_append_str(o, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>autoglm bench: ");
    html_text(o, run->target);
    ag_buf_append_str(o, "</title><style>"
                         "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
                         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}svg{margin:0.5em 1em 0.5em 0}"
                         "table.params th,table.params td{text-align:left}tr.knee{background:#fde8e8}"
                         "p.failed{color:#a00}</style></head><body><h1>autoglm bench</h1>\n");
    html_header(run, o);
    html_summary(run, o);
    int k = ag_bench_knee(run), m = ag_bench_slo_max(run);
    char knee_label[64], slo_label[64];
    chart_mark marks[2];
    size_t nm = 0;
    if (k >= 0) {
        snprintf(knee_label, sizeof knee_label, "knee (%g)", run->rows[k].load);
        marks[nm++] = (chart_mark){run->rows[k].load, knee_label, palette[1]};
    }
    if (m >= 0) {
        snprintf(slo_label, sizeof slo_label, "highest within SLOs (%g)", run->rows[m].load);
        marks[nm++] = (chart_mark){run->rows[m].load, slo_label, palette[2]};
    }
    ag_buf_append_str(o, "<h2>Charts</h2>\n");
    series thr[] = {{"requests/s", palette[0], x, rps, n}}, tok[] = {{"output tokens/s", palette[2], x, tps, n}};
    series lat[] = {{"p99 latency", palette[1], x, p99, n}, {"p50 latency", palette[0], x, p50, n},
                    {"p99 TTFT", palette[3], x, ttft, n}};
    svg_chart(o, "Throughput vs load", run->mode, "requests/s", thr, 1, false, marks, nm);
    svg_chart(o, "Output tokens/s vs load", run->mode, "tokens/s", tok, 1, false, marks, nm);
    svg_chart(o, "Latency vs load", run->mode, "ms", lat, 3, false, marks, nm);
    /* latency CDF per step, from the histogram buckets */
    series *cdf = calloc(n ? n : 1, sizeof *cdf);
    double **cx = calloc(n ? n : 1, sizeof *cx), **cy = calloc(n ? n : 1, sizeof *cy);
    char (*names)[48] = calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const ag_hist *h = &run->rows[i].r.e2e;
        cx[i] = calloc(AG_HIST_MAGS * AG_HIST_SUB, sizeof **cx), cy[i] = calloc(AG_HIST_MAGS * AG_HIST_SUB, sizeof **cy);
        size_t kk = 0;
        uint64_t seen = 0;
        for (int mg = 0; mg < AG_HIST_MAGS && h->n; mg++)
            for (int sb = 0; sb < AG_HIST_SUB; sb++) {
                if (!h->counts[mg][sb]) continue;
                seen += h->counts[mg][sb];
                double top = mg == 0 ? sb + 1 : (double)(AG_HIST_SUB + sb + 1) * (double)(1ull << (mg - 1));
                cx[i][kk] = top / 1e3, cy[i][kk] = 100.0 * (double)seen / (double)h->n, kk++;
            }
        snprintf(names[i], sizeof names[i], "%s %g", run->mode, run->rows[i].load);
        cdf[i] = (series){names[i], palette[i % 8], cx[i], cy[i], kk};
    }
    svg_chart(o, "Latency CDF per step", "end-to-end latency, ms (log)", "% of requests", cdf, n, true, NULL, 0);
    ag_buf_append_str(o, "<h2>Latency distributions</h2>\n");
    html_dist_table(o, run, "End-to-end latency", offsetof(ag_bench_stats, e2e));
    html_dist_table(o, run, "Time to first token", offsetof(ag_bench_stats, ttft));
    html_dist_table(o, run, "Time per output token", offsetof(ag_bench_stats, tpot));
    html_dist_table(o, run, "Inter-chunk gap", offsetof(ag_bench_stats, itl));
    ag_buf_append_str(o, "</body></html>\n");
    for (size_t i = 0; i < n; i++) free(cx[i]), free(cy[i]);
    free(cx), free(cy), free(cdf), free(names);
    free(x), free(rps), free(tps), free(p99), free(p50), free(ttft);
}

/* ---- baselines ------------------------------------------------------------------------- */

typedef struct metric {
    const char *name, *path[2]; /* JSON: steps[i].path[0](.path[1]) */
    bool higher_better;
} metric;

static const metric metrics[] = {
    {"req/s", {"req_s", NULL}, true},          {"output tok/s", {"output_tok_s", NULL}, true},
    {"p50 latency", {"e2e_ms", "p50"}, false}, {"p99 latency", {"e2e_ms", "p99"}, false},
    {"p99 TTFT", {"ttft_ms", "p99"}, false},   {"p99 TPOT", {"tpot_ms", "p99"}, false},
    {"error rate", {"error_rate", NULL}, false},
};

static double step_metric(const ag_bench_stats *s, size_t m) {
    switch (m) {
    case 0: return s->req_s;
    case 1: return s->out_tok_s;
    case 2: return s->e2e[1];
    case 3: return s->e2e[4];
    case 4: return s->ttft[4];
    case 5: return s->tpot[4];
    default: return s->error_rate;
    }
}

int ag_bench_compare(const ag_bench_run *run, const char *json, size_t len, double tolerance, FILE *out, char *msg,
                     size_t msg_cap) {
    ag_arena a;
    ag_arena_init(&a, 1 << 16);
    ag_json_val *root;
    const ag_json_val *steps = NULL;
    if (ag_json_parse(json, len, NULL, &a, &root, NULL) == AG_OK) steps = ag_json_obj_getc(root, "steps");
    if (!ag_json_is(steps, AG_JSON_ARRAY)) {
        snprintf(msg, msg_cap, "not a baseline written by autoglm bench (no \"steps\" array)");
        ag_arena_deinit(&a);
        return -1;
    }
    int regressions = 0, matched = 0;
    fprintf(out, "\nagainst the baseline (tolerance %.0f%%)\n| %s | metric | baseline | now | change | |\n|--:|---|--:|--:|--:|---|\n",
            100 * tolerance, run->mode);
    for (size_t i = 0; i < run->n; i++) {
        const ag_json_val *old = NULL;
        for (size_t j = 0; j < ag_json_len(steps) && !old; j++) {
            double load;
            const ag_json_val *st = ag_json_arr_at(steps, j);
            if (ag_json_get_double(ag_json_obj_getc(st, "load"), &load) && load == run->rows[i].load) old = st;
        }
        if (!old) continue;
        matched++;
        ag_bench_stats s;
        ag_bench_stats_of(&run->rows[i].r, &s);
        for (size_t m = 0; m < sizeof metrics / sizeof *metrics; m++) {
            const ag_json_val *v = ag_json_obj_getc(old, metrics[m].path[0]);
            if (metrics[m].path[1]) v = ag_json_obj_getc(v, metrics[m].path[1]);
            double was, now = step_metric(&s, m);
            if (!ag_json_get_double(v, &was)) continue;
            double change = was != 0 ? (now - was) / fabs(was) : (now == 0 ? 0 : INFINITY);
            /* error rates are compared in absolute terms: from 0 any error is a change */
            bool worse = m == 6 ? now > was + tolerance / 10 : metrics[m].higher_better ? change < -tolerance : change > tolerance;
            regressions += worse;
            fprintf(out, "| %g | %s | %.3f | %.3f | %+.1f%% | %s |\n", run->rows[i].load, metrics[m].name, was, now,
                    100 * change, worse ? "REGRESSED" : "ok");
        }
    }
    ag_arena_deinit(&a);
    if (!matched) {
        snprintf(msg, msg_cap, "no step of the baseline has the same %s as this run's", run->mode);
        return -1;
    }
    return regressions;
}
