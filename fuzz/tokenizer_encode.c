/*
 * fuzz_tokenizer_encode: any bytes as text for a fixture model's tokenizer
 * (AG_FUZZ_MODEL, default build/fixtures/llama3.gguf; make test builds them),
 * with and without special-token parsing.  Valid UTF-8 must encode; without
 * special parsing it must decode back to the same bytes (SentencePiece: with
 * the "▁" prefix as a leading space, and a literal U+2581 in the text comes
 * back as a space); invalid UTF-8 must be refused with
 * AG_EINVAL; nothing may crash.
 */
#define _GNU_SOURCE /* memmem */
#include "engine/tokenizer.h"

#include <stdbool.h>
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
            bool same = out.len == size && (size == 0 || memcmp(out.data, data, size) == 0);
            bool spm_same = size && out.len == size + 1 && out.data[0] == ' ' && memcmp(out.data + 1, data, size) == 0;
            /* SentencePiece decodes a literal U+2581 as a space, as Hugging Face does: lossy by design */
            bool has_meta = memmem(data, size, "\xe2\x96\x81", 3) != NULL;
            if (!special && !same && !spm_same && !has_meta) __builtin_trap();
            ag_buf_deinit(&out);
        } else if (st != AG_EINVAL) {
            __builtin_trap();
        }
        free(ids.v);
    }
    return 0;
}
