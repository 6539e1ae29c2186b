/*
 * cmd_bench.c - `autoglm bench`: how much can this deployment take?  Sweeps
 * closed-loop concurrency or open-loop request rate against any
 * OpenAI-compatible server (or any URL), step by step, and reports the
 * baseline table, the knee, SLO goodput, JSON/CSV, an HTML report, and a
 * comparison with a saved baseline (exit 3 on a regression, for CI).  The
 * measuring is src/tools/loadgen.c; this file turns flags into requests.
 */
#define _POSIX_C_SOURCE 200809L
#include "autoglm/autotune.h"
#include "base/arena.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/str.h"
#include "cli/cli.h"
#include "http/coding.h"
#include "json/json.h"
#include "tools/loadgen.h"
#include "tools/report.h"
#include "tools/testsrv.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char bench_usage[] =
    "usage: autoglm bench [--base-url URL --model NAME --api-key KEY | --url URL] (--concurrency LIST | --rate LIST)\n"
    "                     (--duration 30s | --requests N) [--input-tokens N --output-tokens N] [--slo ...]\n"
    "                     [--json F] [--csv F] [--report F.html] [--save-baseline F] [--compare F]\n\n"
    "Load-test an OpenAI-compatible server (or any URL) step by step and report per step: req/s, output tok/s,\n"
    "p50/p99 latency, p99 time to first token and per output token, error rate and goodput; then the knee.\n"
    "Target:\n"
    "  --base-url URL        the server, e.g. http://127.0.0.1:8080 or https://... (/v1/... is appended)\n"
    "  --model NAME          the model to ask for (default: autoglm-tiny)\n"
    "  --api-key KEY         sent as Authorization: Bearer KEY\n"
    "  --api chat|completions  the endpoint (default chat)\n"
    "  --url URL             plain mode: GET (or --method POST --body FILE) any URL, no token accounting\n"
    "  --http2               HTTP/2 (h2c by prior knowledge, or h2 by ALPN on https): every request a stream\n"
    "  --connections N       HTTP/2: the connections the streams share (default 1)\n"
    "  --insecure            https: take any certificate;  --cacert F: trust F's CAs instead of the system's\n"
    "Load (a comma-separated LIST is a sweep, one step per value):\n"
    "  --concurrency LIST    closed loop: that many requests in flight, each followed by the next when it ends\n"
    "                        (HTTP/1.1: one connection each; HTTP/2: streams over --connections)\n"
    "  --rate LIST           open loop: requests/s arriving on their own (latency from the intended send time)\n"
    "  --burstiness K        open loop: Gamma shape of arrival gaps (default 1: Poisson; < 1 burstier)\n"
    "  --duration D          measured time per step (ms, s, m suffixes); or --requests N per step\n"
    "  --warmup D            not counted, before each step's measurement (default 2s; 0 with --requests)\n"
    "  --timeout D           per request (default 60s)\n"
    "  --retries N           act as a naive client: resend at once after a timeout, a connection error, 429 or\n"
    "                        5xx, up to N times (default 0); latency runs from the first attempt\n"
    "  --max-connections N   HTTP/1.1 open loop's connection cap (default 1024)\n"
    "Workload:\n"
    "  --input-tokens N      random prompt of about N tokens (words; usage reports the true count; default 128)\n"
    "  --output-tokens N     max_tokens (default 64)\n"
    "  --range-ratio R       lengths uniform in [N(1-R), N(1+R)] (default 0)\n"
    "  --prefix-tokens N     a prefix of N tokens shared by every prompt (exercises prefix caching)\n"
    "  --dataset F.jsonl     requests from a file of OpenAI request bodies, one per line\n"
    "  --no-stream           ask for whole responses (no TTFT/TPOT)\n"
    "  --ignore-eos          send ignore_eos: true (vLLM, llama.cpp) so outputs run to max_tokens\n"
    "  --seed S              prompts and arrivals (default 1)\n"
    "  --compress gzip|zstd  send request bodies in that Content-Encoding\n"
    "Output:\n"
    "  --slo ttft=500ms,tpot=50ms,e2e=5s   goodput counts requests meeting all of them\n"
    "  --knee-throughput P --knee-latency P  knee thresholds (default 10%% and 50%%)\n"
    "  --json F, --csv F, --report F.html, --save-baseline F\n"
    "  --compare F [--tolerance 10%%]       exit 3 when a metric regressed past the tolerance\n"
    "Validation target:\n"
    "  --self-test-server [--port N] [--delay D] [--chunks N] [--chunk-interval D]\n";

#define USAGE(...) ag_cli_usage_error("bench", __VA_ARGS__)

/* A duration (base/str.h's grammar) in nanoseconds. */
static bool parse_duration(const char *t, uint64_t *ns) {
    uint64_t us;
    if (!t || ag_str_parse_duration_us(ag_str_from_cstr(t), &us) != AG_OK || us > UINT64_MAX / 1000) return false;
    *ns = us * 1000;
    return true;
}

/* "10%" or "0.1" to a fraction. */
static bool parse_fraction(const char *t, double *out) {
    char *end;
    double v = t ? strtod(t, &end) : -1;
    if (!t || end == t) return false;
    if (*end == '%' && !end[1]) v /= 100;
    else if (*end) return false;
    *out = v;
    return v >= 0 && v < 1000;
}

static int parse_list(const char *t, double *out, int cap) {
    int n = 0;
    while (t && *t && n < cap) {
        char *end;
        double v = strtod(t, &end);
        if (end == t || !(v > 0)) return -1;
        out[n++] = v;
        if (*end == ',') end++;
        else if (*end) return -1;
        t = end;
    }
    return n;
}

/* http[s]://host[:port][/path] into its parts; false for anything else. */
static bool parse_url(const char *url, char *host, size_t host_cap, int *port, bool *tls, const char **path) {
    if (!url) return false;
    *tls = strncmp(url, "https://", 8) == 0;
    if (!*tls && strncmp(url, "http://", 7) != 0) return false;
    const char *h = url + (*tls ? 8 : 7), *slash = strchr(h, '/'), *end = slash ? slash : h + strlen(h);
    const char *colon = h[0] == '[' ? strstr(h, "]:") : memchr(h, ':', (size_t)(end - h));
    if (colon && h[0] == '[') colon++;
    const char *hend = colon ? colon : end;
    if (h[0] == '[') h++, hend = strchr(h, ']');
    if (!hend || hend <= h || (size_t)(hend - h) >= host_cap) return false;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = 0;
    *port = colon ? atoi(colon + 1) : *tls ? 443 : 80;
    *path = slash ? slash : "/";
    return *port > 0 && *port < 65536;
}

/* ---- requests ------------------------------------------------------------------------- */

typedef struct workload {
    const char *model, *api_key, *api, *path_prefix;
    long input_tokens, output_tokens, prefix_tokens;
    double range_ratio;
    bool stream, ignore_eos;
    uint64_t seed;
    ag_http_coding compress; /* request bodies sent in this Content-Encoding (identity: as they are) */
} workload;

static void add_request(ag_lg_requests *q, const char *method, const char *path, const workload *w, const char *body,
                        size_t body_len) {
    ag_buf h, coded;
    ag_buf_init(&h), ag_buf_init(&coded);
    ag_buf_append_str(&h, "User-Agent: autoglm-bench\r\nAccept: */*\r\n");
    if (w->api_key) ag_buf_appendf(&h, "Authorization: Bearer %s\r\n", w->api_key);
    if (body && w->compress != AG_CODING_IDENTITY && ag_http_encode(w->compress, body, body_len, &coded) == AG_OK) {
        ag_buf_appendf(&h, "Content-Encoding: %s\r\n", ag_http_coding_name(w->compress));
        body = coded.data, body_len = coded.len;
    }
    if (body) ag_buf_append_str(&h, "Content-Type: application/json\r\n");
    ag_buf_append_char(&h, '\0');
    ag_lg_requests_add(q, method, path, h.data, body, body_len);
    ag_buf_deinit(&h), ag_buf_deinit(&coded);
}

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

/* Common one-token English words: about one token each in Llama, Qwen and GLM vocabularies. */
static const char *const words[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he",
    "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their",
    "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so",
    "no", "she", "other", "its", "time", "may", "into", "than", "only", "some", "could", "them", "these", "then",
    "two", "first", "new", "like", "our", "what", "over", "such", "also", "most", "way", "after", "water", "house",
    "light", "stone", "river", "city", "king", "land", "road", "night", "day", "fire", "tree", "book", "word"};

static double spread(uint64_t *s, double r) { return 1 - r + 2 * r * (double)(rnd(s) % 1000001) / 1e6; }

/* The API route under --base-url's path (a prefix of under 256 bytes, so it always fits). */
#define API_PATH_MAX 300
static void api_path(const workload *w, bool chat, char path[API_PATH_MAX]) {
    snprintf(path, API_PATH_MAX, "%s/v1/%s", w->path_prefix, chat ? "chat/completions" : "completions");
}

static void random_requests(const workload *w, ag_lg_requests *q) {
    uint64_t s = w->seed * 0x9E3779B97F4A7C15ull | 1;
    const size_t nw = sizeof words / sizeof *words;
    bool chat = strcmp(w->api, "chat") == 0;
    char path[API_PATH_MAX];
    api_path(w, chat, path);
    ag_buf prefix, body;
    ag_buf_init(&prefix), ag_buf_init(&body);
    for (long i = 0; i < w->prefix_tokens; i++) ag_buf_appendf(&prefix, "%s%s", i ? " " : "", words[rnd(&s) % nw]);
    for (int r = 0; r < 256; r++) {
        long n_in = lround((double)w->input_tokens * spread(&s, w->range_ratio));
        long n_out = lround((double)w->output_tokens * spread(&s, w->range_ratio));
        ag_buf_reset(&body);
        ag_buf_appendf(&body, "{\"model\":");
        ag_buf_append_json_str(&body, w->model, strlen(w->model), AG_UTF8_REPLACE);
        ag_buf_append_str(&body, chat ? ",\"messages\":[{\"role\":\"user\",\"content\":\"" : ",\"prompt\":\"");
        if (prefix.len) ag_buf_append(&body, prefix.data, prefix.len);
        for (long k = w->prefix_tokens; k < n_in; k++) ag_buf_appendf(&body, "%s%s", k ? " " : "", words[rnd(&s) % nw]);
        ag_buf_appendf(&body, "\"%s,\"max_tokens\":%ld", chat ? "}]" : "", n_out > 1 ? n_out : 1);
        if (w->stream) ag_buf_append_str(&body, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
        if (w->ignore_eos) ag_buf_append_str(&body, ",\"ignore_eos\":true");
        ag_buf_append_char(&body, '}');
        add_request(q, "POST", path, w, body.data, body.len);
    }
    ag_buf_deinit(&prefix), ag_buf_deinit(&body);
}

/* One request per JSONL line: the body as given, with our model (when set) and streaming choice. */
static bool dataset_requests(const workload *w, const char *path, ag_lg_requests *q, char *msg, size_t cap) {
    char *text;
    size_t len;
    if (ag_cli_read_file(path, &text, &len) != AG_OK) return snprintf(msg, cap, "%s: cannot read", path), false;
    ag_arena a;
    ag_arena_init(&a, 1 << 16);
    ag_buf body;
    ag_buf_init(&body);
    size_t line_no = 0;
    bool ok = true;
    for (char *p = text, *end = text + len; p < end && ok; line_no++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        ag_str line = ag_str_trim((ag_str){p, n});
        p += n + 1;
        if (!line.n) continue;
        ag_json_val *root;
        ag_arena_reset(&a);
        if (ag_json_parse(line.p, line.n, NULL, &a, &root, NULL) != AG_OK || !ag_json_is(root, AG_JSON_OBJECT)) {
            snprintf(msg, cap, "%s:%zu: not a JSON object", path, line_no + 1);
            ok = false;
            break;
        }
        bool chat = ag_json_obj_getc(root, "messages") != NULL;
        ag_buf_reset(&body);
        ag_jw jw;
        ag_jw_init(&jw, &body, 0, AG_UTF8_REPLACE);
        ag_jw_obj_begin(&jw);
        for (size_t i = 0; i < root->len; i++) {
            const ag_json_member *m = &root->u.members[i];
            ag_str k = {m->key.u.s, m->key.len};
            if (ag_str_eq_cstr(k, "stream") || ag_str_eq_cstr(k, "stream_options") ||
                (ag_str_eq_cstr(k, "model") && w->model))
                continue;
            ag_jw_key(&jw, k.p, k.n);
            ag_jw_value(&jw, &m->val);
        }
        if (w->model) ag_jw_keyc(&jw, "model"), ag_jw_strc(&jw, w->model);
        ag_jw_keyc(&jw, "stream"), ag_jw_bool(&jw, w->stream);
        if (w->stream) {
            ag_jw_keyc(&jw, "stream_options"), ag_jw_obj_begin(&jw);
            ag_jw_keyc(&jw, "include_usage"), ag_jw_bool(&jw, true), ag_jw_obj_end(&jw);
        }
        ag_jw_obj_end(&jw);
        char rpath[API_PATH_MAX];
        api_path(w, chat, rpath);
        add_request(q, "POST", rpath, w, body.data, body.len);
    }
    if (ok && !q->n) snprintf(msg, cap, "%s: no requests in it", path), ok = false;
    ag_buf_deinit(&body);
    ag_arena_deinit(&a);
    free(text);
    return ok;
}

static void on_sigint(int sig) {
    (void)sig;
    ag_lg_interrupt();
}

static bool write_out(const char *path, const ag_buf *b) {
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(b->data ? b->data : "", 1, b->len, f) == b->len;
    if (f && fclose(f) != 0) ok = false;
    if (!ok) fprintf(stderr, "autoglm bench: %s: cannot write\n", path);
    return ok;
}

/* A duration for people: "2 s", "300 ms". */
static const char *human_ns(uint64_t ns, char out[32]) {
    if (ns >= 1000000000ull) snprintf(out, 32, "%g s", (double)ns / 1e9);
    else snprintf(out, 32, "%g ms", (double)ns / 1e6);
    return out;
}

/* The report header's lines: the sweep's values, what each request is, and how each step runs. */
typedef struct run_text {
    char steps[512], workload[512], per_step[256];
} run_text;

static void describe_run(run_text *t, const double *loads, int n, const workload *w, const char *url,
                         const char *method, const char *dataset, size_t n_reqs, const ag_lg_step *st) {
    const ag_lg_target *tg = st->target;
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof t->steps; i++)
        k += (size_t)snprintf(t->steps + k, sizeof t->steps - k, "%s%g", i ? ", " : "", loads[i]);
    if (url) snprintf(t->workload, sizeof t->workload, "%s %s (plain URL: no token accounting)", method, url);
    else if (dataset)
        snprintf(t->workload, sizeof t->workload, "%s, model %s, %zu request bodies from %s, seed %llu", w->api, w->model,
                 n_reqs, dataset, (unsigned long long)w->seed);
    else
        snprintf(t->workload, sizeof t->workload,
                 "%s, model %s, ~%ld input tokens (range ratio %g, %ld shared prefix), max %ld output tokens, %s%s, seed %llu",
                 w->api, w->model, w->input_tokens, w->range_ratio, w->prefix_tokens, w->output_tokens,
                 w->stream ? "streamed" : "not streamed", w->ignore_eos ? ", ignore_eos" : "",
                 (unsigned long long)w->seed);
    if (w->compress != AG_CODING_IDENTITY) {
        size_t k2 = strlen(t->workload);
        snprintf(t->workload + k2, sizeof t->workload - k2, ", request bodies in %s", ag_http_coding_name(w->compress));
    }
    char a[32], b[32], c[32];
    int m = st->duration_ns ? snprintf(t->per_step, sizeof t->per_step, "%s measured", human_ns(st->duration_ns, a))
                            : snprintf(t->per_step, sizeof t->per_step, "%llu requests measured", (unsigned long long)st->requests);
    m += snprintf(t->per_step + m, sizeof t->per_step - (size_t)m, " after %s warm-up, timeout %s",
                  human_ns(st->warmup_ns, b), human_ns(st->timeout_ns, c));
    if (st->retries)
        m += snprintf(t->per_step + m, sizeof t->per_step - (size_t)m, ", up to %d immediate retries", st->retries);
    if (!st->concurrency)
        m += snprintf(t->per_step + m, sizeof t->per_step - (size_t)m, ", arrivals %s (burstiness %g)",
                      st->burstiness == 1 ? "Poisson" : "Gamma", st->burstiness);
    if (tg->http2)
        snprintf(t->per_step + m, sizeof t->per_step - (size_t)m, ", HTTP/2%s over %d connection%s", tg->tls ? " (TLS)" : "",
                 tg->connections, tg->connections == 1 ? "" : "s");
    else if (st->concurrency)
        snprintf(t->per_step + m, sizeof t->per_step - (size_t)m, ", HTTP/1.1%s, a connection per request in flight",
                 tg->tls ? " (TLS)" : "");
    else
        snprintf(t->per_step + m, sizeof t->per_step - (size_t)m, ", HTTP/1.1%s, at most %d connections",
                 tg->tls ? " (TLS)" : "", st->max_connections);
}

int ag_cmd_bench(int argc, char **argv) {
    const char *base_url = NULL, *url = NULL, *method = "GET", *body_file = NULL, *dataset = NULL;
    const char *json_path = NULL, *csv_path = NULL, *report_path = NULL, *save_path = NULL, *compare_path = NULL;
    workload w = {.model = NULL, .api = "chat", .input_tokens = 128, .output_tokens = 64, .stream = true, .seed = 1};
    double conc[64], rates[64], burstiness = 1, tolerance = 0.10, knee_thr = 0.10, knee_lat = 0.50;
    int n_conc = 0, n_rates = 0;
    long requests = 0, max_conn = 1024, retries = 0, v;
    uint64_t duration = 0, warmup = UINT64_MAX, timeout = 60000000000ull;
    ag_lg_slo slo = {0};
    ag_lg_target tg = {.connections = 0};
    bool has_slo = false, self_test = false;
    ag_testsrv_opts ts = {.port = 0, .delay_ms = 0, .chunks = 0, .chunk_interval_ms = 0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t ns;
#define NEEDS(what) if (!val) return USAGE("%s needs %s", a, what)
        if (ag_cli_is_help(a)) return fputs(bench_usage, stdout), AG_EXIT_OK;
        else if (strcmp(a, "--self-test-server") == 0) self_test = true;
        else if (strcmp(a, "--no-stream") == 0) w.stream = false;
        else if (strcmp(a, "--ignore-eos") == 0) w.ignore_eos = true;
        else if (strcmp(a, "--http2") == 0) tg.http2 = true;
        else if (strcmp(a, "--insecure") == 0) tg.insecure = true;
        else if (!val) return USAGE("unknown option '%s' or it needs a value (try 'autoglm bench --help')", a);
        else if (strcmp(a, "--base-url") == 0) base_url = argv[++i];
        else if (strcmp(a, "--url") == 0) url = argv[++i];
        else if (strcmp(a, "--method") == 0) method = argv[++i];
        else if (strcmp(a, "--body") == 0) body_file = argv[++i];
        else if (strcmp(a, "--model") == 0) w.model = argv[++i];
        else if (strcmp(a, "--api-key") == 0) w.api_key = argv[++i];
        else if (strcmp(a, "--api") == 0) w.api = argv[++i];
        else if (strcmp(a, "--dataset") == 0) dataset = argv[++i];
        else if (strcmp(a, "--cacert") == 0) tg.cacert = argv[++i];
        else if (strcmp(a, "--compress") == 0) {
            w.compress = ag_http_coding_parse(ag_str_from_cstr(argv[++i]));
            if (w.compress != AG_CODING_GZIP && w.compress != AG_CODING_ZSTD) return USAGE("--compress must be gzip or zstd");
        }
        else if (strcmp(a, "--json") == 0) json_path = argv[++i];
        else if (strcmp(a, "--csv") == 0) csv_path = argv[++i];
        else if (strcmp(a, "--report") == 0) report_path = argv[++i];
        else if (strcmp(a, "--save-baseline") == 0) save_path = argv[++i];
        else if (strcmp(a, "--compare") == 0) compare_path = argv[++i];
        else if (strcmp(a, "--concurrency") == 0) {
            if ((n_conc = parse_list(argv[++i], conc, 64)) <= 0) return USAGE("--concurrency needs a list like 1,2,4,8");
        } else if (strcmp(a, "--rate") == 0) {
            if ((n_rates = parse_list(argv[++i], rates, 64)) <= 0) return USAGE("--rate needs a list like 5,10,20");
        } else if (strcmp(a, "--duration") == 0 || strcmp(a, "--warmup") == 0 || strcmp(a, "--timeout") == 0) {
            if (!parse_duration(argv[++i], &ns)) return USAGE("%s needs a duration such as 500ms, 30s or 2m", a);
            *(a[2] == 'd' ? &duration : a[2] == 'w' ? &warmup : &timeout) = ns;
        } else if (strcmp(a, "--delay") == 0 || strcmp(a, "--chunk-interval") == 0) {
            if (!parse_duration(argv[++i], &ns) || ns > 3600000000000ull) return USAGE("%s needs a duration", a);
            *(a[2] == 'd' ? &ts.delay_ms : &ts.chunk_interval_ms) = (int)(ns / 1000000);
        } else if (strcmp(a, "--requests") == 0) {
            if (!ag_cli_int("bench", a, argv[++i], 1, 1L << 40, &requests)) return AG_EXIT_USAGE;
        } else if (strcmp(a, "--input-tokens") == 0 || strcmp(a, "--output-tokens") == 0 ||
                   strcmp(a, "--prefix-tokens") == 0) {
            if (!ag_cli_int("bench", a, argv[++i], a[2] == 'p' ? 0 : 1, 1 << 20, &v)) return AG_EXIT_USAGE;
            *(a[2] == 'i' ? &w.input_tokens : a[2] == 'o' ? &w.output_tokens : &w.prefix_tokens) = v;
        } else if (strcmp(a, "--max-connections") == 0 || strcmp(a, "--port") == 0 || strcmp(a, "--chunks") == 0 ||
                   strcmp(a, "--connections") == 0) {
            if (!ag_cli_int("bench", a, argv[++i], a[2] == 'p' || a[3] == 'h' ? 0 : 1, a[2] == 'p' ? 65535 : 1 << 20, &v))
                return AG_EXIT_USAGE;
            if (a[2] == 'm') max_conn = v;
            else if (strcmp(a, "--connections") == 0) tg.connections = (int)v;
            else *(a[2] == 'p' ? &ts.port : &ts.chunks) = (int)v;
        } else if (strcmp(a, "--retries") == 0) {
            if (!ag_cli_int("bench", a, argv[++i], 0, 100, &retries)) return AG_EXIT_USAGE;
        } else if (strcmp(a, "--seed") == 0) {
            if (ag_str_parse_u64(ag_str_from_cstr(argv[++i]), &w.seed) != AG_OK) return USAGE("--seed needs a whole number");
        } else if (strcmp(a, "--range-ratio") == 0 || strcmp(a, "--burstiness") == 0) {
            float f;
            if (!ag_cli_float("bench", a, argv[++i], &f) || f < 0 || (a[2] == 'r' && f >= 1) || (a[2] == 'b' && f <= 0))
                return USAGE("%s out of range (range ratio in [0, 1), burstiness > 0)", a);
            *(a[2] == 'r' ? &w.range_ratio : &burstiness) = f;
        } else if (strcmp(a, "--tolerance") == 0 || strcmp(a, "--knee-throughput") == 0 || strcmp(a, "--knee-latency") == 0) {
            if (!parse_fraction(argv[++i], a[2] == 't' ? &tolerance : a[7] == 't' ? &knee_thr : &knee_lat))
                return USAGE("%s needs a percentage such as 10%%", a);
        } else if (strcmp(a, "--slo") == 0) {
            ag_slo so;
            if (!ag_slo_parse(argv[++i], &so)) return USAGE("--slo needs ttft=D,tpot=D,e2e=D (any of them)");
            slo = (ag_lg_slo){.ttft_us = so.ttft_s * 1e6, .tpot_us = so.tpot_s * 1e6, .e2e_us = so.e2e_s * 1e6};
            has_slo = true;
        } else {
            return USAGE("unknown option '%s' (try 'autoglm bench --help')", a);
        }
#undef NEEDS
    }
    if (self_test) return ag_testsrv_run(&ts);
    if (!base_url == !url) return USAGE("needs exactly one of --base-url URL and --url URL");
    if (!n_conc == !n_rates) return USAGE("needs exactly one of --concurrency LIST and --rate LIST");
    if (!duration == !requests) return USAGE("needs exactly one of --duration D and --requests N");
    if (strcmp(w.api, "chat") != 0 && strcmp(w.api, "completions") != 0) return USAGE("--api must be chat or completions");
    if (w.prefix_tokens > w.input_tokens) return USAGE("--prefix-tokens must not exceed --input-tokens");
    if (warmup == UINT64_MAX) warmup = requests ? 0 : 2000000000ull;
    if (tg.connections && !tg.http2)
        return USAGE("--connections needs --http2 (HTTP/1.1 opens a connection per request in flight)");
    if (!tg.connections) tg.connections = 1;
    char host[256], msg[256];
    const char *path;
    if (!parse_url(base_url ? base_url : url, host, sizeof host, &tg.port, &tg.tls, &path))
        return USAGE("%s must be http[s]://HOST[:PORT][/PATH]", base_url ? "--base-url" : "--url");
    if ((tg.insecure || tg.cacert) && !tg.tls) return USAGE("--insecure and --cacert are for https:// targets");
    if (tg.insecure && tg.cacert) return USAGE("--insecure and --cacert exclude each other");
    tg.host = host;
    char prefix[256] = "";
    if (base_url) { /* a trailing /v1 is the API's, which we add */
        snprintf(prefix, sizeof prefix, "%s", strcmp(path, "/") == 0 ? "" : path);
        size_t pl = strlen(prefix);
        while (pl && prefix[pl - 1] == '/') prefix[--pl] = 0;
        if (pl >= 3 && strcmp(prefix + pl - 3, "/v1") == 0) prefix[pl - 3] = 0;
    }
    w.path_prefix = prefix;
    ag_lg_requests reqs = {0};
    if (url) {
        char *body = NULL;
        size_t body_len = 0;
        if (body_file && ag_cli_read_file(body_file, &body, &body_len) != AG_OK) {
            fprintf(stderr, "autoglm bench: %s: cannot read\n", body_file);
            return AG_EXIT_FAIL;
        }
        add_request(&reqs, method, path, &w, body, body_len);
        free(body);
    } else {
        if (!w.model) w.model = "autoglm-tiny";
        if (dataset ? !dataset_requests(&w, dataset, &reqs, msg, sizeof msg) : (random_requests(&w, &reqs), false)) {
            fprintf(stderr, "autoglm bench: %s\n", msg);
            return AG_EXIT_FAIL;
        }
    }

    char target[320];
    snprintf(target, sizeof target, "%s", base_url ? base_url : url);
    ag_bench_run run = {.target = target, .mode = n_conc ? "concurrency" : "rate", .slo = slo, .has_slo = has_slo,
                        .knee_throughput = knee_thr, .knee_latency = knee_lat};
    int n_steps = n_conc ? n_conc : n_rates;
    run.rows = calloc((size_t)n_steps, sizeof *run.rows);
    run_text text;
    ag_lg_step shape = {.concurrency = n_conc ? 1 : 0, .burstiness = burstiness, .duration_ns = duration,
                        .requests = (uint64_t)requests, .warmup_ns = warmup, .timeout_ns = timeout,
                        .retries = (int)retries, .max_connections = (int)max_conn, .target = &tg};
    describe_run(&text, n_conc ? conc : rates, n_steps, &w, url, method, dataset, reqs.n, &shape);
    char started[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    run.steps = text.steps, run.workload = text.workload, run.per_step = text.per_step, run.started = started;
    run.client = "autoglm bench " AG_VERSION;
    uint64_t t0 = ag_clock_mono_ns();
    signal(SIGINT, on_sigint);
    signal(SIGPIPE, SIG_IGN);
    bool tty = isatty(2);
    int rc = AG_EXIT_OK;
    for (int i = 0; i < n_steps && !ag_lg_interrupted(); i++) {
        double load = n_conc ? conc[i] : rates[i];
        char label[64];
        snprintf(label, sizeof label, "step %d/%d, %s %g", i + 1, n_steps, run.mode, load);
        ag_lg_step st = {.target = &tg, .reqs = &reqs, .concurrency = n_conc ? (int)load : 0,
                         .rate = n_conc ? 0 : load, .burstiness = burstiness, .duration_ns = duration,
                         .requests = (uint64_t)requests, .warmup_ns = warmup, .timeout_ns = timeout,
                         .retries = (int)retries, .max_connections = (int)max_conn, .seed = w.seed + (uint64_t)i, .slo = slo, .openai = !url, .progress = tty,
                         .label = label};
        if (ag_lg_run(&st, &run.rows[i].r, msg, sizeof msg) != AG_OK) {
            fprintf(stderr, "autoglm bench: %s\n", msg);
            rc = AG_EXIT_FAIL;
            break;
        }
        run.rows[i].load = load;
        run.n++;
        ag_bench_stats s;
        ag_bench_stats_of(&run.rows[i].r, &s);
        fprintf(stderr, "%s: %.1f req/s, %.1f output tok/s, p99 %.1f ms, %llu of %llu ok%s\n", label, s.req_s,
                s.out_tok_s, s.e2e[4], (unsigned long long)run.rows[i].r.ok, (unsigned long long)run.rows[i].r.counted,
                run.rows[i].r.interrupted ? " (interrupted)" : "");
        if (run.rows[i].r.conn_why[0]) fprintf(stderr, "%s: first connection error: %s\n", label, run.rows[i].r.conn_why);
    }
    run.wall_s = (double)(ag_clock_mono_ns() - t0) / 1e9;
    if (run.n) {
        ag_bench_print_table(&run, stdout);
        ag_buf b;
        ag_buf_init(&b);
        if (json_path || save_path) {
            ag_bench_json(&run, &b);
            if (json_path && !write_out(json_path, &b)) rc = AG_EXIT_FAIL;
            if (save_path && !write_out(save_path, &b)) rc = AG_EXIT_FAIL;
        }
        if (csv_path) ag_buf_reset(&b), ag_bench_csv(&run, &b), rc = write_out(csv_path, &b) ? rc : AG_EXIT_FAIL;
        if (report_path) ag_buf_reset(&b), ag_bench_html(&run, &b), rc = write_out(report_path, &b) ? rc : AG_EXIT_FAIL;
        ag_buf_deinit(&b);
        if (compare_path) {
            char *base;
            size_t base_len;
            if (ag_cli_read_file(compare_path, &base, &base_len) != AG_OK) {
                fprintf(stderr, "autoglm bench: %s: cannot read\n", compare_path);
                rc = AG_EXIT_FAIL;
            } else {
                int reg = ag_bench_compare(&run, base, base_len, tolerance, stdout, msg, sizeof msg);
                if (reg < 0) fprintf(stderr, "autoglm bench: %s: %s\n", compare_path, msg), rc = AG_EXIT_FAIL;
                else if (reg > 0) printf("%d metric(s) regressed past %.0f%%\n", reg, 100 * tolerance), rc = 3;
                free(base);
            }
        }
    }
    ag_lg_requests_free(&reqs);
    free(run.rows);
    return rc;
}
