/*
 * cmd_serve.c - `autoglm serve`: flags into ag_server_opts, then the server
 * (src/server/server.c) runs until SIGTERM or SIGINT.  Every limit the
 * server enforces has a flag here; README's serve section lists them.
 */
#define _POSIX_C_SOURCE 200809L
#include "base/log.h"
#include "base/str.h"
#include "cli/cli.h"
#include "server/chat_template.h"
#include "server/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char serve_usage[] =
    "usage: autoglm serve --model M.gguf [--host 127.0.0.1] [--port 8080] [options]\n\n"
    "Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,\n"
    "/v1/models, /health, /tokenize, /detokenize, /v1/stats) and a web UI at /.  SIGTERM or SIGINT\n"
    "drains: new requests get 503, running ones finish (up to --drain-timeout), then the process exits 0.\n" AG_CLI_MODEL_FLAGS_HELP
    "  --host ADDR              address to listen on (default 127.0.0.1)\n"
    "  --port N                 port (default 8080; 0 picks a free one, printed at start)\n"
    "  --served-model-name S    the model id in /v1/models and requests (default: the file's stem)\n"
    "  --chat-template NAME     chatml, llama2, llama3, mistral, chatglm4 or glmedge\n"
    "                           (default: recognized from the model)\n"
    "  --api-key KEY            require 'Authorization: Bearer KEY' (repeatable; /health stays open)\n"
    "  --api-key-file F         more keys, one per line ('#' comments)\n"
    "  --max-queue N            waiting requests before 429 (default 256)\n"
    "  --max-seqs N             sequences batched in one step (default 16)\n"
    "  --max-batch-tokens N     token rows in one forward step (default 512)\n"
    "  --slo ttft=D,tpot=D      targets (either may be left out): each step's prompt rows are set so that\n"
    "                           decoding steps take tpot; a request that cannot get its first token\n"
    "                           within ttft is refused with 429 and a computed Retry-After (docs/tuning.md)\n"
    "  --kv-cache-mb N          KV cache size in MiB (default: max-seqs full contexts)\n"
    "  --ctx-total N            KV cache size in tokens over all sequences\n"
    "  --max-connections N      open connections before 503 (default 1024)\n"
    "  --max-body-bytes N       request body limit, 413 (default 8388608)\n"
    "  --max-header-bytes N     request head limit, 431 (default 32768)\n"
    "  --max-headers N          header fields limit, 431 (default 100)\n"
    "  --max-request-line N     request line limit, 414 (default 8192)\n"
    "  --read-timeout D         a request must arrive within D, else 408 (default 30s)\n"
    "  --idle-timeout D         close keep-alive connections idle for D (default 60s)\n"
    "  --max-requests-per-connection N\n"
    "                           close a keep-alive connection after its N-th response (0: never; default 0)\n"
    "  --drain-timeout D        on shutdown, wait up to D for running requests (default 30s)\n"
    "  --drain-linger D         on shutdown, keep serving requests on open connections (with Connection: close)\n"
    "                           for up to D, for a proxy's pooled connections (default 0: they get 503)\n"
    "  --tls-cert F, --tls-key F  serve TLS 1.2+ with this PEM certificate chain and key (ALPN h2, http/1.1)\n"
    "  --compress-min-bytes N   gzip or zstd JSON answers of N bytes or more, as Accept-Encoding asks\n"
    "                           (default 1024); streams only in zstd, when asked\n"
    "  --http2-max-streams N    concurrent HTTP/2 streams per connection; more are refused (default 128)\n"
    "  --http2-window N         each HTTP/2 stream's receive window in bytes (default 1048576)\n"
    "  --log-level L            debug, info, warn, error (default info)\n"
    "  --no-ui                  no web UI (chat, completions, dashboard) at GET /\n"
    "  --cache-mb N             response cache of N MiB for reproducible requests (temperature 0 or a seed;\n"
    "                           default 0: off); X-Cache says HIT-L1, HIT-L2, MISS or BYPASS\n"
    "  --cache-ttl D            an entry's life unless the request's cache.ttl says (default 1h)\n"
    "  --cache-nondeterministic also cache sampled requests without a seed\n"
    "  --cache-public           deterministic whole answers say Cache-Control: public, max-age (default\n"
    "                           private): an edge cache (deploy/edge) may keep them\n"
    "  --cache-coalesce-timeout D  identical cacheable requests wait up to D for the first one's answer\n"
    "                           instead of generating again (default 30s; 0 off)\n"
    "  --idempotency-max-keys N requests with an Idempotency-Key are answered from the first one's\n"
    "                           generation: remember N keys (default 10000; 0 off)\n"
    "  --idempotency-ttl D      keep a key's answer for D (default 1h)\n"
    "  --idempotency-mb N       keep at most N MiB of keys' answers, the oldest going first (default 64)\n"
    "  --idempotency-grace D    a keyed generation whose client left goes on for D, for its retry (default 10s)\n"
    "  --grammar-cache N        compiled grammars (response_format, grammar, tools) kept with their token\n"
    "                           masks, by text (default 64)\n"
    "  --grammar-cache-mb N     the kept grammars' states and masks together, MiB: the least recently used\n"
    "                           go past it, and one grammar's cache starts over there (default 128)\n"
    "  --schema-max-depth N     a JSON schema's nesting (default 32)\n"
    "  --schema-max-properties N  a JSON schema's properties, all objects together (default 5000)\n"
    "  --admin-key KEY          the key DELETE /v1/cache needs\n"
    "  --redis-url URL          a shared second tier, redis://[[user]:password@]host[:port][/db] (values\n"
    "                           zstd-compressed; a slow or dead Redis reads as a miss; with --cache-mb 0 the\n"
    "                           only tier); no TLS: Debian 12's hiredis 0.14 has none\n"
    "  --redis-timeout-ms N     a Redis command's limit (default 100)\n"
    "  --batch-redis-url URL    the Redis of the Files and Batches APIs (default: --redis-url's; without\n"
    "                           either those endpoints answer 501); run it with appendonly yes and\n"
    "                           maxmemory-policy noeviction (docs/batch.md)\n"
    "  --max-file-bytes N       an uploaded batch input file's limit (default 209715200, OpenAI's)\n"
    "  --batch-workers N        batch requests this replica runs at once, at the lowest priority and only\n"
    "                           while no interactive request waits (default 1; 0: serve the API, run none)\n"
    "  --batch-claim-idle D     a batch request held this long by a worker that stopped beating (killed,\n"
    "                           hung) is taken over by another (default 30s)\n"
    "  --batch-max-deliveries N a batch request delivered N times without a result goes to the error\n"
    "                           file (default 3)\n"
    "  --batch-window D         how long a batch's completion window ('24h', the API's only value) really\n"
    "                           is here: its requests not run by then are expired (default 24h)\n"
    "  --cache-policy P         cache-aside (store after answering; default) or write-through (both tiers\n"
    "                           written before the answer completes)\n"
    "  --log-format F           text or json (default text); one access-log line per request at info\n"
    "  --log-file F             append logs to F (default stderr); written by a background thread\n"
    "  --otlp-endpoint URL      export spans as OTLP/HTTP JSON to URL/v1/traces (http:// only)\n"
    "  --trace-sample-ratio R   fraction of new traces sampled for export, 0..1 (default 1)\n"
    "GET /metrics serves Prometheus metrics; every response carries X-Trace-ID and traceparent.\n"
    "Durations take ms, s or m suffixes (bare numbers are seconds).\n";

#define MAX_KEYS 64

static bool duration(const char *flag, const char *val, uint64_t *out_ms) {
    if (val && ag_str_parse_duration_ms(ag_str_from_cstr(val), out_ms) == AG_OK) return true;
    ag_cli_usage_error("serve", "%s needs a duration such as 500ms, 30s or 2m", flag);
    return false;
}

/* Keys from a file, one per line; the file's text is kept for the process's life (the keys point into it). */
static bool read_key_file(const char *path, const char **keys, size_t *n) {
    char *text = NULL;
    size_t len;
    if (ag_cli_read_file(path, &text, &len) != AG_OK) {
        fprintf(stderr, "autoglm serve: %s: cannot read\n", path);
        return false;
    }
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        ag_str k = ag_str_trim(ag_str_from_cstr(line));
        if (!k.n || k.p[0] == '#') continue;
        if (*n == MAX_KEYS) {
            fprintf(stderr, "autoglm serve: more than %d API keys\n", MAX_KEYS);
            return false;
        }
        ((char *)k.p)[k.n] = '\0';
        keys[(*n)++] = k.p;
    }
    return true;
}

int ag_cmd_serve(int argc, char **argv) {
    ag_server_opts o;
    ag_server_opts_default(&o);
    ag_cli_model_opts mo = {.params = ag_model_params_default()};
    static const char *keys[MAX_KEYS];
    size_t n_keys = 0;
    long v;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int took = ag_cli_model_flag("serve", argc, argv, &i, &mo);
        if (took < 0) return AG_EXIT_USAGE;
        if (took) continue;
        bool ok = true;
        if (ag_cli_is_help(a)) {
            fputs(serve_usage, stdout);
            return AG_EXIT_OK;
        } else if (strcmp(a, "--host") == 0) {
            if (!(o.host = val)) return ag_cli_usage_error("serve", "--host needs an address");
        } else if (strcmp(a, "--port") == 0) {
            ok = ag_cli_int("serve", a, val, 0, 65535, &v), o.port = (int)v;
        } else if (strcmp(a, "--served-model-name") == 0) {
            if (!(o.served_model_name = val) || !*val) return ag_cli_usage_error("serve", "%s needs a name", a);
        } else if (strcmp(a, "--chat-template") == 0) {
            if (!val || ag_chat_template_from_name(val) < 0)
                return ag_cli_usage_error("serve", "--chat-template must be chatml, llama2, llama3, mistral, chatglm4 or glmedge");
            o.chat_template = val;
        } else if (strcmp(a, "--api-key") == 0) {
            if (!val || !*val) return ag_cli_usage_error("serve", "--api-key needs a key");
            if (n_keys == MAX_KEYS) return ag_cli_usage_error("serve", "at most %d API keys", MAX_KEYS);
            keys[n_keys++] = val;
        } else if (strcmp(a, "--api-key-file") == 0) {
            if (!val) return ag_cli_usage_error("serve", "--api-key-file needs a file");
            if (!read_key_file(val, keys, &n_keys)) return AG_EXIT_FAIL;
        } else if (strcmp(a, "--max-queue") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1 << 20, &v), o.engine.max_queue = (int)v;
        } else if (strcmp(a, "--max-seqs") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 4096, &v), o.engine.max_seqs = (int)v;
        } else if (strcmp(a, "--max-batch-tokens") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1 << 16, &v), o.engine.max_batch_tokens = (int)v;
        } else if (strcmp(a, "--slo") == 0) {
            if (!ag_slo_parse(val, &o.engine.slo) || o.engine.slo.e2e_s)
                return ag_cli_usage_error("serve", "--slo needs ttft=D,tpot=D (either or both; D as 500ms or 2s)");
        } else if (strcmp(a, "--kv-cache-mb") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1 << 24, &v), o.engine.kv_cache_mb = (size_t)v;
        } else if (strcmp(a, "--ctx-total") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1L << 30, &v), o.engine.ctx_total = (size_t)v;
        } else if (strcmp(a, "--max-connections") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1 << 20, &v), o.max_connections = (size_t)v;
        } else if (strcmp(a, "--max-body-bytes") == 0) {
            ok = ag_cli_int("serve", a, val, 0, 1L << 32, &v), o.limits.max_body = (size_t)v;
        } else if (strcmp(a, "--max-header-bytes") == 0) {
            ok = ag_cli_int("serve", a, val, 64, 1 << 24, &v), o.limits.max_header_bytes = (size_t)v;
        } else if (strcmp(a, "--max-headers") == 0) {
            ok = ag_cli_int("serve", a, val, 1, AG_HTTP_MAX_HEADERS_CAP, &v), o.limits.max_headers = (size_t)v;
        } else if (strcmp(a, "--max-request-line") == 0) {
            ok = ag_cli_int("serve", a, val, 16, 1 << 24, &v), o.limits.max_request_line = (size_t)v;
        } else if (strcmp(a, "--read-timeout") == 0) {
            ok = duration(a, val, &o.read_timeout_ms);
        } else if (strcmp(a, "--idle-timeout") == 0) {
            ok = duration(a, val, &o.idle_timeout_ms);
        } else if (strcmp(a, "--no-ui") == 0) {
            o.no_ui = true;
            i--;
        } else if (strcmp(a, "--fault-injection") == 0) { /* tests only; see POST /debug/fail-alloc */
            o.fault_injection = true;
            i--;
        } else if (strcmp(a, "--max-requests-per-connection") == 0) {
            ok = ag_cli_int("serve", a, val, 0, 1L << 40, &v), o.max_requests_per_conn = (uint64_t)v;
        } else if (strcmp(a, "--tls-cert") == 0 || strcmp(a, "--tls-key") == 0) {
            if (!val || !*val) return ag_cli_usage_error("serve", "%s needs a PEM file", a);
            *(a[6] == 'c' ? &o.tls_cert : &o.tls_key) = val;
        } else if (strcmp(a, "--compress-min-bytes") == 0) {
            ok = ag_cli_int("serve", a, val, 0, 1L << 40, &v), o.compress_min_bytes = (size_t)v;
        } else if (strcmp(a, "--http2-max-streams") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1 << 16, &v), o.http2_max_streams = (uint32_t)v;
        } else if (strcmp(a, "--http2-window") == 0) {
            ok = ag_cli_int("serve", a, val, 65535, 0x7fffffff, &v), o.http2_window = (uint32_t)v;
        } else if (strcmp(a, "--drain-timeout") == 0) {
            ok = duration(a, val, &o.drain_timeout_ms);
        } else if (strcmp(a, "--drain-linger") == 0) {
            ok = duration(a, val, &o.drain_linger_ms);
        } else if (strcmp(a, "--cache-mb") == 0) {
            ok = ag_cli_int("serve", a, val, 0, 1 << 20, &v), o.cache_mb = (size_t)v;
        } else if (strcmp(a, "--cache-ttl") == 0) {
            uint64_t ms = 0;
            ok = duration(a, val, &ms), o.cache_ttl_s = ms / 1000;
        } else if (strcmp(a, "--cache-coalesce-timeout") == 0) {
            ok = duration(a, val, &o.cache_coalesce_ms);
        } else if (strcmp(a, "--idempotency-max-keys") == 0) {
            ok = ag_cli_int("serve", a, val, 0, 1 << 24, &v), o.idempotency_max_keys = (size_t)v;
        } else if (strcmp(a, "--idempotency-mb") == 0) {
            ok = ag_cli_int("serve", a, val, 0, 1 << 20, &v), o.idempotency_mb = (size_t)v;
        } else if (strcmp(a, "--idempotency-ttl") == 0) {
            ok = duration(a, val, &o.idempotency_ttl_ms);
        } else if (strcmp(a, "--grammar-cache") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1 << 16, &v), o.grammar_cache = (size_t)v;
        } else if (strcmp(a, "--grammar-cache-mb") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1 << 20, &v), o.grammar_cache_mb = (size_t)v;
        } else if (strcmp(a, "--schema-max-depth") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1000, &v), o.schema_max_depth = (uint32_t)v;
        } else if (strcmp(a, "--schema-max-properties") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1000000, &v), o.schema_max_properties = (uint32_t)v;
        } else if (strcmp(a, "--idempotency-grace") == 0) {
            ok = duration(a, val, &o.idempotency_grace_ms);
        } else if (strcmp(a, "--cache-public") == 0) {
            o.cache_public = true;
            i--;
        } else if (strcmp(a, "--cache-nondeterministic") == 0) {
            o.cache_nondeterministic = true;
            i--; /* a flag without a value */
        } else if (strcmp(a, "--redis-url") == 0) {
            if (!val || (strncmp(val, "redis://", 8) != 0 && strncmp(val, "rediss://", 9) != 0))
                return ag_cli_usage_error("serve", "--redis-url needs redis://[[user]:password@]host[:port][/db]");
            o.redis_url = val;
        } else if (strcmp(a, "--batch-redis-url") == 0) {
            if (!val || (strncmp(val, "redis://", 8) != 0 && strncmp(val, "rediss://", 9) != 0))
                return ag_cli_usage_error("serve", "--batch-redis-url needs redis://[[user]:password@]host[:port][/db]");
            o.batch_redis_url = val;
        } else if (strcmp(a, "--max-file-bytes") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1L << 32, &v), o.max_file_bytes = (size_t)v;
        } else if (strcmp(a, "--batch-workers") == 0) {
            ok = ag_cli_int("serve", a, val, 0, 1024, &v), o.batch_workers = (int)v;
        } else if (strcmp(a, "--batch-claim-idle") == 0) {
            ok = duration(a, val, &o.batch_claim_idle_ms);
            if (ok && !o.batch_claim_idle_ms) return ag_cli_usage_error("serve", "--batch-claim-idle must be above 0");
        } else if (strcmp(a, "--batch-window") == 0) {
            ok = duration(a, val, &o.batch_window_ms);
            if (ok && o.batch_window_ms < 1000) return ag_cli_usage_error("serve", "--batch-window must be 1s or more");
        } else if (strcmp(a, "--batch-max-deliveries") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 1000, &v), o.batch_max_deliveries = (uint64_t)v;
        } else if (strcmp(a, "--redis-timeout-ms") == 0) {
            ok = ag_cli_int("serve", a, val, 1, 60000, &v), o.redis_timeout_ms = (uint64_t)v;
        } else if (strcmp(a, "--cache-policy") == 0) {
            if (!val || (strcmp(val, "cache-aside") != 0 && strcmp(val, "write-through") != 0))
                return ag_cli_usage_error("serve", "--cache-policy must be cache-aside or write-through");
            o.cache_write_through = strcmp(val, "write-through") == 0;
        } else if (strcmp(a, "--admin-key") == 0) {
            if (!(o.admin_key = val) || !*val) return ag_cli_usage_error("serve", "--admin-key needs a key");
        } else if (strcmp(a, "--log-level") == 0) {
            if ((o.log_level = val ? ag_log_level_parse(val) : -1) < 0)
                return ag_cli_usage_error("serve", "--log-level must be debug, info, warn, error or off");
        } else if (strcmp(a, "--log-format") == 0) {
            if ((o.log_format = val ? ag_log_format_parse(val) : -1) < 0)
                return ag_cli_usage_error("serve", "--log-format must be text or json");
        } else if (strcmp(a, "--log-file") == 0) {
            if (!(o.log_file = val)) return ag_cli_usage_error("serve", "--log-file needs a file");
        } else if (strcmp(a, "--otlp-endpoint") == 0) {
            if (!val || strncmp(val, "http://", 7) != 0)
                return ag_cli_usage_error("serve", "--otlp-endpoint needs an http:// URL");
            o.otlp_endpoint = val;
        } else if (strcmp(a, "--trace-sample-ratio") == 0) {
            float r;
            if (!ag_cli_float("serve", a, val, &r)) return AG_EXIT_USAGE;
            if (r < 0 || r > 1) return ag_cli_usage_error("serve", "--trace-sample-ratio must be in 0..1");
            o.trace_sample_ratio = r;
        } else {
            return ag_cli_usage_error("serve", "unknown option '%s' (try 'autoglm serve --help')", a);
        }
        if (!ok) return AG_EXIT_USAGE;
        i++;
    }
    if (!mo.path) return ag_cli_usage_error("serve", "needs --model M.gguf");
    if (!o.tls_cert != !o.tls_key) return ag_cli_usage_error("serve", "--tls-cert and --tls-key go together");
    o.engine.model_path = mo.path;
    o.engine.n_threads = mo.params.n_threads;
    o.engine.ctx = mo.params.n_ctx;
    o.engine.kernels = mo.params.kernels;
    o.engine.no_repack = mo.params.no_repack;
    o.api_keys = keys;
    o.n_api_keys = n_keys;
    return ag_server_run(&o);
}
