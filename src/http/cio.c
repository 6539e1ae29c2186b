/*
 * cio.c - a client connection's bytes on libuv (see cio.h).
 */
#define _GNU_SOURCE /* pthread types for uv.h */
#include "http/cio.h"

void ag_cio_init(ag_cio *io) {
    io->tls = NULL;
    ag_buf_init(&io->in), ag_buf_init(&io->out), ag_buf_init(&io->wbuf);
    io->writing = false;
}

void ag_cio_deinit(ag_cio *io) {
    ag_buf_deinit(&io->in), ag_buf_deinit(&io->out), ag_buf_deinit(&io->wbuf);
    ag_tls_free(io->tls);
    io->tls = NULL;
}

void ag_cio_alloc(ag_cio *io, char *scratch, size_t scratch_len, uv_buf_t *buf) {
    if (io->tls) {
        *buf = uv_buf_init(scratch, (unsigned)scratch_len);
        return;
    }
    if (ag_buf_reserve(&io->in, 65536) != AG_OK) {
        buf->base = NULL, buf->len = 0;
        return;
    }
    buf->base = io->in.data + io->in.len;
    buf->len = io->in.cap - io->in.len;
}

bool ag_cio_put(ag_cio *io, const void *p, size_t n) {
    if (io->tls) return ag_tls_send(io->tls, p, n, &io->out);
    ag_buf_append(&io->out, p, n);
    return io->out.err == AG_OK;
}

int ag_cio_flush(ag_cio *io, uv_stream_t *s, uv_write_cb cb) {
    if (io->writing || !io->out.len) return 0;
    ag_buf t = io->wbuf;
    io->wbuf = io->out, io->out = t;
    uv_buf_t b = uv_buf_init(io->wbuf.data, (unsigned)io->wbuf.len);
    io->writing = true;
    int rc = uv_write(&io->write, s, &b, 1, cb);
    if (rc < 0) io->writing = false;
    return rc;
}

void ag_cio_written(ag_cio *io) {
    io->writing = false;
    io->wbuf.len = 0;
}
