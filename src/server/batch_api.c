/*
 * batch_api.c - the OpenAI Files and Batches endpoints (docs/batch.md):
 *
 *   POST /v1/files (multipart: purpose=batch, file)   GET /v1/files   GET|DELETE /v1/files/{id}
 *   GET /v1/files/{id}/content
 *   POST /v1/batches   GET /v1/batches   GET /v1/batches/{id}   POST /v1/batches/{id}/cancel
 *
 * Each request's Redis work (and an upload's line-by-line check) runs on
 * the loop's thread pool as a batch_op, so the loop never waits on Redis or
 * on parsing a large file; the op holds copies of what it needs, and its
 * link to the connection (c->op) is cut if the client leaves first, when
 * the answer is dropped.  Objects belong to the API key's tenant: another
 * key's id reads as absent (404).
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "http/multipart.h"
#include "jobs/jobs.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum op_kind {
    OP_FILE_CREATE, OP_FILE_GET, OP_FILE_CONTENT, OP_FILE_DELETE, OP_FILE_LIST,
    OP_BATCH_CREATE, OP_BATCH_GET, OP_BATCH_LIST, OP_BATCH_CANCEL
} op_kind;

struct batch_op {
    uv_work_t work;
    server *s;
    conn *c; /* NULL once its client has left */
    op_kind kind;
    char tenant[24], id[AG_JOBS_ID_LEN], after[AG_JOBS_ID_LEN], idem[128];
    bool has_after, has_idem, desc;
    size_t limit;
    char *data; /* the uploaded file's bytes (a copy), or a batch's metadata JSON */
    size_t len;
    char filename[256], purpose[32], endpoint[32], input_file_id[AG_JOBS_ID_LEN];
    /* the outcome */
    ag_status st;
    ag_err err;
    ag_jobs_obj obj;
    ag_jobs_page page;
    ag_buf content;
    bool replayed;
    size_t lines;
};

/* ---- the work, on the thread pool ----------------------------------------------------------- */

static void op_work(uv_work_t *w) {
    batch_op *op = w->data;
    ag_jobs *j = op->s->jobs;
    const char *idem = op->has_idem ? op->idem : NULL, *after = op->has_after ? op->after : NULL;
    ag_err *e = &op->err;
    switch (op->kind) {
    case OP_FILE_CREATE:
        op->st = ag_jobs_input_check(op->data, op->len, NULL, NULL, &op->lines, e);
        if (op->st == AG_OK && !op->lines) op->st = ag_err_set(e, AG_EINVAL, "the file holds no requests");
        if (op->st == AG_OK)
            op->st = ag_jobs_file_create(j, op->tenant, idem, op->filename, op->purpose, op->data, op->len, op->lines,
                                         &op->obj, &op->replayed, e);
        break;
    case OP_FILE_GET: op->st = ag_jobs_file_get(j, op->tenant, op->id, &op->obj, e); break;
    case OP_FILE_CONTENT: op->st = ag_jobs_file_content(j, op->tenant, op->id, &op->content, e); break;
    case OP_FILE_DELETE: op->st = ag_jobs_file_delete(j, op->tenant, op->id, e); break;
    case OP_FILE_LIST: op->st = ag_jobs_list(j, false, op->tenant, after, op->limit, op->desc, &op->page, e); break;
    case OP_BATCH_CREATE:
        op->st = ag_jobs_batch_create(j, op->tenant, idem, op->input_file_id, op->endpoint,
                                      (op->s->o->batch_window_ms + 999) / 1000, op->data, &op->obj, &op->replayed, e);
        break;
    case OP_BATCH_GET: op->st = ag_jobs_batch_get(j, op->tenant, op->id, &op->obj, e); break;
    case OP_BATCH_LIST: op->st = ag_jobs_list(j, true, op->tenant, after, op->limit, op->desc, &op->page, e); break;
    case OP_BATCH_CANCEL: op->st = ag_jobs_batch_cancel(j, op->tenant, op->id, &op->obj, e); break;
    }
}

/* ---- the answers ------------------------------------------------------------------------------ */

static void jw_field_int(ag_jw *w, const ag_jobs_obj *o, const char *name, const char *key) {
    const char *v = ag_jobs_obj_get(o, name);
    ag_jw_keyc(w, key ? key : name);
    if (v) ag_jw_int(w, strtoll(v, NULL, 10));
    else ag_jw_null(w);
}

static void jw_field_str(ag_jw *w, const ag_jobs_obj *o, const char *name) {
    const char *v = ag_jobs_obj_get(o, name);
    ag_jw_keyc(w, name);
    if (v) ag_jw_strc(w, v);
    else ag_jw_null(w);
}

static void file_object(ag_jw *w, const ag_jobs_obj *o) {
    ag_jw_obj_begin(w);
    jw_field_str(w, o, "id");
    ag_jw_keyc(w, "object");
    ag_jw_strc(w, "file");
    jw_field_int(w, o, "bytes", NULL);
    jw_field_int(w, o, "created_at", NULL);
    jw_field_str(w, o, "filename");
    jw_field_str(w, o, "purpose");
    jw_field_str(w, o, "status");
    ag_jw_keyc(w, "status_details");
    ag_jw_null(w);
    ag_jw_keyc(w, "expires_at");
    ag_jw_null(w);
    ag_jw_obj_end(w);
}

static int64_t field_i64(const ag_jobs_obj *o, const char *name) {
    const char *v = ag_jobs_obj_get(o, name);
    return v ? strtoll(v, NULL, 10) : 0;
}

static void batch_object(ag_jw *w, const ag_jobs_obj *o, const char *model) {
    ag_jw_obj_begin(w);
    jw_field_str(w, o, "id");
    ag_jw_keyc(w, "object");
    ag_jw_strc(w, "batch");
    jw_field_str(w, o, "endpoint");
    ag_jw_keyc(w, "model");
    ag_jw_strc(w, model);
    ag_jw_keyc(w, "errors");
    ag_jw_null(w);
    jw_field_str(w, o, "input_file_id");
    jw_field_str(w, o, "completion_window");
    jw_field_str(w, o, "status");
    jw_field_str(w, o, "output_file_id");
    jw_field_str(w, o, "error_file_id");
    static const char *const times[] = {"created_at",  "in_progress_at", "expires_at",    "finalizing_at", "completed_at",
                                        "failed_at",   "expired_at",     "cancelling_at", "cancelled_at"};
    for (size_t i = 0; i < sizeof times / sizeof *times; i++) jw_field_int(w, o, times[i], NULL);
    ag_jw_keyc(w, "request_counts");
    ag_jw_obj_begin(w);
    jw_field_int(w, o, "total", NULL);
    jw_field_int(w, o, "completed", NULL);
    jw_field_int(w, o, "failed", NULL);
    ag_jw_obj_end(w);
    int64_t in = field_i64(o, "input_tokens"), out = field_i64(o, "output_tokens");
    ag_jw_keyc(w, "usage");
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "input_tokens");
    ag_jw_int(w, in);
    ag_jw_keyc(w, "input_tokens_details");
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "cached_tokens");
    ag_jw_int(w, 0);
    ag_jw_obj_end(w);
    ag_jw_keyc(w, "output_tokens");
    ag_jw_int(w, out);
    ag_jw_keyc(w, "output_tokens_details");
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "reasoning_tokens");
    ag_jw_int(w, 0);
    ag_jw_obj_end(w);
    ag_jw_keyc(w, "total_tokens");
    ag_jw_int(w, in + out);
    ag_jw_obj_end(w);
    /* metadata is kept as the JSON text it was given (checked when the batch was created) */
    const char *md = ag_jobs_obj_get(o, "metadata");
    ag_jw_keyc(w, "metadata");
    ag_arena a;
    ag_arena_init(&a, 1024);
    ag_json_val *v = NULL;
    if (md && ag_json_parse(md, strlen(md), NULL, &a, &v, NULL) == AG_OK) ag_jw_value(w, v);
    else ag_jw_null(w);
    ag_arena_deinit(&a);
    ag_jw_obj_end(w);
}

static void respond_store_error(conn *c, const batch_op *op) {
    const char *what = op->kind <= OP_FILE_LIST ? "File" : "Batch";
    switch (op->st) {
    case AG_ENOTFOUND: {
        char msg[320];
        if (op->id[0]) snprintf(msg, sizeof msg, "No such %s object: %s", what, op->id);
        else snprintf(msg, sizeof msg, "%s", op->err.msg);
        ag_conn_respond_status(c, 404, "invalid_request_error", "not_found", msg, NULL);
        return;
    }
    case AG_EINVAL:
    case AG_ELIMIT:
        ag_conn_respond_status(c, 400, "invalid_request_error", "invalid_file", op->err.msg, "x-should-retry: false\r\n");
        return;
    case AG_AGAIN: ag_conn_respond_status(c, 409, "invalid_request_error", "conflict", op->err.msg, "Retry-After: 1\r\n"); return;
    default: {
        char msg[320];
        snprintf(msg, sizeof msg, "The batch store (Redis) failed: %s", op->err.msg);
        ag_conn_respond_status(c, 503, "service_unavailable", NULL, msg, "Retry-After: 1\r\n");
    }
    }
}

static void respond(batch_op *op) {
    conn *c = op->c;
    if (op->st != AG_OK) return respond_store_error(c, op);
    if (op->kind == OP_FILE_CONTENT) {
        ag_conn_respond(c, 200, "application/octet-stream", op->content.data ? op->content.data : "", op->content.len, NULL);
        return;
    }
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
    bool files = op->kind <= OP_FILE_LIST;
    if (op->kind == OP_FILE_DELETE) {
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "id");
        ag_jw_strc(&w, op->id);
        ag_jw_keyc(&w, "object");
        ag_jw_strc(&w, "file");
        ag_jw_keyc(&w, "deleted");
        ag_jw_bool(&w, true);
        ag_jw_obj_end(&w);
    } else if (op->kind == OP_FILE_LIST || op->kind == OP_BATCH_LIST) {
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "object");
        ag_jw_strc(&w, "list");
        ag_jw_keyc(&w, "data");
        ag_jw_arr_begin(&w);
        for (size_t i = 0; i < op->page.n; i++) {
            const char *purpose = ag_jobs_obj_get(&op->page.items[i], "purpose");
            if (files && op->purpose[0] && (!purpose || strcmp(purpose, op->purpose) != 0)) continue;
            if (files) file_object(&w, &op->page.items[i]);
            else batch_object(&w, &op->page.items[i], c->s->model.name);
        }
        ag_jw_arr_end(&w);
        const char *first = op->page.n ? ag_jobs_obj_get(&op->page.items[0], "id") : NULL;
        const char *last = op->page.n ? ag_jobs_obj_get(&op->page.items[op->page.n - 1], "id") : NULL;
        ag_jw_keyc(&w, "first_id");
        if (first) ag_jw_strc(&w, first);
        else ag_jw_null(&w);
        ag_jw_keyc(&w, "last_id");
        if (last) ag_jw_strc(&w, last);
        else ag_jw_null(&w);
        ag_jw_keyc(&w, "has_more");
        ag_jw_bool(&w, op->page.has_more);
        ag_jw_obj_end(&w);
    } else if (files) {
        file_object(&w, &op->obj);
    } else {
        batch_object(&w, &op->obj, c->s->model.name);
    }
    if (b.err != AG_OK) ag_conn_respond_status(c, 503, "service_unavailable", NULL, "out of memory", NULL);
    else ag_conn_respond_json(c, 200, &b, op->replayed ? "Idempotent-Replayed: true\r\n" : NULL);
    ag_buf_deinit(&b);
}

static void op_free(batch_op *op) {
    free(op->data);
    ag_jobs_obj_free(&op->obj);
    ag_jobs_page_free(&op->page);
    ag_buf_deinit(&op->content);
    free(op);
}

static void op_done(uv_work_t *w, int status) {
    (void)status;
    batch_op *op = w->data;
    server *s = op->s;
    s->n_batch_ops--;
    conn *c = op->c;
    if (c) {
        c->op = NULL;
        respond(op);
    }
    op_free(op);
    if (c) ag_conn_process(c); /* a pipelined request may be waiting */
    ag_server_maybe_stop(s);
}

void ag_batch_on_client_gone(conn *c) {
    c->op->c = NULL;
    c->op = NULL;
}

static void op_start(batch_op *op) {
    conn *c = op->c;
    c->op = op;
    op->s->n_batch_ops++;
    op->work.data = op;
    uv_queue_work(&op->s->loop, &op->work, op_work, op_done);
}

/* ---- requests ------------------------------------------------------------------------------------ */

/* name=value of a query string (the value as sent: the ids and numbers it carries need no decoding). */
static bool query_get(ag_str q, const char *name, ag_str *val) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < q.n;) {
        const char *amp = memchr(q.p + i, '&', q.n - i);
        size_t end = amp ? (size_t)(amp - q.p) : q.n;
        if (end - i > nl && memcmp(q.p + i, name, nl) == 0 && q.p[i + nl] == '=') {
            *val = (ag_str){q.p + i + nl + 1, end - i - nl - 1};
            return true;
        }
        i = end + 1;
    }
    return false;
}

static bool valid_id(ag_str id) {
    if (!id.n || id.n >= AG_JOBS_ID_LEN) return false;
    for (size_t i = 0; i < id.n; i++) {
        char ch = id.p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static void bad_request(conn *c, const char *param, const char *msg) {
    ag_api_error e;
    ag_api_fail(&e, 400, "invalid_request_error", param, NULL, "%s", msg);
    ag_conn_respond_error(c, &e);
}

static batch_op *op_new(conn *c, op_kind kind) {
    batch_op *op = ag_xcalloc(1, sizeof *op);
    op->s = c->s, op->c = c, op->kind = kind;
    ag_buf_init(&op->content);
    ag_jobs_tenant(ag_route_bearer(&c->req), op->tenant);
    ag_str k = ag_http_header_get(&c->req, "idempotency-key");
    if (k.p && k.n && k.n < sizeof op->idem) {
        op->has_idem = true;
        for (size_t i = 0; i < k.n; i++) /* the key names a Redis key: anything outside printable ASCII is '_' */
            op->idem[i] = k.p[i] > ' ' && k.p[i] < 127 ? k.p[i] : '_';
    }
    return op;
}

/* ?after=ID&limit=N[&order=asc|desc]: false when answered (400). */
static bool list_params(conn *c, batch_op *op, size_t max, size_t dflt) {
    ag_str q = c->req.query, v;
    op->limit = dflt, op->desc = true;
    if (query_get(q, "limit", &v)) {
        uint64_t n;
        if (ag_str_parse_u64(v, &n) != AG_OK || n < 1 || n > max) {
            char msg[96];
            snprintf(msg, sizeof msg, "limit must be a whole number from 1 to %zu", max);
            bad_request(c, "limit", msg);
            return false;
        }
        op->limit = (size_t)n;
    }
    if (query_get(q, "after", &v)) {
        if (!valid_id(v)) return bad_request(c, "after", "after must be an id from an earlier page"), false;
        snprintf(op->after, sizeof op->after, "%.*s", (int)v.n, v.p);
        op->has_after = true;
    }
    if (query_get(q, "order", &v)) {
        if (!ag_str_eq_cstr(v, "asc") && !ag_str_eq_cstr(v, "desc"))
            return bad_request(c, "order", "order must be asc or desc"), false;
        op->desc = ag_str_eq_cstr(v, "desc");
    }
    return true;
}

static void file_upload(conn *c, const char *body, size_t len) {
    ag_str boundary;
    if (ag_multipart_boundary(ag_http_header_get(&c->req, "content-type"), &boundary) != AG_OK)
        return bad_request(c, NULL, "POST /v1/files takes multipart/form-data with a boundary");
    ag_multipart_part parts[AG_MULTIPART_MAX_PARTS];
    size_t n;
    const char *why;
    if (ag_multipart_parse(body, len, boundary, parts, AG_MULTIPART_MAX_PARTS, &n, &why) != AG_OK) {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed multipart body: %s", why);
        return bad_request(c, NULL, msg);
    }
    const ag_multipart_part *file = NULL, *purpose = NULL;
    for (size_t i = 0; i < n; i++) {
        if (ag_str_eq_cstr(parts[i].name, "file")) file = &parts[i];
        else if (ag_str_eq_cstr(parts[i].name, "purpose")) purpose = &parts[i];
    }
    if (!purpose) return bad_request(c, "purpose", "Missing required parameter: 'purpose'.");
    if (!ag_str_eq_cstr(ag_str_trim(purpose->data), "batch"))
        return bad_request(c, "purpose", "This server stores files for purpose 'batch' only.");
    if (!file) return bad_request(c, "file", "Missing required parameter: 'file'.");
    if (file->data.n > c->s->o->max_file_bytes) {
        char msg[128];
        snprintf(msg, sizeof msg, "The file is larger than this server's limit of %zu bytes (--max-file-bytes).",
                 c->s->o->max_file_bytes);
        ag_conn_respond_status(c, 413, "invalid_request_error", "file_too_large", msg, NULL);
        return;
    }
    batch_op *op = op_new(c, OP_FILE_CREATE);
    ag_str fn = file->filename.p && file->filename.n ? file->filename : AG_STR_LIT("upload.jsonl");
    snprintf(op->filename, sizeof op->filename, "%.*s", (int)(fn.n < 255 ? fn.n : 255), fn.p);
    snprintf(op->purpose, sizeof op->purpose, "batch");
    op->data = ag_xstrndup(file->data.p, file->data.n);
    op->len = file->data.n;
    op_start(op);
}

static void batch_create(conn *c, const char *body, size_t len) {
    ag_arena a;
    ag_arena_init(&a, 4096);
    ag_json_val *root;
    ag_json_err je;
    const char *err = NULL, *param = NULL;
    if (ag_json_parse(body, len, NULL, &a, &root, &je) != AG_OK || !ag_json_is(root, AG_JSON_OBJECT)) {
        err = "The body must be a JSON object.";
        goto out;
    }
    ag_str file = ag_json_str(ag_json_obj_getc(root, "input_file_id"));
    ag_str ep = ag_json_str(ag_json_obj_getc(root, "endpoint"));
    ag_str window = ag_json_str(ag_json_obj_getc(root, "completion_window"));
    const ag_json_val *md = ag_json_obj_getc(root, "metadata");
    if (!valid_id(file)) {
        err = "input_file_id must be the id of an uploaded file.", param = "input_file_id";
        goto out;
    }
    if (!ag_str_eq_cstr(ep, "/v1/chat/completions") && !ag_str_eq_cstr(ep, "/v1/completions")) {
        err = "endpoint must be /v1/chat/completions or /v1/completions.", param = "endpoint";
        goto out;
    }
    if (!ag_str_eq_cstr(window, "24h")) {
        err = "completion_window must be '24h'.", param = "completion_window";
        goto out;
    }
    if (md && !ag_json_is(md, AG_JSON_NULL)) {
        bool ok = ag_json_is(md, AG_JSON_OBJECT) && ag_json_len(md) <= 16;
        for (size_t i = 0; ok && i < ag_json_len(md); i++)
            ok = md->u.members[i].key.len <= 64 && ag_json_is(&md->u.members[i].val, AG_JSON_STRING) &&
                 md->u.members[i].val.len <= 512;
        if (!ok) {
            err = "metadata must be an object of at most 16 strings (keys up to 64 characters, values up to 512).";
            param = "metadata";
            goto out;
        }
    }
    batch_op *op = op_new(c, OP_BATCH_CREATE);
    snprintf(op->input_file_id, sizeof op->input_file_id, "%.*s", (int)file.n, file.p);
    snprintf(op->endpoint, sizeof op->endpoint, "%.*s", (int)ep.n, ep.p);
    if (md && ag_json_is(md, AG_JSON_OBJECT)) {
        ag_buf m;
        ag_buf_init(&m);
        ag_jw w;
        ag_jw_init(&w, &m, 0, AG_UTF8_REPLACE);
        ag_jw_value(&w, md);
        op->data = ag_buf_detach(&m, &op->len);
    }
    op_start(op);
out:
    ag_arena_deinit(&a);
    if (err) bad_request(c, param, err);
}

static void method_not_allowed(conn *c, const char *allow) {
    char msg[96], extra[64];
    snprintf(msg, sizeof msg, "Method %.*s is not allowed here", (int)(c->req.method.n > 16 ? 16 : c->req.method.n),
             c->req.method.p);
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    ag_conn_respond_status(c, 405, "invalid_request_error", "method_not_allowed", msg, extra);
}

void ag_batch_route(conn *c, int route, const char *body, size_t len) {
    if (!c->s->jobs) {
        ag_conn_respond_status(c, 501, "invalid_request_error", "not_implemented",
                               "The Files and Batches APIs need a Redis: start the server with --redis-url "
                               "(or --batch-redis-url).", "x-should-retry: false\r\n");
        return;
    }
    ag_str m = c->req.method, path = c->req.path;
    bool get = ag_str_eq_cstr(m, "GET"), post = ag_str_eq_cstr(m, "POST");
    if (route == R_FILES || route == R_BATCHES) {
        bool files = route == R_FILES;
        if (post) return files ? file_upload(c, body, len) : batch_create(c, body, len);
        if (!get) return method_not_allowed(c, "GET, POST");
        batch_op *op = op_new(c, files ? OP_FILE_LIST : OP_BATCH_LIST);
        if (!list_params(c, op, files ? 10000 : 100, files ? 10000 : 20)) return op_free(op);
        if (files && query_get(c->req.query, "purpose", &m)) /* a page's files of another purpose are left out */
            snprintf(op->purpose, sizeof op->purpose, "%.*s", (int)(m.n < 31 ? m.n : 31), m.p);
        return op_start(op);
    }
    /* /v1/files/{id}[/content], /v1/batches/{id}[/cancel] */
    size_t skip = route == R_FILE ? 10 : 12;
    ag_str rest = {path.p + skip, path.n - skip};
    const char *slash = memchr(rest.p, '/', rest.n);
    ag_str id = {rest.p, slash ? (size_t)(slash - rest.p) : rest.n};
    ag_str tail = slash ? (ag_str){slash, rest.n - id.n} : (ag_str){"", 0};
    const char *sub = route == R_FILE ? "/content" : "/cancel";
    if (!valid_id(id) || (tail.n && !ag_str_eq_cstr(tail, sub))) {
        ag_conn_respond_status(c, 404, "invalid_request_error", "not_found", "No such object.", NULL);
        return;
    }
    op_kind kind;
    if (route == R_FILE) {
        if (tail.n) {
            if (!get) return method_not_allowed(c, "GET");
            kind = OP_FILE_CONTENT;
        } else if (get) kind = OP_FILE_GET;
        else if (ag_str_eq_cstr(m, "DELETE")) kind = OP_FILE_DELETE;
        else return method_not_allowed(c, "GET, DELETE");
    } else if (tail.n) {
        if (!post) return method_not_allowed(c, "POST");
        kind = OP_BATCH_CANCEL;
    } else {
        if (!get) return method_not_allowed(c, "GET");
        kind = OP_BATCH_GET;
    }
    batch_op *op = op_new(c, kind);
    snprintf(op->id, sizeof op->id, "%.*s", (int)id.n, id.p);
    op_start(op);
}
