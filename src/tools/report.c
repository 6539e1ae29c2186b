/*
 * report.c - tables, files and the HTML report of `autoglm bench` (see
 * report.h).  The HTML is one file: inline SVG charts drawn here (throughput
 * and p99 latency against load, a latency CDF per step) and tables, with no
 * script or stylesheet from elsewhere, so it can be mailed or committed.
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

void ag_bench_print_table(const ag_bench_run *run, FILE *out) {
    fprintf(out, "| %s | req/s | output tok/s | p50 latency ms | p99 latency ms | p99 TTFT ms | p99 TPOT ms | error rate | goodput req/s |\n",
            run->mode);
    fputs("|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n", out);
    for (size_t i = 0; i < run->n; i++) {
        ag_bench_stats s;
        ag_bench_stats_of(&run->rows[i].r, &s);
        fprintf(out, "| %g | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f%% | %.1f |\n", run->rows[i].load, s.req_s,
                s.out_tok_s, s.e2e[1], s.e2e[4], s.ttft[4], s.tpot[4], 100 * s.error_rate, s.goodput_s);
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
    int k = ag_bench_knee(run), m = ag_bench_slo_max(run);
    if (k >= 0)
        fprintf(out, "\nknee: %s %g (beyond it throughput grows < %.0f%% while p99 latency grows > %.0f%%)\n", run->mode,
                run->rows[k].load, 100 * run->knee_throughput, 100 * run->knee_latency);
    else
        fprintf(out, "\nknee: not reached (throughput kept growing, or latency held, at every step)\n");
    if (run->has_slo) {
        if (m >= 0) fprintf(out, "highest load within the SLOs: %s %g\n", run->mode, run->rows[m].load);
        else fprintf(out, "highest load within the SLOs: none of the steps\n");
    }
    for (size_t i = 0; i < run->n; i++) {
        const ag_lg_result *r = &run->rows[i].r;
        if (r->counted == r->ok) continue;
        fprintf(out, "%s %g: %llu requests: %llu ok, %llu HTTP errors", run->mode, run->rows[i].load,
                (unsigned long long)r->counted, (unsigned long long)r->ok, (unsigned long long)r->http_error);
        for (int j = 0; j < AG_LG_STATUS_SLOTS && r->statuses[j].status; j++)
            fprintf(out, "%s%d x%llu", j ? ", " : " (", r->statuses[j].status, (unsigned long long)r->statuses[j].n);
        fprintf(out, "%s, %llu timeouts, %llu connection errors, %llu protocol errors, %llu aborted\n",
                r->statuses[0].status ? ")" : "", (unsigned long long)r->timeout, (unsigned long long)r->conn_error,
                (unsigned long long)r->proto_error, (unsigned long long)r->aborted);
    }
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
        JINT("aborted", r->aborted);
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

/* A line chart, 560 x 300, linear axes from 0 (log x when log_x, from the smallest x). */
static void svg_chart(ag_buf *o, const char *title, const char *xlabel, const char *ylabel, const series *s, size_t ns,
                      bool log_x) {
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
    ag_buf_appendf(o, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>autoglm bench: %s</title><style>"
                      "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
                      "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}svg{margin:0.5em 1em 0.5em 0}"
                      "</style></head><body><h1>autoglm bench</h1><p>target <code>%s</code>, %s sweep</p>\n",
                   run->target, run->target, run->mode);
    ag_buf tab;
    ag_buf_init(&tab);
    FILE *f = open_memstream(&tab.data, &tab.len);
    if (f) {
        ag_bench_print_table(run, f);
        fclose(f);
        ag_buf_append_str(o, "<pre>");
        for (size_t i = 0; i < tab.len; i++) {
            char ch = tab.data[i];
            if (ch == '<') ag_buf_append_str(o, "&lt;");
            else if (ch == '&') ag_buf_append_str(o, "&amp;");
            else ag_buf_append_char(o, ch);
        }
        ag_buf_append_str(o, "</pre>\n");
        free(tab.data);
    }
    series thr[] = {{"requests/s", palette[0], x, rps, n}}, tok[] = {{"output tokens/s", palette[2], x, tps, n}};
    series lat[] = {{"p99 latency", palette[1], x, p99, n}, {"p50 latency", palette[0], x, p50, n},
                    {"p99 TTFT", palette[3], x, ttft, n}};
    svg_chart(o, "Throughput vs load", run->mode, "requests/s", thr, 1, false);
    svg_chart(o, "Output tokens/s vs load", run->mode, "tokens/s", tok, 1, false);
    svg_chart(o, "Latency vs load", run->mode, "ms", lat, 3, false);
    /* latency CDF per step, from the histogram buckets */
    series *cdf = calloc(n ? n : 1, sizeof *cdf);
    double **cx = calloc(n ? n : 1, sizeof *cx), **cy = calloc(n ? n : 1, sizeof *cy);
    char (*names)[48] = calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const ag_hist *h = &run->rows[i].r.e2e;
        cx[i] = calloc(AG_HIST_MAGS * AG_HIST_SUB, sizeof **cx), cy[i] = calloc(AG_HIST_MAGS * AG_HIST_SUB, sizeof **cy);
        size_t k = 0;
        uint64_t seen = 0;
        for (int m = 0; m < AG_HIST_MAGS && h->n; m++)
            for (int sb = 0; sb < AG_HIST_SUB; sb++) {
                if (!h->counts[m][sb]) continue;
                seen += h->counts[m][sb];
                double top = m == 0 ? sb + 1 : (double)(AG_HIST_SUB + sb + 1) * (double)(1ull << (m - 1));
                cx[i][k] = top / 1e3, cy[i][k] = 100.0 * (double)seen / (double)h->n, k++;
            }
        snprintf(names[i], sizeof names[i], "%s %g", run->mode, run->rows[i].load);
        cdf[i] = (series){names[i], palette[i % 8], cx[i], cy[i], k};
    }
    svg_chart(o, "Latency CDF per step", "end-to-end latency, ms (log)", "% of requests", cdf, n, true);
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
