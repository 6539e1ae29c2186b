/*
 * fuzz_http_parse: any bytes as a request head fed to the parser in pieces
 * (the first input byte picks the piece size and tight or default limits),
 * then whatever follows the head through the chunked decoder in pieces too.
 * The parser must give the same answer however the bytes arrive, and every
 * span it returns must lie inside the input (ASan checks the reads).  Each
 * header value is also read as an If-None-Match list.
 */
#include "http/http.h"

#include <stdlib.h>
#include <string.h>

static ag_http_header headers[AG_HTTP_MAX_HEADERS_CAP];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t step = 1 + (data[0] & 0x3f);
    ag_http_limits lim = ag_http_limits_default();
    if (data[0] & 0x40) lim = (ag_http_limits){.max_request_line = 64, .max_header_bytes = 256, .max_headers = 4, .max_body = 128};
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    ag_http_head_parser p = {0}, whole = {0};
    ag_http_request req = {.headers = headers}, req_whole = {.headers = headers};
    ag_http_error err, err_whole;
    ag_status st = AG_AGAIN;
    for (size_t n = 0; st == AG_AGAIN && n < len;) {
        n = n + step < len ? n + step : len;
        st = ag_http_head_parse(&p, text, n, &lim, &req, &err);
    }
    ag_status st_whole = ag_http_head_parse(&whole, text, len, &lim, &req_whole, &err_whole);
    if (st != st_whole) __builtin_trap();
    if (st != AG_OK) return 0;
    if (req.head_len > len || req.path.p < text || req.path.p + req.path.n > text + len) __builtin_trap();
    for (size_t h = 0; h < req.n_headers; h++) {
        ag_str v = req.headers[h].value;
        if (v.p < text || v.p + v.n > text + req.head_len) __builtin_trap();
        ag_http_etag_match(v, AG_STR_LIT("W/\"0\""));
    }
    size_t blen = len - req.head_len;
    char *body = malloc(blen ? blen : 1);
    memcpy(body, text + req.head_len, blen);
    ag_http_chunked d = {0};
    st = AG_AGAIN;
    for (size_t n = 0; st == AG_AGAIN && n < blen;) {
        n = n + step < blen ? n + step : blen;
        st = ag_http_chunked_decode(&d, body, n, lim.max_body, 64, &err);
    }
    if (d.dst > d.src || d.src > blen || d.dst > lim.max_body) __builtin_trap();
    free(body);
    return 0;
}
