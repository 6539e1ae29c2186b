/*
 * multipart.c - multipart/form-data (see multipart.h).  One pass: find the
 * first delimiter, then each part is a header block ended by an empty line
 * and data ended by CRLF "--" boundary; the close delimiter adds "--".
 */
#define _GNU_SOURCE /* memmem */
#include "http/multipart.h"

#include <string.h>

static bool is_ws(char ch) { return ch == ' ' || ch == '\t'; }

/* One parameter of a header value: ;name=token or ;name="quoted" (its span without the quotes). */
static ag_str param(ag_str v, const char *name) {
    size_t nl = strlen(name), i = 0;
    while (i < v.n) {
        while (i < v.n && v.p[i] != ';') {
            if (v.p[i] == '"') /* a quoted string may hold ';' */
                for (i++; i < v.n && v.p[i] != '"'; i++) i += v.p[i] == '\\';
            i++;
        }
        if (i >= v.n) break;
        i++;
        while (i < v.n && is_ws(v.p[i])) i++;
        size_t k = i;
        while (k < v.n && v.p[k] != '=' && v.p[k] != ';') k++;
        ag_str key = ag_str_trim((ag_str){v.p + i, k - i});
        if (k >= v.n || v.p[k] != '=') {
            i = k;
            continue;
        }
        k++;
        while (k < v.n && is_ws(v.p[k])) k++;
        size_t start = k, end;
        if (k < v.n && v.p[k] == '"') {
            start = ++k;
            while (k < v.n && v.p[k] != '"') k += v.p[k] == '\\' ? 2 : 1;
            if (k > v.n) k = v.n;
            end = k;
            if (k < v.n) k++; /* past the closing quote */
        } else {
            while (k < v.n && v.p[k] != ';' && !is_ws(v.p[k])) k++;
            end = k;
        }
        if (ag_str_ieq(key, (ag_str){name, nl})) return (ag_str){v.p + start, end - start};
        i = k;
    }
    return (ag_str){NULL, 0};
}

ag_status ag_multipart_boundary(ag_str ctype, ag_str *boundary) {
    ag_str t = ag_str_trim(ctype);
    static const char mt[] = "multipart/form-data";
    if (t.n < sizeof mt - 1 || !ag_str_ieq((ag_str){t.p, sizeof mt - 1}, AG_STR_LIT(mt)) ||
        (t.n > sizeof mt - 1 && t.p[sizeof mt - 1] != ';' && !is_ws(t.p[sizeof mt - 1])))
        return AG_EINVAL;
    ag_str b = param((ag_str){t.p + sizeof mt - 1, t.n - (sizeof mt - 1)}, "boundary");
    if (!b.p || !b.n || b.n > AG_MULTIPART_MAX_BOUNDARY) return AG_EINVAL;
    *boundary = b;
    return AG_OK;
}

/* A part's header block [p, p+n): its Content-Disposition (form-data, name, filename) and Content-Type. */
static ag_status part_head(const char *p, size_t n, ag_multipart_part *part, const char **reason) {
    bool disposition = false;
    while (n) {
        const char *eol = memmem(p, n, "\r\n", 2);
        size_t ln = eol ? (size_t)(eol - p) : n;
        const char *colon = memchr(p, ':', ln);
        if (!colon) return *reason = "a part's header line has no ':'", AG_EINVAL;
        ag_str name = ag_str_trim((ag_str){p, (size_t)(colon - p)});
        ag_str value = ag_str_trim((ag_str){colon + 1, ln - (size_t)(colon + 1 - p)});
        if (ag_str_ieq(name, AG_STR_LIT("content-disposition"))) {
            if (value.n < 9 || !ag_str_ieq((ag_str){value.p, 9}, AG_STR_LIT("form-data")))
                return *reason = "a part's Content-Disposition is not form-data", AG_EINVAL;
            part->name = param(value, "name");
            part->filename = param(value, "filename");
            if (!part->name.p) return *reason = "a part's Content-Disposition has no name", AG_EINVAL;
            disposition = true;
        } else if (ag_str_ieq(name, AG_STR_LIT("content-type"))) {
            part->ctype = value;
        }
        if (!eol) break;
        p += ln + 2, n -= ln + 2;
    }
    if (!disposition) return *reason = "a part has no Content-Disposition", AG_EINVAL;
    return AG_OK;
}

ag_status ag_multipart_parse(const char *body, size_t len, ag_str boundary, ag_multipart_part *parts, size_t cap,
                             size_t *n, const char **reason) {
    *n = 0;
    if (!boundary.n || boundary.n > AG_MULTIPART_MAX_BOUNDARY) return *reason = "bad boundary", AG_EINVAL;
    char delim[AG_MULTIPART_MAX_BOUNDARY + 4] = "\r\n--"; /* CRLF "--" boundary */
    memcpy(delim + 4, boundary.p, boundary.n);
    size_t dn = boundary.n + 4;
    /* the first delimiter may open the body (no CRLF before it) or follow a preamble */
    size_t at;
    if (len >= dn - 2 && memcmp(body, delim + 2, dn - 2) == 0) at = dn - 2;
    else {
        const char *d = memmem(body, len, delim, dn);
        if (!d) return *reason = "the body has no multipart boundary", AG_EINVAL;
        at = (size_t)(d - body) + dn;
    }
    for (;;) {
        /* after a delimiter: "--" closes the body; else optional padding and CRLF open a part */
        if (len - at >= 2 && body[at] == '-' && body[at + 1] == '-') return AG_OK;
        while (at < len && is_ws(body[at])) at++;
        if (len - at < 2 || body[at] != '\r' || body[at + 1] != '\n')
            return *reason = "a multipart delimiter is not followed by CRLF", AG_EINVAL;
        at += 2;
        if (*n == cap) return *reason = "too many parts in the multipart body", AG_ELIMIT;
        ag_multipart_part *part = &parts[*n];
        memset(part, 0, sizeof *part);
        size_t head_len;
        if (len - at >= 2 && body[at] == '\r' && body[at + 1] == '\n') head_len = 0; /* no header lines */
        else {
            size_t look = len - at < AG_MULTIPART_MAX_HEAD + 4 ? len - at : AG_MULTIPART_MAX_HEAD + 4;
            const char *e = memmem(body + at, look, "\r\n\r\n", 4);
            if (!e) return *reason = look > AG_MULTIPART_MAX_HEAD ? "a part's headers are too long"
                                                                     : "a part's headers do not end",
                        AG_EINVAL;
            head_len = (size_t)(e - (body + at)) + 2;
        }
        ag_status st = part_head(body + at, head_len ? head_len - 2 : 0, part, reason);
        if (st != AG_OK) return st;
        at += head_len + 2;
        const char *d = memmem(body + at, len - at, delim, dn);
        if (!d) return *reason = "a part is not closed by the boundary", AG_EINVAL;
        part->data = (ag_str){body + at, (size_t)(d - (body + at))};
        (*n)++;
        at = (size_t)(d - body) + dn;
    }
}
