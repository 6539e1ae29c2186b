/*
 * input.c - a batch input file's lines (see jobs.h): checked once at
 * upload, so a bad line is a 400 naming it, and read again when a batch is
 * created, to queue each request.
 */
#include "jobs/jobs.h"

#include "base/arena.h"
#include "base/map.h"
#include "json/json.h"

#include <string.h>

static bool known_url(ag_str u) {
    return ag_str_eq_cstr(u, "/v1/chat/completions") || ag_str_eq_cstr(u, "/v1/completions");
}

/* One line's fields, checked; the body re-written compact into body_out. */
static ag_status check_line(const char *p, size_t n, size_t lineno, ag_arena *a, ag_buf *body_out, ag_jobs_line *l,
                            ag_err *err) {
    ag_json_val *root;
    ag_json_err je;
    ag_status st = ag_json_parse(p, n, NULL, a, &root, &je);
    if (st == AG_NOMEM) return ag_err_set(err, AG_NOMEM, "line %zu: out of memory", lineno);
    if (st != AG_OK) return ag_err_set(err, AG_EINVAL, "line %zu: invalid JSON at column %zu: %s", lineno, je.col, je.reason);
    if (!ag_json_is(root, AG_JSON_OBJECT)) return ag_err_set(err, AG_EINVAL, "line %zu: not a JSON object", lineno);
    ag_str id = ag_json_str(ag_json_obj_getc(root, "custom_id"));
    if (!id.p || !id.n) return ag_err_set(err, AG_EINVAL, "line %zu: custom_id must be a non-empty string", lineno);
    if (id.n > AG_JOBS_MAX_CUSTOM_ID)
        return ag_err_set(err, AG_EINVAL, "line %zu: custom_id is longer than %d bytes", lineno, AG_JOBS_MAX_CUSTOM_ID);
    ag_str method = ag_json_str(ag_json_obj_getc(root, "method"));
    if (!ag_str_eq_cstr(method, "POST")) return ag_err_set(err, AG_EINVAL, "line %zu: method must be \"POST\"", lineno);
    ag_str url = ag_json_str(ag_json_obj_getc(root, "url"));
    if (!known_url(url))
        return ag_err_set(err, AG_EINVAL, "line %zu: url must be /v1/chat/completions or /v1/completions, not \"%.*s\"",
                          lineno, (int)(url.n > 64 ? 64 : url.n), url.p ? url.p : "");
    const ag_json_val *body = ag_json_obj_getc(root, "body");
    if (!ag_json_is(body, AG_JSON_OBJECT)) return ag_err_set(err, AG_EINVAL, "line %zu: body must be an object", lineno);
    bool stream = false;
    if (ag_json_get_bool(ag_json_obj_getc(body, "stream"), &stream) && stream)
        return ag_err_set(err, AG_EINVAL, "line %zu: a batch request cannot stream (body.stream is true)", lineno);
    ag_buf_reset(body_out);
    ag_jw w;
    ag_jw_init(&w, body_out, 0, AG_UTF8_REPLACE);
    ag_jw_value(&w, body);
    if (body_out->err != AG_OK) return ag_err_set(err, AG_NOMEM, "line %zu: out of memory", lineno);
    *l = (ag_jobs_line){lineno, id, url, body_out->data, body_out->len};
    return AG_OK;
}

ag_status ag_jobs_input_check(const char *data, size_t len, ag_jobs_line_fn fn, void *ctx, size_t *n_lines,
                              ag_err *err) {
    *n_lines = 0;
    ag_map seen; /* the custom_ids so far, their bytes in keys */
    ag_map_init(&seen);
    ag_arena a, keys;
    ag_arena_init(&a, 4096);
    ag_arena_init(&keys, 4096);
    ag_buf body;
    ag_buf_init(&body);
    ag_status st = AG_OK;
    size_t lineno = 0;
    for (size_t at = 0; at < len && st == AG_OK;) {
        const char *nl = memchr(data + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - (data + at)) : len - at;
        const char *p = data + at;
        at += n + (nl != NULL);
        lineno++;
        ag_str t = ag_str_trim((ag_str){p, n});
        if (!t.n) continue;
        if (*n_lines == AG_JOBS_MAX_LINES) {
            st = ag_err_set(err, AG_ELIMIT, "line %zu: more than %d requests in one file", lineno, AG_JOBS_MAX_LINES);
            break;
        }
        ag_arena_reset(&a);
        ag_jobs_line l;
        st = check_line(t.p, t.n, lineno, &a, &body, &l, err);
        if (st != AG_OK) break;
        if (ag_map_get(&seen, l.custom_id.p, l.custom_id.n)) {
            st = ag_err_set(err, AG_EINVAL, "line %zu: custom_id \"%.*s\" is used by an earlier line", lineno,
                            (int)(l.custom_id.n > 64 ? 64 : l.custom_id.n), l.custom_id.p);
            break;
        }
        /* the decoded id is the key ("a" and "\u0061" are one id), kept past this line's arena */
        char *key = ag_arena_alloc(&keys, l.custom_id.n);
        memcpy(key, l.custom_id.p, l.custom_id.n);
        ag_map_put(&seen, key, l.custom_id.n, key);
        (*n_lines)++;
        if (fn) st = fn(ctx, &l, err);
    }
    ag_buf_deinit(&body);
    ag_arena_deinit(&a);
    ag_arena_deinit(&keys);
    ag_map_deinit(&seen);
    return st;
}
