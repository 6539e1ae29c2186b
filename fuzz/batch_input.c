/*
 * fuzz_batch_input: any bytes as a batch input file (JSONL).  The check
 * either accepts every line it counted, each with a non-empty custom_id of
 * at most AG_JOBS_MAX_CUSTOM_ID bytes, a known url and a body that parses
 * back as a JSON object, or fails with a message naming a line.
 */
#include "jobs/jobs.h"

#include "json/json.h"

#include <stdlib.h>
#include <string.h>

static ag_status fz_line(void *ctx, const ag_jobs_line *l, ag_err *err) {
    (void)err;
    size_t *seen = ctx;
    (*seen)++;
    if (!l->custom_id.n || l->custom_id.n > AG_JOBS_MAX_CUSTOM_ID || !l->lineno) abort();
    if (!ag_str_eq_cstr(l->url, "/v1/chat/completions") && !ag_str_eq_cstr(l->url, "/v1/completions")) abort();
    ag_arena a;
    ag_arena_init(&a, 1024);
    ag_json_val *v;
    if (ag_json_parse(l->body, l->body_len, NULL, &a, &v, NULL) != AG_OK || !ag_json_is(v, AG_JSON_OBJECT)) abort();
    ag_arena_deinit(&a);
    return AG_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t seen = 0, n;
    ag_err err;
    err.msg[0] = '\0';
    ag_status st = ag_jobs_input_check((const char *)data, size, fz_line, &seen, &n, &err);
    if (st == AG_OK && seen != n) abort();
    if (st != AG_OK && strncmp(err.msg, "line ", 5) != 0) abort();
    return 0;
}
