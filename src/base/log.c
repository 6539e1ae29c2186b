/*
 * log.c - text and JSON log lines; see log.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "base/log.h"

#include "base/buf.h"
#include "base/clock.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

static ag_log_format log_format = AG_LOG_TEXT;
static ag_log_level log_min = AG_LOG_INFO;
static FILE *log_out;
static ag_log_sink log_sink;
static void *log_sink_ctx;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void ag_log_configure(ag_log_format format, ag_log_level min_level, FILE *out) {
    log_format = format;
    log_min = min_level;
    log_out = out;
}

void ag_log_set_sink(ag_log_sink sink, void *ctx) {
    log_sink = sink;
    log_sink_ctx = ctx;
}

int ag_log_level_parse(const char *s) {
    for (int i = 0; i <= AG_LOG_OFF; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

int ag_log_format_parse(const char *s) {
    if (strcmp(s, "text") == 0) return AG_LOG_TEXT;
    if (strcmp(s, "json") == 0) return AG_LOG_JSON;
    return -1;
}

int ag_log_enabled(ag_log_level level) { return level >= log_min && level < AG_LOG_OFF; }

static void append_timestamp(ag_buf *b) {
    uint64_t ns = ag_clock_wall_ns();
    time_t secs = (time_t)(ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[40];
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    ag_buf_append(b, ts, n);
    ag_buf_appendf(b, ".%03uZ", (unsigned)(ns / 1000000ull % 1000));
}

static void append_field_value(ag_buf *b, const ag_log_field *f, int json) {
    switch (f->type) {
    case AG_LOG_STR:
        if (json) ag_buf_append_json_str(b, f->v.s, strlen(f->v.s), AG_UTF8_REPLACE);
        else ag_buf_append_str(b, f->v.s);
        break;
    case AG_LOG_INT: ag_buf_appendf(b, "%lld", (long long)f->v.i); break;
    case AG_LOG_DOUBLE:
        if (json && !isfinite(f->v.d)) ag_buf_append_str(b, "null");
        else ag_buf_appendf(b, "%.6g", f->v.d);
        break;
    }
}

void ag_log_fields(ag_log_level level, const char *msg, const ag_log_field *fields, size_t n_fields) {
    if (!ag_log_enabled(level)) return;
    ag_buf b;
    ag_buf_init(&b);
    if (log_format == AG_LOG_JSON) {
        ag_buf_append_str(&b, "{\"ts\":\"");
        append_timestamp(&b);
        ag_buf_appendf(&b, "\",\"level\":\"%s\",\"msg\":", level_names[level]);
        ag_buf_append_json_str(&b, msg, strlen(msg), AG_UTF8_REPLACE);
        for (size_t i = 0; i < n_fields; i++) {
            ag_buf_append_char(&b, ',');
            ag_buf_append_json_str(&b, fields[i].key, strlen(fields[i].key), AG_UTF8_REPLACE);
            ag_buf_append_char(&b, ':');
            append_field_value(&b, &fields[i], 1);
        }
        ag_buf_append_str(&b, "}\n");
    } else {
        append_timestamp(&b);
        ag_buf_appendf(&b, " %-5s %s", level_names[level], msg);
        for (size_t i = 0; i < n_fields; i++) {
            ag_buf_appendf(&b, " %s=", fields[i].key);
            append_field_value(&b, &fields[i], 0);
        }
        ag_buf_append_char(&b, '\n');
    }
    if (b.err == AG_OK && log_sink) log_sink(b.data, b.len, log_sink_ctx);
    else if (b.err == AG_OK) fwrite(b.data, 1, b.len, log_out ? log_out : stderr);
    ag_buf_deinit(&b);
}

void ag_logf(ag_log_level level, const char *fmt, ...) {
    if (!ag_log_enabled(level)) return;
    ag_buf msg;
    ag_buf_init(&msg);
    va_list ap;
    va_start(ap, fmt);
    ag_buf_vappendf(&msg, fmt, ap);
    va_end(ap);
    const char *text = msg.err != AG_OK ? "(log message lost: out of memory)" : msg.data ? msg.data : "";
    ag_log_fields(level, text, NULL, 0);
    ag_buf_deinit(&msg);
}
