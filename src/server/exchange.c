/*
 * exchange.c - one generation request's lifecycle, from its parsed body to
 * its last byte: the state machine drawn in internal.h, the engine's events,
 * and the request's metrics, access log line and spans.
 *
 * An exchange's choices (prompts x n) are engine requests, found from engine
 * events through a map keyed by engine id.  An exchange outlives its
 * connection when the client leaves: it cancels its engine requests (a keyed
 * one after --idempotency-grace, idem.c) and frees itself when their last
 * events arrive.  Whether it may write is decided by
 * one thing, its link to a connection (x->c), which only attach and detach
 * change; what it is waiting for is decided by one thing, its state.
 *
 * Memory: exchanges are malloc'd control objects; a request's parsed JSON and
 * prompts live in the exchange's arena.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/hash.h"
#include "base/log.h"
#include "json/json.h"
#include "obs/span.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {"parsed", "lookup", "following", "generating", "storing", "done"};

void ag_exchange_bug(exchange *x, const char *what) {
    atomic_fetch_add_explicit(&x->s->metrics.internal_errors, 1, memory_order_relaxed);
    ag_logf(AG_LOG_ERROR, "internal error: %s for exchange %s in state %s (dropped)", what, x->meta.id,
            state_names[x->state]);
}

void ag_exchange_attach(exchange *x, conn *c) {
    if (x->c || c->x) {
        ag_exchange_bug(x, "attach to a connection already linked");
        return;
    }
    x->c = c;
    c->x = x;
}

void ag_exchange_detach(exchange *x) {
    if (!x->c) return;
    if (x->c->x == x) x->c->x = NULL;
    else ag_exchange_bug(x, "detach from a connection linked elsewhere");
    x->c = NULL;
}

void ag_exchange_free(exchange *x) {
    server *s = x->s;
    ag_exchange_detach(x);
    x->state = X_DONE;
    for (int i = 0; x->ch && i < x->n_ch; i++) {
        ag_buf_deinit(&x->ch[i].text);
        ag_api_logprobs_deinit(&x->ch[i].lp);
        if (x->ch[i].tp) ag_toolparse_deinit(x->ch[i].tp);
        free(x->ch[i].tp);
    }
    ag_api_request_deinit(&x->req);
    ag_idem_end(x); /* before its value goes: those waiting on its key get it */
    free(x->ch);
    free(x->followers);
    ag_cache_val_release(x->value);
    ag_arena_deinit(&x->arena);
    free(x);
    s->n_exchanges--;
    ag_server_maybe_stop(s);
}

/* Stop every open choice; the exchange frees itself when their last events come. */
void ag_exchange_cancel(exchange *x) {
    for (int i = 0; x->ch && i < x->n_ch; i++)
        if (x->ch[i].open) ag_engine_cancel(x->s->engine, x->ch[i].id);
}

/* The client left: stop generating, unless followers wait for this answer or its Idempotency-Key's retry may
 * come for it; a waiting exchange is freed by its waker. */
void ag_exchange_on_client_gone(conn *c) {
    exchange *x = c->x;
    ag_exchange_detach(x);
    if (x->state == X_GENERATING && !x->n_followers && !ag_idem_keep_generating(x)) ag_exchange_cancel(x);
}

ag_api_usage ag_exchange_usage(const exchange *x) {
    ag_api_usage u = {0};
    for (int i = 0; i < x->n_ch; i++) {
        if (i % x->req.n == 0) u.prompt_tokens += x->ch[i].prompt_tokens, u.cached_tokens += x->ch[i].cached_tokens;
        u.completion_tokens += x->ch[i].completion_tokens;
    }
    return u;
}

/* ---- the answer ------------------------------------------------------------------------- */

/* One stream chunk of choice `index`: a text delta (with the role first, for chat) and/or a finish reason. */
static void stream_chunk(conn *c, const exchange *x, int index, bool first, const char *text, size_t len,
                         const char *finish, const ag_api_logprobs *lp) {
    ag_api_chunk_write(&x->meta, index, first, text, len, finish, lp, x->req.include_usage, ag_sse_event_begin(c));
    ag_sse_event_end(c);
}

/* Tool-call ids: distinct per response and choice, the same in a streamed and a whole answer. */
static uint64_t call_id_seed(const exchange *x, int index) {
    return ag_hash_bytes(x->meta.id, strlen(x->meta.id), (uint64_t)index + 1);
}

/* What the model's answer holds: content, and tool calls when tools were offered. */
static const char *finish_reason(const exchange *x, ag_finish f, size_t n_calls) {
    if (f == AG_FINISH_STOP && n_calls && x->req.tools.choice != AG_TOOL_CHOICE_NAMED) return "tool_calls";
    return ag_api_finish_reason(f); /* a forced function ends with "stop", as OpenAI's do */
}

/* A streamed choice with tools: its new text through the parser, and the content and call deltas it made. */
static void stream_tools(conn *c, const exchange *x, int index, choice *ch, const char *text, size_t len, bool end) {
    ag_toolparse *p = ch->tp;
    size_t content = p->content.len, calls = p->n_calls, args = calls ? p->calls[calls - 1].args.len : 0;
    ag_toolparse_push(p, text, len);
    if (end) ag_toolparse_finish(p);
    if (p->content.len > content)
        stream_chunk(c, x, index, false, p->content.data + content, p->content.len - content, NULL, NULL);
    for (size_t k = calls ? calls - 1 : 0; k < p->n_calls; k++) {
        const ag_toolcall *tc = &p->calls[k];
        size_t from = k + 1 == calls ? args : 0;
        if (k >= calls) {
            ag_api_tool_chunk_write(&x->meta, index, k, tc->id, tc->name, "", 0, x->req.include_usage, ag_sse_event_begin(c));
            ag_sse_event_end(c);
        }
        if (tc->args.len > from) {
            ag_api_tool_chunk_write(&x->meta, index, k, NULL, NULL, tc->args.data + from, tc->args.len - from,
                                    x->req.include_usage, ag_sse_event_begin(c));
            ag_sse_event_end(c);
        }
    }
}

/* The end of a stream: the usage chunk when asked, then [DONE]. */
static void stream_close(conn *c, const exchange *x, const ag_api_usage *u) {
    if (x->req.include_usage) {
        ag_api_usage_chunk_write(&x->meta, u, ag_sse_event_begin(c));
        ag_sse_event_end(c);
    }
    ag_sse_close(c);
}

/* The answer when X-Request-Timeout-Ms passed before every choice was done (504). */
static void deadline_error(const exchange *x, ag_api_error *e) {
    ag_api_fail(e, 504, "timeout_error", NULL, "deadline_exceeded",
                "The request's deadline (X-Request-Timeout-Ms: %llu) passed before its answer was complete.",
                (unsigned long long)((x->deadline_ns - x->t_start_ns) / 1000000ull));
}

/* A whole response of generated choices (500 when the engine failed on one, 504 when its deadline passed). */
static void respond_whole(conn *c, exchange *x, const ag_api_usage *u) {
    bool failed = false, late = false;
    for (int i = 0; i < x->n_ch; i++) failed |= x->ch[i].finish == AG_FINISH_ERROR, late |= x->ch[i].finish == AG_FINISH_TIMEOUT;
    if (failed) {
        ag_conn_respond_status(c, 500, "server_error", NULL, "the engine failed on this request", NULL);
        return;
    }
    if (late) {
        ag_api_error e;
        deadline_error(x, &e);
        ag_conn_respond_error(c, &e);
        return;
    }
    uint64_t h = ag_respcache_etag_seed(x);
    for (int i = 0; i < x->n_ch; i++)
        h = ag_respcache_etag_add(h, x->ch[i].text.data ? x->ch[i].text.data : "", x->ch[i].text.len, (int)x->ch[i].finish);
    char hdrs[512];
    if (ag_respcache_validators(x, c, h, ag_cache_headers[x->verdict], hdrs, sizeof hdrs)) return; /* 412 */
    ag_api_choice *ch = ag_xcalloc((size_t)x->n_ch, sizeof *ch);
    bool tools = x->req.tools.choice != AG_TOOL_CHOICE_NONE;
    ag_toolparse *tp = tools ? ag_xcalloc((size_t)x->n_ch, sizeof *tp) : NULL;
    ag_api_tool_call **calls = tools ? ag_xcalloc((size_t)x->n_ch, sizeof *calls) : NULL;
    for (int i = 0; i < x->n_ch; i++) {
        const char *text = x->ch[i].text.data ? x->ch[i].text.data : "";
        ch[i] = (ag_api_choice){text, x->ch[i].text.len, ag_api_finish_reason(x->ch[i].finish),
                                x->req.logprobs ? &x->ch[i].lp : NULL, NULL, 0};
        if (!tools) continue;
        ag_toolparse_init(&tp[i], x->s->model.tmpl, &x->req.tools, call_id_seed(x, i));
        ag_toolparse_push(&tp[i], text, x->ch[i].text.len);
        ag_toolparse_finish(&tp[i]);
        calls[i] = ag_xcalloc(tp[i].n_calls + 1, sizeof **calls);
        for (size_t k = 0; k < tp[i].n_calls; k++) {
            const ag_toolcall *tc = &tp[i].calls[k];
            calls[i][k] = (ag_api_tool_call){tc->id, tc->name, tc->args.data ? tc->args.data : "", tc->args.len};
        }
        ch[i].text = tp[i].content.data ? tp[i].content.data : "", ch[i].len = tp[i].content.len;
        ch[i].calls = calls[i], ch[i].n_calls = tp[i].n_calls;
        ch[i].finish_reason = finish_reason(x, x->ch[i].finish, tp[i].n_calls);
    }
    ag_buf json;
    ag_buf_init(&json);
    ag_api_response_write(&x->meta, ch, (size_t)x->n_ch, u, &json);
    for (int i = 0; tools && i < x->n_ch; i++) {
        ag_toolparse_deinit(&tp[i]);
        free(calls[i]);
    }
    free(tp);
    free(calls);
    free(ch);
    if (json.err != AG_OK) ag_conn_respond_status(c, 503, "service_unavailable", NULL, "out of memory", NULL);
    else ag_conn_respond_json(c, 200, &json, hdrs);
    ag_buf_deinit(&json);
}

/* GENERATING/STORING -> DONE: answer the client (when still there) and free. */
static void exchange_respond(exchange *x) {
    conn *c = x->c;
    if (c) {
        ag_api_usage u = ag_exchange_usage(x);
        if (x->req.stream) stream_close(c, x, &u);
        else if (!x->value || !ag_respcache_send_stored(c, x, x->value, ag_cache_headers[x->verdict]))
            respond_whole(c, x, &u);
        ag_exchange_detach(x);
    }
    ag_exchange_free(x);
    if (c) ag_conn_process(c); /* a pipelined request may be waiting */
}

static void on_write_through(void *ctx, bool ok) {
    exchange *x = ctx;
    (void)ok; /* a failed write costs a future hit, never this answer */
    if (x->state != X_STORING) {
        ag_exchange_bug(x, "write-through acknowledged");
        return;
    }
    exchange_respond(x);
}

/* The last choice finished: store and publish the answer, then respond (after Redis has it, with write-through). */
static void exchange_complete(exchange *x) {
    server *s = x->s;
    ag_respcache_publish(x); /* stores nothing unless every choice finished normally */
    if (x->value && x->cache_store && s->l2) {
        uint64_t ttl_s = x->cache_ttl_ns / 1000000000ull;
        if (s->o->cache_write_through) {
            x->state = X_STORING;
            ag_l2_set(s->l2, x->cache_key, x->cache_tag, x->value->data, x->value->len, ttl_s, on_write_through, x);
            return;
        }
        ag_l2_set(s->l2, x->cache_key, x->cache_tag, x->value->data, x->value->len, ttl_s, NULL, NULL);
    }
    exchange_respond(x);
}

/* ---- submitting and engine events ------------------------------------------------------ */

/* The engine's refusal of a choice as the API's error. */
static void refusal(ag_engine *engine, ag_status st, const ag_err *e, ag_api_error *err) {
    if (st == AG_BUSY)
        ag_api_fail(err, 429, "rate_limit_exceeded", NULL, "rate_limit_exceeded", "The server is busy: %s. Retry later.",
                    e->msg),
            err->retry_after_s = ag_engine_retry_after(engine); /* from the queue and the measured prompt rate */
    else if (st == AG_NOMEM) ag_api_fail(err, 503, "service_unavailable", NULL, NULL, "out of memory: %s", e->msg);
    else ag_api_fail(err, 400, "invalid_request_error", NULL, NULL, "%s", e->msg);
}

/*
 * The prefix (KV) cache's namespace: the tenant's API key and the request's
 * cache_salt (vLLM's field), so one tenant never reuses another's prompt
 * blocks and cannot learn its prompts from cached_tokens or timing.
 */
static uint64_t kv_salt(const exchange *x, const ag_http_request *req) {
    ag_str tenant = ag_route_bearer(req);
    uint64_t h = ag_hash_bytes(tenant.p ? tenant.p : "", tenant.n, 0x6b762d73616c74ull);
    const char *salt = x->req.cache_salt;
    return salt ? ag_hash_bytes(salt, strlen(salt), h) : h;
}

void ag_exchange_submit(exchange *x) {
    server *s = x->s;
    conn *c = x->c;
    if (x->state != X_PARSED && x->state != X_LOOKUP && x->state != X_FOLLOWING) {
        ag_exchange_bug(x, "submit");
        return;
    }
    x->state = X_GENERATING;
    x->ch = ag_xcalloc((size_t)x->n_ch, sizeof *x->ch);
    for (int i = 0; i < x->n_ch; i++) {
        x->ch[i].x = x;
        ag_buf_init(&x->ch[i].text);
        ag_api_logprobs_init(&x->ch[i].lp);
        if (x->req.stream && x->req.tools.choice != AG_TOOL_CHOICE_NONE) {
            x->ch[i].tp = ag_xmalloc(sizeof *x->ch[i].tp);
            ag_toolparse_init(x->ch[i].tp, s->model.tmpl, &x->req.tools, call_id_seed(x, i));
        }
    }
    /* every choice enters the engine's queue at once, or none does (a 429 leaves nothing to cancel) */
    ag_request *rq = ag_xcalloc((size_t)x->n_ch, sizeof *rq);
    uint64_t *ids = ag_xcalloc((size_t)x->n_ch, sizeof *ids);
    for (int i = 0; i < x->n_ch; i++) {
        ag_api_engine_request(&x->req, &s->model, (size_t)i, &rq[i]);
        rq[i].cache_salt = x->kv_salt;
        rq[i].deadline_ns = x->deadline_ns;
    }
    ag_err e;
    ag_status st = ag_engine_submit_many(s->engine, rq, (size_t)x->n_ch, ids, &e);
    free(rq);
    if (st != AG_OK) {
        free(ids);
        ag_api_error err;
        refusal(s->engine, st, &e, &err);
        ag_exchange_detach(x);
        ag_conn_respond_error(c, &err);
        ag_exchange_free(x);
        ag_conn_process(c); /* a pipelined request may be waiting */
        return;
    }
    for (int i = 0; i < x->n_ch; i++) {
        choice *ch = &x->ch[i];
        ch->id = ids[i];
        ch->open = true;
        x->n_open++;
        ag_map_put(&s->inflight, (const char *)&ch->id, sizeof ch->id, ch);
    }
    free(ids);
    /* others may follow it; not a batch job, which may be preempted for any of them */
    if (x->cache_store && !(c && c->kind == CONN_JOB) && !ag_map_get(&s->leaders, (const char *)x->cache_key, 32)) {
        ag_map_put(&s->leaders, (const char *)x->cache_key, 32, x);
        x->leading = true;
    }
    if (!x->req.stream) return;
    char extra[96];
    snprintf(extra, sizeof extra, "%s%s", ag_cache_headers[x->verdict] ? ag_cache_headers[x->verdict] : "", x->prefix_hdr);
    ag_sse_open(c, extra);
    if (x->req.kind == AG_API_CHAT) /* OpenAI's first chunk: the role, and empty content */
        for (int i = 0; i < x->n_ch; i++) stream_chunk(c, x, i, true, "", 0, NULL, NULL);
}

/* A streamed choice the engine failed on, or whose deadline passed: an error event, which the OpenAI SDKs
 * raise, instead of a finish chunk. */
static void stream_error(conn *c, const exchange *x, int index, ag_finish f) {
    ag_api_error e;
    if (f == AG_FINISH_TIMEOUT) deadline_error(x, &e);
    else ag_api_fail(&e, 500, "server_error", NULL, "engine_error", "the engine failed on choice %d of this request", index);
    ag_api_error_write(&e, ag_sse_event_begin(c));
    ag_sse_event_end(c);
}

static void observe_token(server *s, exchange *x, choice *ch, uint64_t now) {
    ag_stats_token(s->stats, now);
    if (!ch->t_first_ns) {
        ch->t_first_ns = now;
        if (!x->t_first_ns) x->t_first_ns = now, ag_histogram_observe(&s->metrics.ttft, now - x->t_start_ns);
    } else {
        ag_histogram_observe(&s->metrics.itl, now - ch->t_last_ns);
    }
    ch->t_last_ns = now;
}

static ag_metric_finish metric_finish(ag_finish f) {
    switch (f) {
    case AG_FINISH_STOP: return AG_METRIC_FINISH_STOP;
    case AG_FINISH_LENGTH: return AG_METRIC_FINISH_LENGTH;
    case AG_FINISH_ERROR: return AG_METRIC_FINISH_ERROR;
    default: return AG_METRIC_FINISH_ABORT;
    }
}

static void observe_finish(server *s, const choice *ch, const ag_event *ev) {
    ag_metrics *m = &s->metrics;
    atomic_fetch_add_explicit(&m->request_success[metric_finish(ev->finish)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->prompt_tokens, (uint64_t)ev->prompt_tokens, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->generation_tokens, (uint64_t)ev->completion_tokens, memory_order_relaxed);
    if (ev->t_admit_ns) ag_histogram_observe(&m->queue, ev->t_admit_ns - ev->t_submit_ns);
    if (ev->t_admit_ns && ev->t_first_token_ns) ag_histogram_observe(&m->prefill, ev->t_first_token_ns - ev->t_admit_ns);
    if (ev->t_first_token_ns) ag_histogram_observe(&m->decode, ev->t_event_ns - ev->t_first_token_ns);
    if (ev->completion_tokens > 1)
        ag_histogram_observe(&m->tpot, (ch->t_last_ns - ch->t_first_ns) / (uint64_t)(ev->completion_tokens - 1));
}

static void on_event(server *s, ag_event *ev) {
    choice *ch = ag_map_get(&s->inflight, (const char *)&ev->id, sizeof ev->id);
    if (!ch) return;
    exchange *x = ch->x;
    if (x->state != X_GENERATING || !ch->open) {
        ag_exchange_bug(x, "engine event");
        return;
    }
    conn *c = x->c;
    int index = (int)(ch - x->ch);
    bool has_token = ev->token >= 0, lp = has_token && x->req.logprobs;
    if (has_token) observe_token(s, x, ch, ag_clock_mono_ns());
    ch->t_submit_ns = ev->t_submit_ns, ch->t_admit_ns = ev->t_admit_ns;
    ch->t_engine_first_ns = ev->t_first_token_ns, ch->t_end_ns = ev->t_event_ns;
    bool kept = x->cache_store || x->idem; /* its answer is stored: for the cache, or for its key's retries */
    if (c || kept) { /* someone will read the text: the client, or the cache and any followers */
        if (!x->req.stream || kept) ag_buf_append(&ch->text, ev->text, ev->text_len);
        if (lp && x->req.stream) ag_api_logprobs_reset(&ch->lp);
        if (lp) ag_api_logprobs_add(&ch->lp, x->req.kind, s->model.engine, ev);
    }
    if (c && x->req.stream && ch->tp)
        stream_tools(c, x, index, ch, ev->text ? ev->text : "", ev->text_len, ev->finish != AG_FINISH_NONE);
    else if (c && x->req.stream && (ev->text_len || lp))
        stream_chunk(c, x, index, false, ev->text ? ev->text : "", ev->text_len, NULL, lp ? &ch->lp : NULL);
    if (!ev->finish) return;
    ch->open = false;
    ch->finish = ev->finish;
    ch->prompt_tokens = ev->prompt_tokens, ch->completion_tokens = ev->completion_tokens;
    ch->cached_tokens = ev->cached_tokens;
    ag_map_del(&s->inflight, (const char *)&ch->id, sizeof ch->id);
    observe_finish(s, ch, ev);
    if (c && x->req.stream) {
        if (ev->finish == AG_FINISH_ERROR || ev->finish == AG_FINISH_TIMEOUT) stream_error(c, x, index, ev->finish);
        else stream_chunk(c, x, index, false, "", 0, finish_reason(x, ev->finish, ch->tp ? ch->tp->n_calls : 0), NULL);
    }
    if (--x->n_open == 0) {
        exchange_complete(x);
    }
}

void ag_exchange_poll_engine(server *s) {
    ag_event evs[64];
    size_t n;
    do {
        n = ag_engine_poll(s->engine, evs, 64, 0);
        for (size_t i = 0; i < n; i++) {
            on_event(s, &evs[i]);
            ag_event_clear(&evs[i]);
        }
    } while (n == 64);
}

/* ---- starting ----------------------------------------------------------------------------- */

/*
 * Deadline propagation: a client that will give up after T ms sends X-Request-Timeout-Ms: T, and the
 * engine stops the generation (and frees its KV blocks) T ms after the request's first byte, queued or
 * running, instead of finishing an answer nobody will read.  Relative, so client and server clocks need
 * not agree.
 */
#define AG_REQUEST_TIMEOUT_MS_MAX 86400000ull /* a day */
static ag_status read_deadline(exchange *x, const ag_http_request *req, ag_api_error *err) {
    ag_str v = ag_http_header_get(req, "x-request-timeout-ms");
    uint64_t ms;
    if (!v.p) return AG_OK;
    if (ag_str_parse_u64(v, &ms) != AG_OK || ms == 0 || ms > AG_REQUEST_TIMEOUT_MS_MAX)
        return ag_api_fail(err, 400, "invalid_request_error", NULL, "invalid_request_timeout",
                           "X-Request-Timeout-Ms must be a whole number of milliseconds from 1 to %llu, not '%.*s'",
                           AG_REQUEST_TIMEOUT_MS_MAX, (int)(v.n > 40 ? 40 : v.n), v.p);
    x->deadline_ns = x->t_start_ns + ms * 1000000ull;
    return AG_OK;
}

void ag_exchange_start(conn *c, ag_api_kind kind, const char *body, size_t len) {
    server *s = c->s;
    exchange *x = ag_xcalloc(1, sizeof *x);
    x->s = s;
    x->state = X_PARSED;
    x->t_start_ns = c->obs.t_start_ns;
    ag_arena_init(&x->arena, 16384);
    s->n_exchanges++;
    ag_exchange_attach(x, c);
    ag_api_error err;
    if (ag_api_request_parse(&s->model, kind, body, len, &x->arena, &x->req, &err) != AG_OK) {
        ag_exchange_detach(x);
        ag_conn_respond_error(c, &err);
        ag_exchange_free(x);
        return;
    }
    if (read_deadline(x, &c->req, &err) != AG_OK) {
        ag_exchange_detach(x);
        ag_conn_respond_error(c, &err);
        ag_exchange_free(x);
        return;
    }
    if (c->kind == CONN_JOB) /* a batch's request yields to every other, and is answered whole */
        x->req.priority = AG_BATCH_PRIORITY, x->req.stream = false;
    x->n_ch = (int)(x->req.n_prompts * (size_t)x->req.n);
    ag_api_meta_init(&x->meta, kind, s->model.name, ++s->n_requests);
    x->kv_salt = kv_salt(x, &c->req); /* now: the head's bytes may move while the exchange waits */
    size_t head = x->req.n_prompt[0] < AG_PREFIX_KEY_TOKENS ? (size_t)x->req.n_prompt[0] : AG_PREFIX_KEY_TOKENS;
    snprintf(x->prefix_hdr, sizeof x->prefix_hdr, "X-Prefix-Key: %016llx\r\n",
             (unsigned long long)ag_hash_bytes(x->req.prompts[0], head * sizeof(int32_t), x->kv_salt));
    if (ag_idem_begin(x, body, len)) return; /* answered or waiting by its Idempotency-Key */
    if ((s->cache || s->l2) && ag_respcache_lookup(x)) return; /* answered from the cache */
    ag_respcache_miss(x);
}

/* ---- observability: metrics, the access log, spans ------------------------------------ */

static const char *choice_finish(const choice *ch) {
    return ch->open ? "abort" : ch->finish == AG_FINISH_TIMEOUT || ch->finish == AG_FINISH_ERROR ? ag_finish_name(ch->finish)
                                                                                                : ag_api_finish_reason(ch->finish);
}

/* The server span with the OpenTelemetry GenAI attributes, and its queue, prefill and decode children. */
static void export_spans(server *s, const req_obs *q, const exchange *x, int status, uint64_t end_ns) {
    const int64_t off = s->wall_minus_mono;
    char name[160];
    snprintf(name, sizeof name, "%s %s", q->method, ag_route_labels[q->route]);
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
    ag_span_open(&w, &q->trace, q->trace.span_id, q->trace.parent_id, name, AG_SPAN_SERVER,
                 (uint64_t)((int64_t)q->t_start_ns + off), (uint64_t)((int64_t)end_ns + off));
    ag_span_attr_str(&w, "http.request.method", q->method);
    ag_span_attr_str(&w, "http.route", ag_route_labels[q->route]);
    ag_span_attr_str(&w, "url.path", q->path);
    ag_span_attr_str(&w, "url.scheme", "http");
    ag_span_attr_int(&w, "http.response.status_code", status);
    if (x) {
        ag_api_usage u = ag_exchange_usage(x);
        ag_span_attr_str(&w, "gen_ai.operation.name", x->req.kind == AG_API_CHAT ? "chat" : "text_completion");
        ag_span_attr_str(&w, "gen_ai.provider.name", "autoglm");
        ag_span_attr_str(&w, "gen_ai.request.model", s->model.name);
        ag_span_attr_str(&w, "gen_ai.response.id", x->meta.id);
        ag_span_attr_int(&w, "gen_ai.request.max_tokens", x->req.max_tokens);
        ag_span_attr_double(&w, "gen_ai.request.temperature", x->req.sampling.temperature);
        ag_span_attr_int(&w, "gen_ai.usage.input_tokens", u.prompt_tokens);
        ag_span_attr_int(&w, "gen_ai.usage.output_tokens", u.completion_tokens);
        const char *reasons[AG_API_MAX_CHOICES];
        for (int i = 0; i < x->n_ch; i++) reasons[i] = choice_finish(&x->ch[i]);
        ag_span_attr_str_array(&w, "gen_ai.response.finish_reasons", reasons, (size_t)x->n_ch);
    }
    ag_span_close(&w, status >= 500 || status == 499);
    ag_span_submit(s->otlp, &b);
    if (!x || !x->n_ch || !x->ch[0].t_submit_ns) return;
    /* children from the first choice's engine timings: submit -> admitted -> first token -> end */
    const choice *c0 = &x->ch[0];
    const uint64_t marks[4] = {c0->t_submit_ns, c0->t_admit_ns, c0->t_engine_first_ns, c0->t_end_ns};
    static const char *const names[3] = {"queue", "prefill", "decode"};
    for (int k = 0; k < 3; k++) {
        if (!marks[k] || !marks[k + 1]) break;
        char id[17];
        ag_trace_new_span_id(id);
        ag_buf_init(&b);
        ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
        ag_span_open(&w, &q->trace, id, q->trace.span_id, names[k], AG_SPAN_INTERNAL,
                     (uint64_t)((int64_t)marks[k] + off), (uint64_t)((int64_t)marks[k + 1] + off));
        ag_span_close(&w, false);
        ag_span_submit(s->otlp, &b);
    }
}

/* The request in the dashboard's numbers: a generation route's with its latencies, tokens and cache verdict. */
static void record_stats(server *s, const req_obs *q, const exchange *x, const ag_api_usage *u, int status,
                         uint64_t now) {
    if (q->route != R_CHAT && q->route != R_COMPLETIONS) return ag_stats_request(s->stats, now, status, NULL);
    ag_stats_gen g = {.e2e_ns = now - q->t_start_ns, .cache_hit = -1};
    if (q->cache && strncmp(q->cache, "hit", 3) == 0) g.cache_hit = 1;
    else if (q->cache && (strcmp(q->cache, "miss") == 0 || strcmp(q->cache, "coalesced") == 0)) g.cache_hit = 0;
    if (x) {
        const choice *ch = &x->ch[0];
        g.prompt_tokens = (uint64_t)u->prompt_tokens, g.cached_tokens = (uint64_t)u->cached_tokens;
        if (x->t_first_ns) g.ttft_ns = x->t_first_ns - x->t_start_ns;
        if (ch->completion_tokens > 1) g.tpot_ns = (ch->t_last_ns - ch->t_first_ns) / (uint64_t)(ch->completion_tokens - 1);
    }
    ag_stats_request(s->stats, now, status, &g);
}

void ag_exchange_on_request_end(conn *c, int status) {
    const req_obs *q = &c->obs;
    server *s = c->s;
    const exchange *x = c->x && c->x->ch ? c->x : NULL; /* one that never generated has no choices */
    uint64_t now = ag_clock_mono_ns();
    ag_metrics_http_request(&s->metrics, c->kind == CONN_STREAM ? AG_METRIC_H2 : AG_METRIC_HTTP1, (size_t)q->route,
                            status);
    if (x) ag_histogram_observe(&s->metrics.e2e, now - q->t_start_ns);
    ag_api_usage u = x ? ag_exchange_usage(x) : (ag_api_usage){0};
    record_stats(s, q, x, &u, status, now);
    if (ag_log_enabled(AG_LOG_INFO)) {
        ag_log_field f[] = {
            AG_LOG_FIELD_STR("trace_id", q->trace.trace_id),
            AG_LOG_FIELD_STR("span_id", q->trace.span_id),
            AG_LOG_FIELD_STR("method", q->method),
            AG_LOG_FIELD_STR("route", q->path),
            AG_LOG_FIELD_STR("protocol", c->kind == CONN_STREAM ? "h2" : "http/1.1"),
            AG_LOG_FIELD_INT("status", status),
            AG_LOG_FIELD_DOUBLE("latency_ms", (double)(now - q->t_start_ns) / 1e6),
            AG_LOG_FIELD_DOUBLE("ttft_ms", x && x->t_first_ns ? (double)(x->t_first_ns - q->t_start_ns) / 1e6 : 0),
            AG_LOG_FIELD_INT("prompt_tokens", u.prompt_tokens),
            AG_LOG_FIELD_INT("completion_tokens", u.completion_tokens),
            AG_LOG_FIELD_STR("finish_reason", x ? choice_finish(&x->ch[0]) : ""),
            AG_LOG_FIELD_STR("cache", q->cache ? q->cache : "none"),
        };
        ag_log_fields(AG_LOG_INFO, "request", f, sizeof f / sizeof f[0]);
    }
    if (s->otlp && q->trace.sampled) export_spans(s, q, x, status, now);
}
