/*
 * test.h - what every cmocka test file includes: cmocka's required headers
 * in the order it needs, and a note printer that scripts/run-tests shows.
 */
#ifndef AG_TEST_H
#define AG_TEST_H

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

/* A line run-tests echoes under the binary's result (e.g. why cases were skipped). */
#define AG_TEST_NOTE(...)                                                                                      \
    do {                                                                                                       \
        printf("# NOTE: ");                                                                                    \
        printf(__VA_ARGS__);                                                                                   \
        printf("\n");                                                                                          \
    } while (0)

/* Deterministic xorshift64* for property tests: same seed, same cases. */
static inline uint64_t ag_test_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/*
 * The inputs of the K-quant reference vectors (weights x, activations a),
 * exact floats from an LCG with some 32-element sub-blocks offset from zero.
 * The expected values in test_dtype.c and test_kernels.c were computed by
 * ggml (llama.cpp c392e509) from these same inputs.
 */
static inline void ag_test_kquant_inputs(float *x, float *a, int n) {
    uint64_t s = 12345;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)((s >> 40) * 0x1p-24 * 2.0 - 1.0);
        x[i] = u * (float)(1 + (i / 256) % 5) * 0.25f + ((i / 32) % 3 == 0 ? 0.3f : 0.0f);
    }
    s = 999;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        a[i] = (float)((s >> 40) * 0x1p-24 * 2.0 - 1.0) * 3.0f;
    }
}

/* Whole file into a malloc'd buffer (NUL-terminated, not counted); NULL if unreadable. */
static inline char *ag_test_read_file(const char *path, size_t *len) {
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    *len = n;
    return buf;
}

/*
 * Call check(data, len, ctx) on every file of dir (fuzz corpora: seeds and
 * crashes the fuzzers found).  Returns the number of files, or -1 when dir
 * cannot be read; *n_valid counts the calls that returned nonzero.
 */
static inline int ag_test_for_each_file(const char *dir, int (*check)(const char *data, size_t len, void *ctx),
                                        void *ctx, int *n_valid) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    int files = 0;
    *n_valid = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        char *data = ag_test_read_file(path, &len);
        if (!data) continue;
        files++;
        *n_valid += check(data, len, ctx) != 0;
        free(data);
    }
    closedir(d);
    return files;
}

/*
 * Replay a fuzz target's corpus through the target itself (the test includes
 * the target's .c, so its checks trap here as they would under the fuzzer).
 * Returns the number of files.
 */
typedef struct ag_test_fuzz_target {
    int (*run)(const uint8_t *data, size_t size);
} ag_test_fuzz_target;

static inline int ag_test_fuzz_one(const char *data, size_t len, void *ctx) {
    return ((const ag_test_fuzz_target *)ctx)->run((const uint8_t *)data, len) == 0;
}

static inline int ag_test_fuzz_corpus(const char *dir, int (*run)(const uint8_t *data, size_t size)) {
    ag_test_fuzz_target t = {run};
    int valid;
    return ag_test_for_each_file(dir, ag_test_fuzz_one, &t, &valid);
}

#endif
