/*
 * cmd_gguf.c - `autoglm inspect` and `autoglm quantize`: GGUF files from the
 * command line.
 *
 * inspect prints the metadata (long arrays summarized) and a tensor table.
 * quantize rewrites the weight matrices in a llama.cpp preset's types
 * (engine/quantmix.h), keeps 1-D tensors (norms, biases) as they are, as
 * llama-quantize does, and copies every key, setting general.file_type.
 */
#define _POSIX_C_SOURCE 200809L
#include "base/alloc.h"
#include "cli/cli.h"
#include "base/pool.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/quantmix.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char inspect_usage[] = "usage: autoglm inspect [--all] MODEL.gguf\n\n"
                                    "Print a GGUF file's metadata and tensor table (name, type, shape, bytes).\n"
                                    "The last line says what loading it repacks (F16/Q8_0/Q4_0/Q4_K/Q5_K/Q6_K\n"
                                    "product matrices in 16-row groups, in memory beside the mapping; --no-repack\n"
                                    "on the model commands keeps them in place).\n"
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
    /* the loader's rule: every product matrix (token_embd only as a tied head), where its type and rows allow */
    bool tied = ag_gguf_find_tensor(f, "output.weight") == NULL;
    uint64_t repacked = 0;
    int n_repacked = 0;
    for (size_t i = 0; i < ag_gguf_n_tensors(f); i++) {
        const ag_gguf_tensor *t = ag_gguf_tensor_at(f, i);
        bool embd = t->name.n == strlen("token_embd.weight") && memcmp(t->name.p, "token_embd.weight", t->name.n) == 0;
        if (t->n_dims != 2 || (embd && !tied)) continue;
        uint64_t b = ag_matrix_repack_bytes(t->type, (int64_t)t->ne[1], (int64_t)t->ne[0]);
        repacked += b, n_repacked += b > 0;
    }
    printf("repacked at load: %d matrices, %" PRIu64 " bytes (%.1f MiB) in memory beside the mapping\n", n_repacked,
           repacked, (double)repacked / (1 << 20));
    ag_gguf_close(f);
    return AG_EXIT_OK;
}

static const char quantize_usage[] =
    "usage: autoglm quantize IN.gguf OUT.gguf TYPE [--pure] [--threads N]\n"
    "       autoglm quantize IN.gguf OUT.gguf --type TYPE [--pure] [--threads N]\n\n"
    "Rewrite a model's weight matrices in TYPE, one of\n"
    "  f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k\n"
    "with llama-quantize's per-tensor rules for the quantized types (the output matrix in\n"
    "Q6_K, attn_v and ffn_down of about half the layers in Q6_K for the _m presets, ...;\n"
    "rows that are not whole 256-element blocks fall back to iq4_nl, q5_0, q5_1 or q8_0).\n"
    "1-D tensors (norms, biases) stay as they are.  Metadata is copied and\n"
    "general.file_type set.  The blocks are ggml's reference quantization's.\n"
    "  --pure        every matrix in TYPE where its rows allow, no per-tensor rules\n"
    "  --threads N   quantize with N threads (default: the cores)\n";

/* One tensor's conversion, split by rows across threads. */
typedef struct quant_job {
    const ag_gguf_tensor *t;
    ag_dtype to;
    void *out;
    uint64_t rows, cols;
    size_t in_row, out_row;
} quant_job;

static void quant_rows(void *ctx, int ith, int nth) {
    const quant_job *j = ctx;
    long lo, hi;
    ag_pool_split((long)j->rows, ith, nth, 1, &lo, &hi);
    float *tmp = ag_xmalloc((size_t)j->cols * sizeof(float));
    for (long r = lo; r < hi; r++) {
        ag_dtype_to_f32(j->t->type, (const char *)j->t->data + (size_t)r * j->in_row, tmp, (size_t)j->cols);
        ag_dtype_from_f32(j->to, tmp, (char *)j->out + (size_t)r * j->out_row, (size_t)j->cols);
    }
    free(tmp);
}

int ag_cmd_quantize(int argc, char **argv) {
    const char *pos[3] = {0}, *type = NULL;
    int npos = 0, threads = 0;
    bool pure = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (ag_cli_is_help(a)) {
            fputs(quantize_usage, stdout);
            return AG_EXIT_OK;
        } else if (strcmp(a, "--pure") == 0) {
            pure = true;
        } else if (strcmp(a, "--type") == 0 || strcmp(a, "--threads") == 0) {
            if (i + 1 >= argc) return ag_cli_usage_error("quantize", "%s needs a value", a);
            if (a[2] == 't' && a[3] == 'y') type = argv[++i];
            else if ((threads = atoi(argv[++i])) < 1 || threads > 1024)
                return ag_cli_usage_error("quantize", "--threads takes 1..1024");
        } else if (a[0] == '-' && a[1]) {
            return ag_cli_usage_error("quantize", "unknown option '%s' (try 'autoglm quantize --help')", a);
        } else if (npos < 3) {
            pos[npos++] = a;
        } else {
            return ag_cli_usage_error("quantize", "takes IN.gguf OUT.gguf TYPE (try 'autoglm quantize --help')");
        }
    }
    if (npos == 3 && !type) type = pos[2];
    else if (npos == 3 || (npos == 2 && !type) || npos < 2)
        return ag_cli_usage_error("quantize", "takes IN.gguf OUT.gguf TYPE (try 'autoglm quantize --help')");
    const ag_quant_preset *preset = ag_quant_preset_find(type);
    if (!preset) return ag_cli_usage_error("quantize", "unknown type '%s' (%s)", type, ag_quant_preset_names());
    ag_gguf_file *in;
    if (open_or_report("quantize", pos[0], &in) != AG_EXIT_OK) return AG_EXIT_FAIL;
    ag_str arch = {0};
    uint32_t n_layer = 0, n_head = 1, n_head_kv = 1;
    if (ag_gguf_get_str(in, "general.architecture", &arch)) {
        char key[96];
        snprintf(key, sizeof key, "%.*s.block_count", (int)arch.n, arch.p);
        ag_gguf_get_u32(in, key, &n_layer);
        snprintf(key, sizeof key, "%.*s.attention.head_count", (int)arch.n, arch.p);
        ag_gguf_get_u32(in, key, &n_head);
        snprintf(key, sizeof key, "%.*s.attention.head_count_kv", (int)arch.n, arch.p);
        if (!ag_gguf_get_u32(in, key, &n_head_kv)) n_head_kv = n_head;
    }
    ag_quant_plan plan;
    ag_quant_plan_init(&plan, preset, pure, (int)n_layer, n_head_kv ? (int)(n_head / n_head_kv) : 1);
    size_t n = ag_gguf_n_tensors(in);
    char(*names)[80] = ag_xcalloc(n + 1, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const ag_gguf_tensor *t = ag_gguf_tensor_at(in, i);
        snprintf(names[i], sizeof names[i], "%.*s", (int)t->name.n, t->name.p);
        ag_quant_plan_count(&plan, names[i]);
    }
    ag_gguf_writer *w = ag_gguf_writer_create(ag_gguf_alignment(in));
    for (size_t i = 0; i < ag_gguf_n_kv(in); i++) ag_gguf_writer_copy_kv(w, ag_gguf_kv_at(in, i));
    ag_gguf_writer_set_u32(w, "general.file_type", preset->ftype);
    if (ag_dtype_is_quant(preset->base)) ag_gguf_writer_set_u32(w, "general.quantization_version", 2);
    ag_pool *pool = NULL;
    if (ag_pool_create(threads ? threads : ag_cpu_physical_cores(), &pool, NULL) != AG_OK) {
        fprintf(stderr, "autoglm quantize: cannot start threads\n");
        free(names);
        ag_gguf_writer_destroy(w);
        ag_gguf_close(in);
        return AG_EXIT_FAIL;
    }
    void **owned = ag_xcalloc(n + 1, sizeof *owned);
    int rc = AG_EXIT_OK;
    for (size_t i = 0; i < n && rc == AG_EXIT_OK; i++) {
        const ag_gguf_tensor *t = ag_gguf_tensor_at(in, i);
        ag_dtype to = ag_quant_plan_type(&plan, names[i], t->n_dims, t->ne[0], t->type);
        uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3], out_row = 0, in_row = 0;
        const void *data = t->data;
        if (to != t->type) {
            ag_dtype_bytes(to, t->ne[0], &out_row);
            ag_dtype_bytes(t->type, t->ne[0], &in_row);
            if (!(owned[i] = malloc((size_t)(rows * out_row)))) {
                fprintf(stderr, "autoglm quantize: out of memory converting %s\n", names[i]);
                rc = AG_EXIT_FAIL;
                break;
            }
            quant_job job = {t, to, owned[i], rows, t->ne[0], (size_t)in_row, (size_t)out_row};
            ag_pool_run(pool, quant_rows, &job);
            data = owned[i];
        }
        if (ag_gguf_writer_add_tensor(w, names[i], to, t->n_dims, t->ne, data) != AG_OK) {
            fprintf(stderr, "autoglm quantize: cannot add tensor %s\n", names[i]);
            rc = AG_EXIT_FAIL;
        }
    }
    if (rc == AG_EXIT_OK && plan.n_fallback)
        fprintf(stderr, "autoglm quantize: %d tensor(s) took a fallback type (rows not a whole number of blocks)\n",
                plan.n_fallback);
    if (rc == AG_EXIT_OK && ag_gguf_writer_to_file(w, pos[1]) != AG_OK) {
        fprintf(stderr, "autoglm quantize: cannot write %s\n", pos[1]);
        rc = AG_EXIT_FAIL;
    }
    for (size_t i = 0; i < n; i++) free(owned[i]);
    free(owned);
    free(names);
    ag_pool_destroy(pool);
    ag_gguf_writer_destroy(w);
    ag_gguf_close(in);
    return rc;
}
