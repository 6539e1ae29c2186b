/*
 * cio.h - a client connection's bytes on libuv, shared by the load
 * generator's connections (src/tools/lg_conn.c) and libautoglm's
 * (src/client/client.c): plaintext read so far (after TLS, when there is
 * TLS), and what is to be written, double-buffered: one buffer being filled
 * and one being written, swapped when a write completes, so a connection has
 * at most one write in flight and allocates nothing per request.
 */
#ifndef AG_HTTP_CIO_H
#define AG_HTTP_CIO_H

#include "base/buf.h"
#include "http/tls.h"

#include <stdbool.h>
#include <uv.h>

typedef struct ag_cio {
    ag_tls *tls;      /* NULL: cleartext */
    ag_buf in;        /* plaintext read and not yet consumed */
    ag_buf out;       /* bytes for the next write (TLS records when there is TLS) */
    ag_buf wbuf;      /* bytes being written */
    uv_write_t write; /* its data is the owner's */
    bool writing;     /* a write is in flight */
} ag_cio;

void ag_cio_init(ag_cio *io);
void ag_cio_deinit(ag_cio *io); /* the buffers and the TLS session */

/* Where the next socket read lands: ciphertext into scratch (OpenSSL takes it at once), cleartext onto the end
 * of in; a zero-length buffer when in cannot grow (libuv then reports UV_ENOBUFS). */
void ag_cio_alloc(ag_cio *io, char *scratch, size_t scratch_len, uv_buf_t *buf);
/* Bytes to send, through TLS when there is TLS; false when they cannot be queued. */
bool ag_cio_put(ag_cio *io, const void *p, size_t n);
/* Start writing out unless a write is in flight or out is empty: 0, or uv_write's error. */
int ag_cio_flush(ag_cio *io, uv_stream_t *s, uv_write_cb cb);
/* The write completed: the next flush may start. */
void ag_cio_written(ag_cio *io);

#endif
