/*
 * fuzz_h2_frames: any bytes after HTTP/2's client preface, as a client sends
 * them on a connection (a socketpair) to a server whose routes are replaced
 * by an echo, so no model is needed: conn.c's preface sniffing, nghttp2's
 * session, and h2.c's streams, limits, answers, resets and closes.  The
 * client then closes its side; the connection must end (a hang is a bug the
 * fuzzer reports as a timeout), and what the server wrote must be whole,
 * well-formed frames that open with SETTINGS.
 *
 * tests/unit/server/test_h2.c includes this file: it replays fuzz/corpus/h2
 * through h2_run (a crash the fuzzer finds becomes a test once it is added
 * there) and reads the frames h2_run returns for its own cases.
 */
#define _POSIX_C_SOURCE 200809L
#include "base/log.h"
#include "server/internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The echo: /sse answers its body as one event of a stream, anything else as a whole response. */
static void echo(conn *c) {
    const char *body = c->in.data ? c->in.data + c->req.head_len : "";
    if (c->req.path.n >= 4 && memcmp(c->req.path.p, "/sse", 4) == 0) {
        ag_sse_open(c, NULL);
        ag_buf_append(ag_sse_event_begin(c), body, c->body_len);
        ag_sse_event_end(c);
        ag_sse_close(c);
    } else {
        ag_conn_respond(c, 200, "text/plain", body, c->body_len, "X-Echo: 1\r\n");
    }
}
static void request_end(conn *c, int status) { (void)c, (void)status; }
static void client_gone(conn *c) { (void)c; }
static size_t body_limit(const conn *c) { return c->s->o->limits.max_body; }

static void drain(int fd, ag_buf *out) {
    char b[65536];
    ssize_t n;
    while ((n = read(fd, b, sizeof b)) > 0) ag_buf_append(out, b, (size_t)n);
}

/* The bytes after the preface in, the server's frames out (appended to out). */
static void h2_run(const uint8_t *data, size_t size, ag_buf *out) {
    static ag_server_opts o;
    static bool init;
    if (!init) {
        ag_server_opts_default(&o);
        o.limits.max_body = 4096;
        o.limits.max_header_bytes = 2048;
        o.limits.max_headers = 16;
        o.http2_max_streams = 8;
        o.http2_window = 65535;
        ag_log_configure(AG_LOG_TEXT, AG_LOG_OFF, stderr);
        init = true;
    }
    server *s = calloc(1, sizeof *s);
    s->o = &o;
    s->on_request = echo, s->on_request_end = request_end, s->on_client_gone = client_gone;
    s->body_limit = body_limit;
    s->max_in = o.limits.max_header_bytes + o.limits.max_body;
    ag_buf_init(&s->scratch);
    uv_loop_init(&s->loop);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) abort();
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    if (ag_conn_open(s, sv[0])) {
        static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        if (write(sv[1], preface, sizeof preface - 1) < 0) abort();
        size_t at = 0;
        for (int round = 0; round < 64 && (at < size || round < 4); round++) {
            if (at < size) {
                ssize_t n = write(sv[1], data + at, size - at);
                if (n > 0) at += (size_t)n;
            }
            uv_run(&s->loop, UV_RUN_NOWAIT);
            ag_conn_flush_dirty(s);
            ag_h2_free_retired(s);
            drain(sv[1], out);
        }
        shutdown(sv[1], SHUT_WR); /* the client is done: the connection must end */
        while (uv_run(&s->loop, UV_RUN_NOWAIT)) {
            ag_conn_flush_dirty(s);
            ag_h2_free_retired(s);
            drain(sv[1], out);
        }
        drain(sv[1], out);
    }
    uv_run(&s->loop, UV_RUN_DEFAULT); /* a refused socket's handles close */
    ag_h2_free_retired(s);
    /* whole frames, the first one SETTINGS (9-byte headers, payloads within the default frame size) */
    const uint8_t *p = (const uint8_t *)out->data;
    size_t left = out->len;
    if (left && (left < 9 || p[3] != 4)) __builtin_trap();
    while (left) {
        if (left < 9) __builtin_trap();
        size_t len = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
        if (len > 16384 || left < 9 + len) __builtin_trap();
        p += 9 + len, left -= 9 + len;
    }
    close(sv[1]);
    uv_loop_close(&s->loop);
    ag_conn_server_deinit(s);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ag_buf out;
    ag_buf_init(&out);
    h2_run(data, size, &out);
    ag_buf_deinit(&out);
    return 0;
}
