/*
 * response.h - an HTTP/1.1 response as a client reads it (RFC 9112): the
 * head, then the body by Content-Length, chunked, or to the connection's end.
 * The load generator and the client library both read their answers here.
 *
 * Incremental, like the request parser: call again with the same buffer grown
 * by what the socket delivered.  The head is read once it is whole (a 1xx
 * interim head is taken out of the buffer and the real one awaited); a
 * chunked body is decoded in place, so the body so far is always one span.
 * The header spans point into the buffer and hold until it moves: take what
 * is needed when head_done first turns true.
 */
#ifndef AG_HTTP_RESPONSE_H
#define AG_HTTP_RESPONSE_H

#include "autoglm/status.h"
#include "base/str.h"
#include "http/http.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct ag_http_response {
    int status;
    /* header fields the readers act on; {NULL, 0} when absent */
    ag_str content_type, connection, server, retry_after, retry_after_ms, content_encoding;
    bool head_done;   /* the (final) head has been read */
    bool chunked;     /* Transfer-Encoding: chunked */
    bool to_eof;      /* neither length nor chunked: the body ends with the connection */
    bool close_after; /* Connection: close */
    bool done;        /* the whole body is here */
    size_t head_len;  /* bytes of the head at the buffer's start */
    size_t content_length;
    ag_http_chunked dec;
} ag_http_response;

/* Ready for a new response. */
void ag_http_response_reset(ag_http_response *r);

/*
 * Read buf[0..*len): AG_OK with the body so far in buf[*body .. *body + *body_len) (r->done once it is
 * whole; a 1xx head removed from buf shortens *len); AG_EINVAL: not a response this reads (no status
 * line, bytes past Content-Length, a bad chunk); AG_ELIMIT: no head within max_head bytes.
 */
ag_status ag_http_response_read(ag_http_response *r, char *buf, size_t *len, size_t max_head, size_t *body,
                                size_t *body_len);

/* Is the body an event stream (Content-Type: text/event-stream)? */
bool ag_http_response_is_sse(const ag_http_response *r);

/*
 * The next whole event of an event stream in body[*scanned..len): true with its "data: " payload in *data
 * ({NULL, 0} for an event without one, and for OpenAI's closing "[DONE]"), *scanned moved past it; false when
 * no whole event is there yet.  Call again with the body grown.
 */
bool ag_sse_next(const char *body, size_t len, size_t *scanned, ag_str *data);

#endif
