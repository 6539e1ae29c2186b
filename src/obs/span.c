/*
 * span.c - the OTLP/JSON shape of one span (see span.h).
 */
#include "obs/span.h"

#include <stdio.h>

/* {"key":key,"value":{"<kind>": ...}}: attr_open writes up to the value, attr_close ends both objects. */
static void attr_open(ag_jw *w, const char *key, const char *kind) {
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "key");
    ag_jw_strc(w, key);
    ag_jw_keyc(w, "value");
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, kind);
}

static void attr_close(ag_jw *w) {
    ag_jw_obj_end(w);
    ag_jw_obj_end(w);
}

void ag_span_attr_str(ag_jw *w, const char *key, const char *v) {
    attr_open(w, key, "stringValue");
    ag_jw_strc(w, v);
    attr_close(w);
}

void ag_span_attr_int(ag_jw *w, const char *key, int64_t v) {
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)v); /* OTLP JSON: 64-bit integers as strings */
    attr_open(w, key, "intValue");
    ag_jw_strc(w, text);
    attr_close(w);
}

void ag_span_attr_double(ag_jw *w, const char *key, double v) {
    attr_open(w, key, "doubleValue");
    ag_jw_double(w, v);
    attr_close(w);
}

void ag_span_attr_str_array(ag_jw *w, const char *key, const char *const *v, size_t n) {
    attr_open(w, key, "arrayValue");
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "values");
    ag_jw_arr_begin(w);
    for (size_t i = 0; i < n; i++) {
        ag_jw_obj_begin(w);
        ag_jw_keyc(w, "stringValue");
        ag_jw_strc(w, v[i]);
        ag_jw_obj_end(w);
    }
    ag_jw_arr_end(w);
    ag_jw_obj_end(w);
    attr_close(w);
}

static void time_field(ag_jw *w, const char *key, uint64_t ns) {
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)ns);
    ag_jw_keyc(w, key);
    ag_jw_strc(w, num);
}

void ag_span_open(ag_jw *w, const ag_trace *t, const char *span_id, const char *parent, const char *name, int kind,
                  uint64_t start_unix_ns, uint64_t end_unix_ns) {
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "traceId");
    ag_jw_strc(w, t->trace_id);
    ag_jw_keyc(w, "spanId");
    ag_jw_strc(w, span_id);
    if (parent && *parent) {
        ag_jw_keyc(w, "parentSpanId");
        ag_jw_strc(w, parent);
    }
    ag_jw_keyc(w, "name");
    ag_jw_strc(w, name);
    ag_jw_keyc(w, "kind");
    ag_jw_int(w, kind);
    time_field(w, "startTimeUnixNano", start_unix_ns);
    time_field(w, "endTimeUnixNano", end_unix_ns > start_unix_ns ? end_unix_ns : start_unix_ns);
    ag_jw_keyc(w, "attributes");
    ag_jw_arr_begin(w);
}

void ag_span_close(ag_jw *w, bool error) {
    ag_jw_arr_end(w);
    ag_jw_keyc(w, "status");
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "code");
    ag_jw_int(w, error ? 2 : 0);
    ag_jw_obj_end(w);
    ag_jw_obj_end(w);
}

void ag_span_submit(ag_otlp *o, ag_buf *b) {
    if (b->err == AG_OK) ag_otlp_submit(o, ag_buf_detach(b, NULL));
    ag_buf_deinit(b);
}
