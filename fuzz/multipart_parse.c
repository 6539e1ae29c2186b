/*
 * fuzz_multipart_parse: any bytes as a multipart/form-data upload.  The
 * first byte's low 6 bits + 1 give the boundary's length, the boundary's
 * bytes follow, then the body.  Every span a part hands back must lie
 * inside the body, in order and without overlap, and the Content-Type
 * parser must agree with the boundary it is given back.
 */
#include "http/multipart.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fz_inside(ag_str s, const char *body, size_t len) {
    if (s.p && (s.p < body || s.p + s.n > body + len)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    size_t bn = (size_t)(data[0] & 63) + 1;
    if (size < 1 + bn) return 0;
    ag_str boundary = {(const char *)data + 1, bn};
    const char *body = (const char *)data + 1 + bn;
    size_t len = size - 1 - bn;
    ag_multipart_part parts[AG_MULTIPART_MAX_PARTS];
    size_t n;
    const char *why = NULL;
    ag_status st = ag_multipart_parse(body, len, boundary, parts, AG_MULTIPART_MAX_PARTS, &n, &why);
    if (st != AG_OK && !why) abort();
    const char *prev = body;
    for (size_t i = 0; i < n; i++) {
        fz_inside(parts[i].name, body, len);
        fz_inside(parts[i].filename, body, len);
        fz_inside(parts[i].ctype, body, len);
        fz_inside(parts[i].data, body, len);
        if (parts[i].data.p < prev) abort();
        prev = parts[i].data.p + parts[i].data.n;
    }
    /* a boundary of printable characters other than a quote and a backslash round-trips through a quoted
       Content-Type parameter */
    bool printable = true;
    for (size_t i = 0; i < bn; i++) printable &= boundary.p[i] >= ' ' && boundary.p[i] < 127 && boundary.p[i] != '"' &&
                                                 boundary.p[i] != '\\';
    char ct[128];
    int k = snprintf(ct, sizeof ct, "multipart/form-data; boundary=\"%.*s\"", (int)bn, boundary.p);
    ag_str got;
    if (printable && (ag_multipart_boundary((ag_str){ct, (size_t)k}, &got) != AG_OK || got.n != bn ||
                      memcmp(got.p, boundary.p, bn) != 0))
        abort();
    return 0;
}
