/*
 * span.h - one OTLP/JSON span object, written with the JSON writer, for
 * ag_otlp_submit (export.h).  The server names its spans and attributes;
 * this file owns the OTLP shape: ids, times as decimal strings, typed
 * attribute values, and the status.
 */
#ifndef AG_OBS_SPAN_H
#define AG_OBS_SPAN_H

#include "json/json.h"
#include "obs/export.h"
#include "obs/trace.h"

#include <stdbool.h>
#include <stdint.h>

enum { AG_SPAN_INTERNAL = 1, AG_SPAN_SERVER = 2 }; /* OTLP's SpanKind */

/* Open a span object and its "attributes" array; parent NULL or "" for a root span. */
void ag_span_open(ag_jw *w, const ag_trace *t, const char *span_id, const char *parent, const char *name, int kind,
                  uint64_t start_unix_ns, uint64_t end_unix_ns);
void ag_span_attr_str(ag_jw *w, const char *key, const char *v);
void ag_span_attr_int(ag_jw *w, const char *key, int64_t v);
void ag_span_attr_double(ag_jw *w, const char *key, double v);
void ag_span_attr_str_array(ag_jw *w, const char *key, const char *const *v, size_t n);
/* Close the attributes and the span with its status (error: STATUS_CODE_ERROR, else UNSET). */
void ag_span_close(ag_jw *w, bool error);
/* Hand the span in b to the exporter (when it was written whole) and free b. */
void ag_span_submit(ag_otlp *o, ag_buf *b);

#endif
