/*
 * bench_tokenizer - encode throughput of autoglm's tokenizer per vocabulary
 * on a corpus of lines (one encode call per line, as per-request prompts),
 * written as JSON for bench/tokenizer/run, which puts it beside the
 * JavaScript reference and tiktoken measured on the same lines.
 * MB/s = corpus bytes / time of the best of 3 passes after a warm-up pass.
 *
 * usage: bench_tokenizer CORPUS.txt OUT.json MODEL.gguf NAME [MODEL.gguf NAME]...
 */
#define _POSIX_C_SOURCE 200809L
#include "base/clock.h"
#include "engine/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 5 || (argc - 3) % 2) {
        fprintf(stderr, "usage: bench_tokenizer CORPUS.txt OUT.json MODEL.gguf NAME [MODEL.gguf NAME]...\n");
        return 2;
    }
    size_t len;
    char *text = slurp(argv[1], &len);
    if (!text) {
        fprintf(stderr, "bench_tokenizer: cannot read %s\n", argv[1]);
        return 1;
    }
    size_t n_lines = 0, cap = 1024, bytes = 0;
    size_t(*lines)[2] = malloc(cap * sizeof *lines);
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len;
        if (end > i) {
            if (n_lines == cap) lines = realloc(lines, (cap *= 2) * sizeof *lines);
            lines[n_lines][0] = i;
            lines[n_lines][1] = end - i;
            n_lines++;
            bytes += end - i;
        }
        i = end + 1;
    }
    FILE *out = fopen(argv[2], "w");
    fprintf(out, "{\"bytes\": %zu, \"lines\": %zu, \"ours\": {", bytes, n_lines);
    for (int m = 3; m + 1 < argc; m += 2) {
        ag_gguf_file *f;
        ag_tokenizer *t;
        ag_err err = {{0}};
        if (ag_gguf_open(argv[m], &f, &err) != AG_OK || ag_tokenizer_load(f, &t, &err) != AG_OK) {
            fprintf(stderr, "bench_tokenizer: %s: %s\n", argv[m], err.msg);
            return 1;
        }
        ag_gguf_close(f);
        ag_ids ids = {0};
        size_t tokens = 0;
        double best = 1e30;
        for (int pass = 0; pass < 4; pass++) { /* pass 0 warms up and counts */
            uint64_t t0 = ag_clock_mono_ns();
            for (size_t i = 0; i < n_lines; i++) {
                ids.n = 0;
                if (ag_tokenize(t, text + lines[i][0], lines[i][1], false, false, &ids, &err) != AG_OK) {
                    fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
                    return 1;
                }
                if (pass == 0) tokens += ids.n;
            }
            double s = (double)(ag_clock_mono_ns() - t0) / 1e9;
            if (pass > 0 && s < best) best = s;
        }
        fprintf(out, "%s\"%s\": {\"mbps\": %.1f, \"tokens\": %zu}", m == 3 ? "" : ", ", argv[m + 1],
                (double)bytes / best / 1e6, tokens);
        free(ids.v);
        ag_tokenizer_free(t);
    }
    fprintf(out, "}}\n");
    fclose(out);
    free(lines);
    free(text);
    return 0;
}
