/*
 * cmd_tune.c - `autoglm tune`: the serve settings with the highest goodput
 * under an SLO, found by measuring them rather than guessing.
 *
 * Each candidate (threads, max-seqs, max-batch-tokens, and a KV pool sized
 * for the workload's contexts within --kv-memory-mb) runs as a real
 * `autoglm serve` child on a loopback port and is measured by an
 * `autoglm bench` child: closed loop at
 * half, one and two times max-seqs concurrent requests, goodput being the
 * requests per second that met every SLO.  The search is coordinate
 * descent from the defaults, one knob at a time (threads, then max-seqs,
 * then the batch budget), each knob kept at its best before the next is
 * tried; last, the winner is tried again with the online controller
 * (serve --slo).  The step-time model the incumbent's server fitted (read
 * from its /metrics) proposes one more batch budget: the prompt rows that
 * put a step with max-seqs decoding rows at the TPOT target.  Every trial's share of --time-budget is set before the
 * first; a trial that would overrun the budget is skipped, and a bench
 * still running at its end is stopped with what it measured, so the
 * command ends within the budget and the few seconds its children take to
 * stop.
 *
 * Children, not threads in this process: each candidate is exactly the
 * server a user would start, and the load generator never shares cores or a
 * heap with it beyond what two processes do.
 */
#define _GNU_SOURCE
#include "autoglm/autotune.h"
#include "base/arena.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/str.h"
#include "cli/cli.h"
#include "json/json.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define USAGE(...) ag_cli_usage_error("tune", __VA_ARGS__)

enum { MAX_LIST = 8, TRIAL_OVERHEAD_S = 3 }; /* a server's start and stop, beside its measurement */

static const char tune_usage[] =
    "usage: autoglm tune --model M.gguf [options]\n"
    "Measure serve settings against a workload and print the ones with the highest goodput under the SLO,\n"
    "as a ready `autoglm serve` command, with the table of what was tried.\n"
    "  --slo ttft=D,tpot=D[,e2e=D]  the targets (default ttft=2s,tpot=200ms)\n"
    "  --workload F.jsonl       requests from a file of OpenAI request bodies (as bench --dataset)\n"
    "  --input-tokens N         else random prompts of about N tokens (default 256)\n"
    "  --output-tokens N        and N output tokens each (default 64)\n"
    "  --api chat|completions   the route of synthetic requests (default completions)\n"
    "  --time-budget D          the whole search ends within D (default 5m, at least 20s)\n"
    "  --threads LIST           candidates (default: the cores, and half of them)\n"
    "  --max-seqs LIST          candidates (default 4,8,16,32)\n"
    "  --max-batch-tokens LIST  candidates (default 128,256,512)\n"
    "  --kv-memory-mb N         the most a candidate's KV pool may take (default half the memory available)\n";

typedef struct trial {
    int threads, seqs, batch;
    bool controller; /* serve --slo */
    bool ran;
    char why[96];    /* not measured: why */
    int conc;        /* the concurrency of the best goodput */
    double goodput, req_s, ttft99, tpot99;
    bool has_model;  /* the server's fitted step time (autotune.h), read from its /metrics after the load */
    double model[3], model_err;
} trial;

typedef struct tuner {
    const char *self, *model, *slo_text, *workload, *api;
    double kv_token_bytes; /* the model's KV bytes per token (F16) */
    int ctx;               /* serve's per-request context for the model */
    double kv_cap_bytes;   /* --kv-memory-mb, else half the memory available at the start */
    ag_slo slo;
    int input_tokens, output_tokens;
    double step_s, warmup_s; /* each bench step's measured time and warm-up */
    char dir[256];           /* scratch files */
} tuner;

static int parse_list(const char *t, int *out, int lo, int hi) {
    int n = 0;
    for (const char *p = t; p && *p && n < MAX_LIST;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < lo || v > hi || (*end && *end != ',')) return -1;
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return t && *t ? n : -1;
}

static double now_s(void) { return (double)ag_clock_mono_ns() / 1e9; }

/* Run argv with stdout and stderr to the file log (NULL: /dev/null); the child's pid. */
static pid_t spawn(char **argv, const char *log) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) dup2(fd, 1), dup2(fd, 2), close(fd);
    execv(argv[0], argv);
    _exit(127);
}


/* The server's port once its log says ready; 0 when it exited or did not get ready within the wait. */
static int wait_ready(pid_t pid, const char *log, double deadline, char *why, size_t cap) {
    while (now_s() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            snprintf(why, cap, "the server exited (see its log)");
            return -1;
        }
        char *text = NULL;
        size_t len = 0;
        int port = 0;
        if (ag_cli_read_file(log, &text, &len) == AG_OK && strstr(text, "ready:")) {
            const char *m = strstr(text, "listening on http://127.0.0.1:");
            if (m) port = atoi(m + strlen("listening on http://127.0.0.1:"));
        }
        free(text);
        if (port > 0) return port;
        usleep(50000);
    }
    snprintf(why, cap, "the server was not ready in time");
    return 0;
}

/*
 * Wait for a child until `until`; then send it sig, give it `grace` seconds
 * (a bench on SIGINT writes what it measured, a server on SIGTERM drains),
 * and kill it.  Its wait status.
 */
static int reap(pid_t pid, double until, int sig, double grace) {
    int st = 0;
    for (bool sent = false;;) {
        if (waitpid(pid, &st, WNOHANG) == pid) return st;
        double now = now_s();
        if (!sent && now >= until) kill(pid, sig), sent = true, until = now + grace;
        else if (sent && now >= until) break;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return st;
}

static double num_at(const ag_json_val *o, const char *k1, const char *k2) {
    const ag_json_val *v = ag_json_obj_getc(o, k1);
    if (k2) v = ag_json_obj_getc(v, k2);
    double d = 0;
    return ag_json_get_double(v, &d) ? d : 0;
}

/* The bench's JSON: the step with the highest goodput (ties: the lower p99 TTFT) into t. */
static bool read_bench(const char *path, trial *t) {
    char *text = NULL;
    size_t len = 0;
    if (ag_cli_read_file(path, &text, &len) != AG_OK) return false;
    ag_arena a;
    ag_arena_init(&a, 1 << 16);
    ag_json_val *root;
    const ag_json_val *steps = NULL;
    if (ag_json_parse(text, len, NULL, &a, &root, NULL) == AG_OK) steps = ag_json_obj_getc(root, "steps");
    bool ok = ag_json_is(steps, AG_JSON_ARRAY) && ag_json_len(steps) > 0;
    for (size_t i = 0; ok && i < ag_json_len(steps); i++) {
        const ag_json_val *s = ag_json_arr_at(steps, i);
        double good = num_at(s, "goodput_req_s", NULL), ttft = num_at(s, "ttft_ms", "p99");
        if (i == 0 || good > t->goodput || (good == t->goodput && ttft < t->ttft99))
            t->goodput = good, t->ttft99 = ttft, t->tpot99 = num_at(s, "tpot_ms", "p99"),
            t->req_s = num_at(s, "req_s", NULL), t->conc = (int)num_at(s, "load", NULL);
    }
    ag_arena_deinit(&a);
    free(text);
    return ok;
}

/*
 * The KV pool of a candidate: max-seqs contexts of the synthetic workload (with room for a chat template), or
 * serve's default of max-seqs full contexts for a workload file; within half the memory available.  The serve
 * flag for it into flag/val; false when serve's default is that pool.
 */
static bool kv_pool(const tuner *u, int seqs, const char **flag, char *val, size_t cap) {
    long per = u->workload ? u->ctx : u->input_tokens + u->output_tokens + 64;
    long tokens = (long)seqs * ((per + 15) / 16 * 16);
    if (tokens * u->kv_token_bytes > u->kv_cap_bytes) {
        *flag = "--kv-cache-mb";
        snprintf(val, cap, "%ld", (long)(u->kv_cap_bytes / (1 << 20)));
        return true;
    }
    if (u->workload) return false;
    *flag = "--ctx-total";
    snprintf(val, cap, "%ld", tokens);
    return true;
}

/* The model's KV bytes per token and serve's context for it, from the file (no weights read); memory available. */
static bool probe(tuner *u) {
    ag_model_params mp = ag_model_params_default();
    mp.n_ctx = 16, mp.n_threads = 1; /* a tiny cache: only the shape is wanted */
    ag_model *m;
    ag_err err;
    if (ag_model_load(u->model, &mp, &m, &err) != AG_OK) {
        fprintf(stderr, "autoglm tune: %s\n", err.msg);
        return false;
    }
    u->kv_token_bytes = 2.0 * m->cfg.n_layer * m->cfg.n_head_kv * m->cfg.head_dim * 2;
    u->ctx = m->cfg.n_ctx_train < 4096 ? m->cfg.n_ctx_train : 4096;
    ag_model_free(m);
    long avail_kb = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[128];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %ld kB", &avail_kb) == 1) break;
    if (f) fclose(f);
    if (!u->kv_cap_bytes) u->kv_cap_bytes = avail_kb > 0 ? avail_kb * 1024.0 / 2 : 1e18;
    return true;
}

/* "ttft=2000ms,tpot=50ms": the targets that are set, as serve --slo takes them. */
static void slo_arg(const ag_slo *s, char *out, size_t cap) {
    size_t n = 0;
    const double v[2] = {s->ttft_s, s->tpot_s};
    for (int i = 0; i < 2; i++) {
        if (!v[i]) continue;
        double ms = v[i] * 1e3;
        n += (size_t)snprintf(out + n, cap - n, ms == (double)(long)ms ? "%s%s=%.0fms" : "%s%s=%.0fus", n ? "," : "",
                              i ? "tpot" : "ttft", ms == (double)(long)ms ? ms : v[i] * 1e6);
    }
}

static bool has(const int *v, int n, int x) {
    for (int i = 0; i < n; i++)
        if (v[i] == x) return true;
    return false;
}

/* The step-time model the server fitted under the load, from its /metrics (plain HTTP/1.0 on loopback). */
static void read_model(int port, trial *t) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    ag_buf b;
    ag_buf_init(&b);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, req, sizeof req - 1) > 0) {
        char chunk[16384];
        for (ssize_t n; (n = read(fd, chunk, sizeof chunk)) > 0 && b.len < (1 << 22);) ag_buf_append(&b, chunk, (size_t)n);
    }
    if (fd >= 0) close(fd);
    ag_buf_append_char(&b, '\0');
    static const char *const names[] = {"\nautoglm_autotune_model_seconds{term=\"base\"} ", /* samples, not HELP */
                                        "\nautoglm_autotune_model_seconds{term=\"per_decode_row\"} ",
                                        "\nautoglm_autotune_model_seconds{term=\"per_prompt_row\"} ",
                                        "\nautoglm_autotune_model_error_ratio "};
    int found = 0;
    for (int i = 0; i < 4 && b.data; i++) {
        const char *at = strstr(b.data, names[i]);
        if (!at) continue;
        double v = strtod(at + strlen(names[i]), NULL);
        if (i < 3) t->model[i] = v;
        else t->model_err = v;
        found++;
    }
    t->has_model = found == 4;
    ag_buf_deinit(&b);
}

/* The prompt rows a step may take beside max-seqs decoding rows at the TPOT target, by the step model, as a
 * multiple of the KV block within [lo, hi]; 0 when there is no model or no TPOT target. */
static int model_batch(const tuner *u, const trial *t, int lo, int hi) {
    if (!t->has_model || !u->slo.tpot_s || t->model[2] <= 1e-9) return 0; /* prompt rows' cost not told apart */
    double p = (0.95 * u->slo.tpot_s - t->model[0] - t->model[1] * t->seqs) / t->model[2];
    int rows = t->seqs + (p > 16 ? (int)(p / 16) * 16 : 16);
    return rows < lo ? lo : rows > hi ? hi : rows;
}

/* Measure one candidate: a server ready by deadline, then a bench against it, stopped at the budget's end. */
static void run_trial(const tuner *u, trial *t, double deadline, double end) {
    char threads[16], seqs[16], batch[16], kv[24], log[300], json[300];
    const char *kv_flag;
    snprintf(threads, sizeof threads, "%d", t->threads), snprintf(seqs, sizeof seqs, "%d", t->seqs);
    snprintf(batch, sizeof batch, "%d", t->batch);
    snprintf(log, sizeof log, "%s/serve.log", u->dir), snprintf(json, sizeof json, "%s/bench.json", u->dir);
    char *sv[24] = {(char *)u->self, "serve", "--model", (char *)u->model, "--host", "127.0.0.1", "--port", "0",
                    "--served-model-name", "tune", "--threads", threads, "--max-seqs", seqs, "--max-batch-tokens",
                    batch, "--no-ui"};
    int n = 17;
    if (kv_pool(u, t->seqs, &kv_flag, kv, sizeof kv)) sv[n++] = (char *)kv_flag, sv[n++] = kv;
    char slo[96];
    if (t->controller) slo_arg(&u->slo, slo, sizeof slo), sv[n++] = "--slo", sv[n++] = slo;
    unlink(log); /* the last server's "ready" must not be read as this one's */
    pid_t srv = spawn(sv, log);
    int port = wait_ready(srv, log, deadline, t->why, sizeof t->why);
    if (port <= 0) {
        if (port == 0) reap(srv, 0, SIGTERM, 1);
        return;
    }
    char base[64], conc[48], dur[24], warm[24];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    int c1 = t->seqs / 2 > 0 ? t->seqs / 2 : 1;
    snprintf(conc, sizeof conc, c1 < t->seqs ? "%d,%d,%d" : "%d,%d", c1 < t->seqs ? c1 : t->seqs, t->seqs,
             2 * t->seqs);
    snprintf(dur, sizeof dur, "%.0fms", u->step_s * 1e3), snprintf(warm, sizeof warm, "%.0fms", u->warmup_s * 1e3);
    char in[16], out[16];
    snprintf(in, sizeof in, "%d", u->input_tokens), snprintf(out, sizeof out, "%d", u->output_tokens);
    char *bv[32] = {(char *)u->self, "bench", "--base-url", base, "--model", "tune", "--concurrency", conc,
                    "--duration", dur, "--warmup", warm, "--slo", (char *)u->slo_text, "--json", json};
    n = 16;
    if (u->workload) {
        bv[n++] = "--dataset", bv[n++] = (char *)u->workload;
    } else {
        bv[n++] = "--api", bv[n++] = (char *)u->api, bv[n++] = "--input-tokens", bv[n++] = in;
        bv[n++] = "--output-tokens", bv[n++] = out, bv[n++] = "--ignore-eos";
    }
    unlink(json);
    pid_t b = spawn(bv, NULL);
    int st = reap(b, end, SIGINT, 2); /* at the budget's end: Ctrl-C, the steps measured so far are kept */
    read_model(port, t);
    reap(srv, 0, SIGTERM, 2);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !read_bench(json, t)) {
        snprintf(t->why, sizeof t->why, "the bench failed (exit %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        return;
    }
    t->ran = true;
}

/* a beats b by more than the noise of a short measurement (2 %), or equals it with a lower p99 TTFT */
static bool better(const trial *a, const trial *b) {
    if (!a->ran) return false;
    if (!b->ran) return true;
    return a->goodput > 1.02 * b->goodput || (a->goodput >= b->goodput && a->ttft99 < b->ttft99);
}

static void print_row(const trial *t) {
    printf("| %d | %d | %d | %s | ", t->threads, t->seqs, t->batch, t->controller ? "on" : "off");
    if (t->ran) printf("%d | %.2f | %.2f | %.1f | %.2f |\n", t->conc, t->goodput, t->req_s, t->ttft99, t->tpot99);
    else printf("- | - | - | - | - | %s\n", t->why);
    fflush(stdout);
}

static void rmdir_all(const char *dir) {
    char p[300];
    const char *files[] = {"serve.log", "bench.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) snprintf(p, sizeof p, "%s/%s", dir, files[i]), unlink(p);
    rmdir(dir);
}

int ag_cmd_tune(int argc, char **argv) {
    tuner u = {.slo_text = "ttft=2s,tpot=200ms", .api = "completions", .input_tokens = 256, .output_tokens = 64};
    int threads[MAX_LIST], seqs[MAX_LIST] = {4, 8, 16, 32}, batch[MAX_LIST] = {128, 256, 512};
    int n_threads = 0, n_seqs = 4, n_batch = 3;
    uint64_t budget_us = 300000000;
    long v;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (ag_cli_is_help(a)) {
            fputs(tune_usage, stdout);
            return AG_EXIT_OK;
        }
        if (!val) return USAGE("%s needs a value (try 'autoglm tune --help')", a);
        i++;
        if (strcmp(a, "--model") == 0 || strcmp(a, "-m") == 0) u.model = val;
        else if (strcmp(a, "--slo") == 0) u.slo_text = val;
        else if (strcmp(a, "--workload") == 0) u.workload = val;
        else if (strcmp(a, "--api") == 0) u.api = val;
        else if (strcmp(a, "--input-tokens") == 0 || strcmp(a, "--output-tokens") == 0) {
            if (!ag_cli_int("tune", a, val, 1, 1 << 20, &v)) return AG_EXIT_USAGE;
            *(a[2] == 'i' ? &u.input_tokens : &u.output_tokens) = (int)v;
        } else if (strcmp(a, "--time-budget") == 0) {
            if (ag_str_parse_duration_us(ag_str_from_cstr(val), &budget_us) != AG_OK || budget_us < 20000000 ||
                budget_us > 86400000000ull)
                return USAGE("--time-budget needs a duration from 20s to 24h, such as 5m");
        } else if (strcmp(a, "--kv-memory-mb") == 0) {
            if (!ag_cli_int("tune", a, val, 1, 1L << 30, &v)) return AG_EXIT_USAGE;
            u.kv_cap_bytes = (double)v * (1 << 20);
        } else if (strcmp(a, "--threads") == 0) {
            if ((n_threads = parse_list(val, threads, 1, 1024)) < 0) return USAGE("--threads needs a list like 1,2");
        } else if (strcmp(a, "--max-seqs") == 0) {
            if ((n_seqs = parse_list(val, seqs, 1, 4096)) < 0) return USAGE("--max-seqs needs a list like 4,8,16");
        } else if (strcmp(a, "--max-batch-tokens") == 0) {
            if ((n_batch = parse_list(val, batch, 1, 1 << 16)) < 0)
                return USAGE("--max-batch-tokens needs a list like 128,256,512");
        } else {
            return USAGE("unknown option '%s' (try 'autoglm tune --help')", a);
        }
    }
    if (!u.model) return USAGE("needs --model M.gguf");
    if (access(u.model, R_OK) != 0) return USAGE("cannot read %s: %s", u.model, strerror(errno));
    if (!ag_slo_parse(u.slo_text, &u.slo)) return USAGE("--slo needs ttft=D,tpot=D,e2e=D (any of them)");
    if (strcmp(u.api, "chat") != 0 && strcmp(u.api, "completions") != 0) return USAGE("--api must be chat or completions");
    if (u.workload && access(u.workload, R_OK) != 0) return USAGE("cannot read %s: %s", u.workload, strerror(errno));
    if (!probe(&u)) return AG_EXIT_FAIL;
    if (!n_threads) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads[n_threads++] = cores > 0 ? (int)cores : 1;
        if (cores >= 2) threads[n_threads++] = (int)cores / 2;
    }
    static char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) return fprintf(stderr, "autoglm tune: cannot find its own binary\n"), AG_EXIT_FAIL;
    self[sl] = '\0';
    u.self = self;
    const char *tmp = getenv("TMPDIR");
    /* mkdtemp(3) replaces the template's last six characters, which must all be 'X', with a unique name */
    int n = snprintf(u.dir, sizeof u.dir, "%s/autoglm-tune-", tmp && *tmp ? tmp : "/tmp");
    if (n < 0 || (size_t)n + 7 > sizeof u.dir) return fprintf(stderr, "autoglm tune: TMPDIR is too long\n"), AG_EXIT_FAIL;
    memset(u.dir + n, 'X', 6), u.dir[n + 6] = '\0';
    if (!mkdtemp(u.dir)) return fprintf(stderr, "autoglm tune: cannot make a scratch directory: %s\n", strerror(errno)), 1;

    /* the plan: every candidate of each knob once (the defaults counted once), then the controller */
    int planned = n_threads + (n_seqs - 1) + (n_batch - 1) + 1, steps_per = 3;
    double budget = (double)budget_us / 1e6, per_trial = budget / planned;
    double measure = per_trial - TRIAL_OVERHEAD_S;
    if (measure < 1.5 * steps_per) { /* too short for every trial: fewer, each still measured for a while */
        planned = (int)(budget / (TRIAL_OVERHEAD_S + 1.5 * steps_per));
        per_trial = budget / planned, measure = per_trial - TRIAL_OVERHEAD_S;
    }
    u.step_s = measure / steps_per * 0.8, u.warmup_s = measure / steps_per * 0.2;
    double t0 = now_s(), end = t0 + budget;
    printf("autoglm tune: %s, SLO %s, %s; %d trials planned, %.1f s of load each of 3 steps\n\n", u.model, u.slo_text,
           u.workload ? u.workload : "synthetic requests", planned, u.step_s);
    printf("| threads | max-seqs | max-batch-tokens | --slo | concurrency | goodput req/s | req/s | p99 TTFT ms | p99 TPOT ms |\n"
           "|--:|--:|--:|---|--:|--:|--:|--:|--:|\n");
    fflush(stdout);

    /* from serve's defaults where they are candidates */
    trial best = {.threads = threads[0], .seqs = has(seqs, n_seqs, 16) ? 16 : seqs[n_seqs / 2],
                  .batch = has(batch, n_batch, 512) ? 512 : batch[n_batch - 1]};
    int tried = 0, skipped = 0;
    /* knob k: 0 threads, 1 max-seqs, 2 max-batch-tokens, 3 the controller */
    int from_model = 0; /* the batch candidate the best trial's step model proposed, when not among those given */
    for (int k = 0; k < 4; k++) {
        if (k == 2) {
            int lo = batch[0], hi = batch[0];
            for (int i = 1; i < n_batch; i++) lo = batch[i] < lo ? batch[i] : lo, hi = batch[i] > hi ? batch[i] : hi;
            from_model = model_batch(&u, &best, lo, hi);
            if (from_model && !has(batch, n_batch, from_model) && n_batch < MAX_LIST) batch[n_batch++] = from_model;
            else from_model = 0;
        }
        int n = k == 0 ? n_threads : k == 1 ? n_seqs : k == 2 ? n_batch : (u.slo.ttft_s || u.slo.tpot_s);
        trial round_best = best;
        for (int i = 0; i < n; i++) {
            trial t = best;
            t.ran = false, t.why[0] = '\0', t.goodput = t.req_s = t.ttft99 = t.tpot99 = 0, t.conc = 0;
            if (k == 0) t.threads = threads[i];
            else if (k == 1) t.seqs = seqs[i];
            else if (k == 2) t.batch = batch[i];
            else t.controller = true;
            if (k > 0 && k < 3 && t.seqs == best.seqs && t.batch == best.batch && !t.controller) continue; /* measured */
            if (now_s() + per_trial > end + 1) {
                snprintf(t.why, sizeof t.why, "skipped: the time budget");
                skipped++;
            } else {
                double ready_by = now_s() + per_trial < end ? now_s() + per_trial : end;
                run_trial(&u, &t, ready_by, end);
                tried++;
            }
            print_row(&t);
            if (better(&t, &round_best) || (k == 0 && i == 0)) round_best = t;
        }
        best = round_best;
    }
    rmdir_all(u.dir);
    printf("\n%d trials in %.0f s (budget %.0f s)%s\n", tried, now_s() - t0, budget,
           skipped ? ", some skipped for the time budget" : "");
    if (best.has_model)
        printf("step model of the best: %.3f ms + %.4f ms per decoding row + %.4f ms per prompt row, fit error %.0f%%\n",
               best.model[0] * 1e3, best.model[1] * 1e3, best.model[2] * 1e3, best.model_err * 100);
    if (from_model) printf("max-batch-tokens %d was a candidate: the step model puts the TPOT target there\n", from_model);
    if (!best.ran) {
        printf("no trial could be measured\n");
        return AG_EXIT_FAIL;
    }
    printf("best: goodput %.2f req/s under %s at concurrency %d (p99 TTFT %.1f ms, p99 TPOT %.2f ms)%s\n", best.goodput,
           u.slo_text, best.conc, best.ttft99, best.tpot99,
           best.goodput > 0 ? "" : "; no trial met the SLO at any load tried: the fastest is shown");
    printf("autoglm serve --model %s --threads %d --max-seqs %d --max-batch-tokens %d", u.model, best.threads,
           best.seqs, best.batch);
    const char *kv_flag;
    char kv[24];
    if (kv_pool(&u, best.seqs, &kv_flag, kv, sizeof kv)) printf(" %s %s", kv_flag, kv);
    char slo[96];
    if (best.controller) slo_arg(&u.slo, slo, sizeof slo), printf(" --slo %s", slo);
    printf("\n");
    return best.goodput > 0 ? AG_EXIT_OK : AG_EXIT_FAIL;
}
