/*
 * batcher.c - ag_batcher: single-prompt completions from many callers sent
 * as one /v1/completions request whose "prompt" is an array (the seed's
 * BatchProcessor).  A batch goes when max_batch prompts wait, or when the
 * oldest has waited max_wait_ms; its answer's choices (index i for prompt
 * i) go back to their callers.  The request is one call of the client, so
 * the whole batch is retried, hedged and deadlined as one.
 *
 * Back-pressure: at most max_pending prompts are at the server at once (a
 * batch waits to be sent until it fits), so that batches do not overrun the
 * server's queue (autoglm's --max-queue, 256 by default, takes a request's
 * prompts all or none) and come back as 429s to be retried.
 *
 * Why a thread of its own: a batch must leave when its time is up even if no
 * caller comes, and callers are on any thread.  The batcher's thread waits
 * on a condition variable with the oldest prompt's deadline and hands each
 * batch to ag_client_call_async, so it needs a client with its own I/O
 * thread (not one on the caller's loop).  Results are delivered on the
 * client's I/O thread, as for any async call.
 */
#define _GNU_SOURCE /* pthread types for uv.h */
#include "client/client_int.h"

#include "base/alloc.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bt_item {
    char *prompt;
    size_t len;
    ag_client_done_fn done;
    void *ud;
    struct bt_item *next;
} bt_item;

typedef struct bt_batch {
    ag_batcher *b;
    bt_item *items;
    int n;
} bt_batch;

struct ag_batcher {
    ag_client *cl;
    ag_batcher_options o;
    ag_buf params; /* the request's members other than "prompt", written as JSON members ("model": ..., ...) */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    bt_item *head, **tail;
    int n;
    struct timespec first; /* when the oldest waiting prompt came (CLOCK_MONOTONIC) */
    int pending;           /* prompts sent whose batch has not answered */
    bool closing;
};

ag_batcher_options ag_batcher_options_default(void) {
    return (ag_batcher_options){.max_batch = 16, .max_wait_ms = 10, .max_pending = 256};
}

/* ---- a batch's answer ----------------------------------------------------------------------------- */

/* Choice i of the answer: the one whose "index" is i (choices[i] when the server keeps order). */
static const ag_json_val *choice_for(const ag_json_val *choices, int i) {
    const ag_json_val *c = ag_json_arr_at(choices, (size_t)i);
    int64_t idx;
    if (ag_json_get_int(ag_json_obj_getc(c, "index"), &idx) && idx == i) return c;
    for (size_t k = 0; k < ag_json_len(choices); k++) {
        c = ag_json_arr_at(choices, k);
        if (ag_json_get_int(ag_json_obj_getc(c, "index"), &idx) && idx == i) return c;
    }
    return NULL;
}

/* The batch's call ended: each caller gets its prompt's choice (its text; the choice's JSON as body), or the
 * batch's failure. */
static void batch_done(ag_client_result *res, void *ud) {
    bt_batch *bt = ud;
    bt_item *items = bt->items;
    ag_arena a;
    ag_arena_init(&a, 1 << 14);
    ag_json_val *root = NULL;
    const ag_json_val *choices = NULL;
    if (res->outcome == AG_CLIENT_OK && res->body && ag_json_parse(res->body, res->body_len, NULL, &a, &root, NULL) == AG_OK)
        choices = ag_json_obj_getc(root, "choices");
    int i = 0;
    for (bt_item *it = items, *next; it; it = next, i++) {
        next = it->next;
        ag_client_result r = {.outcome = res->outcome, .status = res->status, .attempts = res->attempts,
                              .hedged = res->hedged, .hedge_won = res->hedge_won};
        memcpy(r.error, res->error, sizeof r.error);
        if (res->outcome == AG_CLIENT_OK) {
            const ag_json_val *c = choice_for(choices, i);
            ag_str t = ag_json_str(ag_json_obj_getc(c, "text"));
            if (c && t.p) {
                r.text = ag_xstrndup(t.p, t.n), r.text_len = t.n;
                ag_buf b;
                ag_buf_init(&b);
                ag_jw w;
                ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
                ag_jw_value(&w, c);
                if (b.err == AG_OK) r.body = ag_buf_detach(&b, &r.body_len);
                ag_buf_deinit(&b);
            } else {
                r.outcome = AG_CLIENT_PROTOCOL;
                snprintf(r.error, sizeof r.error, "the batch's answer has no text for prompt %d", i);
            }
        }
        it->done(&r, it->ud);
        ag_client_result_free(&r);
        free(it->prompt);
        free(it);
    }
    ag_arena_deinit(&a);
    ag_batcher *b = bt->b;
    pthread_mutex_lock(&b->mu);
    b->pending -= bt->n;
    pthread_cond_broadcast(&b->cv); /* room for a batch; or ag_batcher_free waits for the last */
    pthread_mutex_unlock(&b->mu);
    free(bt);
}

/* ---- sending ---------------------------------------------------------------------------------------- */

/* One request for the batch's prompts, handed to the client. */
static void send_batch(ag_batcher *b, bt_batch *bt) {
    ag_buf body;
    ag_buf_init(&body);
    ag_buf_append_char(&body, '{');
    ag_buf_append(&body, b->params.data, b->params.len);
    ag_buf_append(&body, b->params.len ? ",\"prompt\":" : "\"prompt\":", b->params.len ? 10 : 9);
    ag_jw w;
    ag_jw_init(&w, &body, 0, AG_UTF8_REPLACE);
    ag_jw_arr_begin(&w);
    for (bt_item *it = bt->items; it; it = it->next) ag_jw_str(&w, it->prompt, it->len);
    ag_jw_arr_end(&w);
    ag_buf_append_char(&body, '}');
    ag_client_request req = {.path = "/v1/completions", .body = body.data, .body_len = body.len};
    if (body.err != AG_OK || ag_client_call_async(b->cl, &req, batch_done, bt) != AG_OK) {
        ag_client_result r = {.outcome = AG_CLIENT_PROTOCOL};
        snprintf(r.error, sizeof r.error, "the batch's request could not be made");
        batch_done(&r, bt);
    }
    ag_buf_deinit(&body);
}

static int64_t ms_until(const struct timespec *t0, uint32_t wait_ms) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t el = (int64_t)(now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
    return (int64_t)wait_ms - el;
}

/* The batcher's thread: a batch leaves when it is full, when its oldest prompt's wait is over, or at the end. */
static void *run(void *arg) {
    ag_batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (!b->n) {
            if (b->closing) break;
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        int k = b->n < b->o.max_batch ? b->n : b->o.max_batch;
        if (b->pending && b->pending + k > b->o.max_pending) { /* the server has enough of ours for now */
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        int64_t left = ms_until(&b->first, b->o.max_wait_ms);
        if (b->n < b->o.max_batch && left > 0 && !b->closing) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += left / 1000, until.tv_nsec += (left % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
            pthread_cond_timedwait(&b->cv, &b->mu, &until);
            continue;
        }
        /* take up to max_batch from the front; the rest (if any) start a new wait now */
        bt_batch *bt = ag_xcalloc(1, sizeof *bt);
        bt->b = b, bt->items = b->head, bt->n = k;
        bt_item **cut = &b->head;
        for (int i = 0; i < k; i++) cut = &(*cut)->next;
        b->head = *cut;
        *cut = NULL;
        b->n -= k;
        b->pending += k;
        if (!b->head) b->tail = &b->head;
        else clock_gettime(CLOCK_MONOTONIC, &b->first);
        pthread_mutex_unlock(&b->mu);
        send_batch(b, bt);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ---- the API ------------------------------------------------------------------------------------------- */

ag_status ag_batcher_new(ag_client *c, const char *params, const ag_batcher_options *o, ag_batcher **out, ag_err *err) {
    if (!c || !c->threaded) return ag_err_set(err, AG_EINVAL, "a batcher needs a client with its own I/O thread");
    if (!o || o->max_batch < 1 || o->max_batch > 256)
        return ag_err_set(err, AG_EINVAL, "max_batch must be 1 to 256 (autoglm answers up to 256 choices)");
    if (o->max_pending < 1) return ag_err_set(err, AG_EINVAL, "max_pending must be at least 1");
    ag_arena a;
    ag_arena_init(&a, 4096);
    ag_json_val *root;
    if (!params || ag_json_parse(params, strlen(params), NULL, &a, &root, NULL) != AG_OK || !ag_json_is(root, AG_JSON_OBJECT)) {
        ag_arena_deinit(&a);
        return ag_err_set(err, AG_EINVAL, "the batcher's parameters must be a JSON object");
    }
    bool stream = false;
    int64_t n = 1;
    ag_json_get_bool(ag_json_obj_getc(root, "stream"), &stream);
    ag_json_get_int(ag_json_obj_getc(root, "n"), &n);
    if (stream || n != 1 || ag_json_obj_getc(root, "prompt")) {
        ag_arena_deinit(&a);
        return ag_err_set(err, AG_EINVAL, "the batcher's parameters may not hold prompt, stream or n other than 1");
    }
    ag_batcher *b = ag_xcalloc(1, sizeof *b);
    b->cl = c, b->o = *o;
    ag_buf_init(&b->params);
    ag_jw w;
    ag_jw_init(&w, &b->params, 0, AG_UTF8_REPLACE);
    ag_jw_value(&w, root); /* {...}: kept without its braces, to be joined with the prompts */
    ag_arena_deinit(&a);
    memmove(b->params.data, b->params.data + 1, b->params.len - 2);
    b->params.len -= 2;
    b->tail = &b->head;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&b->thread, NULL, run, b) != 0) {
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        ag_buf_deinit(&b->params);
        free(b);
        return ag_err_set(err, AG_NOMEM, "cannot start the batcher's thread");
    }
    *out = b;
    return AG_OK;
}

ag_status ag_batcher_complete_async(ag_batcher *b, const char *prompt, size_t len, ag_client_done_fn done, void *ud) {
    if (!b || !prompt || !done) return AG_EINVAL;
    bt_item *it = ag_xcalloc(1, sizeof *it);
    it->prompt = ag_xstrndup(prompt, len), it->len = len;
    it->done = done, it->ud = ud;
    pthread_mutex_lock(&b->mu);
    if (b->closing) {
        pthread_mutex_unlock(&b->mu);
        free(it->prompt), free(it);
        return AG_EINVAL;
    }
    if (!b->n) clock_gettime(CLOCK_MONOTONIC, &b->first);
    *b->tail = it, b->tail = &it->next;
    if (++b->n == 1 || b->n >= b->o.max_batch) pthread_cond_signal(&b->cv); /* a new wait, or a full batch */
    pthread_mutex_unlock(&b->mu);
    return AG_OK;
}

ag_status ag_batcher_complete(ag_batcher *b, const char *prompt, size_t len, ag_client_result *res) {
    if (!b || !res || pthread_equal(pthread_self(), b->cl->thread)) return AG_EINVAL; /* not from its callbacks */
    agc_sync w;
    agc_sync_init(&w, res);
    ag_status st = ag_batcher_complete_async(b, prompt, len, agc_sync_done, &w);
    if (st == AG_OK) agc_sync_wait(&w);
    agc_sync_deinit(&w);
    return st;
}

void ag_batcher_free(ag_batcher *b) {
    if (!b || pthread_equal(pthread_self(), b->cl->thread)) return; /* would wait for its own thread */
    pthread_mutex_lock(&b->mu);
    b->closing = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL); /* it sends what waits first */
    pthread_mutex_lock(&b->mu);
    while (b->pending) pthread_cond_wait(&b->cv, &b->mu); /* their answers use the batcher */
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    ag_buf_deinit(&b->params);
    free(b);
}
