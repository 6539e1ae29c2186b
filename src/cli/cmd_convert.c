/*
 * cmd_convert.c - `autoglm convert`: a Hugging Face directory to GGUF (the
 * work is in src/engine/convert.c; this is flags, progress and messages).
 */
#define _POSIX_C_SOURCE 200809L
#include "base/str.h"
#include "cli/cli.h"
#include "engine/convert.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char convert_usage[] =
    "usage: autoglm convert HF_DIR -o OUT.gguf [--dtype TYPE] [--random-weights SEED]\n\n"
    "Convert a Hugging Face checkpoint (config.json, *.safetensors, tokenizer.json,\n"
    "tokenizer_config.json) of LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM or\n"
    "Qwen3ForCausalLM to GGUF with llama.cpp's key and tensor names.\n\n"
    "  -o, --out FILE          output file (written to FILE.tmp, then renamed)\n"
    "  --dtype T               the weights' type (default f16): f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k\n"
    "                          q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k, with llama-quantize's mix\n"
    "                          for the quantized ones (see 'autoglm quantize --help'); 1-D tensors stay f32\n"
    "  --random-weights SEED   no weights needed: deterministic random tensors from SEED\n";

static void progress_bar(void *ctx, size_t done, size_t total, const char *tensor) {
    (void)ctx;
    int width = 30, filled = (int)(done * (size_t)width / (total ? total : 1));
    fprintf(stderr, "\r[%.*s%*s] %zu/%zu %-32.32s", filled, "==============================", width - filled, "", done,
            total, tensor);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

int ag_cmd_convert(int argc, char **argv) {
    ag_convert_opts o = {.preset = NULL};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (ag_cli_is_help(a)) {
            fputs(convert_usage, stdout);
            return AG_EXIT_OK;
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0) {
            if (!val) return ag_cli_usage_error("convert", "%s needs a file name", a);
            o.out_path = argv[++i];
        } else if (strcmp(a, "--dtype") == 0) {
            o.preset = val ? ag_quant_preset_find(val) : NULL;
            if (!o.preset) return ag_cli_usage_error("convert", "--dtype takes one of %s", ag_quant_preset_names());
            i++;
        } else if (strcmp(a, "--random-weights") == 0) {
            uint64_t seed;
            if (!val || ag_str_parse_u64(ag_str_from_cstr(val), &seed) != AG_OK)
                return ag_cli_usage_error("convert", "--random-weights takes a whole-number SEED");
            o.random_weights = true;
            o.seed = seed;
            i++;
        } else if (a[0] == '-') {
            return ag_cli_usage_error("convert", "unknown option '%s' (try 'autoglm convert --help')", a);
        } else if (o.hf_dir) {
            return ag_cli_usage_error("convert", "takes one HF_DIR");
        } else {
            o.hf_dir = a;
        }
    }
    if (!o.hf_dir || !o.out_path) return ag_cli_usage_error("convert", "needs HF_DIR and -o OUT.gguf");
    if (isatty(STDERR_FILENO)) o.progress = progress_bar;
    ag_err err = {{0}};
    ag_status st = ag_convert_hf(&o, &err);
    if (st != AG_OK) {
        fprintf(stderr, "autoglm convert: %s\n", err.msg[0] ? err.msg : ag_strerror(st));
        return AG_EXIT_FAIL;
    }
    return AG_EXIT_OK;
}
