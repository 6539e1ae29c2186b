/*
 * fuzz_safetensors_parse: any bytes as a .safetensors file image; accepted
 * tensors have their first and last data byte touched (ASan checks bounds).
 */
#include "engine/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ag_st_set *s;
    ag_err err;
    if (ag_st_parse(data, size, &s, &err) != AG_OK) return 0;
    volatile unsigned sink = 0;
    for (size_t i = 0; i < ag_st_count(s); i++) {
        const ag_st_tensor *t = ag_st_at(s, i);
        if (t->n_bytes) sink += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->n_bytes - 1];
        if (ag_st_find(s, t->name) != t) __builtin_trap();
    }
    (void)sink;
    ag_st_close(s);
    return 0;
}
