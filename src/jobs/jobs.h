/*
 * jobs.h - the Batch API's durable state in Redis: uploaded files, batches,
 * and the stream of their requests that workers on any replica consume.
 *
 * The data model (docs/batch.md draws it):
 *   autoglm:file:ID          hash   the file object's fields (tenant, filename, purpose, bytes, lines, ...)
 *   autoglm:file:ID:data     string its bytes
 *   autoglm:files:TENANT     zset   the tenant's file ids by creation (ms), for listing
 *   autoglm:batch:ID         hash   the batch object's fields, its counts and its status
 *   autoglm:batch:ID:res     hash   custom_id -> its result: "o" + output line, "e" + error line, "s" skipped
 *   autoglm:batches:TENANT   zset   the tenant's batch ids by creation
 *   autoglm:idem:TENANT:K    string the object an Idempotency-Key created (24 h)
 *   autoglm:jobs             stream one entry per request of every batch, read by the group "autoglm"
 *
 * A request's result is written by one Lua script that sets its field in
 * the batch's result hash only if absent (HSETNX), counts it only then,
 * acknowledges and deletes the stream entry, and, when every request of the
 * batch has a result, writes the output and error files and the final
 * status in the same step.  Delivery is at least once (a worker killed
 * mid-request leaves its entry pending for another to claim), the effect is
 * exactly once: a request run twice is counted and written once.
 *
 * Every call here is synchronous, for the libuv thread pool (never the loop
 * thread): it takes a connection from a small pool, each command bounded by
 * the timeout (hiredis's blocking context), and gives it back.  Thread-safe.
 */
#ifndef AG_JOBS_JOBS_H
#define AG_JOBS_JOBS_H

#include "autoglm/status.h"
#include "base/buf.h"
#include "base/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AG_JOBS_MAX_LINES 50000      /* requests in one input file (OpenAI's limit) */
#define AG_JOBS_MAX_CUSTOM_ID 512    /* bytes of a custom_id */
#define AG_JOBS_MAX_FIELDS 40        /* fields of a stored object */
#define AG_JOBS_ID_LEN 48

typedef struct ag_jobs ag_jobs;

typedef struct ag_jobs_opts {
    const char *url;     /* redis://[[user]:password@]host[:port][/db] */
    uint64_t timeout_ms; /* each command's (and connect's) limit */
} ag_jobs_opts;

/* Parses the URL (no connection yet; each call connects as it needs). */
ag_status ag_jobs_open(const ag_jobs_opts *o, ag_jobs **out, ag_err *err);
void ag_jobs_close(ag_jobs *j);

/* A stored object's fields, as Redis holds them (strings). */
typedef struct ag_jobs_obj {
    size_t n;
    char *name[AG_JOBS_MAX_FIELDS], *value[AG_JOBS_MAX_FIELDS];
} ag_jobs_obj;
/* A field's value, or NULL. */
const char *ag_jobs_obj_get(const ag_jobs_obj *o, const char *name);
void ag_jobs_obj_free(ag_jobs_obj *o);

/* ---- input files: JSONL of {custom_id, method, url, body} ---- */

/* One request line of an input file. */
typedef struct ag_jobs_line {
    size_t lineno;     /* 1-based */
    ag_str custom_id;  /* within the file's bytes' parse (valid during the callback) */
    ag_str url;
    const char *body;  /* the body re-written as compact JSON (valid during the callback) */
    size_t body_len;
} ag_jobs_line;
typedef ag_status (*ag_jobs_line_fn)(void *ctx, const ag_jobs_line *line, ag_err *err);

/*
 * Checks every line of a batch input file (blank lines are skipped): a JSON
 * object with a unique non-empty custom_id, method POST, url
 * /v1/chat/completions or /v1/completions, and a body object that does not
 * ask to stream.  fn (may be NULL) sees each line.  AG_EINVAL with err
 * naming the line ("line 7: ...") at the first bad one; *n_lines counts them.
 */
ag_status ag_jobs_input_check(const char *data, size_t len, ag_jobs_line_fn fn, void *ctx, size_t *n_lines,
                              ag_err *err);

/* ---- files ---- */

/* The tenant's namespace from an API key (or "public" without one). */
void ag_jobs_tenant(ag_str api_key, char out[24]);

/*
 * Store a file (status processed: it was checked before).  idem_key (or
 * NULL): a create already done under it answers that file's object
 * (*replayed).  *out: the new (or earlier) file's fields.
 */
ag_status ag_jobs_file_create(ag_jobs *j, const char *tenant, const char *idem_key, const char *filename,
                              const char *purpose, const char *data, size_t len, size_t lines, ag_jobs_obj *out,
                              bool *replayed, ag_err *err);
/* AG_ENOTFOUND when absent or another tenant's. */
ag_status ag_jobs_file_get(ag_jobs *j, const char *tenant, const char *id, ag_jobs_obj *out, ag_err *err);
ag_status ag_jobs_file_content(ag_jobs *j, const char *tenant, const char *id, ag_buf *out, ag_err *err);
ag_status ag_jobs_file_delete(ag_jobs *j, const char *tenant, const char *id, ag_err *err);

/* A page of the tenant's files or batches: after an id (NULL: from the start), newest first when desc. */
typedef struct ag_jobs_page {
    ag_jobs_obj *items;
    size_t n;
    bool has_more;
} ag_jobs_page;
ag_status ag_jobs_list(ag_jobs *j, bool batches, const char *tenant, const char *after, size_t limit, bool desc,
                       ag_jobs_page *out, ag_err *err);
void ag_jobs_page_free(ag_jobs_page *p);

/* ---- batches ---- */

/*
 * Create a batch of the tenant's input file: every line's url must be
 * endpoint (AG_EINVAL naming the line), and the batch hash, its listing and
 * one stream entry per line are written in one MULTI/EXEC, so a batch is
 * queued whole or not at all.  metadata: JSON object text or NULL.
 */
ag_status ag_jobs_batch_create(ag_jobs *j, const char *tenant, const char *idem_key, const char *input_file_id,
                               const char *endpoint, uint64_t window_s, const char *metadata, ag_jobs_obj *out,
                               bool *replayed, ag_err *err);
ag_status ag_jobs_batch_get(ag_jobs *j, const char *tenant, const char *id, ag_jobs_obj *out, ag_err *err);
/* in_progress -> cancelling (and on to cancelled at once when nothing is left to run); its fields after. */
ag_status ag_jobs_batch_cancel(ag_jobs *j, const char *tenant, const char *id, ag_jobs_obj *out, ag_err *err);

/* ---- workers ---- */

/* A request to run, claimed by one consumer. */
typedef struct ag_jobs_task {
    char entry[AG_JOBS_ID_LEN];  /* the stream entry's id */
    char batch[AG_JOBS_ID_LEN];
    char tenant[24];
    char *custom_id, *url, *body; /* malloc'd */
    size_t body_len;
} ag_jobs_task;
void ag_jobs_task_free(ag_jobs_task *t);

typedef struct ag_jobs_claim_opts {
    const char *consumer;     /* this worker's name in the group */
    uint64_t claim_idle_ms;   /* entries pending this long with another consumer are taken over (XAUTOCLAIM) */
    uint64_t max_deliveries;  /* an entry delivered this many times goes to the error file instead */
    size_t max;               /* tasks wanted */
} ag_jobs_claim_opts;

/* What a claim settled without running: requests of cancelled batches skipped, and ones past their window,
 * or delivered too often, written as errors. */
typedef struct ag_jobs_claim_counts {
    uint64_t skipped, expired, poisoned;
} ag_jobs_claim_counts;

/*
 * Up to o->max requests to run: abandoned ones first (XAUTOCLAIM), then new
 * ones (XREADGROUP).  Requests whose batch is cancelling, past its window or
 * delivered max_deliveries times are settled here and not returned.
 */
ag_status ag_jobs_claim(ag_jobs *j, const ag_jobs_claim_opts *o, ag_jobs_task *out, size_t *n,
                        ag_jobs_claim_counts *counts, ag_err *err);
/*
 * The heartbeat of tasks this consumer is running: their idle time restarts
 * (XCLAIM JUSTID), so no other worker claims them, and live[i] says whether
 * batches[i] is still in progress (false: cancelled, its task should stop).
 */
ag_status ag_jobs_touch(ag_jobs *j, const char *consumer, const char *const *entries, const char *const *batches,
                        size_t n, bool *live, ag_err *err);

/* A task's answer: the status and body the API gave it, or (status 0) a task abandoned unrun (its batch was
 * cancelled while it ran: counted as skipped). */
typedef struct ag_jobs_result {
    int status;
    const char *body; /* compact JSON */
    size_t body_len;
    const char *request_id;
    int64_t input_tokens, output_tokens;
} ag_jobs_result;
/* Write it (once, whoever writes first), acknowledge the entry, and finish the batch if it was the last. */
ag_status ag_jobs_finish(ag_jobs *j, const ag_jobs_task *t, const ag_jobs_result *r, ag_err *err);

/* The queue: entries never delivered (the group's lag) and delivered but not acknowledged. */
ag_status ag_jobs_depth(ag_jobs *j, int64_t *waiting, int64_t *pending, ag_err *err);

#endif
