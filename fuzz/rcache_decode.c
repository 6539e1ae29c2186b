/*
 * fuzz_rcache_decode: any bytes as a response cache value (what a shared
 * Redis hands back, after zstd).  What decodes must lie inside the input
 * (ASan checks the reads), and its choices must encode to a value that
 * decodes to the same choices.
 */
#include "server/rcache.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static ag_rcache_value v, w;
    const char *p = (const char *)data;
    if (!ag_rcache_decode(p, size, &v)) return 0;
    if (v.rest < p || v.rest + v.rest_len != p + size) __builtin_trap();
    for (uint32_t i = 0; i < v.n; i++) {
        if (v.ch[i].text < p || v.ch[i].text + v.ch[i].len > v.rest) __builtin_trap();
        v.ch[i].finish = v.ch[i].finish == AG_FINISH_STOP ? AG_FINISH_STOP : AG_FINISH_LENGTH;
    }
    ag_api_meta m;
    ag_api_meta_init(&m, AG_API_COMPLETION, "fuzz", 1);
    ag_buf again;
    ag_buf_init(&again);
    ag_rcache_encode(&m, v.ch, v.n, &v.usage, &again);
    if (again.err == AG_OK) {
        if (!ag_rcache_decode(again.data, again.len, &w) || w.n != v.n) __builtin_trap();
        for (uint32_t i = 0; i < v.n; i++)
            if (w.ch[i].len != v.ch[i].len || memcmp(w.ch[i].text, v.ch[i].text, v.ch[i].len) != 0) __builtin_trap();
    }
    ag_buf_deinit(&again);
    return 0;
}
