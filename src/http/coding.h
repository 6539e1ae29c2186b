/*
 * coding.h - HTTP content codings (RFC 9110 §8.4, §12.5.3): choosing one from
 * Accept-Encoding, compressing a response with it (whole, or an event stream
 * flushed event by event), and decoding a request body under a size limit.
 * gzip is zlib's; zstd is libzstd's with its window held to 8 MiB (RFC 9659).
 */
#ifndef AG_HTTP_CODING_H
#define AG_HTTP_CODING_H

#include "autoglm/status.h"
#include "base/buf.h"
#include "base/str.h"
#include "http/http.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum ag_http_coding { AG_CODING_IDENTITY, AG_CODING_GZIP, AG_CODING_ZSTD, AG_CODING_UNKNOWN } ag_http_coding;

/* Its token for Content-Encoding ("identity" for none). */
const char *ag_http_coding_name(ag_http_coding c);

/*
 * The coding to answer in, from an Accept-Encoding value, among those allowed
 * (a mask of 1 << coding): the highest q-value above 0, zstd before gzip on a
 * tie, "*" standing for codings not listed; identity when none is acceptable
 * or nothing is allowed.  A request without the header (value.p NULL) gets
 * identity, as from nginx: RFC 9110 lets any coding go, but clients that do
 * not ask rarely decode.
 */
ag_http_coding ag_http_accept_pick(ag_str value, unsigned allowed);

/* A request's Content-Encoding: identity, gzip (x-gzip) or zstd, else AG_CODING_UNKNOWN (one coding only). */
ag_http_coding ag_http_coding_parse(ag_str value);

/* in[0..n) compressed whole, appended to out (AG_NOMEM on failure; out's error sticks). */
ag_status ag_http_encode(ag_http_coding c, const void *in, size_t n, ag_buf *out);

/*
 * A stream compressed piece by piece, each piece flushed so the client can
 * decode it at once (SSE events): zstd frames' blocks, or gzip's sync flush.
 */
typedef struct ag_http_encoder ag_http_encoder;
/* NULL: no memory.  small: a long-lived stream (one per open SSE answer): zstd level 1 with a 128 KiB window,
 * a few hundred KiB of state instead of the 3.6 MiB of level 3's defaults. */
ag_http_encoder *ag_http_encoder_new(ag_http_coding c, bool small);
ag_status ag_http_encoder_push(ag_http_encoder *e, const void *in, size_t n, ag_buf *out);
/* The last piece and the stream's end (zstd's frame end, gzip's trailer). */
ag_status ag_http_encoder_end(ag_http_encoder *e, const void *in, size_t n, ag_buf *out);
/* Ready for a new stream (its size, when known, lets zstd size its window: 0 for unknown). */
void ag_http_encoder_reset(ag_http_encoder *e, size_t size);
void ag_http_encoder_free(ag_http_encoder *e);

/*
 * A body whose tail is fixed and whose head changes (a cached answer after its
 * fresh id): the tail is coded once, and each body is the head coded on its
 * own joined to it; zstd: two frames; gzip: one member, the head's deflate
 * blocks (sync-flushed) then the tail's, with the CRC of both combined.
 */
typedef struct ag_http_coded_tail {
    ag_http_coding coding;
    ag_buf bytes; /* zstd: a whole frame; gzip: raw deflate blocks ending in the final one */
    uint32_t crc; /* gzip: of the tail's bytes */
    size_t len;   /* the tail's bytes, uncoded */
} ag_http_coded_tail;
ag_status ag_http_code_tail(ag_http_coding c, const void *tail, size_t n, ag_http_coded_tail *out);
ag_status ag_http_code_with_tail(const ag_http_coded_tail *t, const void *head, size_t n, ag_buf *out);
void ag_http_coded_tail_free(ag_http_coded_tail *t);

/*
 * A body decoded as it arrives (a compressed event stream), in bounded steps:
 * push each piece; the decoded total past max stops it with 413 (a bomb never
 * gets its size allocated), corrupt data with 400 (err says which); end says
 * whether the body ended whole (400 when truncated).  NULL: no memory, or
 * AG_CODING_UNKNOWN.
 */
typedef struct ag_http_decoder ag_http_decoder;
ag_http_decoder *ag_http_decoder_new(ag_http_coding c);
ag_status ag_http_decoder_push(ag_http_decoder *d, const void *in, size_t n, size_t max, ag_buf *out,
                               ag_http_error *err);
ag_status ag_http_decoder_end(ag_http_decoder *d, ag_http_error *err);
void ag_http_decoder_free(ag_http_decoder *d);

/*
 * A request body in coding c decoded into out, in bounded steps: past max
 * decoded bytes it stops with 413 (a bomb never gets its size allocated);
 * corrupt or truncated data is 400.  err says which.
 */
ag_status ag_http_decode(ag_http_coding c, const void *in, size_t n, size_t max, ag_buf *out, ag_http_error *err);

#endif
