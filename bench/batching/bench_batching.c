/*
 * bench_batching - what continuous batching and the prefix cache buy, through
 * the engine API (include/autoglm/engine.h) on one model.
 *
 *   - aggregate decode: N concurrent requests (distinct 16-token prompts,
 *     64 tokens each, greedy, end-of-text ignored) for N = 1, 2, 4, ..., 32;
 *     each round's prompts are new, so none is in the prefix cache from an
 *     earlier round (which made the larger rounds skip part of their prefill);
 *     tokens/s = all generated tokens / time from submit to the last finish,
 *     and the ratio to N = 1;
 *   - time to first token of a 1,024-token prompt, uncached, and again when
 *     its first 1,008 tokens are in the prefix cache (a second prompt that
 *     differs only in its last 16 tokens).
 * usage: bench_batching MODEL.gguf [THREADS]
 */
#include "autoglm/engine.h"
#include "base/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { GEN = 64, PROMPT = 16, LONG = 1024, SHARED = 1008 };

static ag_engine *make(const char *model, int threads, int max_seqs, bool no_repack) {
    ag_engine_params p = {.model_path = model, .n_threads = threads, .ctx = LONG + 64, .max_seqs = max_seqs,
                          .max_batch_tokens = 512, .max_queue = 256, .no_repack = no_repack};
    ag_engine *e = NULL;
    ag_err err;
    if (ag_engine_create(&p, &e, &err) != AG_OK) {
        fprintf(stderr, "%s: %s\n", model, err.msg);
        exit(1);
    }
    return e;
}

static uint64_t submit(ag_engine *e, const int32_t *prompt, int n, int max_tokens) {
    ag_request r = {.prompt = prompt, .n_prompt = n, .max_tokens = max_tokens, .ignore_eos = true};
    uint64_t id;
    ag_err err;
    if (ag_engine_submit(e, &r, &id, &err) != AG_OK) {
        fprintf(stderr, "submit: %s\n", err.msg);
        exit(1);
    }
    return id;
}

/* Wait for `n` finishes; returns the time of the last; the first-token time and cached tokens of the last request seen. */
static uint64_t wait_finishes(ag_engine *e, int n, uint64_t *first_token, int *cached) {
    ag_event ev[64];
    uint64_t last = 0;
    while (n > 0) {
        size_t got = ag_engine_poll(e, ev, 64, -1);
        for (size_t i = 0; i < got; i++) {
            if (ev[i].finish != AG_FINISH_NONE) n--, last = ev[i].t_event_ns;
            if (first_token && ev[i].t_first_token_ns) *first_token = ev[i].t_first_token_ns;
            if (cached) *cached = ev[i].cached_tokens;
            ag_event_clear(&ev[i]);
        }
    }
    return last;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_batching MODEL.gguf [THREADS] [--no-repack]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    bool no_repack = argc > 3 && strcmp(argv[3], "--no-repack") == 0;
    static int32_t prompts[63][PROMPT]; /* 1 + 2 + ... + 32 */
    uint64_t seed = 1;
    for (int i = 0; i < 63; i++)
        for (int k = 0; k < PROMPT; k++) seed = seed * 6364136223846793005ull + 1, prompts[i][k] = 3 + (int32_t)((seed >> 33) % 31000);
    ag_engine *e = make(argv[1], threads, 32, no_repack);
    printf("aggregate decode, %d tokens per request (%s, %s)\n| concurrent requests | tokens/s | vs 1 |\n|--:|--:|--:|\n",
           GEN, argv[1], no_repack ? "in place" : "repacked");
    double single = 0;
    for (int n = 1, used = 0; n <= 32; used += n, n *= 2) {
        uint64_t t0 = ag_clock_mono_ns();
        for (int i = 0; i < n; i++) submit(e, prompts[used + i], PROMPT, GEN);
        uint64_t t1 = wait_finishes(e, n, NULL, NULL);
        double tps = (double)n * GEN / ((double)(t1 - t0) / 1e9);
        if (n == 1) single = tps;
        printf("| %d | %.1f | %.2fx |\n", n, tps, tps / single);
        fflush(stdout);
    }
    static int32_t a[LONG], b[LONG];
    for (int k = 0; k < LONG; k++) seed = seed * 6364136223846793005ull + 1, a[k] = b[k] = 3 + (int32_t)((seed >> 33) % 31000);
    for (int k = SHARED; k < LONG; k++) b[k] = a[k] + 1;
    uint64_t first = 0, t0 = ag_clock_mono_ns();
    int cached_miss = 0, cached_hit = 0;
    submit(e, a, LONG, 1);
    wait_finishes(e, 1, &first, &cached_miss);
    double miss = (double)(first - t0) / 1e6;
    t0 = ag_clock_mono_ns();
    submit(e, b, LONG, 1);
    wait_finishes(e, 1, &first, &cached_hit);
    double hit = (double)(first - t0) / 1e6;
    printf("\ntime to first token, %d-token prompt\n| case | prompt tokens from the cache | TTFT ms |\n|---|--:|--:|\n"
           "| uncached | %d | %.1f |\n| first %d tokens cached | %d | %.1f |\nhit / miss: %.3f\n",
           LONG, cached_miss, miss, SHARED, cached_hit, hit, hit / miss);
    ag_engine_destroy(e);
    return 0;
}
