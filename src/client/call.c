/*
 * call.c - one call's lifecycle (the states in client_int.h).  Each attempt
 * takes a connection, sends the request with the time left
 * (X-Request-Timeout-Ms) and the call's Idempotency-Key, and reads the
 * answer: whole, or as server-sent events whose text deltas go to the
 * caller as they arrive.  Its outcome goes through the decision table
 * (policy.c), which ends the call or picks the wait before the next attempt.
 */
#define _GNU_SOURCE /* getrandom, pthread types for uv.h */
#include "client/client_int.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void attempt_begin(agc_call *call);
static void attempt_end(agc_call *call, ag_client_outcome kind, const char *detail);
static void on_hedge(uv_timer_t *t);

/* ---- creating and ending -------------------------------------------------------------------- */

agc_call *agc_call_new(const ag_client *cl, const ag_client_request *req, ag_client_done_fn done, void *done_ud) {
    agc_call *call = ag_xcalloc(1, sizeof *call);
    call->cl = (ag_client *)cl;
    size_t pl = strlen(cl->path_prefix), rl = strlen(req->path);
    call->path = ag_xmalloc(pl + rl + 1);
    memcpy(call->path, cl->path_prefix, pl), memcpy(call->path + pl, req->path, rl + 1);
    ag_buf z;
    ag_buf_init(&z);
    if (cl->o.compress && req->body_len >= cl->o.compress_min_bytes &&
        ag_http_encode(AG_CODING_GZIP, req->body, req->body_len, &z) == AG_OK && z.len < req->body_len) {
        call->body = ag_buf_detach(&z, &call->body_len); /* coded once: each attempt sends the same bytes */
        call->body_gzip = true;
    } else {
        call->body = ag_xstrndup(req->body, req->body_len), call->body_len = req->body_len;
    }
    ag_buf_deinit(&z);
    call->on_delta = req->on_delta, call->on_attempt = req->on_attempt, call->ud = req->ud;
    call->done = done, call->done_ud = done_ud;
    call->total_ms = cl->o.total_timeout_ms;
    unsigned char r[16] = {0}; /* a version 4 UUID */
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)call;
        for (int i = 0; i < 16; i++) r[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)(i * 37);
    }
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40), r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    char *k = call->idempotency_key;
    for (int i = 0; i < 16; i++) k += sprintf(k, "%s%02x", i == 4 || i == 6 || i == 8 || i == 10 ? "-" : "", r[i]);
    ag_buf_init(&call->text);
    ag_buf_init(&call->plain);
    ag_buf_init(&call->h2body);
    return call;
}

/* The result goes to its owner; then the call is freed. */
static void deliver(agc_call *call) {
    ag_client_result *res = &call->res;
    if (call->text.len || res->outcome == AG_CLIENT_OK) {
        ag_buf_append_char(&call->text, '\0');
        size_t n;
        res->text = ag_buf_detach(&call->text, &n);
        res->text_len = n ? n - 1 : 0;
    }
    ag_buf_deinit(&call->text);
    ag_buf_deinit(&call->plain);
    ag_buf_deinit(&call->h2body);
    ag_http_decoder_free(call->dec);
    call->done(res, call->done_ud);
    ag_client_result_free(res);
    free(call->path), free(call->body);
    free(call);
}

void agc_call_free_queued(agc_call *call) {
    call->res.outcome = AG_CLIENT_CLOSED;
    snprintf(call->res.error, sizeof call->res.error, "the client was closed before the call started");
    deliver(call);
}

static void on_timer_closed(uv_handle_t *h) {
    agc_call *call = h->data;
    ag_client *cl = call->cl;
    if (--call->open_timers == 0) deliver(call);
    agc_client_handle_closed(cl);
}

/* DONE: out of the active list, its timers closed, then delivered.  A twin still running is cancelled unless the
 * primary failed in a way the twin may yet mend (then the primary waits for it). */
static void finish(agc_call *call) {
    ag_client *cl = call->cl;
    call->state = CALL_DONE;
    if (call->prev_a) call->prev_a->next_a = call->next_a;
    else cl->active = call->next_a;
    if (call->next_a) call->next_a->prev_a = call->prev_a;
    uv_close((uv_handle_t *)&call->timer, on_timer_closed);
    uv_close((uv_handle_t *)&call->deadline, on_timer_closed);
    uv_close((uv_handle_t *)&call->hedge, on_timer_closed);
    ag_client_outcome o = call->res.outcome;
    bool over = o == AG_CLIENT_OK || o == AG_CLIENT_CLOSED || o == AG_CLIENT_CANCELLED || o == AG_CLIENT_DEADLINE;
    if (call->twin && call->twin->state != CALL_DONE && !call->yielded && over) agc_call_abort(call->twin, AG_CLIENT_CANCELLED);
}

static void drop_from_waiting(agc_call *call) {
    for (agc_call **p = &call->cl->waiting; *p; p = &(*p)->next)
        if (*p == call) {
            *p = call->next;
            break;
        }
}

/* The attempt under way lost to the other copy of the call: on_attempt hears of it as cancelled. */
static void report_lost(agc_call *call) {
    if (!call->on_attempt || call->state == CALL_WAITING || call->state == CALL_BACKOFF || call->state == CALL_DONE) return;
    ag_client_attempt a = {.number = call->res.attempts, .outcome = AG_CLIENT_CANCELLED,
                           .seconds = (double)(uv_now(call->cl->loop) - call->t_attempt) / 1e3,
                           .rule = "hedging: the other copy answered first", .hedge = call->primary != NULL};
    call->on_attempt(&a, call->ud);
}

/* A primary whose twin won: its attempt stops where it is and it ends (DONE); the twin's result will be its. */
static void yield(agc_call *call) {
    report_lost(call);
    if (call->state == CALL_WAITING) drop_from_waiting(call);
    uv_timer_stop(&call->timer);
    agc_conn *c = call->conn;
    call->conn = NULL;
    if (c) agc_conn_done(c, call, false);
    call->yielded = true;
    finish(call);
}

void agc_call_abort(agc_call *call, ag_client_outcome why) {
    if (call->state == CALL_WAITING) drop_from_waiting(call);
    uv_timer_stop(&call->timer);
    agc_conn *c = call->conn;
    call->conn = NULL;
    if (c) agc_conn_done(c, call, false);
    call->res.outcome = why;
    snprintf(call->res.error, sizeof call->res.error, "%s",
             why == AG_CLIENT_CANCELLED ? "cancelled" : "the client was closed during the call");
    finish(call);
}

/* ---- attempts ----------------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t) {
    agc_call *call = t->data;
    char why[96];
    switch (call->state) {
    case CALL_CONNECTING:
        snprintf(why, sizeof why, "no connection within %u ms (connect timeout)", call->cl->o.connect_timeout_ms);
        attempt_end(call, AG_CLIENT_TIMEOUT, why);
        break;
    case CALL_SENT:
        snprintf(why, sizeof why, "no answer within %u ms (first byte timeout)", call->cl->o.first_byte_timeout_ms);
        attempt_end(call, AG_CLIENT_TIMEOUT, why);
        break;
    case CALL_BACKOFF: attempt_begin(call); break;
    default: break;
    }
}

static void on_deadline(uv_timer_t *t) {
    agc_call *call = t->data;
    char why[96];
    snprintf(why, sizeof why, "the total timeout (%u ms) passed", call->total_ms);
    if (call->state == CALL_WAITING || call->state == CALL_BACKOFF) {
        if (call->state == CALL_WAITING) drop_from_waiting(call);
        uv_timer_stop(&call->timer);
        call->res.outcome = AG_CLIENT_DEADLINE;
        snprintf(call->res.error, sizeof call->res.error, "%s after %d attempts", why, call->res.attempts);
        finish(call);
    } else if (call->state != CALL_DONE) {
        attempt_end(call, AG_CLIENT_DEADLINE, why);
    }
}

/* ---- hedging -------------------------------------------------------------------------------------- */

/* The twin ended: its result becomes the primary's when the primary yielded to it, or when it succeeded where the
 * primary failed; the primary is delivered once its own timers have closed too. */
static void twin_done(ag_client_result *res, void *ud) {
    agc_call *p = ud;
    ag_client_result *pr = &p->res;
    p->twin = NULL;
    pr->attempts += res->attempts;
    bool take = p->yielded || (res->outcome == AG_CLIENT_OK && pr->outcome != AG_CLIENT_OK);
    if (take) {
        if (p->state != CALL_DONE) yield(p);
        pr->outcome = res->outcome, pr->status = res->status, pr->streamed_bytes = res->streamed_bytes;
        memcpy(pr->error, res->error, sizeof pr->error);
        free(pr->body);
        pr->body = res->body, pr->body_len = res->body_len, res->body = NULL;
        p->text.len = 0;
        if (res->text) ag_buf_append(&p->text, res->text, res->text_len);
        pr->hedge_won = true;
    }
    if (--p->open_timers == 0) deliver(p);
}

/* The hedge delay passed without a 2xx answer: a copy goes out, when the budget has a token for it. */
static void on_hedge(uv_timer_t *t) {
    agc_call *p = t->data;
    ag_client *cl = p->cl;
    if (p->state == CALL_DONE || p->won || p->twin || !agc_budget_spend(&cl->budget)) return;
    agc_call *w = ag_xcalloc(1, sizeof *w);
    w->cl = cl;
    w->path = ag_xstrdup(p->path);
    w->body = ag_xstrndup(p->body, p->body_len), w->body_len = p->body_len, w->body_gzip = p->body_gzip;
    w->on_delta = p->on_delta, w->on_attempt = p->on_attempt, w->ud = p->ud;
    w->done = twin_done, w->done_ud = p;
    memcpy(w->idempotency_key, p->idempotency_key, sizeof w->idempotency_key); /* one call: one generation */
    w->stream = p->stream;
    uint64_t now = uv_now(cl->loop), end = p->t_start + p->total_ms;
    w->total_ms = end > now ? (uint32_t)(end - now) : 1;
    w->primary = p;
    ag_buf_init(&w->text);
    ag_buf_init(&w->plain);
    ag_buf_init(&w->h2body);
    p->twin = w;
    p->open_timers++; /* released by twin_done */
    p->res.hedged = true;
    agc_call_start(cl, w);
}

/* A 2xx head: this copy of the call wins; the other stops. */
static void won(agc_call *call) {
    ag_client *cl = call->cl;
    call->won = true;
    agc_latency_add(&cl->latency, uv_now(cl->loop) - call->t_attempt);
    uv_timer_stop(&call->hedge);
    if (call->twin && call->twin->state != CALL_DONE) report_lost(call->twin), agc_call_abort(call->twin, AG_CLIENT_CANCELLED);
    if (call->primary && call->primary->state != CALL_DONE) yield(call->primary);
}

void agc_call_start(ag_client *cl, agc_call *call) {
    if (call->t_start) { /* a retry that waited for a connection */
        attempt_begin(call);
        return;
    }
    call->t_start = uv_now(cl->loop);
    uv_timer_init(cl->loop, &call->timer);
    uv_timer_init(cl->loop, &call->deadline);
    uv_timer_init(cl->loop, &call->hedge);
    call->timer.data = call->deadline.data = call->hedge.data = call;
    call->open_timers = 3;
    cl->handles += 3;
    call->next_a = cl->active;
    if (cl->active) cl->active->prev_a = call;
    cl->active = call;
    if (!call->primary) agc_budget_earn(&cl->budget, &cl->o.retry); /* a copy is not a call of its own */
    uv_timer_start(&call->deadline, on_deadline, call->total_ms, 0);
    if (cl->o.hedge && !call->primary) uv_timer_start(&call->hedge, on_hedge, agc_hedge_delay_ms(&cl->latency, &cl->o), 0);
    attempt_begin(call);
}

static void attempt_begin(agc_call *call) {
    ag_client *cl = call->cl;
    if (!agc_conn_room(cl)) { /* wait, in order, for a connection */
        call->state = CALL_WAITING;
        call->next = NULL;
        agc_call **p = &cl->waiting;
        while (*p) p = &(*p)->next;
        *p = call;
        return;
    }
    call->t_attempt = uv_now(cl->loop);
    call->res.attempts++;
    agc_conn *c = agc_conn_get(cl, call);
    if (!c) {
        attempt_end(call, AG_CLIENT_CONNECT_ERROR, "cannot open a socket");
        return;
    }
    call->conn = c;
    call->reused = c->uses > 0;
    if (c->state == CC_BUSY || c->state == CC_MUX) { /* from the pool, or an open HTTP/2 connection */
        agc_call_conn_ready(call);
        return;
    }
    call->state = CALL_CONNECTING;
    uv_timer_start(&call->timer, on_timer, cl->o.connect_timeout_ms, 0);
}

/* An attempt's answer starts from nothing. */
static void attempt_reset(agc_call *call) {
    ag_http_response_reset(&call->resp);
    call->sse = call->got_byte = false;
    call->scanned = 0;
    call->text.len = 0;
    ag_http_decoder_free(call->dec);
    call->dec = NULL, call->coding = NULL, call->plain.len = 0, call->fed = 0;
    call->res.streamed_bytes = 0;
    call->retry_after[0] = call->retry_after_ms[0] = 0;
    call->h2_status = 0, call->h2_sse = call->h2_head = false, call->h2_coding = AG_CODING_IDENTITY;
    call->h2body.len = 0;
}

void agc_call_conn_ready(agc_call *call) {
    ag_client *cl = call->cl;
    agc_conn *c = call->conn;
    uint64_t now = uv_now(cl->loop), end = call->t_start + call->total_ms;
    attempt_reset(call);
    if (c->h2) {
        call->state = CALL_SENT;
        uv_timer_start(&call->timer, on_timer, cl->o.first_byte_timeout_ms, 0);
        if (!agc_h2_submit(c, call, end > now ? end - now : 1)) attempt_end(call, AG_CLIENT_PROTOCOL, "cannot make the HTTP/2 request");
        return;
    }
    ag_buf h;
    ag_buf_init(&h);
    ag_buf_appendf(&h,
                   "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: libautoglm/" AG_VERSION "\r\nAccept: %s\r\n%s"
                   "Content-Type: application/json\r\n%sContent-Length: %zu\r\n%s%s%sIdempotency-Key: %s\r\n"
                   "X-Request-Timeout-Ms: %llu\r\n\r\n",
                   call->path, cl->authority, call->stream ? "text/event-stream" : "application/json",
                   cl->o.compress ? "Accept-Encoding: zstd, gzip\r\n" : "",
                   call->body_gzip ? "Content-Encoding: gzip\r\n" : "", call->body_len,
                   cl->bearer ? "Authorization: " : "", cl->bearer ? cl->bearer : "", cl->bearer ? "\r\n" : "",
                   call->idempotency_key,
                   (unsigned long long)(end > now ? end - now : 1));
    bool ok = h.err == AG_OK && agc_conn_send(c, h.data, h.len) && agc_conn_send(c, call->body, call->body_len);
    ag_buf_deinit(&h);
    call->state = CALL_SENT;
    uv_timer_start(&call->timer, on_timer, cl->o.first_byte_timeout_ms, 0);
    if (!ok) {
        attempt_end(call, AG_CLIENT_PROTOCOL, "cannot encode the request");
        return;
    }
    agc_conn_flush(c);
}

/* ---- the answer ---------------------------------------------------------------------------------- */

/* error.message of an OpenAI error body, when it is one. */
static bool error_message(const char *p, size_t n, char *out, size_t cap) {
    ag_arena a;
    ag_arena_init(&a, 4096);
    ag_json_val *root;
    bool found = false;
    if (ag_json_parse(p, n, NULL, &a, &root, NULL) == AG_OK) {
        ag_str m = ag_json_str(ag_json_obj_getc(ag_json_obj_getc(root, "error"), "message"));
        if (m.p) snprintf(out, cap, "%.*s", (int)m.n, m.p), found = true;
    }
    ag_arena_deinit(&a);
    return found;
}

/* Choice 0's text in a whole answer or a stream chunk: completions' text, chat's message.content or delta.content. */
static ag_str choice_text(const ag_json_val *root) {
    const ag_json_val *ch = ag_json_arr_at(ag_json_obj_getc(root, "choices"), 0);
    ag_str t = ag_json_str(ag_json_obj_getc(ch, "text"));
    if (!t.p) t = ag_json_str(ag_json_obj_getc(ag_json_obj_getc(ch, "message"), "content"));
    if (!t.p) t = ag_json_str(ag_json_obj_getc(ag_json_obj_getc(ch, "delta"), "content"));
    return t;
}

/* The events of a stream found so far in body[0..n): deltas to the caller; false on an error event. */
static bool scan_events(agc_call *call, const char *body, size_t n) {
    ag_str d;
    while (ag_sse_next(body, n, &call->scanned, &d)) {
        if (!d.p) continue;
        ag_arena *a = &call->cl->arena; /* per event, so reused: one I/O thread parses at a time */
        ag_arena_reset(a);
        ag_json_val *root;
        bool ok = true;
        if (ag_json_parse(d.p, d.n, NULL, a, &root, NULL) == AG_OK) {
            const ag_json_val *e = ag_json_obj_getc(root, "error");
            ag_str m = ag_json_str(ag_json_obj_getc(e, "message"));
            if (e) {
                ok = false;
                if (m.p) snprintf(call->res.error, sizeof call->res.error, "%.*s", (int)m.n, m.p);
                else snprintf(call->res.error, sizeof call->res.error, "the stream ended with an error event");
            } else {
                ag_str t = choice_text(root);
                if (t.n) {
                    ag_buf_append(&call->text, t.p, t.n);
                    if (call->on_delta) call->on_delta(t.p, t.n, call->ud);
                }
            }
        }
        if (!ok) return false;
    }
    return true;
}

static void keep_header(ag_str v, char *out, size_t cap) {
    if (v.p && v.n < cap) memcpy(out, v.p, v.n), out[v.n] = 0;
}

/* A whole answer: its text (2xx) or its error message; the body is kept in the result. */
static void answer_done(agc_call *call, const char *body, size_t n) {
    ag_client_result *res = &call->res;
    free(res->body);
    res->body = ag_xstrndup(body, n), res->body_len = n;
    if (call->res.status / 100 != 2) {
        if (!error_message(body, n, res->error, sizeof res->error))
            snprintf(res->error, sizeof res->error, "HTTP %d", call->res.status);
        attempt_end(call, AG_CLIENT_HTTP_STATUS, res->error);
        return;
    }
    if (!call->sse) {
        ag_arena a;
        ag_arena_init(&a, 4096);
        ag_json_val *root;
        if (ag_json_parse(body, n, NULL, &a, &root, NULL) == AG_OK) {
            ag_str t = choice_text(root);
            ag_buf_append(&call->text, t.p ? t.p : "", t.n);
        }
        ag_arena_deinit(&a);
    }
    attempt_end(call, AG_CLIENT_OK, NULL);
}

/* The answer's body so far, raw[0..n) in its Content-Encoding: decoded, its events to the caller, and, once it is
 * whole, its end. */
static void take_body(agc_call *call, const char *raw, size_t n, bool whole) {
    const char *body = raw;
    if (call->dec) {
        ag_http_error err;
        ag_status st = AG_OK;
        if (n > call->fed)
            st = ag_http_decoder_push(call->dec, raw + call->fed, n - call->fed, call->cl->o.max_response_bytes,
                                      &call->plain, &err);
        call->fed = n;
        if (st == AG_OK && whole) st = ag_http_decoder_end(call->dec, &err);
        if (st != AG_OK) {
            char why[128];
            snprintf(why, sizeof why, "the answer's %s body: %s", call->coding, err.reason);
            attempt_end(call, call->res.streamed_bytes ? AG_CLIENT_STREAM_BROKEN : AG_CLIENT_PROTOCOL, why);
            return;
        }
        body = call->plain.data ? call->plain.data : "", n = call->plain.len;
    }
    if (call->sse) {
        call->res.streamed_bytes = n;
        if (!scan_events(call, body, n)) {
            attempt_end(call, AG_CLIENT_STREAM_BROKEN, call->res.error);
            return;
        }
    }
    if (whole) answer_done(call, body, n);
}

/* The answer's head: its status, whether it streams, a decoder for its coding; a 2xx wins the call for this copy
 * (hedging).  false: the attempt ended (a coding it cannot read). */
static bool take_head(agc_call *call, int status, bool sse, ag_http_coding cod) {
    call->res.status = status;
    call->sse = status / 100 == 2 && sse;
    if (cod != AG_CODING_IDENTITY) {
        if (cod == AG_CODING_UNKNOWN || !(call->dec = ag_http_decoder_new(cod))) {
            attempt_end(call, AG_CLIENT_PROTOCOL, "the answer's Content-Encoding is not gzip or zstd");
            return false;
        }
        call->coding = ag_http_coding_name(cod);
    }
    if (status / 100 == 2) won(call);
    return true;
}

void agc_call_conn_read(agc_call *call) {
    agc_conn *c = call->conn;
    if (call->state != CALL_SENT && call->state != CALL_READING) return;
    if (!call->got_byte) call->got_byte = true, call->state = CALL_READING, uv_timer_stop(&call->timer);
    bool had_head = call->resp.head_done;
    size_t off, n;
    ag_status st = ag_http_response_read(&call->resp, c->io.in.data, &c->io.in.len, 65536, &off, &n);
    if (st != AG_OK) {
        attempt_end(call, call->res.streamed_bytes ? AG_CLIENT_STREAM_BROKEN : AG_CLIENT_PROTOCOL,
                    "the answer is not HTTP/1.1 that can be read");
        return;
    }
    if (!call->resp.head_done) return;
    if (!had_head) {
        keep_header(call->resp.retry_after, call->retry_after, sizeof call->retry_after);
        keep_header(call->resp.retry_after_ms, call->retry_after_ms, sizeof call->retry_after_ms);
        ag_str ce = call->resp.content_encoding;
        if (!take_head(call, call->resp.status, ag_http_response_is_sse(&call->resp),
                       ce.p ? ag_http_coding_parse(ce) : AG_CODING_IDENTITY))
            return;
    }
    if (n > call->cl->o.max_response_bytes) {
        attempt_end(call, AG_CLIENT_PROTOCOL, "the answer is larger than max_response_bytes");
        return;
    }
    take_body(call, c->io.in.data + off, n, call->resp.done);
}

/* ---- the answer over HTTP/2 (h2.c) ------------------------------------------------------------- */

void agc_call_h2_head(agc_call *call) {
    if (call->state != CALL_SENT || call->h2_head) return;
    call->got_byte = call->h2_head = true, call->state = CALL_READING;
    uv_timer_stop(&call->timer);
    take_head(call, call->h2_status, call->h2_sse, call->h2_coding);
}

void agc_call_h2_data(agc_call *call, const uint8_t *p, size_t n) {
    if (call->state != CALL_READING) return;
    if (call->h2body.len + n > call->cl->o.max_response_bytes) {
        attempt_end(call, AG_CLIENT_PROTOCOL, "the answer is larger than max_response_bytes");
        return;
    }
    ag_buf_append(&call->h2body, p, n);
    take_body(call, call->h2body.data, call->h2body.len, false);
}

void agc_call_h2_closed(agc_call *call, const char *why, bool refused) {
    if (call->state != CALL_SENT && call->state != CALL_READING) return;
    if (!why && call->h2_head) {
        take_body(call, call->h2body.data ? call->h2body.data : "", call->h2body.len, true);
        return;
    }
    char d[200];
    if (refused) {
        snprintf(d, sizeof d, "the server refused the stream before starting it (REFUSED_STREAM)");
        attempt_end(call, AG_CLIENT_RESET, d);
    } else if (call->res.streamed_bytes) {
        snprintf(d, sizeof d, "the stream was reset after %zu bytes (%zu bytes of text delivered): %s",
                 call->res.streamed_bytes, call->text.len, why ? why : "ended early");
        attempt_end(call, AG_CLIENT_STREAM_BROKEN, d);
    } else {
        snprintf(d, sizeof d, "the stream ended before the answer: %s", why ? why : "no answer");
        attempt_end(call, AG_CLIENT_RESET, d);
    }
}

void agc_call_conn_lost(agc_call *call, const char *why) {
    agc_conn *c = call->conn;
    call->conn = NULL; /* the connection is closing */
    char d[200];
    switch (call->state) {
    case CALL_CONNECTING:
        snprintf(d, sizeof d, "cannot connect to %s: %s", call->cl->authority, why ? why : "closed during the TLS handshake");
        /* a certificate that failed verification will fail again: not a connect error to retry */
        attempt_end(call, why && strstr(why, "certificate verify failed") ? AG_CLIENT_CERTIFICATE : AG_CLIENT_CONNECT_ERROR, d);
        break;
    case CALL_SENT:
        snprintf(d, sizeof d, "the connection ended before the answer%s%s", why ? ": " : "", why ? why : "");
        attempt_end(call, AG_CLIENT_RESET, d);
        break;
    case CALL_READING:
        if (!why && call->resp.head_done && call->resp.to_eof && c) { /* a body delimited by the close */
            take_body(call, c->io.in.data + call->resp.head_len, c->io.in.len - call->resp.head_len, true);
            break;
        }
        if (call->res.streamed_bytes) {
            snprintf(d, sizeof d, "the stream broke after %zu bytes (%zu bytes of text delivered)%s%s",
                     call->res.streamed_bytes, call->text.len, why ? ": " : "", why ? why : "");
            attempt_end(call, AG_CLIENT_STREAM_BROKEN, d);
        } else {
            snprintf(d, sizeof d, "the connection ended in the middle of the answer%s%s", why ? ": " : "", why ? why : "");
            attempt_end(call, AG_CLIENT_RESET, d);
        }
        break;
    default: break;
    }
}

/* ---- the decision --------------------------------------------------------------------------------- */

static void attempt_end(agc_call *call, ag_client_outcome kind, const char *detail) {
    ag_client *cl = call->cl;
    uv_timer_stop(&call->timer);
    agc_conn *c = call->conn;
    call->conn = NULL;
    if (c) {
        bool whole = call->resp.head_done && call->resp.done && !call->resp.close_after;
        /* HTTP/2: a long wait is no sign of a dead connection (a whole answer comes when it is done); a PING is */
        if (c->h2 && c->state == CC_MUX && kind == AG_CLIENT_TIMEOUT && !c->ping_at) agc_h2_ping(c);
        agc_conn_done(c, call, (kind == AG_CLIENT_OK || kind == AG_CLIENT_HTTP_STATUS) && whole);
    }
    uint64_t now = uv_now(cl->loop), end = call->t_start + call->total_ms;
    ag_client_result *res = &call->res;
    res->outcome = kind;
    if (detail && detail != res->error) snprintf(res->error, sizeof res->error, "%s", detail);
    if (kind == AG_CLIENT_OK) res->error[0] = 0;
    agc_outcome o = {.kind = kind,
                     .status = kind == AG_CLIENT_HTTP_STATUS ? res->status : 0,
                     .retry_after = ag_str_from_cstr(call->retry_after),
                     .retry_after_ms = ag_str_from_cstr(call->retry_after_ms),
                     .retries_done = call->retries,
                     .retries_5xx_done = call->retries_5xx,
                     .remaining_s = end > now ? (double)(end - now) / 1e3 : 0,
                     .now_unix = (int64_t)time(NULL)};
    agc_decision d;
    if (kind == AG_CLIENT_RESET && call->reused && !call->resent) {
        /* a keep-alive connection the server had closed meanwhile: sent again at once on a new one, once */
        d = (agc_decision){.retry = true, .wait_s = 0, .rule = "reused connection closed unanswered: resend at once"};
        call->resent = true;
    } else if (call->primary) {
        d = (agc_decision){.retry = false, .rule = "hedged copy: one attempt"};
    } else {
        d = agc_decide(&cl->o.retry, &o, &cl->budget, agc_uniform(cl));
        if (d.retry) call->retries++, call->retries_5xx += kind == AG_CLIENT_HTTP_STATUS && res->status >= 500 && res->status != 503;
    }
    if (call->on_attempt) {
        ag_client_attempt a = {.number = res->attempts, .outcome = kind, .status = o.status,
                               .seconds = (double)(now - call->t_attempt) / 1e3, .retry = d.retry, .wait_s = d.wait_s,
                               .rule = d.rule, .detail = res->error[0] ? res->error : NULL,
                               .stop = d.why[0] ? d.why : NULL, .coding = call->coding,
                               .hedge = call->primary != NULL};
        call->on_attempt(&a, call->ud);
    }
    if (!d.retry) {
        size_t el = strlen(res->error);
        if (d.why[0] && kind != AG_CLIENT_OK && el + 4 < sizeof res->error) /* the cause, then why it ends here */
            snprintf(res->error + el, sizeof res->error - el, " (%.*s)", (int)(sizeof res->error - el - 4), d.why);
        finish(call);
        return;
    }
    call->state = CALL_BACKOFF;
    uv_timer_start(&call->timer, on_timer, (uint64_t)(d.wait_s * 1000 + 0.5), 0);
}

/* ---- the API ---------------------------------------------------------------------------------------- */

void ag_client_result_free(ag_client_result *r) {
    free(r->body), free(r->text);
    r->body = r->text = NULL;
    r->body_len = r->text_len = 0;
}

/* A request the client can send: a path, and a JSON object body; its "stream" read, and whether it names a model. */
static ag_status check_request(const ag_client_request *req, bool *stream, bool *model) {
    if (!req || !req->path || req->path[0] != '/' || !req->body) return AG_EINVAL;
    ag_arena a;
    ag_arena_init(&a, 4096);
    ag_json_val *root;
    ag_status st = ag_json_parse(req->body, req->body_len, NULL, &a, &root, NULL);
    if (st == AG_OK && !ag_json_is(root, AG_JSON_OBJECT)) st = AG_EINVAL;
    bool s = false;
    if (st == AG_OK) ag_json_get_bool(ag_json_obj_getc(root, "stream"), &s);
    *model = st == AG_OK && ag_json_obj_getc(root, "model");
    ag_arena_deinit(&a);
    *stream = s;
    return st == AG_OK ? AG_OK : AG_EINVAL;
}

ag_status ag_client_call_async(ag_client *c, const ag_client_request *req, ag_client_done_fn done, void *done_ud) {
    bool stream, model;
    if (!c || !done || c->freeing || check_request(req, &stream, &model) != AG_OK) return AG_EINVAL;
    agc_call *call;
    if (c->model_member && !model) { /* options.model, as the object's first member */
        const char *open = memchr(req->body, '{', req->body_len), *end = req->body + req->body_len, *rest = open + 1;
        while (rest < end && (*rest == ' ' || *rest == '\t' || *rest == '\r' || *rest == '\n')) rest++;
        ag_buf b;
        ag_buf_init(&b);
        ag_buf_append(&b, req->body, (size_t)(open - req->body) + 1);
        ag_buf_append(&b, c->model_member, strlen(c->model_member));
        if (rest < end && *rest != '}') ag_buf_append_char(&b, ',');
        ag_buf_append(&b, open + 1, (size_t)(end - open - 1));
        ag_client_request r = *req;
        r.body = b.data, r.body_len = b.len;
        call = agc_call_new(c, &r, done, done_ud);
        ag_buf_deinit(&b);
    } else {
        call = agc_call_new(c, req, done, done_ud);
    }
    call->stream = stream;
    agc_client_submit(c, call);
    return AG_OK;
}

void agc_sync_init(agc_sync *w, ag_client_result *out) {
    memset(out, 0, sizeof *out);
    w->done = false, w->out = out;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

void agc_sync_done(ag_client_result *r, void *ud) {
    agc_sync *w = ud;
    pthread_mutex_lock(&w->mu);
    *w->out = *r;
    r->body = r->text = NULL; /* moved to the caller's result */
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void agc_sync_wait(agc_sync *w) {
    pthread_mutex_lock(&w->mu);
    while (!w->done) pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

void agc_sync_deinit(agc_sync *w) {
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

ag_status ag_client_call(ag_client *c, const ag_client_request *req, ag_client_result *res) {
    if (!c || !res || !c->threaded || pthread_equal(pthread_self(), c->thread)) return AG_EINVAL; /* not from its callbacks */
    agc_sync w;
    agc_sync_init(&w, res);
    ag_status st = ag_client_call_async(c, req, agc_sync_done, &w);
    if (st == AG_OK) agc_sync_wait(&w);
    agc_sync_deinit(&w);
    return st;
}
