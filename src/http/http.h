/*
 * http.h - HTTP/1.1 request parsing (RFC 9112): the request head and the
 * chunked body coding, in the discipline of nginx and picohttpparser.
 *
 * The parsers never allocate and never copy: the head parser hands back
 * spans into the caller's buffer, and the chunked decoder decodes in place
 * (decoded bytes are never longer than the coded ones).  Both are
 * incremental: call again with the same buffer grown by what the socket
 * delivered, and they resume where they stopped instead of rescanning.
 *
 * Every limit is explicit (ag_http_limits) and each failure carries the
 * status a server answers with: 400 malformed, 413 body too large, 414
 * request line too long, 431 headers too large or too many, 501 a transfer
 * coding we do not do, 505 not HTTP/1.x, 417 an Expect we cannot meet.
 * Request smuggling is refused rather than resolved: Content-Length together
 * with Transfer-Encoding, differing Content-Lengths, obs-fold, and a bare CR
 * are all 400.
 */
#ifndef AG_HTTP_HTTP_H
#define AG_HTTP_HTTP_H

#include "autoglm/status.h"
#include "base/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AG_HTTP_MAX_HEADERS_CAP 1024 /* the most max_headers may be set to */

typedef struct ag_http_limits {
    size_t max_request_line; /* bytes of the request line, CRLF included (414) */
    size_t max_header_bytes; /* bytes of the whole head, request line included (431) */
    size_t max_headers;      /* header fields (431); at most AG_HTTP_MAX_HEADERS_CAP */
    size_t max_body;         /* decoded body bytes (413) */
} ag_http_limits;

/* 8 KiB request line, 32 KiB head, 100 headers, 8 MiB body. */
ag_http_limits ag_http_limits_default(void);

typedef struct ag_http_header {
    ag_str name, value; /* value without surrounding whitespace */
} ag_http_header;

typedef struct ag_http_request {
    ag_str method, target, path, query; /* path is target before '?', query after it */
    int version_minor;                  /* HTTP/1.<minor> */
    ag_http_header *headers;            /* the caller's array of limits->max_headers */
    size_t n_headers;
    size_t head_len;        /* bytes of the head, final empty line included */
    int64_t content_length; /* -1: none given */
    bool chunked, keep_alive, expect_continue;
} ag_http_request;

/* Where an incomplete head's scan stopped; zero it before a new request. */
typedef struct ag_http_head_parser {
    size_t scanned;   /* bytes known to hold no end of head */
    bool line_done;   /* the request line's end was seen */
} ag_http_head_parser;

typedef struct ag_http_error {
    int status;         /* 400, 413, 414, 417, 431, 501 or 505 */
    const char *reason; /* static text for the error body */
} ag_http_error;

/*
 * Parse the request head at the start of buf[0..len).  AG_OK: *req is filled
 * (its spans point into buf).  AG_AGAIN: no complete head yet; call again
 * with the same bytes and more.  AG_EINVAL / AG_ELIMIT: *err says which
 * status to answer.  req->headers must hold limits->max_headers entries.
 */
ag_status ag_http_head_parse(ag_http_head_parser *p, const char *buf, size_t len, const ag_http_limits *limits,
                             ag_http_request *req, ag_http_error *err);

/* The value of the first header named name (case-insensitive), or {NULL,0}. */
ag_str ag_http_header_get(const ag_http_request *req, const char *name);
/* Does a comma-separated header value (Connection, Cache-Control) hold token?  Case-insensitive. */
bool ag_http_list_has(ag_str list, const char *token);
/* Does an If-None-Match value name the entity tag etag (sent with its quotes, "\"x\"" or "W/\"x\"")?  RFC
 * 9110 13.1.2: "*" names any, otherwise a list of tags compared weakly (W/ ignored).  A malformed list names
 * nothing from its first bad tag on, so the full answer goes out. */
bool ag_http_etag_match(ag_str if_none_match, ag_str etag);

/* The chunked decoder's state between calls; zero it before a body. */
typedef struct ag_http_chunked {
    int state;
    uint64_t chunk_left; /* data bytes left in the current chunk */
    size_t line_bytes;   /* bytes of the current size or trailer line (bounded) */
    size_t trailer_bytes;
    size_t src, dst;     /* read and write offsets into the body buffer */
} ag_http_chunked;

/*
 * Decode the chunked body in buf[0..len) in place: decoded bytes are moved to
 * buf[0..d->dst).  AG_AGAIN: more bytes are needed (call again with the
 * buffer grown); AG_OK: the body ended, and buf[d->src..len) is what follows
 * it (the next pipelined request); AG_EINVAL / AG_ELIMIT with *err (decoded
 * bytes beyond max_body are 413; a size or trailer line past max_line is 400).
 */
ag_status ag_http_chunked_decode(ag_http_chunked *d, char *buf, size_t len, size_t max_body, size_t max_line,
                                 ag_http_error *err);

/* The reason phrase of a status code ("Not Found"); "Unknown" for others. */
const char *ag_http_reason(int status);

#endif
