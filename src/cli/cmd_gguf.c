/*
 * cmd_gguf.c - `autoglm inspect` and `autoglm quantize`: GGUF files from the
 * command line.
 *
 * inspect prints the metadata (long arrays summarized) and a tensor table.
 * quantize rewrites every 2-D weight matrix in the target type, keeps 1-D
 * tensors (norms, biases) as they are, as llama.cpp's quantize does, and
 * copies every key, setting general.file_type to match.
 */
#define _POSIX_C_SOURCE 200809L
#include "base/alloc.h"
#include "cli/cli.h"
#include "engine/gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char inspect_usage[] = "usage: autoglm inspect [--all] MODEL.gguf\n\n"
                                    "Print a GGUF file's metadata and tensor table (name, type, shape, bytes).\n"
                                    "  --all   print every element of long arrays (default: the first 8)\n";

static void print_scalar(ag_gguf_type t, const uint8_t *v) {
    switch (t) {
    case AG_GGUF_U8: printf("%u", v[0]); break;
    case AG_GGUF_I8: printf("%d", (int8_t)v[0]); break;
    case AG_GGUF_U16: { uint16_t x; memcpy(&x, v, 2); printf("%u", x); break; }
    case AG_GGUF_I16: { int16_t x; memcpy(&x, v, 2); printf("%d", x); break; }
    case AG_GGUF_U32: { uint32_t x; memcpy(&x, v, 4); printf("%" PRIu32, x); break; }
    case AG_GGUF_I32: { int32_t x; memcpy(&x, v, 4); printf("%" PRId32, x); break; }
    case AG_GGUF_U64: { uint64_t x; memcpy(&x, v, 8); printf("%" PRIu64, x); break; }
    case AG_GGUF_I64: { int64_t x; memcpy(&x, v, 8); printf("%" PRId64, x); break; }
    case AG_GGUF_F32: { float x; memcpy(&x, v, 4); printf("%g", x); break; }
    case AG_GGUF_F64: { double x; memcpy(&x, v, 8); printf("%g", x); break; }
    case AG_GGUF_BOOL: printf("%s", v[0] ? "true" : "false"); break;
    default: break;
    }
}

/* A string shown on one line: control characters escaped, long ones cut. */
static void print_str(ag_str s, size_t max) {
    putchar('"');
    for (size_t i = 0; i < s.n && i < max; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
    if (s.n > max) printf("... (%zu bytes)", s.n);
}

static void print_kv(const ag_gguf_kv *kv, int all) {
    printf("  %-40.*s %-6s ", (int)kv->key.n, kv->key.p,
           kv->type == AG_GGUF_ARRAY ? ag_gguf_type_name(kv->arr_type) : ag_gguf_type_name(kv->type));
    if (kv->type == AG_GGUF_STRING) {
        uint64_t len;
        memcpy(&len, kv->value, 8);
        print_str((ag_str){(const char *)kv->value + 8, (size_t)len}, 120);
    } else if (kv->type == AG_GGUF_ARRAY) {
        uint64_t shown = all || kv->arr_len <= 8 ? kv->arr_len : 8;
        printf("[%" PRIu64 "] ", kv->arr_len);
        for (uint64_t i = 0; i < shown; i++) {
            if (i) printf(", ");
            if (kv->arr_type == AG_GGUF_STRING) print_str(ag_gguf_arr_str(kv, i), 40);
            else print_scalar(kv->arr_type, kv->value + i * ag_gguf_type_size(kv->arr_type));
        }
        if (shown < kv->arr_len) printf(", ...");
    } else {
        print_scalar(kv->type, kv->value);
    }
    putchar('\n');
}

static int open_or_report(const char *cmd, const char *path, ag_gguf_file **f) {
    ag_err err = {{0}};
    ag_status st = ag_gguf_open(path, f, &err);
    if (st != AG_OK) {
        fprintf(stderr, "autoglm %s: %s: %s\n", cmd, path, err.msg[0] ? err.msg : ag_strerror(st));
        return AG_EXIT_FAIL;
    }
    return AG_EXIT_OK;
}

int ag_cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    int all = 0;
    for (int i = 0; i < argc; i++) {
        if (ag_cli_is_help(argv[i])) {
            fputs(inspect_usage, stdout);
            return AG_EXIT_OK;
        }
        if (strcmp(argv[i], "--all") == 0) all = 1;
        else if (argv[i][0] == '-') return ag_cli_usage_error("inspect", "unknown option '%s'", argv[i]);
        else if (path) return ag_cli_usage_error("inspect", "takes one MODEL.gguf");
        else path = argv[i];
    }
    if (!path) return ag_cli_usage_error("inspect", "no MODEL.gguf given (try 'autoglm inspect --help')");
    ag_gguf_file *f;
    if (open_or_report("inspect", path, &f) != AG_EXIT_OK) return AG_EXIT_FAIL;
    printf("%s: GGUF v%u, %zu keys, %zu tensors, alignment %u, data at offset %zu\n\nmetadata:\n", path,
           ag_gguf_version(f), ag_gguf_n_kv(f), ag_gguf_n_tensors(f), ag_gguf_alignment(f), ag_gguf_data_offset(f));
    for (size_t i = 0; i < ag_gguf_n_kv(f); i++) print_kv(ag_gguf_kv_at(f, i), all);
    printf("\ntensors:\n  %-32s %-5s %-26s %14s\n", "name", "type", "shape", "bytes");
    uint64_t total = 0, params = 0;
    for (size_t i = 0; i < ag_gguf_n_tensors(f); i++) {
        const ag_gguf_tensor *t = ag_gguf_tensor_at(f, i);
        char shape[64];
        int n = 0;
        uint64_t elems = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRIu64, d ? " x " : "", t->ne[d]);
            elems *= t->ne[d];
        }
        printf("  %-32.*s %-5s %-26s %14" PRIu64 "\n", (int)t->name.n, t->name.p, ag_dtype_name(t->type), shape,
               t->n_bytes);
        total += t->n_bytes;
        params += elems;
    }
    printf("\n%" PRIu64 " parameters, %" PRIu64 " bytes of tensor data\n", params, total);
    ag_gguf_close(f);
    return AG_EXIT_OK;
}

static const char quantize_usage[] = "usage: autoglm quantize IN.gguf OUT.gguf q8_0|q4_0|f16|bf16|f32\n\n"
                                     "Rewrite every 2-D weight in the given type; 1-D tensors (norms, biases)\n"
                                     "stay as they are.  Metadata is copied; general.file_type is set.\n";

/* llama_ftype for a whole-file type (general.file_type). */
static uint32_t file_type_of(ag_dtype t) {
    switch (t) {
    case AG_DTYPE_F32: return 0;
    case AG_DTYPE_F16: return 1;
    case AG_DTYPE_Q4_0: return 2;
    case AG_DTYPE_Q8_0: return 7;
    case AG_DTYPE_BF16: return 32;
    }
    return 0;
}

int ag_cmd_quantize(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (ag_cli_is_help(argv[i])) {
            fputs(quantize_usage, stdout);
            return AG_EXIT_OK;
        }
    if (argc != 3) return ag_cli_usage_error("quantize", "takes IN.gguf OUT.gguf TYPE (try 'autoglm quantize --help')");
    int target = ag_dtype_parse(argv[2]);
    if (target < 0) return ag_cli_usage_error("quantize", "unknown type '%s' (q8_0, q4_0, f16, bf16, f32)", argv[2]);
    ag_gguf_file *in;
    if (open_or_report("quantize", argv[0], &in) != AG_EXIT_OK) return AG_EXIT_FAIL;
    ag_gguf_writer *w = ag_gguf_writer_create(ag_gguf_alignment(in));
    for (size_t i = 0; i < ag_gguf_n_kv(in); i++) ag_gguf_writer_copy_kv(w, ag_gguf_kv_at(in, i));
    ag_gguf_writer_set_u32(w, "general.file_type", file_type_of((ag_dtype)target));
    if (target == AG_DTYPE_Q8_0 || target == AG_DTYPE_Q4_0) ag_gguf_writer_set_u32(w, "general.quantization_version", 2);
    size_t n = ag_gguf_n_tensors(in);
    void **owned = ag_xcalloc(n + 1, sizeof *owned);
    int rc = AG_EXIT_OK;
    for (size_t i = 0; i < n && rc == AG_EXIT_OK; i++) {
        const ag_gguf_tensor *t = ag_gguf_tensor_at(in, i);
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.p);
        ag_dtype to = t->type;
        uint64_t elems = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3], bytes;
        if (t->n_dims >= 2 && t->ne[0] % ag_dtype_block_elems((ag_dtype)target) == 0) to = (ag_dtype)target;
        const void *data = t->data;
        if (to != t->type) {
            float *tmp = malloc((size_t)elems * sizeof(float));
            if (!ag_dtype_bytes(to, elems, &bytes) || !tmp || !(owned[i] = malloc((size_t)bytes))) {
                fprintf(stderr, "autoglm quantize: out of memory converting %s\n", name);
                free(tmp);
                rc = AG_EXIT_FAIL;
                break;
            }
            ag_dtype_to_f32(t->type, t->data, tmp, (size_t)elems);
            ag_dtype_from_f32(to, tmp, owned[i], (size_t)elems);
            free(tmp);
            data = owned[i];
        }
        if (ag_gguf_writer_add_tensor(w, name, to, t->n_dims, t->ne, data) != AG_OK) {
            fprintf(stderr, "autoglm quantize: cannot add tensor %s\n", name);
            rc = AG_EXIT_FAIL;
        }
    }
    if (rc == AG_EXIT_OK && ag_gguf_writer_to_file(w, argv[1]) != AG_OK) {
        fprintf(stderr, "autoglm quantize: cannot write %s\n", argv[1]);
        rc = AG_EXIT_FAIL;
    }
    for (size_t i = 0; i < n; i++) free(owned[i]);
    free(owned);
    ag_gguf_writer_destroy(w);
    ag_gguf_close(in);
    return rc;
}
