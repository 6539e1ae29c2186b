/*
 * buf.c - growable buffer with a sticky error, and the one JSON string
 * escaper; see buf.h.
 */
#include "base/buf.h"

#include "base/alloc.h"
#include "base/jscan.h"
#include "base/utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ag_buf_init(ag_buf *b) { memset(b, 0, sizeof *b); }

void ag_buf_deinit(ag_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

void ag_buf_reset(ag_buf *b) {
    b->len = 0;
    b->err = AG_OK;
    if (b->data) b->data[0] = '\0';
}

ag_status ag_buf_reserve(ag_buf *b, size_t n) {
    if (b->err != AG_OK) return b->err;
    if (b->max_len && n > b->max_len - b->len) { /* checked before capacity: the limit is on len */
        b->err = AG_ELIMIT;
        return b->err;
    }
    if (n < b->cap - b->len) return AG_OK; /* room for n bytes plus the NUL */
    if (n > SIZE_MAX / 2 - b->len) {
        b->err = AG_ELIMIT;
        return b->err;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap <= b->len + n) cap *= 2;
    char *p = ag_try_realloc(b->data, cap);
    if (!p) {
        b->err = AG_NOMEM;
        return b->err;
    }
    b->data = p;
    b->cap = cap;
    return AG_OK;
}

void ag_buf_append(ag_buf *b, const void *p, size_t n) {
    if (ag_buf_reserve(b, n) != AG_OK) return;
    if (n) memcpy(b->data + b->len, p, n); /* p may be NULL when n is 0, which memcpy does not allow */
    b->len += n;
    b->data[b->len] = '\0';
}

void ag_buf_append_str(ag_buf *b, const char *s) { ag_buf_append(b, s, strlen(s)); }

void ag_buf_append_char(ag_buf *b, char c) {
    if (b->len + 1 < b->cap && b->err == AG_OK && (b->max_len == 0 || b->len < b->max_len)) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
        return;
    }
    ag_buf_append(b, &c, 1);
}

void ag_buf_vappendf(ag_buf *b, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n < 0) {
        if (b->err == AG_OK) b->err = AG_EINVAL;
    } else if ((size_t)n < sizeof small) {
        ag_buf_append(b, small, (size_t)n);
    } else if (ag_buf_reserve(b, (size_t)n) == AG_OK) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void ag_buf_appendf(ag_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ag_buf_vappendf(b, fmt, ap);
    va_end(ap);
}

char *ag_buf_detach(ag_buf *b, size_t *len) {
    char *p = b->data;
    if (len) *len = b->len;
    memset(b, 0, sizeof *b);
    return p;
}

/*
 * The escaper copies each run between bytes that need an escape ('"', '\\',
 * controls) in one piece, found with the vector scan of jscan.h, after one
 * UTF-8 validation of the run; only invalid bytes fall back to a byte loop.
 * (Decoding character by character made CJK text 3x slower to write.)
 */
static void append_utf8_run(ag_buf *b, const uint8_t *p, size_t n, ag_utf8_policy policy) {
    while (n) {
        size_t ok = ag_utf8_valid_prefix(p, n);
        ag_buf_append(b, p, ok);
        if (ok == n) return;
        if (policy != AG_UTF8_REPLACE) {
            if (b->err == AG_OK) b->err = AG_EINVAL;
            return;
        }
        ag_buf_append(b, "\xEF\xBF\xBD", 3);
        size_t bad = ok + ag_utf8_invalid_len(p + ok, n - ok);
        p += bad;
        n -= bad;
    }
}

void ag_buf_append_json_str(ag_buf *b, const char *s, size_t n, ag_utf8_policy policy) {
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = (const uint8_t *)s, *end = p + n;
    if (ag_buf_reserve(b, n + 2) != AG_OK) return;
    ag_buf_append_char(b, '"');
    while (p < end && b->err == AG_OK) {
        const uint8_t *q = ag_jscan(p, end);
        append_utf8_run(b, p, (size_t)(q - p), policy);
        if (q == end) break;
        uint8_t c = *q;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        ag_buf_append(b, esc, elen);
        p = q + 1;
    }
    ag_buf_append_char(b, '"');
}
