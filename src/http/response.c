/*
 * response.c - reading an HTTP/1.1 response (see response.h): the head's
 * status and the fields a client acts on, in one pass over its lines, then
 * the body's framing.  Shared by the load generator and the client library.
 */
#define _GNU_SOURCE /* memmem */
#include "http/response.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void ag_http_response_reset(ag_http_response *r) { memset(r, 0, sizeof *r); }

/* The head's fields we act on, in one pass over its lines. */
static void read_fields(ag_http_response *r, const char *head, size_t len, ag_str *content_length, ag_str *te) {
    const struct {
        const char *name;
        size_t n;
        ag_str *v;
    } want[] = {{"content-length", 14, content_length},
                {"transfer-encoding", 17, te},
                {"content-type", 12, &r->content_type},
                {"connection", 10, &r->connection},
                {"server", 6, &r->server},
                {"retry-after", 11, &r->retry_after},
                {"retry-after-ms", 14, &r->retry_after_ms},
                {"content-encoding", 16, &r->content_encoding}};
    const char *p = memchr(head, '\n', len), *end = head + len;
    while (p && ++p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p)), *colon;
        if (!eol) break;
        if ((colon = memchr(p, ':', (size_t)(eol - p))))
            for (size_t i = 0; i < sizeof want / sizeof *want; i++)
                if ((size_t)(colon - p) == want[i].n && strncasecmp(p, want[i].name, want[i].n) == 0)
                    *want[i].v = ag_str_trim((ag_str){colon + 1, (size_t)(eol - colon - 1)});
        p = eol;
    }
}

ag_status ag_http_response_read(ag_http_response *r, char *buf, size_t *len, size_t max_head, size_t *body,
                                size_t *body_len) {
    *body = *body_len = 0;
    while (!r->head_done) {
        char *e = memmem(buf, *len, "\r\n\r\n", 4);
        if (!e) return *len < max_head ? AG_OK : AG_ELIMIT;
        if (*len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ') return AG_EINVAL;
        char *sp;
        long status = strtol(buf + 9, &sp, 10);
        if (sp != buf + 12 || status < 100 || status > 999) return AG_EINVAL;
        size_t hl = (size_t)(e - buf) + 4;
        if (status / 100 == 1) { /* an interim response: the real one follows */
            memmove(buf, buf + hl, *len - hl);
            *len -= hl;
            continue;
        }
        ag_str cl = {0}, te = {0};
        int keep_status = (int)status;
        ag_http_response_reset(r);
        r->status = keep_status;
        read_fields(r, buf, hl, &cl, &te);
        r->chunked = te.n && ag_str_eq_cstr(te, "chunked");
        r->close_after = r->connection.n && ag_http_list_has(r->connection, "close");
        r->to_eof = !r->chunked && !cl.n;
        if (cl.n && !r->chunked) {
            uint64_t v;
            if (ag_str_parse_u64(cl, &v) != AG_OK) return AG_EINVAL;
            r->content_length = (size_t)v;
        }
        r->head_len = hl;
        r->head_done = true;
    }
    char *b = buf + r->head_len;
    size_t raw = *len - r->head_len;
    *body = r->head_len;
    if (r->chunked) {
        ag_http_error err;
        ag_status st = ag_http_chunked_decode(&r->dec, b, raw, SIZE_MAX / 2, 4096, &err);
        if (st != AG_OK && st != AG_AGAIN) return AG_EINVAL;
        *body_len = r->dec.dst;
        r->done = st == AG_OK;
        return AG_OK;
    }
    if (!r->to_eof && raw > r->content_length) return AG_EINVAL; /* bytes nobody asked for */
    r->done = !r->to_eof && raw == r->content_length;
    *body_len = raw;
    return AG_OK;
}

bool ag_http_response_is_sse(const ag_http_response *r) {
    return r->content_type.n >= 17 && strncasecmp(r->content_type.p, "text/event-stream", 17) == 0;
}

bool ag_sse_next(const char *body, size_t len, size_t *scanned, ag_str *data) {
    const char *p = body + *scanned, *end = *scanned + 1 < len ? memmem(p, len - *scanned, "\n\n", 2) : NULL;
    if (!end) return false;
    size_t n = (size_t)(end - p);
    *scanned += n + 2;
    bool has = n > 6 && memcmp(p, "data: ", 6) == 0 && !(n == 12 && memcmp(p + 6, "[DONE]", 6) == 0);
    *data = has ? (ag_str){p + 6, n - 6} : (ag_str){NULL, 0};
    return true;
}
