/*
 * export.h - the two background writers of the observability layer, so the
 * loop thread never waits on a disk or a collector:
 *
 *  - a log queue: log lines go into a bounded buffer that a writer thread
 *    drains to the log file every 100 ms (sooner when half full); when it is
 *    full, lines are dropped and counted;
 *  - an OTLP/HTTP JSON span exporter: finished spans (JSON objects) go into a
 *    bounded queue; a thread POSTs them in batches to {endpoint}/v1/traces
 *    with short timeouts; spans that do not fit, or whose batch the collector
 *    refused or did not take in time, are dropped and counted.
 */
#ifndef AG_OBS_EXPORT_H
#define AG_OBS_EXPORT_H

#include "autoglm/status.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct ag_logq ag_logq;

/* out: borrowed; dropped: counter of lines dropped (borrowed). */
ag_logq *ag_logq_create(FILE *out, size_t cap_bytes, _Atomic uint64_t *dropped);
/* An ag_log_sink: copy the line in, or drop it when the buffer is full. */
void ag_logq_push(const char *line, size_t len, void *logq);
/* Write what is queued and stop the thread. */
void ag_logq_destroy(ag_logq *q);

typedef struct ag_otlp ag_otlp;

typedef struct ag_otlp_params {
    const char *endpoint;   /* "http://host:port[/prefix]"; spans go to {endpoint}/v1/traces */
    const char *service;    /* resource service.name */
    size_t max_queue;       /* spans buffered; 0: 4096 */
    size_t batch;           /* spans per request; 0: 512 */
    uint32_t interval_ms;   /* longest wait before a partial batch is sent; 0: 500 */
    uint32_t timeout_ms;    /* per request (connect, send, answer); 0: 2000 */
    _Atomic uint64_t *exported, *dropped; /* counters, borrowed */
} ag_otlp_params;

ag_status ag_otlp_create(const ag_otlp_params *p, ag_otlp **out, ag_err *err);
/* Queue one span (a JSON object, malloc'd; ownership passes), or drop it when the queue is full. */
void ag_otlp_submit(ag_otlp *o, char *span_json);
/* Send what is queued (one last try within the timeout) and stop the thread. */
void ag_otlp_destroy(ag_otlp *o);

#endif
