/*
 * fuzz_decode_body: any bytes as a request body in each content coding
 * (gzip, zstd) under a small limit: decoding succeeds within the limit, or
 * fails with 400 or 413, never holding more than twice the limit and a step,
 * and what decodes re-encodes and decodes to the same bytes.  The first byte
 * chooses the coding; the rest is the body.
 */
#include "http/coding.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    ag_http_coding c = data[0] & 1 ? AG_CODING_ZSTD : AG_CODING_GZIP;
    const size_t max = 1u << 16;
    ag_buf out;
    ag_buf_init(&out);
    ag_http_error err;
    ag_status st = ag_http_decode(c, data + 1, size - 1, max, &out, &err);
    if (out.cap > 2 * (max + 65536)) __builtin_trap(); /* a step past the limit, in a buffer that doubles */
    if (st == AG_OK) {
        if (out.len > max) __builtin_trap();
        ag_buf z, back;
        ag_buf_init(&z), ag_buf_init(&back);
        if (ag_http_encode(c, out.data, out.len, &z) == AG_OK &&
            (ag_http_decode(c, z.data, z.len, max, &back, &err) != AG_OK || back.len != out.len ||
             (out.len && memcmp(back.data, out.data, out.len) != 0)))
            __builtin_trap();
        ag_buf_deinit(&z), ag_buf_deinit(&back);
    } else if (err.status != 400 && err.status != 413 && err.status != 503) {
        __builtin_trap();
    }
    ag_buf_deinit(&out);
    return 0;
}
