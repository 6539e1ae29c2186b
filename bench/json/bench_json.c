/*
 * bench_json - JSON parse and write throughput, autoglm against simdjson
 * (DOM API), cJSON and jansson, side by side in one run on the same bytes.
 *
 * Parse: input bytes to a DOM the library can query, freed or reset each
 * time (each library in its fastest documented reuse mode: our arena reset,
 * simdjson's reused parser on pre-padded input).  Write: the DOM of that input
 * serialized compactly to memory.  Throughput = input bytes / time, the median
 * of --rounds rounds, each repeating the operation for at least --min-ms;
 * the rounds are interleaved across the libraries (see measure_all).
 *
 * usage: bench_json [--rounds N] [--min-ms MS]
 */
#define _POSIX_C_SOURCE 200809L
#include "base/arena.h"
#include "base/clock.h"
#include "bodies.h"
#include "json/json.h"
#include "peer_simdjson.h"

#include <cJSON.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct input {
    const char *name;
    ag_buf text;
    char *padded; /* copy with simdjson's padding */
    /* DOMs built once for the write benchmarks */
    ag_json_val *ours;
    cJSON *cjson;
    json_t *jansson;
} input;

static ag_arena arena, write_arena;
static ag_buf out;
static void *sj;

static int ours_parse(input *in) {
    ag_json_val *root;
    int ok = ag_json_parse(in->text.data, in->text.len, NULL, &arena, &root, NULL) == AG_OK;
    ag_arena_reset(&arena);
    return ok;
}
static int ours_write(input *in) {
    ag_buf_reset(&out);
    ag_jw w;
    ag_jw_init(&w, &out, 0, AG_UTF8_REJECT);
    ag_jw_value(&w, in->ours);
    return out.err == AG_OK;
}
static int simd_parse(input *in) { return sj_parse(sj, in->padded, in->text.len) == 0; }
static int simd_write(input *in) {
    (void)in; /* serializes the DOM of the last sj_parse, which table() points at in */
    return sj_write_last(sj) > 0;
}
static int cjson_parse(input *in) {
    cJSON *r = cJSON_ParseWithLength(in->text.data, in->text.len);
    cJSON_Delete(r);
    return r != NULL;
}
static int cjson_write(input *in) {
    char *s = cJSON_PrintUnformatted(in->cjson);
    free(s);
    return s != NULL;
}
static int jansson_parse(input *in) {
    json_error_t err;
    json_t *r = json_loadb(in->text.data, in->text.len, 0, &err);
    json_decref(r);
    return r != NULL;
}
static int jansson_write(input *in) {
    char *s = json_dumps(in->jansson, JSON_COMPACT);
    free(s);
    return s != NULL;
}

typedef int (*op_fn)(input *);
enum { LIB_OURS, LIB_SIMD, LIB_CJSON, LIB_JANSSON, N_LIBS };
static const op_fn parse_ops[N_LIBS] = {ours_parse, simd_parse, cjson_parse, jansson_parse};
static const op_fn write_ops[N_LIBS] = {ours_write, simd_write, cjson_write, jansson_write};

static int rounds = 7;
static double min_ms = 100;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* MB/s of one round: op repeated for at least min_ms. */
static double round_mbps(op_fn op, input *in) {
    uint64_t t0 = ag_clock_mono_ns(), t;
    long iters = 0;
    do {
        op(in);
        iters++;
        t = ag_clock_mono_ns();
    } while ((double)(t - t0) < min_ms * 1e6);
    return (double)in->text.len * (double)iters / ((double)(t - t0) / 1e9) / 1e6;
}

/*
 * Median MB/s per library over `rounds` rounds.  Rounds are interleaved (each
 * round runs every library once, in turn) so that a slow spell of a shared
 * machine lands on all of them instead of on whichever ran then.
 */
static void measure_all(const op_fn *ops, input *in, double out[N_LIBS]) {
    double mbps[N_LIBS][64];
    for (int l = 0; l < N_LIBS; l++) {
        if (ops == write_ops && l == LIB_SIMD) simd_parse(in); /* simdjson writes its last DOM */
        if (!ops[l](in)) {
            fprintf(stderr, "bench_json: an operation failed on %s\n", in->name);
            exit(1);
        }
    }
    for (int r = 0; r < rounds; r++)
        for (int l = 0; l < N_LIBS; l++) {
            if (ops == write_ops && l == LIB_SIMD) simd_parse(in);
            mbps[l][r] = round_mbps(ops[l], in);
        }
    for (int l = 0; l < N_LIBS; l++) {
        qsort(mbps[l], (size_t)rounds, sizeof mbps[l][0], cmp_double);
        out[l] = mbps[l][rounds / 2];
    }
}

static void prepare(input *in) {
    in->padded = calloc(1, in->text.len + sj_padding());
    memcpy(in->padded, in->text.data, in->text.len);
    json_error_t jerr;
    if (ag_json_parse(in->text.data, in->text.len, NULL, &write_arena, &in->ours, NULL) != AG_OK ||
        !(in->cjson = cJSON_ParseWithLength(in->text.data, in->text.len)) ||
        !(in->jansson = json_loadb(in->text.data, in->text.len, 0, &jerr))) {
        fprintf(stderr, "bench_json: a library rejected the %s body\n", in->name);
        exit(1);
    }
}

static void table(const char *op, input *inputs, int n_inputs, const op_fn *ops) {
    printf("\n%s throughput, MB/s of input (median of %d interleaved rounds x >= %.0f ms)\n", op, rounds, min_ms);
    printf("| body        |    bytes |  autoglm | simdjson |    cJSON |  jansson | vs simdjson | vs cJSON | vs jansson |\n");
    printf("|-------------|---------:|---------:|---------:|---------:|---------:|------------:|---------:|-----------:|\n");
    for (int i = 0; i < n_inputs; i++) {
        double r[N_LIBS];
        measure_all(ops, &inputs[i], r);
        printf("| %-11s | %8zu | %8.0f | %8.0f | %8.0f | %8.0f | %10.2fx | %7.2fx | %9.2fx |\n", inputs[i].name,
               inputs[i].text.len, r[LIB_OURS], r[LIB_SIMD], r[LIB_CJSON], r[LIB_JANSSON], r[LIB_OURS] / r[LIB_SIMD],
               r[LIB_OURS] / r[LIB_CJSON], r[LIB_OURS] / r[LIB_JANSSON]);
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--min-ms") == 0 && i + 1 < argc) min_ms = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_json [--rounds N] [--min-ms MS]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > 63) rounds = 5;
    ag_arena_init(&arena, 1 << 20);
    ag_arena_init(&write_arena, 1 << 20);
    ag_buf_init(&out);
    sj = sj_create();
    input inputs[] = {{.name = "chat_1k"}, {.name = "chat_64k"}, {.name = "chat_1m"}, {.name = "generic_1m"}};
    void (*gens[])(ag_buf *) = {bench_body_chat_1k, bench_body_chat_64k, bench_body_chat_1m, bench_body_generic_1m};
    int n = (int)(sizeof inputs / sizeof inputs[0]);
    for (int i = 0; i < n; i++) {
        ag_buf_init(&inputs[i].text);
        gens[i](&inputs[i].text);
        prepare(&inputs[i]);
    }
    printf("bench_json: autoglm vs simdjson %s (DOM API, kernel %s), cJSON %s, jansson %s\n", sj_version(),
           sj_implementation(), cJSON_Version(), JANSSON_VERSION);
    table("parse", inputs, n, parse_ops);
    table("write", inputs, n, write_ops);
    for (int i = 0; i < n; i++) {
        ag_buf_deinit(&inputs[i].text);
        free(inputs[i].padded);
        cJSON_Delete(inputs[i].cjson);
        json_decref(inputs[i].jansson);
    }
    sj_destroy(sj);
    ag_buf_deinit(&out);
    ag_arena_deinit(&arena);
    ag_arena_deinit(&write_arena);
    return 0;
}
