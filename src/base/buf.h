/*
 * buf.h - growable byte buffer with a sticky error (SQLite's StrAccum idea).
 *
 * Appends never fail loudly: when growth fails (try tier) or would pass
 * max_len, the buffer records the status in ->err and ignores every later
 * append, so a writer can append freely and check one status at the end.  The
 * data is always NUL-terminated when cap > 0 (the NUL is not counted in len).
 */
#ifndef AG_BASE_BUF_H
#define AG_BASE_BUF_H

#include "autoglm/status.h"

#include <stdarg.h>
#include <stddef.h>

typedef struct ag_buf {
    char *data;     /* owned; NULL until the first append */
    size_t len;     /* bytes written, not counting the NUL */
    size_t cap;     /* bytes allocated */
    size_t max_len; /* growth limit in bytes; 0 means no limit */
    ag_status err;  /* AG_OK, or the first failure (AG_NOMEM, AG_ELIMIT) */
} ag_buf;

void ag_buf_init(ag_buf *b);
void ag_buf_deinit(ag_buf *b);
/* Forget the contents and the error, keep the memory. */
void ag_buf_reset(ag_buf *b);
/* Make room for n more bytes; AG_OK or the sticky error. */
ag_status ag_buf_reserve(ag_buf *b, size_t n);

void ag_buf_append(ag_buf *b, const void *p, size_t n);
void ag_buf_append_str(ag_buf *b, const char *s);
void ag_buf_append_char(ag_buf *b, char c);
void ag_buf_appendf(ag_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ag_buf_vappendf(ag_buf *b, const char *fmt, va_list ap);
/* Hand the data to the caller (free() it); the buffer is left empty. */
char *ag_buf_detach(ag_buf *b, size_t *len);

/* How ag_buf_append_json_str treats bytes that are not valid UTF-8. */
typedef enum ag_utf8_policy {
    AG_UTF8_REJECT,  /* stop; the buffer's err becomes AG_EINVAL */
    AG_UTF8_REPLACE  /* write U+FFFD for each maximal invalid subpart */
} ag_utf8_policy;

/*
 * Append s[0..n) as a JSON string literal with its quotes.  Escapes '"', '\\'
 * and control characters (\b \f \n \r \t, else \u00XX); everything else,
 * including non-ASCII, is copied as UTF-8.  Used by the JSON writer and the
 * JSON log format, so there is one escaper.
 */
void ag_buf_append_json_str(ag_buf *b, const char *s, size_t n, ag_utf8_policy policy);

#endif
