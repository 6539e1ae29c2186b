/*
 * fuzz_tokenizer_encode: any bytes as text for the Llama 3 fixture's
 * tokenizer (build/fixtures/llama3.gguf, made by make test), with and
 * without special-token parsing.  Valid UTF-8 must encode, and decode back to
 * the same bytes; invalid UTF-8 must be refused with AG_EINVAL, never crash.
 */
#include "engine/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ag_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("AG_FUZZ_MODEL") ? getenv("AG_FUZZ_MODEL") : AG_SOURCE_DIR "/build/fixtures/llama3.gguf";
    ag_gguf_file *f;
    ag_err err;
    if (ag_gguf_open(path, &f, &err) != AG_OK || ag_tokenizer_load(f, &tok, &err) != AG_OK) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s: %s (run make test first)\n", path, err.msg);
        exit(1);
    }
    ag_gguf_close(f);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int special = 0; special < 2; special++) {
        ag_ids ids = {0};
        ag_err err;
        ag_status st = ag_tokenize(tok, (const char *)data, size, false, special, &ids, &err);
        if (st == AG_OK) {
            ag_buf out;
            ag_buf_init(&out);
            for (size_t i = 0; i < ids.n; i++) ag_token_bytes(tok, ids.v[i], &out);
            if (out.len != size || (size && memcmp(out.data, data, size) != 0)) __builtin_trap();
            ag_buf_deinit(&out);
        } else if (st != AG_EINVAL) {
            __builtin_trap();
        }
        free(ids.v);
    }
    return 0;
}
