/*
 * bench_client.c - libautoglm's retry policy against a flaky API, beside no
 * retries and naive retries: THREADS threads share one client and call
 * /v1/completions in a closed loop for SECONDS; prints one JSON line with
 * calls, successes, p50/p95/p99 latency of successful calls, attempts per
 * call, and the calls that sent a hedged copy (and those the copy won).
 * bench/client/run puts it behind `autoglm chaos` and reads the server's own
 * counts beside it.  Modes: none (no retries), naive (at once, unbounded),
 * policy (the defaults), hedge (the defaults and options.hedge).
 *
 * usage: bench_client BASE_URL MODEL none|naive|policy|hedge SECONDS THREADS
 */
#define _GNU_SOURCE
#include "autoglm/client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static ag_client *client;
static double seconds;
static atomic_long calls, ok, attempts, hedged, hedge_won;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static double *lat;
static size_t n_lat, cap_lat;
static char body[256];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *worker(void *arg) {
    (void)arg;
    double end = now_s() + seconds;
    ag_client_request req = {.path = "/v1/completions", .body = body, .body_len = strlen(body)};
    while (now_s() < end) {
        double t0 = now_s();
        ag_client_result r;
        if (ag_client_call(client, &req, &r) != AG_OK) abort();
        double dt = now_s() - t0;
        atomic_fetch_add(&calls, 1);
        atomic_fetch_add(&attempts, r.attempts);
        atomic_fetch_add(&hedged, r.hedged);
        atomic_fetch_add(&hedge_won, r.hedge_won);
        if (r.outcome == AG_CLIENT_OK) {
            atomic_fetch_add(&ok, 1);
            pthread_mutex_lock(&mu);
            if (n_lat == cap_lat) lat = realloc(lat, (cap_lat = cap_lat ? 2 * cap_lat : 1024) * sizeof *lat);
            lat[n_lat++] = dt;
            pthread_mutex_unlock(&mu);
        }
        ag_client_result_free(&r);
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: bench_client BASE_URL MODEL none|naive|policy|hedge SECONDS THREADS\n");
        return 2;
    }
    const char *mode = argv[3];
    seconds = atof(argv[4]);
    int threads = atoi(argv[5]);
    ag_client_options o = ag_client_options_default();
    o.base_url = argv[1];
    o.total_timeout_ms = 10000, o.first_byte_timeout_ms = 5000;
    if (strcmp(mode, "none") == 0) {
        o.retry.max_retries = 0;
    } else if (strcmp(mode, "naive") == 0) { /* at once, until the call's time runs out, no budget */
        o.retry.max_retries = o.retry.max_5xx_retries = 1000;
        o.retry.backoff_base_s = o.retry.backoff_cap_s = 0;
        o.retry.budget_ratio = o.retry.budget_floor = 1e12;
    } else if (strcmp(mode, "hedge") == 0) {
        o.hedge = true;
    } else if (strcmp(mode, "policy") != 0) {
        fprintf(stderr, "bench_client: mode must be none, naive, policy or hedge\n");
        return 2;
    }
    snprintf(body, sizeof body, "{\"model\": \"%s\", \"prompt\": \"In the beginning\", \"max_tokens\": 8}", argv[2]);
    ag_err err;
    if (ag_client_new(&o, &client, &err) != AG_OK) {
        fprintf(stderr, "bench_client: %s\n", err.msg);
        return 1;
    }
    pthread_t t[256];
    if (threads < 1 || threads > 256) return 2;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    ag_client_free(client);
    qsort(lat, n_lat, sizeof *lat, cmp);
    double q[3] = {0.5, 0.95, 0.99}, v[3] = {0};
    for (int i = 0; i < 3 && n_lat; i++) v[i] = lat[(size_t)((double)(n_lat - 1) * q[i])] * 1e3;
    printf("{\"mode\": \"%s\", \"calls\": %ld, \"ok\": %ld, \"attempts\": %ld, \"hedged\": %ld, \"hedge_won\": %ld, "
           "\"p50_ms\": %.1f, \"p95_ms\": %.1f, \"p99_ms\": %.1f}\n",
           mode, atomic_load(&calls), atomic_load(&ok), atomic_load(&attempts), atomic_load(&hedged),
           atomic_load(&hedge_won), v[0], v[1], v[2]);
    free(lat);
    return 0;
}
