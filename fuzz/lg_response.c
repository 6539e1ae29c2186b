/*
 * fuzz_lg_response: any bytes as a server's HTTP/1.1 answer to one of
 * `autoglm bench`'s requests, fed to the load generator's response reader
 * (lg_conn.c's lg_h1_parse and loadgen.c's body reading: the head, Content-
 * Length, chunked or to-EOF bodies, SSE events and their usage JSON) in
 * pieces of a size the first byte chooses, as reads would split them.  The
 * reader must stop at a protocol error or a whole response, never read past
 * what it was given, and keep its offsets inside the bytes it holds.
 *
 * tests/unit/tools/test_lg_response.c includes this file: it replays
 * fuzz/corpus/lg_response through lg_response_run and checks what the reader
 * makes of answers it builds itself.
 */
#define _GNU_SOURCE /* pthread types for uv.h */
#include "tools/lg.h"

#include <stdint.h>
#include <string.h>

typedef struct lg_response {
    bool ok, done; /* no protocol error; the response is whole */
    int status;
    bool sse;
    uint64_t in_tokens, out_tokens, itl_samples;
    char server[64];
} lg_response;

/* Feed data to a fresh reader in pieces of `piece` bytes (0: all at once). */
static lg_response lg_response_feed(const uint8_t *data, size_t size, size_t piece) {
    static ag_lg_step s = {.openai = true};
    static lg g;
    ag_lg_result r;
    memset(&g, 0, sizeof g);
    memset(&r, 0, sizeof r);
    ag_hist_init(&r.e2e), ag_hist_init(&r.ttft), ag_hist_init(&r.tpot), ag_hist_init(&r.itl);
    g.s = &s, g.r = &r;
    ag_arena_init(&g.arena, 1 << 12);
    lg_conn c = {.g = &g};
    lg_xchg x = {.g = &g, .c = &c, .counted = true};
    c.x = &x;
    ag_buf_init(&c.io.in);
    lg_response out = {.ok = true};
    for (size_t off = 0; off < size && out.ok && !c.resp.done;) {
        size_t n = piece && size - off > piece ? piece : size - off;
        ag_buf_append(&c.io.in, data + off, n);
        off += n;
        g.now += 1000000; /* a millisecond a read */
        out.ok = lg_h1_parse(&c);
        if (c.resp.head_done && (c.resp.head_len > c.io.in.len || x.scanned > c.io.in.len - c.resp.head_len)) __builtin_trap();
        if (c.resp.chunked && c.resp.dec.dst > c.io.in.len - c.resp.head_len) __builtin_trap();
    }
    out.done = c.resp.done, out.status = x.status, out.sse = x.sse;
    out.in_tokens = x.in_tokens, out.out_tokens = x.out_tokens, out.itl_samples = r.itl.n;
    memcpy(out.server, r.server, sizeof out.server);
    ag_buf_deinit(&c.io.in);
    ag_arena_deinit(&g.arena);
    return out;
}

static int lg_response_run(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    lg_response_feed(data + 1, size - 1, data[0]);
    return 0;
}

#ifndef AG_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return lg_response_run(data, size); }
#endif
