/*
 * sched.c - the engine thread: continuous batching over the paged KV cache
 * (see include/autoglm/engine.h for the API and the rules).
 *
 * A request is a list of known tokens (prompt, then what it generated) and
 * a count of positions whose keys and values are in the cache.  Each step
 * computes, for every running request, the positions it lacks, up to the
 * last known token, whose logits give the next token: one row for a
 * decoding request, a chunk of rows for one still in its prompt.  Decodes
 * go first, then prompt chunks, within max_batch_tokens rows.  So prefill
 * and decode are the same operation, and a preempted request (cache freed)
 * simply has many positions to recompute: batch-invariant kernels make the
 * recomputed cache bit-identical, so its output does not change.
 *
 * A waiting request is admitted only when the pool's free and cached blocks
 * hold its whole context so far (or nothing else runs), so an admission is
 * not undone by a preemption in the same breath.
 *
 * Priority with aging: a waiting request's effective priority is its
 * priority minus one per aging_ms it has waited (since submission, or since
 * preemption); the lowest effective value is admitted first, earliest
 * arrival among equals.  Preemption picks the running request with the
 * highest priority value, latest arrival among equals: when the pool runs
 * out, and, if it is a background request (AG_PRIORITY_BACKGROUND: a batch
 * job's), when no sequence slot is free for another that waits.
 */
#define _GNU_SOURCE
#include "autoglm/engine.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "grammar/grammar.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

typedef struct rq {
    uint64_t id, arrival;
    int priority;
    uint64_t t_submit, t_enqueue, t_admit, t_first, deadline; /* t_admit: first given a KV slot */
    int32_t *tokens; /* prompt then generated */
    int32_t n_prompt, n_tokens, max_tokens, n_gen, min_tokens;
    int32_t seq;        /* KV slot while running, else -1 */
    int32_t n_computed; /* positions in the cache */
    int32_t cached_tokens;
    bool published, cancel, ignore_eos, admitted_once;
    int32_t preemptions;
    uint64_t salt;
    ag_sampler *smp;
    ag_detok dt;
    ag_stop stop;
    char **stops;
    size_t n_stops;
    int32_t *end_tokens;
    size_t n_end_tokens;
    int32_t top_logprobs; /* -1: none asked */
    bool greedy;
    ag_grammar *grammar;    /* constrained decoding (a reference), or NULL */
    ag_grammar_matcher *gm; /* its position, made at the first sample (on the engine thread, which owns the vocabulary) */
    struct rq *next; /* the incoming list */
} rq;

struct ag_engine {
    ag_engine_params p;
    ag_model *m;
    pthread_t thread;
    bool started;
    /* shared with other threads, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    rq *incoming, *incoming_tail;
    uint64_t *cancels;
    size_t n_cancels, cap_cancels;
    int n_queued; /* incoming + waiting, for the admission limit */
    uint64_t incoming_prompt; /* prompt tokens of the incoming list (not yet in stats.queued_prompt_tokens) */
    uint64_t next_id;
    ag_engine_stats stats;
    /* the engine thread's own */
    rq **waiting, **running;
    int n_waiting, cap_waiting, n_running;
    int32_t *free_slots;
    int n_free_slots;
    ag_autotune tune;
    int b_decode_rows; /* of the batch built: the rest are prompt rows */
    double gen_avg;    /* output tokens of finished requests, moving average (0: none yet) */
    double *slots, *holds; /* scratch of the slot-wait estimate: max_seqs and AG_SLOT_WAITS */
    int32_t *b_tok, *b_pos, *b_seq;
    bool *b_logits;
    rq **b_owner;
    ag_buf piece, out; /* a token's text, reused every step */
    ag_event lp;       /* the log-probabilities of the token being posted */
    float *banned;     /* logits with the end tokens banned, for requests short of min_tokens (n_vocab) */
    float *masked;     /* logits with what a request's grammar refuses banned (n_vocab) */
    ag_grammar_vocab *gvocab; /* the vocabulary's trie for grammars, built at the first constrained request */
    /* events */
    pthread_mutex_t ev_mu;
    pthread_cond_t ev_cv;
    ag_event *events;
    size_t n_events, cap_events;
    int efd;
};

void ag_event_clear(ag_event *e) {
    free(e->text);
    memset(e, 0, sizeof *e);
}

const char *ag_finish_name(ag_finish f) {
    static const char *const names[] = {"", "stop", "length", "cancelled", "timeout", "error"};
    return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : "error";
}

/* ---- events ----------------------------------------------------------------- */

static void post(ag_engine *e, const rq *r, int32_t token, const char *text, size_t len, ag_finish finish) {
    ag_event ev = {.id = r->id,
                   .token = token,
                   .finish = finish,
                   .prompt_tokens = r->n_prompt,
                   .completion_tokens = r->n_gen,
                   .cached_tokens = r->cached_tokens,
                   .t_submit_ns = r->t_submit,
                   .t_admit_ns = r->t_admit,
                   .t_first_token_ns = r->t_first,
                   .t_event_ns = ag_clock_mono_ns(),
                   .preemptions = r->preemptions};
    if (token >= 0 && r->top_logprobs >= 0) {
        ev.logprob = e->lp.logprob, ev.n_top = e->lp.n_top;
        memcpy(ev.top_token, e->lp.top_token, sizeof ev.top_token);
        memcpy(ev.top_logprob, e->lp.top_logprob, sizeof ev.top_logprob);
    }
    if (len) {
        ev.text = ag_xmalloc(len + 1);
        memcpy(ev.text, text, len);
        ev.text[len] = '\0';
        ev.text_len = len;
    }
    pthread_mutex_lock(&e->ev_mu);
    if (e->n_events == e->cap_events) {
        e->cap_events = e->cap_events ? 2 * e->cap_events : 64;
        e->events = ag_xrealloc(e->events, e->cap_events * sizeof *e->events);
    }
    e->events[e->n_events++] = ev;
    if (e->n_events == 1) {
        uint64_t one = 1;
        if (write(e->efd, &one, sizeof one) < 0) { /* the counter cannot overflow at 1 */
        }
    }
    pthread_cond_broadcast(&e->ev_cv);
    pthread_mutex_unlock(&e->ev_mu);
}

size_t ag_engine_poll(ag_engine *e, ag_event *out, size_t max, int timeout_ms) {
    pthread_mutex_lock(&e->ev_mu);
    if (timeout_ms != 0 && e->n_events == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t end = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + (uint64_t)timeout_ms * 1000000ull;
        while (e->n_events == 0) {
            if (timeout_ms < 0) {
                pthread_cond_wait(&e->ev_cv, &e->ev_mu);
                continue;
            }
            ts.tv_sec = (time_t)(end / 1000000000ull), ts.tv_nsec = (long)(end % 1000000000ull);
            if (pthread_cond_timedwait(&e->ev_cv, &e->ev_mu, &ts) == ETIMEDOUT) break;
        }
    }
    size_t n = e->n_events < max ? e->n_events : max;
    if (n) {
        memcpy(out, e->events, n * sizeof *out);
        memmove(e->events, e->events + n, (e->n_events - n) * sizeof *e->events);
        e->n_events -= n;
    }
    if (n && e->n_events == 0) {
        uint64_t v;
        if (read(e->efd, &v, sizeof v) < 0) { /* already zero: nothing to reset */
        }
    }
    pthread_mutex_unlock(&e->ev_mu);
    return n;
}

int ag_engine_event_fd(const ag_engine *e) { return e->efd; }

/* ---- requests ---------------------------------------------------------------- */

static void rq_free(rq *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_stops; i++) free(r->stops[i]);
    free(r->stops);
    free(r->end_tokens);
    ag_stop_free(&r->stop);
    ag_sampler_free(r->smp);
    ag_grammar_matcher_free(r->gm);
    ag_grammar_release(r->grammar);
    free(r->tokens);
    free(r);
}

/* A checked copy of q, ready to queue. */
static ag_status rq_make(ag_engine *e, const ag_request *q, rq **out, ag_err *err) {
    const int32_t ctx = e->m->n_ctx, V = e->m->cfg.n_vocab;
    if (q->n_prompt < 1 || !q->prompt) return ag_err_set(err, AG_EINVAL, "the prompt is empty");
    if (q->max_tokens < 1) return ag_err_set(err, AG_EINVAL, "max_tokens must be at least 1");
    if (q->min_tokens < 0 || q->min_tokens > q->max_tokens)
        return ag_err_set(err, AG_EINVAL, "min_tokens must be between 0 and max_tokens (%d)", q->max_tokens);
    if ((int64_t)q->n_prompt + q->max_tokens > ctx)
        return ag_err_set(err, AG_ELIMIT,
                          "this model's context length is %d tokens; the prompt has %d and max_tokens asks for %d more",
                          ctx, q->n_prompt, q->max_tokens);
    for (int32_t i = 0; i < q->n_prompt; i++)
        if (q->prompt[i] < 0 || q->prompt[i] >= V)
            return ag_err_set(err, AG_EINVAL, "prompt token %d is not in the vocabulary", q->prompt[i]);
    for (size_t i = 0; i < q->n_end_tokens; i++)
        if (q->end_tokens[i] < 0 || q->end_tokens[i] >= V)
            return ag_err_set(err, AG_EINVAL, "end token %d is not in the vocabulary", q->end_tokens[i]);
    if (q->top_logprobs < 0 || q->top_logprobs > AG_MAX_TOP_LOGPROBS)
        return ag_err_set(err, AG_EINVAL, "top_logprobs must be at most %d", AG_MAX_TOP_LOGPROBS);
    ag_sampler_params sp = ag_sampler_params_default();
    sp.temperature = q->sampling.temperature, sp.top_k = q->sampling.top_k;
    sp.top_p = q->sampling.top_p == 0 ? 1.0f : q->sampling.top_p;
    sp.min_p = q->sampling.min_p;
    sp.repetition_penalty = q->sampling.repetition_penalty == 0 ? 1.0f : q->sampling.repetition_penalty;
    sp.frequency_penalty = q->sampling.frequency_penalty, sp.presence_penalty = q->sampling.presence_penalty;
    sp.seed = q->sampling.seed;
    sp.logit_bias = q->logit_bias, sp.n_logit_bias = q->n_logit_bias;
    rq *r = ag_xcalloc(1, sizeof *r);
    ag_status rc = ag_sampler_create(&sp, V, &r->smp, err);
    if (rc != AG_OK) {
        free(r);
        return rc;
    }
    r->tokens = ag_try_malloc((size_t)(q->n_prompt + q->max_tokens) * sizeof *r->tokens);
    if (!r->tokens) {
        rq_free(r);
        return ag_err_set(err, AG_NOMEM, "no memory for a request of %d tokens", q->n_prompt + q->max_tokens);
    }
    memcpy(r->tokens, q->prompt, (size_t)q->n_prompt * sizeof *r->tokens);
    for (int32_t i = 0; i < q->n_prompt; i++) ag_sampler_accept(r->smp, q->prompt[i]);
    r->n_prompt = r->n_tokens = q->n_prompt;
    r->max_tokens = q->max_tokens;
    r->priority = q->priority;
    r->deadline = q->deadline_ns;
    r->salt = q->cache_salt;
    r->ignore_eos = q->ignore_eos;
    r->min_tokens = q->min_tokens;
    r->top_logprobs = q->logprobs ? q->top_logprobs : -1;
    r->greedy = q->sampling.temperature == 0;
    r->grammar = ag_grammar_retain(q->grammar);
    if (q->n_end_tokens) {
        r->end_tokens = ag_xmalloc(q->n_end_tokens * sizeof *r->end_tokens);
        memcpy(r->end_tokens, q->end_tokens, q->n_end_tokens * sizeof *r->end_tokens);
        r->n_end_tokens = q->n_end_tokens;
    }
    r->seq = -1;
    r->n_stops = q->n_stop;
    r->stops = q->n_stop ? ag_xcalloc(q->n_stop, sizeof *r->stops) : NULL;
    for (size_t i = 0; i < q->n_stop; i++) r->stops[i] = ag_xstrdup(q->stop[i]);
    ag_stop_init(&r->stop, (const char *const *)r->stops, r->n_stops);
    ag_detok_init(&r->dt);
    r->t_submit = r->t_enqueue = ag_clock_mono_ns();
    *out = r;
    return AG_OK;
}

/* Under mu: when a request submitted now would get a slot (the line is everything queued). */
static double slot_wait_locked(const ag_engine *e) {
    int k = e->n_queued;
    const double *w = e->stats.slot_wait_s;
    if (k < AG_SLOT_WAITS) return w[k];
    return w[AG_SLOT_WAITS - 1] * (k + 1) / AG_SLOT_WAITS; /* deeper in line: as the last place, scaled */
}

ag_status ag_engine_submit_many(ag_engine *e, const ag_request *qs, size_t n, uint64_t *ids, ag_err *err) {
    if ((int64_t)n > e->p.max_queue)
        return ag_err_set(err, AG_ELIMIT, "%zu prompts at once is more than the queue takes (%d)", n, e->p.max_queue);
    rq **rs = ag_xcalloc(n ? n : 1, sizeof *rs);
    ag_status st = AG_OK;
    for (size_t i = 0; i < n && st == AG_OK; i++) st = rq_make(e, &qs[i], &rs[i], err);
    if (st == AG_OK) {
        pthread_mutex_lock(&e->mu);
        double own = 0, ahead = (double)(e->stats.queued_prompt_tokens + e->incoming_prompt), retry_s = 0;
        for (size_t i = 0; i < n; i++) own += rs[i]->n_prompt;
        double slot_wait = slot_wait_locked(e);
        if (e->n_queued + (int64_t)n > e->p.max_queue) { /* all or none: no half-admitted request to cancel */
            pthread_mutex_unlock(&e->mu);
            st = ag_err_set(err, AG_BUSY, "the queue is full (%d requests waiting)", e->p.max_queue);
        } else if (!ag_autotune_admit(&e->p.slo, e->stats.prompt_rate, ahead, own, slot_wait, &retry_s)) {
            e->stats.slo_refusals++;
            pthread_mutex_unlock(&e->mu);
            st = ag_err_set(err, AG_BUSY,
                            "the time-to-first-token target (%.0f ms) cannot be met: a slot frees in about %.0f ms and "
                            "%.0f prompt tokens are ahead at %.0f tokens/s",
                            e->p.slo.ttft_s * 1e3, slot_wait * 1e3, ahead, e->stats.prompt_rate);
        } else {
            for (size_t i = 0; i < n; i++) {
                rq *r = rs[i];
                r->id = ids[i] = ++e->next_id;
                r->arrival = r->id;
                if (e->incoming_tail) e->incoming_tail->next = r;
                else e->incoming = r;
                e->incoming_tail = r;
                rs[i] = NULL;
            }
            e->n_queued += (int)n;
            e->incoming_prompt += (uint64_t)own;
            pthread_cond_signal(&e->cv); /* one wake for them all */
            pthread_mutex_unlock(&e->mu);
        }
    }
    for (size_t i = 0; i < n; i++) rq_free(rs[i]);
    free(rs);
    return st;
}

ag_status ag_engine_submit(ag_engine *e, const ag_request *q, uint64_t *id, ag_err *err) {
    return ag_engine_submit_many(e, q, 1, id, err);
}

void ag_engine_cancel(ag_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cap_cancels) {
        e->cap_cancels = e->cap_cancels ? 2 * e->cap_cancels : 16;
        e->cancels = ag_xrealloc(e->cancels, e->cap_cancels * sizeof *e->cancels);
    }
    e->cancels[e->n_cancels++] = id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* ---- the engine thread --------------------------------------------------------- */

static void waiting_push(ag_engine *e, rq *r) {
    if (e->n_waiting == e->cap_waiting) {
        e->cap_waiting = e->cap_waiting ? 2 * e->cap_waiting : 64;
        e->waiting = ag_xrealloc(e->waiting, (size_t)e->cap_waiting * sizeof *e->waiting);
    }
    e->waiting[e->n_waiting++] = r;
}

/* Out of the running set: its cache goes (published prompt blocks stay cached), its slot is free. */
static void unrun(ag_engine *e, rq *r) {
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i] == r) {
            memmove(&e->running[i], &e->running[i + 1], (size_t)(e->n_running - i - 1) * sizeof *e->running);
            e->n_running--;
            break;
        }
    e->m->kv->ops->seq_clear(e->m->kv, r->seq);
    e->free_slots[e->n_free_slots++] = r->seq;
    r->seq = -1;
    r->n_computed = 0;
}

static void update_stats(ag_engine *e, int rows);

/*
 * The final event (with whatever text the detokenizer and stop matcher still
 * hold), then free.  The stats are brought up to date first, so a reader who
 * has seen the last finish sees the cache it freed.
 */
static void finish(ag_engine *e, rq *r, ag_finish why) {
    if (why == AG_FINISH_STOP || why == AG_FINISH_LENGTH)
        e->gen_avg = e->gen_avg ? e->gen_avg + 0.1 * (r->n_gen - e->gen_avg) : r->n_gen;
    if (r->seq >= 0) unrun(e, r);
    update_stats(e, 0);
    ag_buf_reset(&e->out);
    ag_buf_reset(&e->piece);
    if (why != AG_FINISH_STOP || !r->n_stops) { /* a stop string's match already cut the text */
        ag_detok_flush(&r->dt, &e->piece);
        ag_stop_push(&r->stop, e->piece.data ? e->piece.data : "", e->piece.len, &e->out);
        ag_stop_flush(&r->stop, &e->out);
    }
    post(e, r, -1, e->out.data, e->out.len, why);
    rq_free(r);
}

static void waiting_remove(ag_engine *e, int i) {
    memmove(&e->waiting[i], &e->waiting[i + 1], (size_t)(e->n_waiting - i - 1) * sizeof *e->waiting);
    e->n_waiting--;
    pthread_mutex_lock(&e->mu);
    e->n_queued--;
    pthread_mutex_unlock(&e->mu);
}

static int64_t effective_priority(const ag_engine *e, const rq *r, uint64_t now) {
    return (int64_t)r->priority - (int64_t)((now - r->t_enqueue) / ((uint64_t)e->p.aging_ms * 1000000ull));
}

static rq *pick_victim(ag_engine *e);
static void preempt(ag_engine *e, rq *r);

static void admit(ag_engine *e, uint64_t now) {
    while (e->n_waiting > 0) {
        int best = 0;
        for (int i = 1; i < e->n_waiting; i++) {
            int64_t a = effective_priority(e, e->waiting[i], now), b = effective_priority(e, e->waiting[best], now);
            if (a < b || (a == b && e->waiting[i]->arrival < e->waiting[best]->arrival)) best = i;
        }
        rq *r = e->waiting[best];
        if (e->n_running >= e->p.max_seqs || e->n_free_slots == 0) {
            /* no slot: a background request gives up its own to any other, and is recomputed later (aging
               never lifts a background request above another: it cannot win the slot back while one waits) */
            rq *v = e->n_running && r->priority < AG_PRIORITY_BACKGROUND ? pick_victim(e) : NULL;
            if (!v || v->priority < AG_PRIORITY_BACKGROUND) break;
            preempt(e, v);
            continue;
        }
        /* only when its whole context so far fits, so an admission is not undone by a preemption at once */
        ag_kv_stats st;
        ag_kv_paged_stats(e->m->kv, &st);
        size_t need = (size_t)(r->n_tokens + 1 + e->p.block_tokens - 1) / (size_t)e->p.block_tokens;
        if (e->n_running > 0 && st.free + st.cached < need) break;
        waiting_remove(e, best);
        r->seq = e->free_slots[--e->n_free_slots];
        r->n_computed = ag_kv_prefix_attach(e->m->kv, r->seq, r->tokens, r->n_tokens, r->salt);
        if (!r->admitted_once) r->cached_tokens = r->n_computed, r->t_admit = ag_clock_mono_ns();
        r->admitted_once = true;
        e->running[e->n_running++] = r;
    }
}

/* The running request to give up its cache: highest priority value, latest arrival. */
static rq *pick_victim(ag_engine *e) {
    rq *v = NULL;
    for (int i = 0; i < e->n_running; i++) {
        rq *r = e->running[i];
        if (!v || r->priority > v->priority || (r->priority == v->priority && r->arrival > v->arrival)) v = r;
    }
    return v;
}

static void preempt(ag_engine *e, rq *r) {
    unrun(e, r);
    r->preemptions++;
    r->t_enqueue = ag_clock_mono_ns();
    waiting_push(e, r);
    pthread_mutex_lock(&e->mu);
    e->n_queued++;
    e->stats.preemptions++;
    pthread_mutex_unlock(&e->mu);
}

/* A background request's prompt rows in one step: the step a request arriving meanwhile waits behind stays short. */
#define BACKGROUND_PROMPT_ROWS 16

/*
 * Rows for this step: decodes first, then prompt chunks, within the budget,
 * reserving cache as it goes; when the pool is full, preempt and start over.
 * Background requests' prompts come last, only in a step that computes no
 * other prompt, and at most BACKGROUND_PROMPT_ROWS of them: so a request's
 * first token never waits on a batch job's prompt.
 * Returns the number of rows (0: nothing could run).
 */
static int build_batch(ag_engine *e) {
    ag_kv_cache *kv = e->m->kv;
    ag_err err;
retry:;
    int rows = 0, cap = e->p.max_batch_tokens;
    for (int pass = 0; pass < 3; pass++) { /* decodes; prompts; background requests' prompts */
        if (pass == 1) e->b_decode_rows = rows, cap = rows + ag_autotune_prompt_budget(&e->tune, rows);
        if (pass == 2) {
            if (rows > e->b_decode_rows) break;
            if (cap > rows + BACKGROUND_PROMPT_ROWS) cap = rows + BACKGROUND_PROMPT_ROWS;
        }
        for (int i = 0; i < e->n_running; i++) {
            rq *r = e->running[i];
            int32_t need = r->n_tokens - r->n_computed; /* positions n_computed .. n_tokens-1 */
            if ((pass == 0) != (need == 1)) continue;
            if (pass && (r->priority >= AG_PRIORITY_BACKGROUND) != (pass == 2)) continue;
            int32_t take = need < cap - rows ? need : cap - rows;
            if (take <= 0) continue;
            if (kv->ops->reserve(kv, r->seq, r->n_computed + take, &err) != AG_OK) {
                ag_kv_stats st;
                ag_kv_paged_stats(kv, &st);
                rq *v = pick_victim(e);
                if (e->n_running == 1 || st.used == 0) { /* alone and still does not fit */
                    finish(e, r, AG_FINISH_ERROR);
                } else {
                    preempt(e, v);
                }
                goto retry;
            }
            for (int32_t k = 0; k < take; k++, rows++) {
                int32_t pos = r->n_computed + k;
                e->b_tok[rows] = r->tokens[pos];
                e->b_pos[rows] = pos;
                e->b_seq[rows] = r->seq;
                e->b_logits[rows] = pos == r->n_tokens - 1;
                e->b_owner[rows] = r;
            }
        }
    }
    return rows;
}

/* One of the model's end-of-generation tokens, or one the request added (a chat turn's end), unless told to ignore them. */
static bool is_end(const ag_engine *e, const rq *r, int32_t tok) {
    if (r->ignore_eos) return false;
    if (ag_tokenizer_is_eog(e->m->tok, tok)) return true;
    for (size_t i = 0; i < r->n_end_tokens; i++)
        if (tok == r->end_tokens[i]) return true;
    return false;
}

/*
 * Logits to sample from: the model's, or below min_tokens a copy with every
 * end token banned (vLLM's min_tokens: the model cannot end early, it is not
 * merely ignored when it does).
 */
static const float *sampling_logits(ag_engine *e, const rq *r, const float *logits) {
    if (r->n_gen >= r->min_tokens || r->ignore_eos) return logits;
    const int32_t *eog;
    size_t n_eog = ag_tokenizer_eog(e->m->tok, &eog);
    memcpy(e->banned, logits, (size_t)e->m->cfg.n_vocab * sizeof *logits);
    for (size_t i = 0; i < n_eog; i++) e->banned[eog[i]] = -INFINITY;
    for (size_t i = 0; i < r->n_end_tokens; i++) e->banned[r->end_tokens[i]] = -INFINITY;
    return e->banned;
}

static void vocab_token_bytes(void *ctx, int32_t id, ag_buf *out) { ag_token_bytes(ctx, id, out); }
static bool vocab_skip(void *ctx, int32_t id) { return ag_tokenizer_is_control(ctx, id); }

/*
 * The next token of a request with a grammar, or -1 when the grammar allows
 * nothing the request may sample (the request then fails).  Greedy requests
 * check the model's own choice first and build the mask only when the grammar
 * refuses it: the best allowed token is the best token whenever it is allowed.
 * Sampled requests always draw from the masked distribution (vLLM's order:
 * the mask, then temperature and the cut-offs).  End tokens are allowed
 * exactly where the grammar may end.
 */
static int32_t sample_constrained(ag_engine *e, rq *r, const float *logits) {
    if (!r->gm) {
        if (!e->gvocab)
            e->gvocab = ag_grammar_vocab_create((size_t)e->m->cfg.n_vocab, vocab_token_bytes, vocab_skip, e->m->tok);
        r->gm = ag_grammar_matcher_create(r->grammar, e->gvocab);
    }
    ag_grammar_matcher *gm = r->gm;
    bool can_end = ag_grammar_matcher_can_end(gm);
    if (!ag_grammar_matcher_active(gm)) return ag_sampler_sample(r->smp, logits);
    if (r->greedy) {
        int32_t tok = ag_sampler_sample(r->smp, logits);
        if (is_end(e, r, tok) ? can_end : ag_grammar_matcher_allows(gm, tok)) return tok;
    }
    size_t n_allowed;
    const uint64_t *mask = ag_grammar_matcher_mask(gm, &n_allowed);
    const size_t V = (size_t)e->m->cfg.n_vocab;
    float *out = e->masked;
    for (size_t w = 0; w * 64 < V; w++) {
        size_t base = w * 64, n = V - base < 64 ? V - base : 64;
        uint64_t bits = mask[w];
        if (bits == 0) {
            for (size_t i = 0; i < n; i++) out[base + i] = -INFINITY;
        } else if (bits == ~0ull) {
            memcpy(out + base, logits + base, n * sizeof *out);
        } else {
            for (size_t i = 0; i < n; i++) out[base + i] = bits >> i & 1 ? logits[base + i] : -INFINITY;
        }
    }
    bool any = n_allowed > 0;
    const int32_t *eog;
    size_t n_eog = ag_tokenizer_eog(e->m->tok, &eog);
    for (size_t i = 0; i < n_eog + r->n_end_tokens; i++) {
        int32_t id = i < n_eog ? eog[i] : r->end_tokens[i - n_eog];
        bool ok = can_end && !r->ignore_eos;
        out[id] = ok ? logits[id] : -INFINITY;
        any |= ok && logits[id] > -INFINITY;
    }
    return any ? ag_sampler_sample(r->smp, out) : -1;
}

/* After the forward: advance each request; sample where its last known token was computed. */
static void after_step(ag_engine *e, int rows) {
    size_t li = 0;
    ag_buf *piece = &e->piece, *out = &e->out;
    for (int i = 0; i < rows; i++) {
        rq *r = e->b_owner[i];
        r->n_computed = e->b_pos[i] + 1;
        if (!e->b_logits[i]) continue;
        const float *logits = ag_model_logits(e->m, li++);
        if (!r->published && r->n_computed >= r->n_prompt) {
            ag_kv_prefix_publish(e->m->kv, r->seq, r->tokens, r->n_prompt, r->salt);
            r->published = true;
        }
        const float *lg = sampling_logits(e, r, logits);
        int32_t tok = r->grammar ? sample_constrained(e, r, lg) : ag_sampler_sample(r->smp, lg);
        if (tok < 0) { /* the grammar allows nothing here (it cannot end where end tokens are banned) */
            finish(e, r, AG_FINISH_ERROR);
            continue;
        }
        ag_sampler_accept(r->smp, tok);
        r->tokens[r->n_tokens++] = tok;
        r->n_gen++;
        if (!r->t_first) r->t_first = ag_clock_mono_ns();
        if (is_end(e, r, tok)) {
            r->n_gen--; /* the end-of-text token is not part of the completion */
            finish(e, r, AG_FINISH_STOP);
            continue;
        }
        if (r->gm && !ag_grammar_matcher_accept(r->gm, tok)) { /* only a lazy grammar's start can be refused here */
            finish(e, r, AG_FINISH_ERROR);
            continue;
        }
        if (r->top_logprobs >= 0) {
            e->lp.n_top = r->top_logprobs;
            e->lp.logprob = ag_logprobs(logits, e->m->cfg.n_vocab, tok, r->top_logprobs, e->lp.top_token, e->lp.top_logprob);
        }
        ag_buf_reset(piece);
        ag_buf_reset(out);
        ag_detok_push(&r->dt, e->m->tok, tok, piece);
        bool stopped = ag_stop_push(&r->stop, piece->data ? piece->data : "", piece->len, out);
        post(e, r, tok, out->data, out->len, AG_FINISH_NONE);
        if (stopped || (r->gm && ag_grammar_matcher_must_end(r->gm))) finish(e, r, AG_FINISH_STOP);
        else if (r->n_gen >= r->max_tokens || r->n_tokens >= e->m->n_ctx) finish(e, r, AG_FINISH_LENGTH);
    }
}

/* Prompt positions still to compute (a preempted request's whole context counts: it is recomputed). */
static uint64_t queued_prompt_tokens(const ag_engine *e) {
    uint64_t n = 0;
    for (int i = 0; i < e->n_waiting; i++) n += (uint64_t)(e->waiting[i]->n_tokens - e->waiting[i]->n_computed);
    for (int i = 0; i < e->n_running; i++) {
        int32_t need = e->running[i]->n_tokens - e->running[i]->n_computed;
        if (need > 1) n += (uint64_t)need;
    }
    return n;
}

/* The steps r will hold its slot from now: its prompt left at the current budget, then the output tokens a
 * request produces on average (its max_tokens until one has finished), at least one. */
static double steps_left(const ag_engine *e, const rq *r) {
    int32_t prompt = r->n_tokens - r->n_computed, cap = r->max_tokens - r->n_gen;
    double budget = e->tune.budget > 1 ? e->tune.budget : 1;
    double gen = e->gen_avg ? e->gen_avg - r->n_gen : cap;
    gen = gen > cap ? cap : gen < 1 ? 1 : gen;
    return (prompt > 1 ? ceil(prompt / budget) : 0) + gen;
}

/* When each of the first AG_SLOT_WAITS in line gets a slot (ag_autotune_slot_waits). */
static void slot_waits(ag_engine *e, double *out) {
    const ag_autotune *t = &e->tune;
    double step = t->step_s ? t->step_s : t->model.n ? ag_step_model_predict(&t->model, e->n_running, 0) : 0;
    int n_slots = 0, n_holds = 0;
    for (int i = 0; i < e->n_free_slots; i++) e->slots[n_slots++] = 0;
    for (int i = 0; i < e->n_running; i++) e->slots[n_slots++] = steps_left(e, e->running[i]);
    for (int i = 0; i < e->n_waiting && n_holds < AG_SLOT_WAITS; i++) e->holds[n_holds++] = steps_left(e, e->waiting[i]);
    ag_autotune_slot_waits(e->slots, n_slots, e->holds, n_holds, e->gen_avg ? e->gen_avg : 16, step, out,
                           AG_SLOT_WAITS);
}

/*
 * The controller's state and the admission estimates, once per turn of the
 * engine loop (not at every finish within it): what submitters read under mu.
 */
static void publish_tune(ag_engine *e) {
    uint64_t queued = queued_prompt_tokens(e);
    const ag_autotune *t = &e->tune;
    double waits[AG_SLOT_WAITS];
    slot_waits(e, waits); /* for the TTFT admission, and every 429's Retry-After */
    double rate = ag_autotune_prompt_rate(t);
    pthread_mutex_lock(&e->mu);
    e->stats.queued_prompt_tokens = queued;
    e->stats.step_a = t->model.w[0], e->stats.step_b = t->model.w[1], e->stats.step_c = t->model.w[2];
    e->stats.step_fit_error = t->model.err;
    e->stats.prompt_budget = t->budget, e->stats.step_seconds = t->step_s, e->stats.prompt_rate = rate;
    e->stats.budget_adjustments = t->adjustments;
    memcpy(e->stats.slot_wait_s, waits, sizeof waits);
    pthread_mutex_unlock(&e->mu);
}

static void update_stats(ag_engine *e, int rows) {
    ag_kv_stats st;
    ag_kv_paged_stats(e->m->kv, &st);
    pthread_mutex_lock(&e->mu);
    e->stats.running = e->n_running;
    e->stats.waiting = e->n_queued;
    e->stats.kv_blocks = st.n_blocks, e->stats.kv_used = st.used, e->stats.kv_cached = st.cached;
    e->stats.kv_free = st.free;
    e->stats.prefix_query_tokens = st.prefix_query_tokens, e->stats.prefix_hit_tokens = st.prefix_hit_tokens;
    if (rows) {
        e->stats.steps++, e->stats.batch_rows += (uint64_t)rows;
        int b = 0; /* the first power-of-two bound holding rows */
        while (b < AG_STEP_ROWS_BUCKETS - 1 && rows > 1 << b) b++;
        e->stats.step_rows_hist[b]++;
    }
    pthread_mutex_unlock(&e->mu);
}

static rq *find(ag_engine *e, uint64_t id, bool *running) {
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i]->id == id) return *running = true, e->running[i];
    for (int i = 0; i < e->n_waiting; i++)
        if (e->waiting[i]->id == id) return *running = false, e->waiting[i];
    return NULL;
}

static void end_waiting(ag_engine *e, rq *r, ag_finish why) {
    for (int i = 0; i < e->n_waiting; i++)
        if (e->waiting[i] == r) {
            waiting_remove(e, i);
            break;
        }
    finish(e, r, why);
}

static void *engine_main(void *arg) {
    ag_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !e->incoming && !e->n_cancels && e->n_waiting == 0 && e->n_running == 0)
            pthread_cond_wait(&e->cv, &e->mu);
        bool stop = e->stop;
        rq *in = e->incoming;
        e->incoming = e->incoming_tail = NULL;
        e->stats.queued_prompt_tokens += e->incoming_prompt; /* until this step's count replaces it */
        e->incoming_prompt = 0;
        size_t n_cancels = e->n_cancels < 64 ? e->n_cancels : 64;
        uint64_t cancels[64];
        if (n_cancels) {
            memcpy(cancels, e->cancels, n_cancels * sizeof *cancels);
            memmove(e->cancels, e->cancels + n_cancels, (e->n_cancels - n_cancels) * sizeof *e->cancels);
            e->n_cancels -= n_cancels;
        }
        pthread_mutex_unlock(&e->mu);
        for (rq *r = in, *next; r; r = next) next = r->next, r->next = NULL, waiting_push(e, r);
        if (stop) break;
        for (size_t i = 0; i < n_cancels; i++) {
            bool running;
            rq *r = find(e, cancels[i], &running);
            if (r && running) finish(e, r, AG_FINISH_CANCELLED);
            else if (r) end_waiting(e, r, AG_FINISH_CANCELLED);
        }
        uint64_t now = ag_clock_mono_ns();
        for (int i = e->n_running; i-- > 0;)
            if (e->running[i]->deadline && now >= e->running[i]->deadline) finish(e, e->running[i], AG_FINISH_TIMEOUT);
        for (int i = e->n_waiting; i-- > 0;)
            if (e->waiting[i]->deadline && now >= e->waiting[i]->deadline) end_waiting(e, e->waiting[i], AG_FINISH_TIMEOUT);
        admit(e, now);
        uint64_t t0 = ag_clock_mono_ns(); /* a step's time is what a decoding request waits: batching and sampling too */
        int rows = e->n_running ? build_batch(e) : 0;
        if (rows) {
            ag_err err;
            if (ag_forward(e->m, &(ag_batch){.n = rows, .token = e->b_tok, .pos = e->b_pos, .seq = e->b_seq,
                                             .logits = e->b_logits},
                           &err) != AG_OK) {
                for (int i = e->n_running; i-- > 0;) finish(e, e->running[i], AG_FINISH_ERROR);
            } else {
                after_step(e, rows);
                ag_autotune_observe(&e->tune, e->b_decode_rows, rows - e->b_decode_rows,
                                    (double)(ag_clock_mono_ns() - t0) / 1e9);
            }
        }
        update_stats(e, rows);
        publish_tune(e);
    }
    /* shutting down: everything still open ends cancelled */
    while (e->n_running) finish(e, e->running[e->n_running - 1], AG_FINISH_CANCELLED);
    while (e->n_waiting) end_waiting(e, e->waiting[e->n_waiting - 1], AG_FINISH_CANCELLED);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

ag_status ag_engine_create(const ag_engine_params *params, ag_engine **out, ag_err *err) {
    *out = NULL;
    ag_engine *e = ag_xcalloc(1, sizeof *e);
    e->p = *params;
    ag_engine_params *p = &e->p;
    if (!p->max_seqs) p->max_seqs = 16;
    if (!p->max_batch_tokens) p->max_batch_tokens = 512;
    if (!p->max_queue) p->max_queue = 256;
    if (!p->block_tokens) p->block_tokens = 16;
    if (!p->aging_ms) p->aging_ms = 1000;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_mutex_init(&e->ev_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->ev_cv, &ca);
    pthread_condattr_destroy(&ca);
    e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ag_status rc = AG_OK;
    if (p->max_seqs < 1 || p->max_seqs > 4096 || p->max_batch_tokens < 1 || p->max_queue < 1 || p->block_tokens < 1)
        rc = ag_err_set(err, AG_EINVAL, "max_seqs, max_batch_tokens, max_queue and block_tokens must be positive");
    else if (e->efd < 0)
        rc = ag_err_set(err, AG_EIO, "eventfd: %s", strerror(errno));
    ag_model_params mp = ag_model_params_default();
    mp.n_threads = p->n_threads, mp.n_ctx = p->ctx, mp.n_batch = p->max_batch_tokens, mp.kernels = p->kernels;
    mp.no_repack = p->no_repack;
    if (rc == AG_OK) rc = ag_model_load(p->model_path, &mp, &e->m, err);
    if (rc == AG_OK) {
        const ag_config *c = &e->m->cfg;
        int kv_dim = c->n_head_kv * c->head_dim;
        ag_dtype kv_type = p->kv_f32 ? AG_DTYPE_F32 : AG_DTYPE_F16;
        size_t blocks = p->kv_blocks;
        if (!blocks && p->ctx_total) blocks = (p->ctx_total + (size_t)p->block_tokens - 1) / (size_t)p->block_tokens;
        if (!blocks && p->kv_cache_mb)
            blocks = ag_kv_paged_blocks_for_mb(c->n_layer, kv_dim, p->block_tokens, kv_type, p->kv_cache_mb);
        if (!blocks && !p->kv_cache_mb)
            blocks = (size_t)p->max_seqs * (size_t)((e->m->n_ctx + p->block_tokens - 1) / p->block_tokens);
        ag_kv_cache *kv = NULL;
        if (!blocks) rc = ag_err_set(err, AG_EINVAL, "a KV cache of %zu MiB holds no block", p->kv_cache_mb);
        else rc = ag_kv_paged_create(c->n_layer, kv_dim, e->m->n_ctx, p->max_seqs, p->block_tokens, blocks, kv_type, &kv, err);
        if (rc == AG_OK) rc = ag_model_set_kv(e->m, kv, err);
    }
    if (rc != AG_OK) {
        ag_engine_destroy(e);
        return rc;
    }
    e->running = ag_xcalloc((size_t)p->max_seqs, sizeof *e->running);
    e->free_slots = ag_xcalloc((size_t)p->max_seqs, sizeof *e->free_slots);
    for (int i = 0; i < p->max_seqs; i++) e->free_slots[e->n_free_slots++] = p->max_seqs - 1 - i;
    size_t B = (size_t)p->max_batch_tokens;
    e->b_tok = ag_xcalloc(B, sizeof *e->b_tok), e->b_pos = ag_xcalloc(B, sizeof *e->b_pos);
    e->banned = ag_xcalloc((size_t)e->m->cfg.n_vocab, sizeof *e->banned);
    e->masked = ag_xcalloc((size_t)e->m->cfg.n_vocab, sizeof *e->masked);
    e->b_seq = ag_xcalloc(B, sizeof *e->b_seq), e->b_logits = ag_xcalloc(B, sizeof *e->b_logits);
    e->b_owner = ag_xcalloc(B, sizeof *e->b_owner);
    ag_autotune_init(&e->tune, &p->slo, p->max_batch_tokens, p->block_tokens);
    e->slots = ag_xcalloc((size_t)p->max_seqs, sizeof *e->slots);
    e->holds = ag_xcalloc(AG_SLOT_WAITS, sizeof *e->holds);
    e->stats.slo = p->slo;
    ag_buf_init(&e->piece);
    ag_buf_init(&e->out);
    update_stats(e, 0);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        ag_engine_destroy(e);
        return ag_err_set(err, AG_ERR, "cannot start the engine thread");
    }
    e->started = true;
    *out = e;
    return AG_OK;
}

void ag_engine_destroy(ag_engine *e) {
    if (!e) return;
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    for (rq *r = e->incoming, *next; r; r = next) next = r->next, rq_free(r);
    for (size_t i = 0; i < e->n_events; i++) ag_event_clear(&e->events[i]);
    free(e->events);
    free(e->cancels);
    free(e->waiting), free(e->running), free(e->free_slots);
    free(e->b_tok), free(e->b_pos), free(e->b_seq), free(e->b_logits), free(e->b_owner), free(e->banned);
    free(e->masked);
    ag_grammar_vocab_free(e->gvocab);
    free(e->slots), free(e->holds);
    ag_buf_deinit(&e->piece);
    ag_buf_deinit(&e->out);
    ag_model_free(e->m);
    if (e->efd >= 0) close(e->efd);
    pthread_cond_destroy(&e->ev_cv);
    pthread_mutex_destroy(&e->ev_mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

uint32_t ag_engine_retry_after(ag_engine *e) {
    pthread_mutex_lock(&e->mu);
    double ahead = (double)(e->stats.queued_prompt_tokens + e->incoming_prompt), rate = e->stats.prompt_rate;
    double slot_wait = slot_wait_locked(e);
    pthread_mutex_unlock(&e->mu);
    double s = rate > 0 ? fmax(slot_wait, ahead / rate) - e->p.slo.ttft_s : 1;
    return s < 1 ? 1 : s > 60 ? 60 : (uint32_t)ceil(s);
}

void ag_engine_stats_get(ag_engine *e, ag_engine_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
}

ag_status ag_engine_tokenize(const ag_engine *e, const char *text, size_t len, bool add_bos, bool parse_special,
                             ag_tokens *out, ag_err *err) {
    return ag_tokenize(e->m->tok, text, len, add_bos, parse_special, out, err);
}

bool ag_engine_add_bos_default(const ag_engine *e) { return ag_tokenizer_add_bos_default(e->m->tok); }

void ag_engine_token_bytes(const ag_engine *e, int32_t id, ag_buf *out) {
    if (id >= 0 && (size_t)id < ag_tokenizer_n_vocab(e->m->tok)) ag_token_bytes(e->m->tok, id, out);
}

ag_status ag_engine_detokenize(const ag_engine *e, const int32_t *ids, size_t n, ag_buf *out, ag_err *err) {
    size_t n_vocab = ag_tokenizer_n_vocab(e->m->tok);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= n_vocab)
            return ag_err_set(err, AG_EINVAL, "token id %d at %zu is outside the vocabulary (0..%zu)", ids[i], i,
                              n_vocab - 1);
        ag_token_bytes(e->m->tok, ids[i], out);
    }
    return out->err;
}

int32_t ag_engine_ctx(const ag_engine *e) { return e->m->n_ctx; }

int32_t ag_engine_n_vocab(const ag_engine *e) { return e->m->cfg.n_vocab; }

uint64_t ag_engine_repacked_bytes(const ag_engine *e, int *n_matrices) {
    *n_matrices = e->m->n_repacked;
    return e->m->repacked_bytes;
}

bool ag_engine_meta_str(const ag_engine *e, const char *key, const char **s, size_t *len) {
    ag_str v;
    if (!ag_gguf_get_str(e->m->file, key, &v)) return false;
    *s = v.p, *len = v.n;
    return true;
}
