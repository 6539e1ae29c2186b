/*
 * batch_worker.c - the Batch API's worker (docs/batch.md).  Every
 * AG_BATCH_POLL_MS, when the engine has room (no request waits and a
 * sequence slot is free) and fewer than --batch-workers of its jobs run, it
 * claims requests from the shared stream: abandoned ones first, then new
 * ones.  Each runs as a generation on a connection of kind CONN_JOB, through
 * the same exchange code as an API request, at AG_BATCH_PRIORITY (below any
 * client's, so the scheduler preempts it first), and its answer is written
 * as the request's result.  A heartbeat restarts the idle time of the
 * entries it holds (so no other worker takes them while they run) and learns
 * of cancelled batches, whose running requests it stops.
 *
 * A job's lifecycle:
 *
 *   RUNNING --answer--> WRITING --result written (or not: Redis failed; the entry stays pending)--> freed
 *   RUNNING --429/503 (the engine was full)--> WAITING --next tick--> RUNNING
 *   RUNNING --429/503 during a drain--> WRITING (nothing written: another replica claims it)
 *   RUNNING --its batch cancelled--> (stopped) --answer--> WRITING (as skipped)
 *   RUNNING --the drain's timeout--> (stopped) --answer--> WRITING (nothing written: another replica claims it)
 *
 * Redis calls run on the loop's thread pool; at most one claim and one
 * heartbeat are in flight at a time.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "jobs/jobs.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AG_BATCH_POLL_MS 100
#define MAX_CLAIM 64 /* tasks one claim may take */

typedef enum job_state { JOB_RUNNING, JOB_WAITING, JOB_WRITING } job_state;

struct batch_job {
    batch_worker *w;
    job_state state;
    conn c; /* CONN_JOB: the request's "connection" */
    ag_http_header hdr[1];
    char auth[40];
    ag_jobs_task task;
    bool cancelled; /* its batch stopped while it ran: written as skipped */
    bool abandoned; /* the drain timed out: nothing is written */
    int status;
    ag_buf body; /* the answer */
    ag_err err;
    ag_status st;
    uv_work_t work;
    batch_job *prev, *next;
};

struct batch_worker {
    server *s;
    char consumer[128];
    uv_timer_t tick, beat;
    bool claiming, beating, draining, closed, store_down;
    int handles_closed;
    batch_job *jobs; /* every job not yet freed */
    size_t n_jobs;
    /* the claim in flight */
    uv_work_t claim_work;
    ag_jobs_task tasks[MAX_CLAIM];
    size_t n_tasks, want;
    ag_jobs_claim_counts claimed;
    ag_status claim_st;
    ag_err claim_err;
    int64_t claim_waiting, claim_pending; /* the queue, as the claim saw it */
    int64_t waiting, pending;             /* the same, for /metrics (the loop thread's copy) */
    /* the heartbeat in flight: the running jobs' entries and batches, copied */
    uv_work_t beat_work;
    char (*beat_entries)[AG_JOBS_ID_LEN], (*beat_batches)[AG_JOBS_ID_LEN];
    bool *live;
    size_t n_beat;
    ag_err beat_err;
    /* outcomes on this replica, for /metrics */
    uint64_t completed, failed, skipped, expired, poisoned, store_errors;
};

static void job_run(batch_job *j);
static void on_tick(uv_timer_t *t);

static void job_unlink(batch_job *j) {
    batch_worker *w = j->w;
    if (j->prev) j->prev->next = j->next;
    else w->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
    w->n_jobs--;
}

static void job_free(batch_job *j) {
    server *s = j->w->s;
    job_unlink(j);
    ag_jobs_task_free(&j->task);
    ag_buf_deinit(&j->body);
    ag_buf_deinit(&j->c.out);
    free(j);
    ag_server_maybe_stop(s);
}

/* ---- writing a result (thread pool) ----------------------------------------------------------- */

static void write_work(uv_work_t *wk) {
    batch_job *j = wk->data;
    if (j->abandoned) return;
    ag_jobs_result r = {0}; /* status 0: skipped (its batch was cancelled while it ran) */
    char rid[64] = "";
    ag_arena a;
    ag_arena_init(&a, 4096);
    if (!j->cancelled) {
        r.status = j->status;
        r.body = j->body.data ? j->body.data : "{}";
        r.body_len = j->body.data ? j->body.len : 2;
        r.request_id = rid;
        /* the answer's id and usage, for the output line and the batch's totals */
        ag_json_val *root;
        if (ag_json_parse(r.body, r.body_len, NULL, &a, &root, NULL) == AG_OK) {
            ag_str id = ag_json_str(ag_json_obj_getc(root, "id"));
            snprintf(rid, sizeof rid, "%.*s", (int)(id.n < 63 ? id.n : 63), id.p ? id.p : "");
            const ag_json_val *u = ag_json_obj_getc(root, "usage");
            ag_json_get_int(ag_json_obj_getc(u, "prompt_tokens"), &r.input_tokens);
            ag_json_get_int(ag_json_obj_getc(u, "completion_tokens"), &r.output_tokens);
        }
    }
    j->st = ag_jobs_finish(j->w->s->jobs, &j->task, &r, &j->err);
    ag_arena_deinit(&a);
}

static void write_done(uv_work_t *wk, int status) {
    (void)status;
    batch_job *j = wk->data;
    batch_worker *w = j->w;
    if (j->abandoned) { /* nothing was written: its entry stays pending */
        job_free(j);
        return;
    }
    if (j->st != AG_OK) {
        w->store_errors++;
        ag_logf(AG_LOG_WARN, "batch %s: the result of %s was not written (%s); another claim will redo it",
                j->task.batch, j->task.custom_id, j->err.msg);
    } else if (j->cancelled) w->skipped++;
    else if (j->status == 200) w->completed++;
    else w->failed++;
    job_free(j);
    on_tick(&w->tick); /* its slot is free: claim the next at once, not at the next poll */
}

/* CONN_JOB's answer is complete: status in obs.status, body in out. */
void ag_batch_worker_on_job_done(conn *c) {
    batch_job *j = c->job;
    if (j->state != JOB_RUNNING) return;
    int st = c->obs.status;
    ag_buf_reset(&j->body);
    ag_buf_append(&j->body, c->out.data ? c->out.data : "", c->out.len);
    ag_buf_reset(&c->out);
    if ((st == 429 || st == 503) && !j->cancelled) { /* the engine had no room after all (or is shutting down) */
        if (!j->abandoned && !j->w->draining) {
            j->state = JOB_WAITING; /* again on the next tick */
            return;
        }
        j->abandoned = true; /* not a result: left pending for a replica that can run it */
    }
    j->state = JOB_WRITING;
    j->status = st;
    j->work.data = j;
    uv_queue_work(&j->w->s->loop, &j->work, write_work, write_done);
}

/* ---- running a job ----------------------------------------------------------------------------- */

static void job_run(batch_job *j) {
    conn *c = &j->c;
    j->state = JOB_RUNNING;
    c->state = C_BUSY;
    c->obs.t_start_ns = ag_clock_mono_ns();
    ag_exchange_start(c, strcmp(j->task.url, "/v1/completions") == 0 ? AG_API_COMPLETION : AG_API_CHAT, j->task.body,
                      j->task.body_len);
}

static void job_start(batch_worker *w, ag_jobs_task *t) {
    batch_job *j = ag_xcalloc(1, sizeof *j);
    j->w = w;
    j->task = *t; /* its strings move here */
    memset(t, 0, sizeof *t);
    ag_buf_init(&j->body);
    conn *c = &j->c;
    c->kind = CONN_JOB;
    c->s = w->s;
    c->job = j;
    ag_buf_init(&c->out);
    ag_buf_init(&c->in);
    c->coding_whole = AG_CODING_IDENTITY; /* its answer is read here, never coded */
    /* the tenant's namespace stands in for its API key: the prefix cache keeps tenants apart by it */
    snprintf(j->auth, sizeof j->auth, "Bearer %s", j->task.tenant);
    j->hdr[0] = (ag_http_header){AG_STR_LIT("authorization"), ag_str_from_cstr(j->auth)};
    c->req.method = AG_STR_LIT("POST");
    c->req.path = c->req.target = ag_str_from_cstr(j->task.url);
    c->req.headers = j->hdr;
    c->req.n_headers = 1;
    c->req.version_minor = 1;
    c->req.content_length = (int64_t)j->task.body_len;
    j->next = w->jobs;
    if (w->jobs) w->jobs->prev = j;
    w->jobs = j;
    w->n_jobs++;
    job_run(j);
}

/* ---- claiming ------------------------------------------------------------------------------------ */

static void claim_work(uv_work_t *wk) {
    batch_worker *w = wk->data;
    const server *s = w->s;
    ag_jobs_claim_opts o = {w->consumer, s->o->batch_claim_idle_ms, s->o->batch_max_deliveries, w->want};
    memset(&w->claimed, 0, sizeof w->claimed);
    w->claim_st = ag_jobs_claim(s->jobs, &o, w->tasks, &w->n_tasks, &w->claimed, &w->claim_err);
    ag_err e;
    ag_jobs_depth(s->jobs, &w->claim_waiting, &w->claim_pending, &e); /* copied on the loop thread, in claim_done */
}

static void claim_done(uv_work_t *wk, int status) {
    (void)status;
    batch_worker *w = wk->data;
    w->claiming = false;
    w->waiting = w->claim_waiting, w->pending = w->claim_pending;
    w->skipped += w->claimed.skipped, w->expired += w->claimed.expired, w->poisoned += w->claimed.poisoned;
    if (w->claim_st != AG_OK) {
        w->store_errors++;
        if (!w->store_down) ag_logf(AG_LOG_WARN, "batch worker: claims fail: %s (retrying)", w->claim_err.msg);
    } else if (w->store_down) {
        ag_logf(AG_LOG_INFO, "batch worker: claims work again");
    }
    w->store_down = w->claim_st != AG_OK; /* logged when it changes, not every poll */
    for (size_t i = 0; i < w->n_tasks; i++) job_start(w, &w->tasks[i]); /* a drain that began meanwhile waits for them */
    w->n_tasks = 0;
    ag_server_maybe_stop(w->s);
}

/* Room in the engine for a request no one waits on: nothing queued, a sequence slot free. */
static bool engine_has_room(server *s) {
    ag_engine_stats st;
    ag_engine_stats_get(s->engine, &st);
    int slots = s->o->engine.max_seqs ? s->o->engine.max_seqs : 16;
    return st.waiting == 0 && st.running < slots;
}

static void on_tick(uv_timer_t *t) {
    batch_worker *w = t->data;
    server *s = w->s;
    if (!s->ready || w->draining) return;
    size_t running = 0;
    for (batch_job *j = w->jobs; j; j = j->next) {
        if (j->state == JOB_WAITING && engine_has_room(s)) job_run(j);
        running++;
    }
    size_t slots = (size_t)s->o->batch_workers;
    if (w->claiming || running >= slots || !engine_has_room(s)) return;
    w->want = slots - running < MAX_CLAIM ? slots - running : MAX_CLAIM;
    w->claiming = true;
    uv_queue_work(&s->loop, &w->claim_work, claim_work, claim_done);
}

/* ---- the heartbeat ----------------------------------------------------------------------------------- */

static void beat_work(uv_work_t *wk) {
    batch_worker *w = wk->data;
    const char **e = ag_xcalloc(w->n_beat, sizeof *e), **b = ag_xcalloc(w->n_beat, sizeof *b);
    for (size_t i = 0; i < w->n_beat; i++) e[i] = w->beat_entries[i], b[i] = w->beat_batches[i];
    if (ag_jobs_touch(w->s->jobs, w->consumer, e, b, w->n_beat, w->live, &w->beat_err) != AG_OK)
        for (size_t i = 0; i < w->n_beat; i++) w->live[i] = true; /* unknown: go on */
    free(e);
    free(b);
}

static void beat_done(uv_work_t *wk, int status) {
    (void)status;
    batch_worker *w = wk->data;
    w->beating = false;
    for (size_t i = 0; i < w->n_beat; i++) {
        if (w->live[i]) continue;
        for (batch_job *j = w->jobs; j; j = j->next) { /* its batch was cancelled: stop it */
            if (strcmp(j->task.entry, w->beat_entries[i]) != 0 || j->cancelled) continue;
            j->cancelled = true;
            if (j->state == JOB_RUNNING && j->c.x) ag_exchange_cancel(j->c.x);
            else if (j->state == JOB_WAITING) {
                j->state = JOB_WRITING;
                j->work.data = j;
                uv_queue_work(&w->s->loop, &j->work, write_work, write_done);
            }
        }
    }
    free(w->beat_entries), free(w->beat_batches), free(w->live);
    w->beat_entries = NULL, w->beat_batches = NULL, w->live = NULL;
    ag_server_maybe_stop(w->s);
}

static void on_beat(uv_timer_t *t) {
    batch_worker *w = t->data;
    if (w->beating || !w->n_jobs) return;
    size_t n = 0;
    w->beat_entries = ag_xcalloc(w->n_jobs, sizeof *w->beat_entries);
    w->beat_batches = ag_xcalloc(w->n_jobs, sizeof *w->beat_batches);
    w->live = ag_xcalloc(w->n_jobs, sizeof *w->live);
    for (batch_job *j = w->jobs; j; j = j->next) {
        if (j->state == JOB_WRITING) continue;
        memcpy(w->beat_entries[n], j->task.entry, AG_JOBS_ID_LEN);
        memcpy(w->beat_batches[n], j->task.batch, AG_JOBS_ID_LEN);
        w->live[n++] = true;
    }
    w->n_beat = n;
    w->beating = true;
    uv_queue_work(&w->s->loop, &w->beat_work, beat_work, beat_done);
}

/* ---- lifecycle ------------------------------------------------------------------------------------- */

bool ag_batch_worker_start(server *s, char *msg, size_t cap) {
    batch_worker *w = ag_xcalloc(1, sizeof *w);
    w->s = s;
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(w->consumer, sizeof w->consumer, "%s:%ld:%llx", host, (long)getpid(),
             (unsigned long long)(ag_clock_wall_ns() & 0xffffff));
    if (uv_timer_init(&s->loop, &w->tick) || uv_timer_init(&s->loop, &w->beat)) {
        snprintf(msg, cap, "batch worker: cannot make its timers");
        free(w);
        return false;
    }
    w->tick.data = w->beat.data = w;
    w->claim_work.data = w->beat_work.data = w;
    uint64_t beat_ms = s->o->batch_claim_idle_ms / 3;
    if (beat_ms > 1000) beat_ms = 1000;
    if (beat_ms < 20) beat_ms = 20;
    uv_timer_start(&w->tick, on_tick, AG_BATCH_POLL_MS, AG_BATCH_POLL_MS);
    uv_timer_start(&w->beat, on_beat, beat_ms, beat_ms);
    uv_unref((uv_handle_t *)&w->tick); /* neither keeps the loop alive by itself */
    uv_unref((uv_handle_t *)&w->beat);
    s->worker = w;
    ag_logf(AG_LOG_INFO, "batch worker %s: up to %d requests at once", w->consumer, s->o->batch_workers);
    return true;
}

void ag_batch_worker_drain(server *s) {
    if (s->worker) s->worker->draining = true;
}

void ag_batch_worker_abandon(server *s) {
    batch_worker *w = s->worker;
    if (!w) return;
    for (batch_job *j = w->jobs, *next; j; j = next) {
        next = j->next;
        if (j->state == JOB_WRITING) continue;
        j->abandoned = true;
        if (j->state == JOB_RUNNING && j->c.x) ag_exchange_cancel(j->c.x);
        else if (j->state == JOB_WAITING) job_free(j);
    }
}

bool ag_batch_worker_idle(const server *s) {
    const batch_worker *w = s->worker;
    return !w || (!w->n_jobs && !w->claiming && !w->beating);
}

static void worker_closed(uv_handle_t *h) {
    batch_worker *w = h->data;
    if (++w->handles_closed == 2) free(w); /* both timers, in whichever order libuv closes them */
}

void ag_batch_worker_close(server *s) {
    batch_worker *w = s->worker;
    if (!w || w->closed) return;
    w->closed = true;
    for (batch_job *j = w->jobs, *next; j; j = next) next = j->next, job_free(j); /* none but after a failed load */
    s->worker = NULL;
    uv_close((uv_handle_t *)&w->tick, worker_closed);
    uv_close((uv_handle_t *)&w->beat, worker_closed);
}

void ag_batch_render_metrics(server *s, ag_buf *out) {
    const batch_worker *w = s->worker;
    ag_buf_append_str(out, "# HELP autoglm_batch_requests_total Batch requests this replica settled, by outcome.\n"
                           "# TYPE autoglm_batch_requests_total counter\n");
    const char *names[] = {"completed", "failed", "skipped", "expired", "poisoned"};
    uint64_t v[] = {w ? w->completed : 0, w ? w->failed : 0, w ? w->skipped : 0, w ? w->expired : 0,
                    w ? w->poisoned : 0};
    for (int i = 0; i < 5; i++)
        ag_buf_appendf(out, "autoglm_batch_requests_total{state=\"%s\"} %llu\n", names[i], (unsigned long long)v[i]);
    ag_buf_appendf(out, "# HELP autoglm_batch_running Batch requests this replica is running.\n"
                        "# TYPE autoglm_batch_running gauge\nautoglm_batch_running %zu\n", w ? w->n_jobs : 0);
    ag_buf_appendf(out, "# HELP autoglm_batch_store_errors_total Failed calls to the batch store (Redis) by the worker.\n"
                        "# TYPE autoglm_batch_store_errors_total counter\nautoglm_batch_store_errors_total %llu\n",
                   (unsigned long long)(w ? w->store_errors : 0));
    if (!w) return;
    ag_buf_appendf(out, "# HELP autoglm_batch_queue_depth Batch requests in the shared queue: waiting (never delivered) "
                        "and pending (delivered, no result yet), as of the worker's last claim.\n"
                        "# TYPE autoglm_batch_queue_depth gauge\n"
                        "autoglm_batch_queue_depth{state=\"waiting\"} %lld\nautoglm_batch_queue_depth{state=\"pending\"} %lld\n",
                   (long long)w->waiting, (long long)w->pending);
}
