/*
 * bench_engine - how close the CPU engine runs to this machine's limits.
 *
 * In one run it measures the two ceilings, then the engine against them:
 *   - memory bandwidth: a STREAM triad (a = b + s * c) over three 64 MiB
 *     arrays, far larger than the caches, counted as STREAM counts (24 bytes
 *     per element); best of 5, taken before and again after the engine runs
 *     (a VM's bandwidth drifts by tens of percent; the best is the ceiling);
 *   - peak FMA rate: independent vector FMA chains (the widest vectors this
 *     build has; AVX-512 here), best of 5;
 *   - decode (best of 3): 64 single-token forwards from an empty cache (positions 0..63),
 *     tokens/s, and bytes of weights read per token x tokens/s / bandwidth;
 *   - prefill (best of 3): one batch of --prompt tokens, 512 unless told (logits for the last row only), tokens/s,
 *     and FLOP/s (2 per multiply-add: every weight matrix per token, the head
 *     once, attention's QK and AV products) / peak.
 * Each model is measured with every thread count given (--threads "1 2").
 * --json F also writes the ceilings and results as JSON (bench/engine/compare.mjs reads it).
 * usage: bench_engine [--threads "1 2"] [--layouts "repacked in-place"] [--prompt 512] [--json F] MODEL.gguf...
 */
#include "base/clock.h"
#include "base/pool.h"
#include "engine/model.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TRIAD_N = 8 << 20, DECODE_TOKENS = 64, MAX_PROMPT = 16384, REPS = 5, ENGINE_REPS = 3 };

typedef struct triad_job {
    double *a, *b, *c;
} triad_job;

static void triad(void *ctx, int ith, int nth) {
    triad_job *j = ctx;
    long lo, hi;
    ag_pool_split(TRIAD_N, ith, nth, 1024, &lo, &hi);
    for (long i = lo; i < hi; i++) j->a[i] = j->b[i] + 3.0 * j->c[i];
}

static void first_touch(void *ctx, int ith, int nth) { /* pages land near the threads that use them */
    triad_job *j = ctx;
    long lo, hi;
    ag_pool_split(TRIAD_N, ith, nth, 1024, &lo, &hi);
    for (long i = lo; i < hi; i++) j->a[i] = 0, j->b[i] = 1, j->c[i] = 2;
}

static double bandwidth_gbs(ag_pool *p) {
    triad_job j = {malloc(TRIAD_N * 8), malloc(TRIAD_N * 8), malloc(TRIAD_N * 8)};
    ag_pool_run(p, first_touch, &j);
    double best = 1e30;
    for (int r = 0; r < REPS; r++) {
        uint64_t t0 = ag_clock_mono_ns();
        ag_pool_run(p, triad, &j);
        double s = (double)(ag_clock_mono_ns() - t0) / 1e9;
        if (s < best) best = s;
    }
    volatile double sink = j.a[TRIAD_N / 3];
    (void)sink;
    free(j.a), free(j.b), free(j.c);
    return 24.0 * TRIAD_N / best / 1e9;
}

enum { FMA_ITERS = 20 << 20 };
static double fma_flops[256];

static void fma_loop(void *ctx, int ith, int nth) {
    (void)ctx, (void)nth;
#if defined(__AVX512F__)
    typedef __m512 vec;
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define LANES 16
#elif defined(__FMA__)
    typedef __m256 vec;
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define LANES 8
#endif
#if defined(LANES)
    vec acc[12], m = SET1(0.999999f), a = SET1(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = SET1((float)i);
    for (long it = 0; it < FMA_ITERS; it++)
        for (int i = 0; i < 12; i++) acc[i] = FMA(acc[i], m, a);
    float out[LANES];
    vec s = acc[0];
    for (int i = 1; i < 12; i++) s = FMA(acc[i], m, s);
    memcpy(out, &s, sizeof out);
    fma_flops[ith] = out[0] != 12345.0f ? 2.0 * LANES * 12 * FMA_ITERS : 0;
#else
    fma_flops[ith] = 0;
#endif
}

static double peak_gflops(ag_pool *p) {
    double best = 0;
    for (int r = 0; r < REPS; r++) {
        uint64_t t0 = ag_clock_mono_ns();
        ag_pool_run(p, fma_loop, NULL);
        double s = (double)(ag_clock_mono_ns() - t0) / 1e9, f = 0;
        for (int i = 0; i < ag_pool_size(p); i++) f += fma_flops[i];
        if (f / s > best) best = f / s;
    }
    return best / 1e9;
}

static double prefill_flops(const ag_model *m, int T) {
    const ag_config *c = &m->cfg;
    double per_token = 0;
    for (int l = 0; l < c->n_layer; l++) {
        const ag_layer_weights *w = &m->w.layers[l];
        const ag_matrix *mats[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
        for (size_t i = 0; i < 7; i++) per_token += 2.0 * (double)mats[i]->rows * (double)mats[i]->cols;
    }
    double attention = 4.0 * c->n_layer * (double)c->n_head * c->head_dim * ((double)T * (T + 1) / 2);
    return per_token * T + attention + 2.0 * (double)m->w.output.rows * m->w.output.cols;
}

/* Raise bw[i] and peak[i] to this measurement where it is higher; nonzero on failure. */
static int measure_ceilings(const int *threads, int n, double *bw, double *peak) {
    for (int i = 0; i < n; i++) {
        ag_pool *p;
        ag_err err;
        if (ag_pool_create(threads[i], &p, &err) != AG_OK) return fprintf(stderr, "%s\n", err.msg), 1;
        double b = bandwidth_gbs(p), f = peak_gflops(p);
        if (b > bw[i]) bw[i] = b;
        if (f > peak[i]) peak[i] = f;
        ag_pool_destroy(p);
    }
    return 0;
}

static double now_s(void) { return (double)ag_clock_mono_ns() / 1e9; }

int main(int argc, char **argv) {
    const char *threads_list = "1 2", *json_path = NULL, *layouts = "repacked in-place";
    int prompt = 512;
    int first = 1;
    for (; first + 1 < argc && argv[first][0] == '-'; first += 2) {
        if (strcmp(argv[first], "--threads") == 0) threads_list = argv[first + 1];
        else if (strcmp(argv[first], "--json") == 0) json_path = argv[first + 1];
        else if (strcmp(argv[first], "--layouts") == 0) layouts = argv[first + 1];
        else if (strcmp(argv[first], "--prompt") == 0) prompt = atoi(argv[first + 1]);
        else break;
    }
    if (first >= argc || argv[first][0] == '-') {
        fprintf(stderr, "usage: bench_engine [--threads \"1 2\"] [--layouts \"repacked in-place\"] [--prompt 512] [--json F] "
                        "MODEL.gguf...\n");
        return 2;
    }
    if (prompt < 1 || prompt > MAX_PROMPT) {
        fprintf(stderr, "bench_engine: --prompt takes 1..%d tokens\n", MAX_PROMPT);
        return 2;
    }
    /* the layouts of the weights to measure side by side in one run: loaded repacked, and with --no-repack */
    bool no_repack[2];
    int n_layouts = 0;
    if (strstr(layouts, "repacked")) no_repack[n_layouts++] = false;
    if (strstr(layouts, "in-place")) no_repack[n_layouts++] = true;
    if (n_layouts == 0) {
        fprintf(stderr, "bench_engine: --layouts takes \"repacked\", \"in-place\" or both\n");
        return 2;
    }
    int threads[16], n_threads = 0;
    for (const char *s = threads_list; *s && n_threads < 16;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (v > 0 && v <= 256) threads[n_threads++] = (int)v;
        s = end;
    }
    double bw[16] = {0}, peak[16] = {0};
    if (measure_ceilings(threads, n_threads, bw, peak)) return 1;
    typedef struct result {
        const char *name, *type, *kernels, *layout;
        int ti;
        double decode, wbytes, prefill, gflops;
    } result;
    result *res = calloc((size_t)(argc - first) * n_threads * 2, sizeof *res);
    int n_res = 0;
    for (int a = first; a < argc; a++) {
        for (int run = 0; run < n_layouts * n_threads; run++) {
            const int ti = run / n_layouts;
            ag_model_params mp = ag_model_params_default();
            mp.n_threads = threads[ti];
            mp.n_ctx = prompt > 1024 ? prompt : 1024;
            mp.no_repack = no_repack[run % n_layouts];
            ag_model *m = NULL;
            ag_err err;
            if (ag_model_load(argv[a], &mp, &m, &err) != AG_OK) {
                fprintf(stderr, "%s: %s\n", argv[a], err.msg);
                return 1;
            }
            /* a file with nothing to repack loads the same either way: measure it once, as "in place" */
            const char *layout = m->n_repacked ? "repacked" : "in place";
            if (!m->n_repacked && !mp.no_repack && n_layouts == 2) {
                ag_model_free(m);
                continue;
            }
            static int32_t tok[MAX_PROMPT], pos[MAX_PROMPT];
            uint64_t seed = 1;
            for (int i = 0; i < prompt; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                tok[i] = 3 + (int32_t)((seed >> 33) % (uint64_t)(m->cfg.n_vocab - 3));
                pos[i] = i;
            }
            /* decode: one token per forward, as a single stream generates */
            double best_decode = 0;
            for (int r = 0; r < ENGINE_REPS; r++) {
                m->kv->ops->seq_clear(m->kv, 0);
                double t0 = now_s();
                for (int i = 0; i < DECODE_TOKENS; i++)
                    if (ag_forward(m, &(ag_batch){.n = 1, .token = &tok[i], .pos = &pos[i]}, &err) != AG_OK)
                        return fprintf(stderr, "%s\n", err.msg), 1;
                double tps = DECODE_TOKENS / (now_s() - t0);
                if (tps > best_decode) best_decode = tps;
            }
            double best_prefill = 0;
            for (int r = 0; r < ENGINE_REPS; r++) {
                m->kv->ops->seq_clear(m->kv, 0);
                double t0 = now_s();
                if (ag_forward(m, &(ag_batch){.n = prompt, .token = tok, .pos = pos}, &err) != AG_OK)
                    return fprintf(stderr, "%s\n", err.msg), 1;
                double tps = prompt / (now_s() - t0);
                if (tps > best_prefill) best_prefill = tps;
            }
            double wbytes = (double)ag_model_weight_bytes(m);
            double gflops = prefill_flops(m, prompt) / (prompt / best_prefill) / 1e9;
            const char *name = strrchr(argv[a], '/') ? strrchr(argv[a], '/') + 1 : argv[a];
            res[n_res++] = (result){name, ag_dtype_name(m->w.layers[0].wq.type), m->kern->name, layout, ti, best_decode,
                                    wbytes, best_prefill, gflops};
            ag_model_free(m);
        }
    }
    if (measure_ceilings(threads, n_threads, bw, peak)) return 1;
    printf("machine ceilings (best of before and after the engine runs)\n"
           "| threads | triad bandwidth GB/s | peak FMA GFLOP/s |\n|--:|--:|--:|\n");
    for (int i = 0; i < n_threads; i++) printf("| %d | %.1f | %.1f |\n", threads[i], bw[i], peak[i]);
    printf("\nengine: decode %d tokens from an empty cache; prefill one batch of %d tokens\n", DECODE_TOKENS, prompt);
    printf("| model | weights | threads | kernels | layout | decode tok/s | weight MB/token | decode %% of bandwidth | "
           "prefill tok/s | prefill GFLOP/s | prefill %% of peak |\n|---|---|--:|---|---|--:|--:|--:|--:|--:|--:|\n");
    for (int i = 0; i < n_res; i++) {
        const result *r = &res[i];
        printf("| %s | %s | %d | %s | %s | %.1f | %.1f | %.0f%% | %.1f | %.1f | %.0f%% |\n", r->name, r->type,
               threads[r->ti], r->kernels, r->layout, r->decode, r->wbytes / 1e6, 100.0 * r->decode * r->wbytes / (bw[r->ti] * 1e9),
               r->prefill, r->gflops, 100.0 * r->gflops / peak[r->ti]);
    }
    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (!f) return fprintf(stderr, "%s: cannot write\n", json_path), 1;
        fprintf(f, "{\"prompt\": %d, \"ceilings\": [", prompt);
        for (int i = 0; i < n_threads; i++)
            fprintf(f, "%s{\"threads\": %d, \"triad_gbs\": %.3f, \"peak_gflops\": %.3f}", i ? ", " : "", threads[i],
                    bw[i], peak[i]);
        fprintf(f, "],\n \"results\": [");
        for (int i = 0; i < n_res; i++) {
            const result *r = &res[i];
            fprintf(f,
                    "%s\n  {\"model\": \"%s\", \"type\": \"%s\", \"threads\": %d, \"kernels\": \"%s\", \"layout\": \"%s\", "
                    "\"decode_tps\": %.3f, \"weight_bytes\": %.0f, \"prefill_tps\": %.3f, \"prefill_gflops\": %.3f}",
                    i ? "," : "", r->name, r->type, threads[r->ti], r->kernels, r->layout, r->decode, r->wbytes, r->prefill, r->gflops);
        }
        fprintf(f, "]}\n");
        fclose(f);
    }
    free(res);
    return 0;
}
