/*
 * server.c - `autoglm serve`'s lifecycle: listening, loading the model while
 * /health already answers 503, signals, and the drain (see server.h).
 *
 * Why libuv and not a hand-written epoll loop: libuv is Debian-packaged and
 * well kept, and gives timers, signals, a thread pool (for loading the model)
 * and write queues; a loop of our own would have to win a measurement to be
 * worth its upkeep, and the /health benchmark against nginx (bench/server)
 * shows the loop is not where the time goes.
 *
 * The rest of the server is in the files internal.h lists, stacked: this file
 * wires their hooks (a request to routes.c, its end and a client's leaving
 * to exchange.c) and owns what lives as long as the process.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "jobs/jobs.h"
#include "server/chat_template.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void ag_server_opts_default(ag_server_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->limits = ag_http_limits_default();
    o->max_connections = 1024;
    o->read_timeout_ms = 30000;
    o->idle_timeout_ms = 60000;
    o->drain_timeout_ms = 30000;
    o->http2_max_streams = 128; /* nginx's http2_max_concurrent_streams */
    o->compress_min_bytes = 1024;
    o->http2_window = 1 << 20;
    o->trace_sample_ratio = 1.0;
    o->cache_ttl_s = 3600;
    o->cache_coalesce_ms = 30000;
    o->idempotency_max_keys = 10000;
    o->idempotency_mb = 64;
    o->idempotency_ttl_ms = 3600000;
    o->idempotency_grace_ms = 10000;
    o->grammar_cache = 64;
    o->grammar_cache_mb = 128;
    o->schema_max_depth = 32;
    o->schema_max_properties = 5000;
    o->redis_timeout_ms = 100;
    o->max_file_bytes = 200u << 20; /* OpenAI's limit for a batch input file */
    o->batch_workers = 1;
    o->batch_claim_idle_ms = 30000;
    o->batch_max_deliveries = 3;
    o->batch_window_ms = 24 * 3600 * 1000ull;
    o->log_format = AG_LOG_TEXT;
    o->log_level = AG_LOG_INFO;
}

const char *ag_server_http_date(server *s) {
    time_t now = time(NULL);
    if (now != s->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_at = now;
    }
    return s->date;
}

/* Once per loop iteration: hand every connection's pending output to the kernel. */
static void on_check(uv_check_t *h) {
    ag_conn_flush_dirty(h->data);
    ag_h2_free_retired(h->data);
}

static void on_connection(uv_stream_t *listener, int status) {
    if (status >= 0) ag_conn_accept(listener->data, listener);
}

static void on_engine_readable(uv_poll_t *h, int status, int events) {
    (void)status, (void)events;
    ag_exchange_poll_engine(h->data);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void close_handle(uv_handle_t *h) {
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void close_walked(uv_handle_t *h, void *arg) {
    (void)arg;
    close_handle(h);
}

/* Draining and nothing left in flight (nor, while lingering, a connection open): end every connection and let
 * the loop run out. */
void ag_server_maybe_stop(server *s) {
    if (!s->draining || s->stopped || s->n_exchanges || s->n_batch_ops || !ag_batch_worker_idle(s) ||
        (ag_server_lingering(s) && s->conns))
        return;
    s->stopped = true;
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == C_BUSY) continue; /* cannot be: no exchanges are left */
        ag_conn_end(c);
    }
    close_handle((uv_handle_t *)&s->drain_timer);
    close_handle((uv_handle_t *)&s->linger_timer);
    close_handle((uv_handle_t *)&s->follow_timer);
    close_handle((uv_handle_t *)&s->idem_timer);
    close_handle((uv_handle_t *)&s->sigterm);
    close_handle((uv_handle_t *)&s->sigint);
    ag_l2_destroy(s->l2); /* its connection's handle would keep the loop running */
    s->l2 = NULL;
    ag_batch_worker_close(s);
    if (s->poll_started) close_handle((uv_handle_t *)&s->engine_poll);
    ag_logf(AG_LOG_INFO, "drained; exiting");
}

static void on_drain_timeout(uv_timer_t *t) {
    server *s = t->data;
    ag_logf(AG_LOG_WARN, "drain timeout: cancelling %zu requests still running", s->n_exchanges);
    for (conn *c = s->conns; c; c = c->next) {
        if (c->x) ag_exchange_cancel(c->x);
        if (c->kind == CONN_H2)
            for (conn *st = ag_h2_streams(c); st; st = st->next)
                if (st->x) ag_exchange_cancel(st->x);
    }
    ag_batch_worker_abandon(s);
}

static void on_linger_end(uv_timer_t *t) {
    server *s = t->data; /* the timer has stopped: ag_server_lingering is false from now on */
    ag_logf(AG_LOG_INFO, "drain linger over: %zu connections left are closed", s->n_conns);
    ag_server_maybe_stop(s);
}

static void begin_drain(server *s) {
    if (s->draining) return;
    s->draining = true;
    ag_logf(AG_LOG_INFO, "draining: no new connections, %zu requests in flight", s->n_exchanges);
    close_handle((uv_handle_t *)&s->listener);
    /* Open connections stay until the end.  A request they send meanwhile is served while the linger lasts
     * (a proxy may have sent it on a pooled connection before it could know), else answered 503; either way
     * with Connection: close.  HTTP/2 ones are told with GOAWAY, and the streams in flight finish. */
    for (conn *c = s->conns; c; c = c->next)
        if (c->kind == CONN_H2) ag_h2_goaway(c);
    uv_timer_start(&s->drain_timer, on_drain_timeout, s->o->drain_timeout_ms, 0);
    if (s->o->drain_linger_ms) uv_timer_start(&s->linger_timer, on_linger_end, s->o->drain_linger_ms, 0);
    ag_idem_drain(s);
    ag_batch_worker_drain(s);
    if (!s->load_status && s->engine) ag_server_maybe_stop(s);
}

static void on_signal(uv_signal_t *h, int signum) {
    server *s = h->data;
    if (s->draining) { /* a second signal: stop now */
        ag_logf(AG_LOG_WARN, "signal %d during drain: exiting now", signum);
        s->exit_code = 1;
        uv_stop(&s->loop);
        return;
    }
    begin_drain(s);
}

static void load_model(uv_work_t *w) {
    server *s = w->data;
    s->load_status = ag_engine_create(&s->o->engine, &s->engine, &s->load_err);
}

static ag_chat_template pick_template(server *s) {
    if (s->o->chat_template) return (ag_chat_template)ag_chat_template_from_name(s->o->chat_template);
    const char *t = NULL;
    size_t n = 0;
    if (!ag_engine_meta_str(s->engine, "tokenizer.chat_template", &t, &n)) return AG_CHAT_TEMPLATE_CHATML;
    return ag_chat_template_detect((ag_str){t, n});
}

/* The chat turn's end marker as one special token, when the vocabulary has it. */
static int32_t end_token(server *s, ag_chat_template t) {
    const char *text = ag_chat_template_end(t);
    ag_tokens ids = {0};
    int32_t id = -1;
    if (ag_engine_tokenize(s->engine, text, strlen(text), false, true, &ids, NULL) == AG_OK && ids.n == 1)
        id = ids.v[0];
    free(ids.v);
    return id;
}

/* --slo: a line each second in which the controller's budget moved (not each step: the engine does not log). */
static void on_tune_timer(uv_timer_t *t) {
    server *s = t->data;
    ag_engine_stats st;
    ag_engine_stats_get(s->engine, &st);
    if (st.budget_adjustments == s->tune_logged) return;
    s->tune_logged = st.budget_adjustments;
    ag_log_fields(AG_LOG_INFO, "autotune: prompt budget moved",
                  (ag_log_field[]){AG_LOG_FIELD_DOUBLE("prompt_budget", round(st.prompt_budget)),
                                   AG_LOG_FIELD_DOUBLE("step_ms", st.step_seconds * 1e3),
                                   AG_LOG_FIELD_DOUBLE("tpot_target_ms", st.slo.tpot_s * 1e3),
                                   AG_LOG_FIELD_DOUBLE("prompt_tokens_per_s", round(st.prompt_rate)),
                                   AG_LOG_FIELD_DOUBLE("base_ms", st.step_a * 1e3),
                                   AG_LOG_FIELD_DOUBLE("decode_row_ms", st.step_b * 1e3),
                                   AG_LOG_FIELD_DOUBLE("prompt_row_ms", st.step_c * 1e3),
                                   AG_LOG_FIELD_DOUBLE("fit_error", st.step_fit_error)},
                  8);
}

static void model_loaded(uv_work_t *w, int status) {
    server *s = w->data;
    (void)status;
    if (s->load_status != AG_OK) {
        ag_logf(AG_LOG_ERROR, "cannot load the model: %s", s->load_err.msg);
        s->exit_code = 1;
        s->draining = true;
        s->stopped = true;
        close_handle((uv_handle_t *)&s->listener);
        close_handle((uv_handle_t *)&s->drain_timer);
        close_handle((uv_handle_t *)&s->follow_timer);
        close_handle((uv_handle_t *)&s->idem_timer);
        close_handle((uv_handle_t *)&s->sigterm);
        close_handle((uv_handle_t *)&s->sigint);
        ag_l2_destroy(s->l2);
        s->l2 = NULL;
        ag_batch_worker_close(s);
        for (conn *c = s->conns, *next; c; c = next) next = c->next, ag_conn_close(c);
        return;
    }
    s->model.engine = s->engine;
    s->model.ctx = ag_engine_ctx(s->engine);
    s->model.n_vocab = ag_engine_n_vocab(s->engine);
    s->model.tmpl = pick_template(s);
    s->model.end_token = end_token(s, s->model.tmpl);
    ag_grammar_limits gl = {.cache_bytes = s->o->grammar_cache_mb << 20}; /* one grammar may use the whole budget */
    s->model.grammars = ag_grammar_lru_create(s->o->grammar_cache, gl.cache_bytes, &gl);
    s->model.schema_max_depth = s->o->schema_max_depth;
    s->model.schema_max_properties = s->o->schema_max_properties;
    uv_poll_init(&s->loop, &s->engine_poll, ag_engine_event_fd(s->engine));
    s->engine_poll.data = s;
    uv_poll_start(&s->engine_poll, UV_READABLE, on_engine_readable);
    s->poll_started = true;
    if (s->o->engine.slo.tpot_s) {
        uv_timer_start(&s->tune_timer, on_tune_timer, 1000, 1000);
        uv_unref((uv_handle_t *)&s->tune_timer); /* never keeps the loop alive by itself */
    }
    s->ready = true;
    int n_repacked;
    uint64_t repacked = ag_engine_repacked_bytes(s->engine, &n_repacked);
    ag_logf(AG_LOG_INFO, "ready: model %s, context %d, chat template %s, %d matrices repacked (%.1f MiB beside the mapping)",
            s->model.name, s->model.ctx, ag_chat_template_name(s->model.tmpl), n_repacked, (double)repacked / (1 << 20));
    if (s->o->log_file) fprintf(stderr, "autoglm serve: ready: model %s\n", s->model.name); /* logs go to the file */
    ag_server_maybe_stop(s); /* a signal during the load */
}

static void stem(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0) n -= 5;
    snprintf(out, cap, "%.*s", (int)n, base);
}

static int listen_on(server *s) {
    struct sockaddr_storage addr;
    int r = uv_ip4_addr(s->o->host, s->o->port, (struct sockaddr_in *)&addr);
    if (r < 0) r = uv_ip6_addr(s->o->host, s->o->port, (struct sockaddr_in6 *)&addr);
    if (r < 0) {
        ag_logf(AG_LOG_ERROR, "--host %s is not an IP address", s->o->host);
        return -1;
    }
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    if ((r = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) < 0 ||
        (r = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection)) < 0) {
        ag_logf(AG_LOG_ERROR, "cannot listen on %s:%d: %s", s->o->host, s->o->port, uv_strerror(r));
        return -1;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    int port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    const char *scheme = s->tls ? "https" : "http";
    ag_logf(AG_LOG_INFO, "listening on %s://%s:%d (model loading)", scheme, s->o->host, port);
    if (s->o->log_file)
        fprintf(stderr, "autoglm serve: listening on %s://%s:%d (model loading)\n", scheme, s->o->host, port);
    return 0;
}

/* A client left mid-request: its generation, or its Files/Batches request's Redis work. */
static void client_gone(conn *c) {
    if (c->x) ag_exchange_on_client_gone(c);
    if (c->op) ag_batch_on_client_gone(c);
}

int ag_server_run(const ag_server_opts *o) {
    server *s = ag_xcalloc(1, sizeof *s);
    s->o = o;
    if (o->served_model_name) snprintf(s->model_name, sizeof s->model_name, "%s", o->served_model_name);
    else stem(o->engine.model_path, s->model_name, sizeof s->model_name);
    s->model.name = s->model_name;
    ag_metrics_init(&s->metrics, ag_route_labels, R_COUNT + 1);
    s->on_request = ag_route_dispatch;
    s->on_request_end = ag_exchange_on_request_end;
    s->on_client_gone = client_gone;
    s->on_job_done = ag_batch_worker_on_job_done;
    s->body_limit = ag_route_body_limit;
    if (o->cache_mb) s->cache = ag_cache_create(o->cache_mb << 20, AG_CACHE_WTINYLFU);
    ag_map_init(&s->leaders);
    ag_map_init(&s->idem_keys);
    s->wall_minus_mono = (int64_t)ag_clock_wall_ns() - (int64_t)ag_clock_mono_ns();
    FILE *log_out = stderr;
    if (o->log_file && !(log_out = fopen(o->log_file, "a"))) {
        fprintf(stderr, "autoglm serve: %s: cannot open the log file\n", o->log_file);
        free(s);
        return 1;
    }
    ag_log_configure((ag_log_format)o->log_format, (ag_log_level)o->log_level, log_out);
    s->logq = ag_logq_create(log_out, 4u << 20, &s->metrics.log_dropped);
    if (s->logq) ag_log_set_sink(ag_logq_push, s->logq);
    if (o->otlp_endpoint) {
        ag_err err;
        ag_otlp_params op = {.endpoint = o->otlp_endpoint, .service = "autoglm",
                             .exported = &s->metrics.spans_exported, .dropped = &s->metrics.spans_dropped};
        if (ag_otlp_create(&op, &s->otlp, &err) != AG_OK) {
            ag_logf(AG_LOG_ERROR, "%s", err.msg);
            ag_log_set_sink(NULL, NULL);
            ag_logq_destroy(s->logq);
            if (log_out != stderr) fclose(log_out);
            free(s);
            return 1;
        }
    }
    ag_map_init(&s->inflight);
    ag_buf_init(&s->scratch);
    s->stats = ag_stats_new(ag_clock_mono_ns());
    if (!o->no_ui && !(s->ui = ag_ui_new())) ag_logf(AG_LOG_WARN, "no memory for the web UI: serving without it");
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&s->loop);
    int rc = 0;
    if (o->redis_url) {
        char msg[160];
        ag_l2_opts lo = {.url = o->redis_url, .timeout_ms = o->redis_timeout_ms, .breaker_failures = 5,
                         .breaker_open_ms = 2000};
        if (!ag_l2_create(&s->loop, &lo, &s->l2, msg, sizeof msg)) {
            ag_logf(AG_LOG_ERROR, "%s", msg);
            rc = 1;
            goto done;
        }
    }
    const char *jobs_url = o->batch_redis_url ? o->batch_redis_url : o->redis_url;
    if (jobs_url) {
        ag_err err;
        ag_jobs_opts jo = {.url = jobs_url, .timeout_ms = 5000};
        if (ag_jobs_open(&jo, &s->jobs, &err) != AG_OK) {
            ag_logf(AG_LOG_ERROR, "%s", err.msg);
            rc = 1;
            goto done;
        }
        if (o->batch_workers > 0) {
            char msg[160];
            if (!ag_batch_worker_start(s, msg, sizeof msg)) {
                ag_logf(AG_LOG_ERROR, "%s", msg);
                rc = 1;
                goto done;
            }
        }
    }
    size_t body_cap = o->limits.max_body;
    if (s->jobs && o->max_file_bytes + AG_BATCH_UPLOAD_SLACK > body_cap) body_cap = o->max_file_bytes + AG_BATCH_UPLOAD_SLACK;
    s->max_in = o->limits.max_header_bytes + body_cap;
    if (o->tls_cert) {
        char msg[512];
        if (!(s->tls = ag_tls_ctx_new_server(o->tls_cert, o->tls_key, msg, sizeof msg))) {
            ag_logf(AG_LOG_ERROR, "%s", msg);
            rc = 1;
            goto done;
        }
    }
    if (listen_on(s) < 0) {
        close_handle((uv_handle_t *)&s->listener);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        rc = 1;
        goto done;
    }
    uv_check_init(&s->loop, &s->flusher);
    s->flusher.data = s;
    uv_check_start(&s->flusher, on_check);
    uv_unref((uv_handle_t *)&s->flusher); /* it never keeps the loop alive by itself */
    uv_timer_init(&s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    uv_timer_init(&s->loop, &s->linger_timer);
    s->linger_timer.data = s;
    uv_timer_init(&s->loop, &s->tune_timer);
    s->tune_timer.data = s;
    uv_timer_init(&s->loop, &s->follow_timer);
    s->follow_timer.data = s;
    uv_timer_init(&s->loop, &s->idem_timer);
    s->idem_timer.data = s;
    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_init(&s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    s->load_work.data = s;
    uv_queue_work(&s->loop, &s->load_work, load_model, model_loaded);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    rc = s->exit_code;
done:
    ag_l2_destroy(s->l2);
    /* after uv_stop (a second signal) handles may still be open: close them so the loop can be closed */
    uv_walk(&s->loop, close_walked, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    ag_h2_free_retired(s);
    ag_engine_destroy(s->engine);
    ag_grammar_lru_free(s->model.grammars); /* after the engine: its requests held references */
    ag_cache_destroy(s->cache);
    ag_map_deinit(&s->leaders);
    ag_idem_deinit(s);
    ag_otlp_destroy(s->otlp);
    ag_log_set_sink(NULL, NULL);
    ag_logq_destroy(s->logq);
    if (log_out != stderr) fclose(log_out);
    ag_map_deinit(&s->inflight);
    ag_conn_server_deinit(s);
    ag_tls_ctx_free(s->tls);
    ag_jobs_close(s->jobs); /* after the loop: no thread-pool work is left */
    ag_stats_free(s->stats);
    ag_ui_free(s->ui);
    free(s);
    return rc;
}
