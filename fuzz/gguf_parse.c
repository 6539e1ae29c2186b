/*
 * fuzz_gguf_parse: any bytes as a GGUF file.  When accepted, every kv is read
 * through the typed accessors, every string array element is fetched, and the
 * first and last byte of every tensor are touched (ASan checks the bounds).
 * The first row of every tensor is checked for non-finite block scales and
 * decoded to floats, as the model loader and the embedding lookup do with
 * untrusted blocks (K-quant scale packing included).
 */
#include "engine/gguf.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ag_gguf_file *f;
    ag_err err;
    if (ag_gguf_parse(data, size, &f, &err) != AG_OK) return 0;
    volatile unsigned sink = 0;
    for (size_t i = 0; i < ag_gguf_n_kv(f); i++) {
        const ag_gguf_kv *kv = ag_gguf_kv_at(f, i);
        uint64_t u;
        double d;
        sink += ag_gguf_kv_u64(kv, &u) + ag_gguf_kv_f64(kv, &d);
        if (kv->type == AG_GGUF_ARRAY && kv->arr_type == AG_GGUF_STRING)
            for (uint64_t j = 0; j < kv->arr_len; j++) {
                ag_str s = ag_gguf_arr_str(kv, j);
                if (s.n) sink += (unsigned char)s.p[0] + (unsigned char)s.p[s.n - 1];
            }
    }
    for (size_t i = 0; i < ag_gguf_n_tensors(f); i++) {
        const ag_gguf_tensor *t = ag_gguf_tensor_at(f, i);
        const uint8_t *p = t->data;
        sink += p[0] + p[t->n_bytes - 1];
        if (ag_gguf_find_tensor(f, "") == t) sink++;
        uint64_t row_bytes;
        if (t->ne[0] <= 4096 && ag_dtype_bytes(t->type, t->ne[0], &row_bytes) && row_bytes <= t->n_bytes) {
            float *row = malloc((size_t)t->ne[0] * sizeof(float));
            sink += (unsigned)ag_dtype_find_bad_block(t->type, t->data, row_bytes);
            ag_dtype_to_f32(t->type, t->data, row, (size_t)t->ne[0]);
            sink += row[0] != row[0];
            free(row);
        }
    }
    (void)sink;
    ag_gguf_close(f);
    return 0;
}
