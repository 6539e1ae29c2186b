/*
 * cmd_run.c - `autoglm run`: generate a continuation of a prompt on the
 * CPU engine, streaming text to stdout as tokens arrive and the speed to
 * stderr, like llama.cpp's llama-cli in its plainest mode.
 */
#define _POSIX_C_SOURCE 200809L
#include "base/clock.h"
#include "base/str.h"
#include "cli/cli.h"
#include "engine/sampler.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char run_usage[] =
    "usage: autoglm run --model M.gguf -p TEXT [-n N] [--temp T] [--top-p P] [--seed S] [--threads N] [options]\n\n"
    "Generate up to N tokens after TEXT, streamed to stdout; token counts and speeds go to stderr.\n" AG_CLI_MODEL_FLAGS_HELP
    "  -p, --prompt TEXT    the prompt\n"
    "  -f, --file F         read the prompt from a file (- for stdin)\n"
    "  -n N                 tokens to generate (default 128; stops earlier at end of text)\n"
    "  --temp T             temperature; 0 is greedy (default 0.8)\n"
    "  --top-k K            keep the K most likely tokens (default 40; 0 off)\n"
    "  --top-p P            keep the smallest set holding P of the probability (default 0.95)\n"
    "  --min-p P            drop tokens below P times the top probability (default 0.05)\n"
    "  --repeat-penalty R   CTRL-style penalty on the last 64 tokens (default 1.0: off)\n"
    "  --frequency-penalty F, --presence-penalty P   OpenAI-style penalties (default 0)\n"
    "  --seed S             random seed (default 24301); the same seed gives the same text\n"
    "  --stop TEXT          stop when TEXT is generated (repeatable)\n"
    "  -l, --logit-bias ID+B | ID-B   add B to token ID's logit (-inf bans it; repeatable, as llama.cpp)\n"
    "  --ignore-eos         go on past the model's end-of-generation tokens\n"
    "  --no-bos             do not add the beginning-of-sequence token\n"
    "  --special            parse special-token texts in the prompt\n";

int ag_cmd_run(int argc, char **argv) {
    ag_cli_model_opts mo = {.params = ag_model_params_default()};
    ag_sampler_params sp = ag_sampler_params_default();
    sp.temperature = 0.8f;
    sp.top_k = 40;
    sp.top_p = 0.95f;
    sp.min_p = 0.05f;
    const char *prompt = NULL, *prompt_file = NULL;
    const char *stops[16];
    size_t n_stops = 0;
    long n_predict = 128, v;
    bool no_bos = false, special = false, ignore_eos = false;
    ag_logit_bias bias[64];
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int took = ag_cli_model_flag("run", argc, argv, &i, &mo);
        if (took < 0) return AG_EXIT_USAGE;
        if (took) continue;
        if (ag_cli_is_help(a)) {
            fputs(run_usage, stdout);
            return AG_EXIT_OK;
        } else if (strcmp(a, "-p") == 0 || strcmp(a, "--prompt") == 0) {
            if (!val) return ag_cli_usage_error("run", "%s needs text", a);
            prompt = argv[++i];
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) {
            if (!val) return ag_cli_usage_error("run", "%s needs a file", a);
            prompt_file = argv[++i];
        } else if (strcmp(a, "-n") == 0 || strcmp(a, "--n-predict") == 0) {
            if (!ag_cli_int("run", a, val, 0, 1 << 24, &n_predict)) return AG_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--temp") == 0) {
            if (!ag_cli_float("run", a, val, &sp.temperature)) return AG_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--top-k") == 0) {
            if (!ag_cli_int("run", a, val, 0, 1 << 24, &v)) return AG_EXIT_USAGE;
            sp.top_k = (int32_t)v, i++;
        } else if (strcmp(a, "--top-p") == 0) {
            if (!ag_cli_float("run", a, val, &sp.top_p)) return AG_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--min-p") == 0) {
            if (!ag_cli_float("run", a, val, &sp.min_p)) return AG_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--repeat-penalty") == 0) {
            if (!ag_cli_float("run", a, val, &sp.repetition_penalty)) return AG_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--frequency-penalty") == 0) {
            if (!ag_cli_float("run", a, val, &sp.frequency_penalty)) return AG_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--presence-penalty") == 0) {
            if (!ag_cli_float("run", a, val, &sp.presence_penalty)) return AG_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--seed") == 0) {
            if (!val || ag_str_parse_u64(ag_str_from_cstr(val), &sp.seed) != AG_OK)
                return ag_cli_usage_error("run", "--seed needs a whole number");
            i++;
        } else if (strcmp(a, "--stop") == 0) {
            if (!val) return ag_cli_usage_error("run", "--stop needs text");
            if (n_stops == sizeof stops / sizeof stops[0]) return ag_cli_usage_error("run", "at most 16 --stop strings");
            stops[n_stops++] = argv[++i];
        } else if (strcmp(a, "-l") == 0 || strcmp(a, "--logit-bias") == 0) {
            char *end = NULL;
            long id = val ? strtol(val, &end, 10) : -1;
            float b = end && (*end == '+' || *end == '-') ? strtof(end, &end) : NAN;
            if (id < 0 || id > INT32_MAX || isnan(b) || *end)
                return ag_cli_usage_error("run", "%s needs TOKEN_ID+BIAS or TOKEN_ID-BIAS, as 15043+1.5 or 2-inf", a);
            if (sp.n_logit_bias == sizeof bias / sizeof bias[0]) return ag_cli_usage_error("run", "at most 64 logit biases");
            bias[sp.n_logit_bias++] = (ag_logit_bias){(int32_t)id, b};
            sp.logit_bias = bias, i++;
        } else if (strcmp(a, "--ignore-eos") == 0) {
            ignore_eos = true;
        } else if (strcmp(a, "--no-bos") == 0) {
            no_bos = true;
        } else if (strcmp(a, "--special") == 0) {
            special = true;
        } else {
            return ag_cli_usage_error("run", "unknown option '%s' (try 'autoglm run --help')", a);
        }
    }
    if (!mo.path) return ag_cli_usage_error("run", "needs --model M.gguf");
    if (!prompt == !prompt_file) return ag_cli_usage_error("run", "needs exactly one of -p TEXT and -f FILE");
    char *file_text = NULL;
    size_t prompt_len = prompt ? strlen(prompt) : 0;
    if (prompt_file && ag_cli_read_file(prompt_file, &file_text, &prompt_len) != AG_OK) {
        fprintf(stderr, "autoglm run: %s: cannot read\n", prompt_file);
        return AG_EXIT_FAIL;
    }
    if (file_text) prompt = file_text;

    ag_err err = {{0}};
    ag_model *m = NULL;
    ag_sampler *smp = NULL;
    ag_ids ids = {0};
    ag_buf out, piece;
    ag_buf_init(&out);
    ag_buf_init(&piece);
    ag_stop stop;
    ag_stop_init(&stop, stops, n_stops);
    int rc = AG_EXIT_FAIL;
    if (ag_model_load(mo.path, &mo.params, &m, &err) != AG_OK) {
        fprintf(stderr, "autoglm run: %s: %s\n", mo.path, err.msg);
        goto done;
    }
    bool bos = !no_bos && ag_tokenizer_add_bos_default(m->tok);
    if (ag_tokenize(m->tok, prompt, prompt_len, bos, special, &ids, &err) != AG_OK ||
        ag_sampler_create(&sp, m->cfg.n_vocab, &smp, &err) != AG_OK) {
        fprintf(stderr, "autoglm run: %s\n", err.msg);
        goto done;
    }
    if (ids.n == 0 || ids.n >= (size_t)m->n_ctx) {
        fprintf(stderr, "autoglm run: the prompt is %zu tokens; it must be 1..%d (--ctx)\n", ids.n, m->n_ctx - 1);
        goto done;
    }
    if ((size_t)n_predict > (size_t)m->n_ctx - ids.n) n_predict = (long)((size_t)m->n_ctx - ids.n);
    int32_t *pos = malloc(ids.n * sizeof *pos);
    for (size_t i = 0; i < ids.n; i++) pos[i] = (int32_t)i, ag_sampler_accept(smp, ids.v[i]);
    uint64_t t0 = ag_clock_mono_ns();
    ag_status st = ag_forward(m, &(ag_batch){.n = (int)ids.n, .token = ids.v, .pos = pos}, &err);
    free(pos);
    uint64_t t1 = ag_clock_mono_ns();
    if (st != AG_OK) {
        fprintf(stderr, "autoglm run: %s\n", err.msg);
        goto done;
    }
    ag_detok dt;
    ag_detok_init(&dt);
    long n_gen = 0;
    bool stopped = false, eog = false;
    int32_t p = (int32_t)ids.n;
    while (n_gen < n_predict && !stopped) {
        int32_t tok = ag_sampler_sample(smp, ag_model_logits(m, 0));
        n_gen++;
        if (!ignore_eos && (eog = ag_tokenizer_is_eog(m->tok, tok))) break;
        ag_sampler_accept(smp, tok);
        ag_buf_reset(&piece);
        ag_detok_push(&dt, m->tok, tok, &piece);
        ag_buf_reset(&out);
        stopped = ag_stop_push(&stop, piece.data ? piece.data : "", piece.len, &out);
        fwrite(out.data ? out.data : "", 1, out.len, stdout);
        fflush(stdout);
        if (stopped || n_gen == n_predict) break;
        if (ag_forward(m, &(ag_batch){.n = 1, .token = &tok, .pos = &p}, &err) != AG_OK) {
            fprintf(stderr, "\nautoglm run: %s\n", err.msg);
            goto done;
        }
        p++;
    }
    if (!stopped) {
        ag_buf_reset(&out);
        ag_buf_reset(&piece); /* it still holds the last token's bytes */
        ag_detok_flush(&dt, &piece);
        ag_stop_push(&stop, piece.data ? piece.data : "", piece.len, &out);
        ag_stop_flush(&stop, &out);
        fwrite(out.data ? out.data : "", 1, out.len, stdout);
    }
    uint64_t t2 = ag_clock_mono_ns();
    putchar('\n');
    fflush(stdout); /* the text before the stats line, when both go to a terminal */
    double pt = (double)(t1 - t0) / 1e9, gt = (double)(t2 - t1) / 1e9;
    fprintf(stderr, "prompt: %zu tokens, %.1f tok/s | generated: %ld tokens, %.1f tok/s | stop: %s | %d threads, %s kernels, %d matrices repacked (%.1f MiB)\n",
            ids.n, pt > 0 ? (double)ids.n / pt : 0.0, n_gen, gt > 0 ? (double)n_gen / gt : 0.0,
            eog ? "end of generation" : stopped ? "stop text" : "length", ag_pool_size(m->pool), m->kern->name,
            m->n_repacked, (double)m->repacked_bytes / (1 << 20));
    rc = AG_EXIT_OK;
done:
    ag_stop_free(&stop);
    ag_buf_deinit(&out);
    ag_buf_deinit(&piece);
    free(ids.v);
    free(file_text);
    ag_sampler_free(smp);
    ag_model_free(m);
    return rc;
}
