/*
 * routes.c - a complete request's way to its handler: the routes table,
 * methods, API keys, readiness, and the routes small enough to answer at
 * once (health, models, metrics, stats, tokenize, the cache's admin, the
 * web UI's files).  Generation
 * routes hand over to exchange.c.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "json/json.h"

#include <stdio.h>
#include <string.h>

const char *const ag_route_labels[R_COUNT + 1] = {
    "/health",         "/v1/models", "/v1/models/{id}", "/v1/chat/completions", "/v1/completions", "/tokenize",
    "/detokenize",     "/metrics",   "/v1/cache/stats", "/v1/cache",            "/v1/stats",
    "/",               "/ui/{file}", "/debug/fail-alloc", "/v1/files", "/v1/files/{id}", "/v1/batches",
    "/v1/batches/{id}", "other"};
_Static_assert(R_COUNT + 1 <= AG_METRICS_MAX_ROUTES, "the metrics count requests by route: raise AG_METRICS_MAX_ROUTES");

ag_str ag_route_bearer(const ag_http_request *req) {
    ag_str h = ag_http_header_get(req, "authorization");
    if (h.n < 7 || !ag_str_ieq((ag_str){h.p, 7}, AG_STR_LIT("bearer "))) return (ag_str){NULL, 0};
    return ag_str_trim((ag_str){h.p + 7, h.n - 7});
}

/* key == want in time that depends only on want's length, so timing tells nothing of how much matched. */
static bool key_equal(ag_str key, const char *want) {
    size_t n = strlen(want);
    unsigned diff = (unsigned)(n ^ key.n);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < key.n ? key.p[i] : 0);
    return diff == 0;
}

/* Every key is compared, so timing tells nothing of which one matched. */
static bool authorized(const server *s, const ag_http_request *req) {
    if (!s->o->n_api_keys) return true;
    ag_str key = ag_route_bearer(req);
    if (!key.p) return false;
    bool ok = false;
    for (size_t k = 0; k < s->o->n_api_keys; k++) ok |= key_equal(key, s->o->api_keys[k]);
    return ok;
}

static void route_health(conn *c) {
    server *s = c->s;
    ag_buf b;
    ag_buf_init(&b);
    const char *state = s->draining ? "draining" : s->ready ? "ok" : "loading";
    ag_buf_appendf(&b, "{\"status\":\"%s\"", state);
    if (s->engine && s->ready) { /* the engine's load, for probes and tests */
        ag_engine_stats st;
        ag_engine_stats_get(s->engine, &st);
        ag_buf_appendf(&b, ",\"requests_running\":%d,\"requests_waiting\":%d,\"kv_blocks_used\":%zu,\"kv_blocks_total\":%zu",
                       st.running, st.waiting, st.kv_used, st.kv_blocks);
    }
    ag_buf_append_char(&b, '}');
    bool ok = s->ready && !s->draining;
    ag_conn_respond_json(c, ok ? 200 : 503, &b, ok ? NULL : "Retry-After: 1\r\n");
    ag_buf_deinit(&b);
}

static void model_object(server *s, ag_jw *w) {
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "id");
    ag_jw_strc(w, s->model.name);
    ag_jw_keyc(w, "object");
    ag_jw_strc(w, "model");
    ag_jw_keyc(w, "created");
    ag_jw_int(w, (int64_t)(ag_clock_wall_ns() / 1000000000ull));
    ag_jw_keyc(w, "owned_by");
    ag_jw_strc(w, "autoglm");
    ag_jw_keyc(w, "max_model_len");
    ag_jw_int(w, s->model.ctx);
    ag_jw_obj_end(w);
}

static void route_models(conn *c, ag_str id) {
    server *s = c->s;
    if (id.p && !ag_str_eq_cstr(id, s->model.name)) {
        ag_api_error e;
        ag_api_fail(&e, 404, "invalid_request_error", "model", "model_not_found", "The model `%.*s` does not exist.",
                    (int)(id.n > 200 ? 200 : id.n), id.p);
        ag_conn_respond_error(c, &e);
        return;
    }
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
    if (id.p) {
        model_object(s, &w);
    } else {
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "object");
        ag_jw_strc(&w, "list");
        ag_jw_keyc(&w, "data");
        ag_jw_arr_begin(&w);
        model_object(s, &w);
        ag_jw_arr_end(&w);
        ag_jw_obj_end(&w);
    }
    ag_conn_respond_json(c, 200, &b, NULL);
    ag_buf_deinit(&b);
}

static void route_metrics(conn *c) {
    server *s = c->s;
    ag_engine_stats st;
    if (s->ready) ag_engine_stats_get(s->engine, &st);
    ag_buf b;
    ag_buf_init(&b);
    ag_metrics_render(&s->metrics, s->ready ? &st : NULL, &b);
    if (s->cache || s->l2) ag_respcache_render_metrics(s, &b);
    if (s->jobs) ag_batch_render_metrics(s, &b);
    ag_conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "", b.len, NULL);
    ag_buf_deinit(&b);
}

static void route_cache_stats(conn *c) {
    ag_buf b;
    ag_buf_init(&b);
    ag_respcache_stats_json(c->s, &b);
    ag_conn_respond_json(c, 200, &b, NULL);
    ag_buf_deinit(&b);
}

/* GET /v1/stats[?window=S]: the dashboard's numbers (stats.c). */
static void route_stats(conn *c) {
    server *s = c->s;
    int window;
    if (ag_stats_window_parse(c->req.query, &window) != AG_OK) {
        char msg[96];
        snprintf(msg, sizeof msg, "window must be a whole number of seconds from 1 to %d", AG_STATS_SECONDS);
        ag_conn_respond_status(c, 400, "invalid_request_error", "invalid_window", msg, NULL);
        return;
    }
    ag_engine_stats st;
    if (s->ready) ag_engine_stats_get(s->engine, &st);
    ag_stats_now now = {.t_ns = ag_clock_mono_ns(),
                        .model = s->model.name,
                        .status = s->draining ? "draining" : s->ready ? "ok" : "loading",
                        .engine = s->ready ? &st : NULL};
    ag_buf b;
    ag_buf_init(&b);
    ag_stats_json(s->stats, &now, window, &b);
    if (b.err != AG_OK) ag_conn_respond_status(c, 503, "service_unavailable", NULL, "out of memory", NULL);
    else ag_conn_respond_json(c, 200, &b, "Cache-Control: no-store\r\n");
    ag_buf_deinit(&b);
}

/* DELETE /v1/cache[?namespace=NAME]: only with the admin key. */
static void route_cache_delete(conn *c) {
    const char *admin = c->s->o->admin_key;
    if (!admin || !key_equal(ag_route_bearer(&c->req), admin)) {
        ag_conn_respond_status(c, admin ? 401 : 403, "invalid_request_error", admin ? "invalid_api_key" : "forbidden",
                               admin ? "DELETE /v1/cache needs the admin key as 'Authorization: Bearer KEY'."
                                     : "DELETE /v1/cache is disabled: the server has no --admin-key.",
                               NULL);
        return;
    }
    ag_buf b;
    ag_buf_init(&b);
    ag_respcache_delete_json(c->s, c->req.query, &b);
    ag_conn_respond_json(c, 200, &b, NULL);
    ag_buf_deinit(&b);
}

/*
 * POST /debug/fail-alloc?n=N (only with --fault-injection, for tests): the
 * loop thread's N-th try-allocation from now fails (0: off).  It answers how
 * many injected failures the previous arming caused, so a test walking N =
 * 1, 2, ... knows when N has passed every allocation of its requests.
 */
static void route_fail_alloc(conn *c) {
    uint64_t n = 0;
    ag_str q = c->req.query;
    if (!ag_str_starts_with(q, AG_STR_LIT("n=")) || ag_str_parse_u64((ag_str){q.p + 2, q.n - 2}, &n) != AG_OK) {
        ag_conn_respond_status(c, 400, "invalid_request_error", NULL, "POST /debug/fail-alloc?n=N", NULL);
        return;
    }
    char body[64];
    int len = snprintf(body, sizeof body, "{\"failed\":%lu}", ag_alloc_failed_count());
    ag_alloc_fail_at(0);
    ag_conn_respond(c, 200, "application/json", body, (size_t)len, NULL);
    ag_alloc_fail_at((unsigned long)n); /* armed after this answer's own allocations */
}

typedef ag_status (*tok_fn)(const ag_api_model *, const char *, size_t, ag_arena *, ag_buf *, ag_api_error *);

static void route_tokens(conn *c, tok_fn fn, const char *body, size_t len) {
    ag_arena a;
    ag_arena_init(&a, 4096);
    ag_buf b;
    ag_buf_init(&b);
    ag_api_error e;
    if (fn(&c->s->model, body, len, &a, &b, &e) != AG_OK) ag_conn_respond_error(c, &e);
    else if (b.err != AG_OK) ag_conn_respond_status(c, 503, "service_unavailable", NULL, "out of memory", NULL);
    else ag_conn_respond_json(c, 200, &b, NULL);
    ag_buf_deinit(&b);
    ag_arena_deinit(&a);
}

static const struct {
    const char *path, *method, *allow;
    bool prefix;
} routes[R_COUNT] = {
    [R_HEALTH] = {"/health", "GET", "Allow: GET, HEAD\r\n", false},
    [R_MODELS] = {"/v1/models", "GET", "Allow: GET, HEAD\r\n", false},
    [R_MODEL] = {"/v1/models/", "GET", "Allow: GET, HEAD\r\n", true},
    [R_CHAT] = {"/v1/chat/completions", "POST", "Allow: POST\r\n", false},
    [R_COMPLETIONS] = {"/v1/completions", "POST", "Allow: POST\r\n", false},
    [R_TOKENIZE] = {"/tokenize", "POST", "Allow: POST\r\n", false},
    [R_DETOKENIZE] = {"/detokenize", "POST", "Allow: POST\r\n", false},
    [R_METRICS] = {"/metrics", "GET", "Allow: GET, HEAD\r\n", false},
    [R_CACHE_STATS] = {"/v1/cache/stats", "GET", "Allow: GET, HEAD\r\n", false},
    [R_CACHE] = {"/v1/cache", "DELETE", "Allow: DELETE\r\n", false},
    [R_STATS] = {"/v1/stats", "GET", "Allow: GET, HEAD\r\n", false},
    [R_UI_INDEX] = {"/", "GET", "Allow: GET, HEAD\r\n", false},
    [R_UI_FILE] = {"/ui/", "GET", "Allow: GET, HEAD\r\n", true},
    [R_FAIL_ALLOC] = {"/debug/fail-alloc", "POST", "Allow: POST\r\n", false},
    /* the Batch API's routes take several methods: batch_api.c checks them */
    [R_FILES] = {"/v1/files", NULL, NULL, false},
    [R_FILE] = {"/v1/files/", NULL, NULL, true},
    [R_BATCHES] = {"/v1/batches", NULL, NULL, false},
    [R_BATCH] = {"/v1/batches/", NULL, NULL, true},
};

size_t ag_route_body_limit(const conn *c) {
    const ag_server_opts *o = c->s->o;
    if (ag_str_eq_cstr(c->req.path, "/v1/files") && ag_str_eq_cstr(c->req.method, "POST") &&
        o->max_file_bytes + AG_BATCH_UPLOAD_SLACK > o->limits.max_body)
        return o->max_file_bytes + AG_BATCH_UPLOAD_SLACK;
    return o->limits.max_body;
}

void ag_route_dispatch(conn *c) {
    server *s = c->s;
    const ag_http_request *req = &c->req;
    const char *body = c->in.data + req->head_len;
    int r = 0;
    for (; r < R_COUNT; r++) {
        ag_str want = ag_str_from_cstr(routes[r].path);
        if (routes[r].prefix ? ag_str_starts_with(req->path, want) && req->path.n > want.n : ag_str_eq(req->path, want))
            break;
    }
    if (r == R_FAIL_ALLOC && !s->o->fault_injection) r = R_COUNT;
    if ((r == R_UI_INDEX || r == R_UI_FILE) && !s->ui) r = R_COUNT; /* --no-ui */
    c->obs.route = r;
    if (r == R_COUNT) {
        char msg[160];
        snprintf(msg, sizeof msg, "Unknown route: %.*s %.*s", (int)(req->method.n > 16 ? 16 : req->method.n),
                 req->method.p, (int)(req->path.n > 100 ? 100 : req->path.n), req->path.p);
        ag_conn_respond_status(c, 404, "invalid_request_error", "not_found", msg, NULL);
        return;
    }
    bool get = routes[r].method && strcmp(routes[r].method, "GET") == 0;
    if (routes[r].method && !ag_str_eq_cstr(req->method, routes[r].method) && !(get && c->head_only)) {
        char msg[160];
        snprintf(msg, sizeof msg, "Method %.*s is not allowed on %s", (int)(req->method.n > 16 ? 16 : req->method.n),
                 req->method.p, routes[r].path);
        ag_conn_respond_status(c, 405, "invalid_request_error", "method_not_allowed", msg, routes[r].allow);
        return;
    }
    if (r == R_HEALTH) return route_health(c);
    if (r == R_METRICS) return route_metrics(c); /* open, like /health: scrapers rarely carry keys */
    if (r == R_CACHE) return route_cache_delete(c);
    if (r == R_FAIL_ALLOC) return route_fail_alloc(c);
    if ((r == R_UI_INDEX || r == R_UI_FILE) && ag_ui_serve(c, req->path)) return; /* open: the files hold no data */
    if (r == R_UI_FILE) {
        ag_conn_respond_status(c, 404, "invalid_request_error", "not_found", "No such file in the web UI.", NULL);
        return;
    }
    if (!authorized(s, req)) {
        ag_conn_respond_status(c, 401, "invalid_request_error", "invalid_api_key",
                               "Incorrect API key provided. Send it as 'Authorization: Bearer KEY'.", NULL);
        return;
    }
    if (r == R_STATS) return route_stats(c); /* while loading and draining too: the dashboard shows it */
    if (!s->ready || (s->draining && !ag_server_lingering(s))) {
        ag_conn_respond_status(c, 503, "service_unavailable", NULL,
                               s->draining ? "The server is shutting down." : "The model is still loading.",
                               "Retry-After: 1\r\n");
        return;
    }
    size_t len = c->body_len;
    ag_str ce = ag_http_header_get(req, "content-encoding");
    if (ce.p && r != R_MODELS && r != R_MODEL && r != R_CACHE_STATS) {
        /* a coded body: decoded whole before it is parsed, held to the route's body limit decoded (413) */
        ag_http_coding cod = ag_http_coding_parse(ce);
        ag_http_error herr;
        if (cod == AG_CODING_UNKNOWN) {
            ag_conn_respond_status(c, 415, "invalid_request_error", "unsupported_content_encoding",
                                   "Unsupported Content-Encoding: send gzip, zstd or identity.",
                                   "Accept-Encoding: gzip, zstd\r\n");
            return;
        }
        if (cod != AG_CODING_IDENTITY) {
            if (ag_http_decode(cod, body, len, ag_route_body_limit(c), &c->body_dec, &herr) != AG_OK) {
                ag_conn_respond_status(c, herr.status, herr.status == 503 ? "service_unavailable" : "invalid_request_error",
                                       NULL, herr.reason, NULL);
                return;
            }
            body = c->body_dec.data ? c->body_dec.data : "", len = c->body_dec.len;
        }
    }
    switch (r) {
    case R_MODELS: return route_models(c, (ag_str){NULL, 0});
    case R_MODEL: return route_models(c, (ag_str){req->path.p + 11, req->path.n - 11});
    case R_CHAT: return ag_exchange_start(c, AG_API_CHAT, body, len);
    case R_COMPLETIONS: return ag_exchange_start(c, AG_API_COMPLETION, body, len);
    case R_TOKENIZE: return route_tokens(c, ag_api_tokenize, body, len);
    case R_CACHE_STATS: return route_cache_stats(c);
    case R_FILES:
    case R_FILE:
    case R_BATCHES:
    case R_BATCH: return ag_batch_route(c, r, body, len);
    default: return route_tokens(c, ag_api_detokenize, body, len);
    }
}
