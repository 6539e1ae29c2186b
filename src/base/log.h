/*
 * log.h - leveled log lines in text or JSON, one write per line.
 *
 * The logger belongs to the program (the CLI and the server configure it);
 * libraries return errors rather than log them.  Each line is formatted into a
 * local buffer and written with one fwrite, so lines from several threads
 * never interleave.  The JSON format emits one object per line with ts (RFC
 * 3339 UTC, milliseconds), level, msg, then the caller's fields in order.
 */
#ifndef AG_BASE_LOG_H
#define AG_BASE_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum ag_log_level { AG_LOG_DEBUG, AG_LOG_INFO, AG_LOG_WARN, AG_LOG_ERROR, AG_LOG_OFF } ag_log_level;
typedef enum ag_log_format { AG_LOG_TEXT, AG_LOG_JSON } ag_log_format;

typedef enum ag_log_field_type { AG_LOG_STR, AG_LOG_INT, AG_LOG_DOUBLE } ag_log_field_type;

/* A key/value of a structured line; strings are borrowed for the call. */
typedef struct ag_log_field {
    const char *key;
    ag_log_field_type type;
    union {
        const char *s;
        int64_t i;
        double d;
    } v;
} ag_log_field;

#define AG_LOG_FIELD_STR(k, x) ((ag_log_field){.key = (k), .type = AG_LOG_STR, .v.s = (x)})
#define AG_LOG_FIELD_INT(k, x) ((ag_log_field){.key = (k), .type = AG_LOG_INT, .v.i = (x)})
#define AG_LOG_FIELD_DOUBLE(k, x) ((ag_log_field){.key = (k), .type = AG_LOG_DOUBLE, .v.d = (x)})

/* out: borrowed stream (default stderr). Not thread-safe against concurrent logging. */
void ag_log_configure(ag_log_format format, ag_log_level min_level, FILE *out);
/*
 * Send finished lines (newline included) to sink instead of the stream, e.g.
 * a buffer drained by a writer thread so logging never waits on a disk; NULL
 * restores the stream.  Set it before other threads log.
 */
typedef void (*ag_log_sink)(const char *line, size_t len, void *ctx);
void ag_log_set_sink(ag_log_sink sink, void *ctx);
/* Parse "debug|info|warn|error|off" and "text|json"; -1 when unknown. */
int ag_log_level_parse(const char *s);
int ag_log_format_parse(const char *s);
int ag_log_enabled(ag_log_level level);

void ag_log_fields(ag_log_level level, const char *msg, const ag_log_field *fields, size_t n_fields);
void ag_logf(ag_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
