/*
 * http.c - the HTTP/1.1 request head parser and chunked body decoder
 * (contracts in http.h).
 *
 * The head is found first (incrementally: the scan resumes at the last line
 * end seen, so a head trickling in byte by byte costs O(n) in all, not O(n²))
 * and parsed once when complete, as picohttpparser does; the request line's
 * and the head's size limits are checked while scanning, so an endless line
 * is refused as soon as it passes the limit.  The chunked decoder is a byte
 * state machine except over chunk data, which it moves with memmove.
 */
#include "http/http.h"

#include <string.h>

ag_http_limits ag_http_limits_default(void) {
    return (ag_http_limits){.max_request_line = 8192, .max_header_bytes = 32768, .max_headers = 100,
                            .max_body = 8u << 20};
}

static ag_status fail(ag_http_error *err, int status, const char *reason) {
    err->status = status;
    err->reason = reason;
    return status == 400 ? AG_EINVAL : AG_ELIMIT;
}

/* RFC 9110 tchar: the characters of methods and header names. */
static bool is_tchar(unsigned char c) {
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && memchr(extra, c, sizeof extra - 1));
}

/* Field-value bytes: visible ASCII, space, tab and obs-text; no other control byte. */
static bool is_value_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

/* The end of the head (just past its empty line) at or after the line end at k, or 0 when unknown yet. */
static size_t head_end_at(const char *buf, size_t len, size_t k) {
    if (k + 1 < len && buf[k + 1] == '\n') return k + 2;
    if (k + 2 < len && buf[k + 1] == '\r' && buf[k + 2] == '\n') return k + 3;
    return 0;
}

/* Scan for the head's end; 0 while it has not arrived.  Limits are checked on what arrived. */
static ag_status find_head_end(ag_http_head_parser *p, const char *buf, size_t len, const ag_http_limits *lim,
                               size_t *end, ag_http_error *err) {
    size_t pos = p->scanned;
    *end = 0;
    if (!p->line_done) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) {
            p->scanned = len;
            return len >= lim->max_request_line ? fail(err, 414, "request line too long") : AG_AGAIN;
        }
        if ((size_t)(nl - buf) + 1 > lim->max_request_line) return fail(err, 414, "request line too long");
        p->line_done = true;
        pos = (size_t)(nl - buf);
    }
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) {
            p->scanned = len;
            break;
        }
        size_t k = (size_t)(nl - buf), e = head_end_at(buf, len, k);
        if (e) {
            *end = e;
            break;
        }
        /* A line end whose next line has not fully arrived is looked at again next time. */
        if (k + 2 >= len) {
            p->scanned = k;
            break;
        }
        pos = k + 1;
    }
    size_t seen = *end ? *end : len;
    if (seen > lim->max_header_bytes) return fail(err, 431, "request header fields too large");
    return *end ? AG_OK : AG_AGAIN;
}

/* The end of the line starting at i (the index of its '\n'), after checking that a CR appears only before LF. */
static ag_status line_end(const char *buf, size_t end, size_t i, size_t *nl, size_t *content_end, ag_http_error *err) {
    const char *q = memchr(buf + i, '\n', end - i);
    size_t k = (size_t)(q - buf); /* the head ends in a line end, so q is found */
    size_t ce = k > i && buf[k - 1] == '\r' ? k - 1 : k;
    if (memchr(buf + i, '\r', ce - i)) return fail(err, 400, "bare CR in the request head");
    *nl = k, *content_end = ce;
    return AG_OK;
}

static ag_status parse_request_line(const char *buf, size_t end, ag_http_request *req, size_t *next,
                                    ag_http_error *err) {
    size_t nl, ce, i = 0;
    if (line_end(buf, end, 0, &nl, &ce, err) != AG_OK) return AG_EINVAL;
    while (i < ce && is_tchar((unsigned char)buf[i])) i++;
    if (i == 0 || i >= ce || buf[i] != ' ') return fail(err, 400, "malformed request line");
    req->method = (ag_str){buf, i};
    size_t t = ++i;
    while (i < ce && (unsigned char)buf[i] > 0x20 && buf[i] != 0x7f) i++;
    if (i == t || i >= ce || buf[i] != ' ') return fail(err, 400, "malformed request target");
    req->target = (ag_str){buf + t, i - t};
    i++;
    if (ce - i != 8 || memcmp(buf + i, "HTTP/", 5) != 0 || buf[i + 6] != '.' || buf[i + 5] < '0' || buf[i + 5] > '9' ||
        buf[i + 7] < '0' || buf[i + 7] > '9')
        return fail(err, 400, "malformed HTTP version");
    if (buf[i + 5] != '1') return fail(err, 505, "only HTTP/1.x is supported");
    req->version_minor = buf[i + 7] - '0';
    const char *qm = memchr(req->target.p, '?', req->target.n);
    size_t plen = qm ? (size_t)(qm - req->target.p) : req->target.n;
    req->path = (ag_str){req->target.p, plen};
    req->query = qm ? (ag_str){qm + 1, req->target.n - plen - 1} : (ag_str){req->target.p + plen, 0};
    *next = nl + 1;
    return AG_OK;
}

static ag_status parse_headers(const char *buf, size_t end, size_t i, const ag_http_limits *lim,
                               ag_http_request *req, ag_http_error *err) {
    req->n_headers = 0;
    for (;;) {
        size_t nl, ce;
        if (line_end(buf, end, i, &nl, &ce, err) != AG_OK) return AG_EINVAL;
        if (ce == i) return AG_OK; /* the empty line */
        if (buf[i] == ' ' || buf[i] == '\t') return fail(err, 400, "obsolete header line folding");
        size_t n = i;
        while (n < ce && is_tchar((unsigned char)buf[n])) n++;
        if (n == i || n >= ce || buf[n] != ':') return fail(err, 400, "malformed header field");
        size_t v = n + 1, ve = ce;
        while (v < ve && (buf[v] == ' ' || buf[v] == '\t')) v++;
        while (ve > v && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t')) ve--;
        for (size_t k = v; k < ve; k++)
            if (!is_value_char((unsigned char)buf[k])) return fail(err, 400, "control character in a header value");
        if (req->n_headers >= lim->max_headers) return fail(err, 431, "too many header fields");
        req->headers[req->n_headers++] = (ag_http_header){{buf + i, n - i}, {buf + v, ve - v}};
        i = nl + 1;
    }
}

bool ag_http_list_has(ag_str list, const char *token) {
    ag_str want = ag_str_from_cstr(token);
    size_t i = 0;
    while (i <= list.n) {
        size_t j = i;
        while (j < list.n && list.p[j] != ',') j++;
        if (ag_str_ieq(ag_str_trim((ag_str){list.p + i, j - i}), want)) return true;
        i = j + 1;
    }
    return false;
}

/* An entity tag without its weakness mark: the quoted opaque tag. */
static ag_str etag_opaque(ag_str t) {
    if (t.n >= 2 && t.p[0] == 'W' && t.p[1] == '/') t.p += 2, t.n -= 2;
    return t;
}

bool ag_http_etag_match(ag_str inm, ag_str etag) {
    ag_str want = etag_opaque(etag);
    size_t i = 0;
    for (;;) {
        while (i < inm.n && (inm.p[i] == ' ' || inm.p[i] == '\t' || inm.p[i] == ',')) i++;
        if (i == inm.n) return false;
        if (inm.p[i] == '*') return true;
        size_t start = i;
        if (inm.n - i >= 2 && inm.p[i] == 'W' && inm.p[i + 1] == '/') i += 2;
        if (i == inm.n || inm.p[i] != '"') return false;
        i++;
        while (i < inm.n && inm.p[i] != '"') i++; /* etagc: any visible byte but DQUOTE, commas included */
        if (i == inm.n) return false;
        i++;
        if (ag_str_eq(etag_opaque((ag_str){inm.p + start, i - start}), want)) return true;
    }
}

/* Content-Length, Transfer-Encoding, Connection, Expect and Host, with the smuggling rules. */
static ag_status interpret_headers(ag_http_request *req, ag_http_error *err) {
    bool has_te = false, has_host = false, conn_close = false, conn_keep = false;
    req->content_length = -1;
    req->chunked = req->expect_continue = false;
    for (size_t h = 0; h < req->n_headers; h++) {
        ag_str name = req->headers[h].name, val = req->headers[h].value;
        if (ag_str_ieq(name, AG_STR_LIT("content-length"))) {
            uint64_t cl;
            if (val.n > 18 || ag_str_parse_u64(val, &cl) != AG_OK) return fail(err, 400, "invalid Content-Length");
            if (req->content_length >= 0 && (uint64_t)req->content_length != cl)
                return fail(err, 400, "conflicting Content-Length headers");
            req->content_length = (int64_t)cl;
        } else if (ag_str_ieq(name, AG_STR_LIT("transfer-encoding"))) {
            if (has_te || !ag_str_ieq(val, AG_STR_LIT("chunked")))
                return fail(err, 501, "only the chunked transfer coding is supported");
            has_te = req->chunked = true;
        } else if (ag_str_ieq(name, AG_STR_LIT("connection"))) {
            conn_close |= ag_http_list_has(val, "close");
            conn_keep |= ag_http_list_has(val, "keep-alive");
        } else if (ag_str_ieq(name, AG_STR_LIT("expect"))) {
            if (!ag_str_ieq(val, AG_STR_LIT("100-continue"))) return fail(err, 417, "unsupported Expect");
            req->expect_continue = req->version_minor >= 1;
        } else if (ag_str_ieq(name, AG_STR_LIT("host"))) {
            if (has_host) return fail(err, 400, "more than one Host header");
            has_host = true;
        }
    }
    if (has_te && (req->content_length >= 0 || req->version_minor == 0))
        return fail(err, 400, "Transfer-Encoding with Content-Length or on HTTP/1.0");
    if (req->version_minor >= 1 && !has_host) return fail(err, 400, "missing Host header");
    req->keep_alive = req->version_minor >= 1 ? !conn_close : conn_keep && !conn_close;
    return AG_OK;
}

ag_status ag_http_head_parse(ag_http_head_parser *p, const char *buf, size_t len, const ag_http_limits *lim,
                             ag_http_request *req, ag_http_error *err) {
    size_t end, next;
    ag_status st = find_head_end(p, buf, len, lim, &end, err);
    if (st != AG_OK) return st;
    if ((st = parse_request_line(buf, end, req, &next, err)) != AG_OK) return st;
    if ((st = parse_headers(buf, end, next, lim, req, err)) != AG_OK) return st;
    if ((st = interpret_headers(req, err)) != AG_OK) return st;
    req->head_len = end;
    return AG_OK;
}

ag_str ag_http_header_get(const ag_http_request *req, const char *name) {
    ag_str want = ag_str_from_cstr(name);
    for (size_t h = 0; h < req->n_headers; h++)
        if (ag_str_ieq(req->headers[h].name, want)) return req->headers[h].value;
    return (ag_str){NULL, 0};
}

/* ---- chunked bodies ---------------------------------------------------------- */

enum {
    CH_SIZE, /* hex digits of a chunk size */
    CH_EXT,  /* chunk extension, skipped to the line end */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR, /* the CRLF after a chunk's data */
    CH_DATA_LF,
    CH_TRAILER_START, /* a trailer line or the final empty line */
    CH_TRAILER_LINE,
    CH_END_LF,
};

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

ag_status ag_http_chunked_decode(ag_http_chunked *d, char *buf, size_t len, size_t max_body, size_t max_line,
                                 ag_http_error *err) {
    while (d->src < len) {
        if (d->state == CH_DATA) {
            size_t n = len - d->src;
            if (n > d->chunk_left) n = (size_t)d->chunk_left;
            memmove(buf + d->dst, buf + d->src, n);
            d->src += n, d->dst += n, d->chunk_left -= n;
            if (!d->chunk_left) d->state = CH_DATA_CR;
            continue;
        }
        char c = buf[d->src++];
        bool size_done = false;
        switch (d->state) {
        case CH_SIZE: {
            int v = hex_value(c);
            if (v >= 0) {
                if (++d->line_bytes > 15) return fail(err, 400, "chunk size too long");
                d->chunk_left = d->chunk_left * 16 + (uint64_t)v;
            } else if (d->line_bytes && (c == ';' || c == ' ' || c == '\t')) {
                d->state = CH_EXT;
            } else if (d->line_bytes && c == '\r') {
                d->state = CH_SIZE_LF;
            } else if (d->line_bytes && c == '\n') {
                size_done = true;
            } else {
                return fail(err, 400, "malformed chunk size");
            }
            break;
        }
        case CH_EXT:
            if (++d->line_bytes > max_line) return fail(err, 400, "chunk extension too long");
            if (c == '\n') size_done = true;
            break;
        case CH_SIZE_LF:
            if (c != '\n') return fail(err, 400, "malformed chunk size line");
            size_done = true;
            break;
        case CH_DATA_CR:
            if (c == '\n') d->state = CH_SIZE;
            else if (c == '\r') d->state = CH_DATA_LF;
            else return fail(err, 400, "chunk data longer than its size");
            d->line_bytes = 0;
            break;
        case CH_DATA_LF:
            if (c != '\n') return fail(err, 400, "chunk data longer than its size");
            d->state = CH_SIZE;
            break;
        case CH_TRAILER_START:
            if (c == '\n') return AG_OK;
            if (c == '\r') d->state = CH_END_LF;
            else d->state = CH_TRAILER_LINE;
            if (++d->trailer_bytes > max_line) return fail(err, 431, "trailer fields too large");
            break;
        case CH_TRAILER_LINE:
            if (++d->trailer_bytes > max_line) return fail(err, 431, "trailer fields too large");
            if (c == '\n') d->state = CH_TRAILER_START;
            break;
        case CH_END_LF:
            if (c != '\n') return fail(err, 400, "malformed end of chunked body");
            return AG_OK;
        default:
            return fail(err, 400, "chunked decoder misused");
        }
        if (size_done) {
            if (d->chunk_left == 0) {
                d->state = CH_TRAILER_START;
            } else if (d->chunk_left > max_body - d->dst) {
                return fail(err, 413, "request body too large");
            } else {
                d->state = CH_DATA;
            }
            d->line_bytes = 0;
        }
    }
    return AG_AGAIN;
}

const char *ag_http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
