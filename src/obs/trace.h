/*
 * trace.h - W3C Trace Context for requests: validating an incoming
 * `traceparent` (or taking an `X-Trace-ID`), making new trace and span ids,
 * and writing the header back.  Ids are kept as lowercase hex text, the form
 * every consumer (headers, logs, OTLP JSON) wants.
 */
#ifndef AG_OBS_TRACE_H
#define AG_OBS_TRACE_H

#include "base/str.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ag_trace {
    char trace_id[33];  /* 32 hex digits */
    char span_id[17];   /* this server's span */
    char parent_id[17]; /* the caller's span; "" when the trace started here */
    bool sampled;
} ag_trace;

/*
 * Start the server span of a request.  A valid traceparent continues its trace
 * (its sampled flag decides sampling); otherwise a 32-hex-digit X-Trace-ID
 * names the trace; otherwise a new trace starts.  New traces are sampled with
 * probability sample_ratio.
 */
void ag_trace_begin(ag_trace *t, ag_str traceparent, ag_str x_trace_id, double sample_ratio);
/* Parse a traceparent header; false when invalid (W3C rules: lowercase hex, no all-zero ids, version != ff). */
bool ag_trace_parse(ag_str header, char trace_id[33], char parent_id[17], bool *sampled);
/* A new random span id (for child spans). */
void ag_trace_new_span_id(char out[17]);
/* "00-<trace>-<span>-<flags>" into out (56 bytes). */
void ag_trace_format(const ag_trace *t, char out[56]);

#endif
