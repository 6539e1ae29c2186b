/*
 * cmd_perplexity.c - `autoglm perplexity`: how well a model predicts a
 * text, by llama.cpp's method so the numbers compare with its
 * llama-perplexity: the tokenized file is cut into consecutive windows of
 * --ctx tokens (the first token of each replaced by BOS when the model adds
 * one), each window is evaluated from an empty cache, and only the
 * predictions of its second half are scored (they have at least ctx/2 tokens
 * of context).  PPL = exp(mean negative log-likelihood).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char ppl_usage[] =
    "usage: autoglm perplexity --model M.gguf FILE [--ctx 512] [--chunks N] [--threads N]\n\n"
    "Print the running perplexity after each window of --ctx tokens, then the final estimate.\n" AG_CLI_MODEL_FLAGS_HELP
    "  --chunks N           score at most N windows (default: all)\n";

/* -log softmax(logits)[target], in double. */
static double nll(const float *logits, int n, int32_t target) {
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    return log(sum) - ((double)logits[target] - mx);
}

int ag_cmd_perplexity(int argc, char **argv) {
    ag_cli_model_opts mo = {.params = ag_model_params_default()};
    mo.params.n_ctx = 512;
    const char *file = NULL;
    long max_chunks = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int took = ag_cli_model_flag("perplexity", argc, argv, &i, &mo);
        if (took < 0) return AG_EXIT_USAGE;
        if (took) continue;
        if (ag_cli_is_help(a)) {
            fputs(ppl_usage, stdout);
            return AG_EXIT_OK;
        } else if (strcmp(a, "--chunks") == 0) {
            if (!ag_cli_int("perplexity", a, i + 1 < argc ? argv[i + 1] : NULL, 1, 1L << 30, &max_chunks))
                return AG_EXIT_USAGE;
            i++;
        } else if (a[0] == '-' && a[1]) {
            return ag_cli_usage_error("perplexity", "unknown option '%s' (try 'autoglm perplexity --help')", a);
        } else if (file) {
            return ag_cli_usage_error("perplexity", "takes one FILE");
        } else {
            file = a;
        }
    }
    if (!mo.path || !file) return ag_cli_usage_error("perplexity", "needs --model M.gguf and a FILE");
    int n_ctx = mo.params.n_ctx;
    if (n_ctx < 4) return ag_cli_usage_error("perplexity", "--ctx must be at least 4");
    mo.params.n_batch = n_ctx; /* one forward per window */
    char *text = NULL;
    size_t len = 0;
    if (ag_cli_read_file(file, &text, &len) != AG_OK) {
        fprintf(stderr, "autoglm perplexity: %s: cannot read\n", file);
        return AG_EXIT_FAIL;
    }
    ag_err err = {{0}};
    ag_model *m = NULL;
    ag_ids ids = {0};
    int rc = AG_EXIT_FAIL;
    int32_t *pos = NULL, *tok = NULL;
    bool *want = NULL;
    if (ag_model_load(mo.path, &mo.params, &m, &err) != AG_OK) {
        fprintf(stderr, "autoglm perplexity: %s: %s\n", mo.path, err.msg);
        goto done;
    }
    bool bos = ag_tokenizer_add_bos_default(m->tok) && ag_tokenizer_bos(m->tok) >= 0;
    if (ag_tokenize(m->tok, text, len, bos, false, &ids, &err) != AG_OK) {
        fprintf(stderr, "autoglm perplexity: %s: %s\n", file, err.msg);
        goto done;
    }
    long n_chunks = (long)(ids.n / (size_t)n_ctx);
    if (max_chunks > 0 && n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks == 0) {
        fprintf(stderr, "autoglm perplexity: %s has %zu tokens; need at least --ctx (%d)\n", file, ids.n, n_ctx);
        goto done;
    }
    fprintf(stderr, "perplexity: %zu tokens, %ld windows of %d, scoring the last %d predictions of each\n", ids.n,
            n_chunks, n_ctx, n_ctx - 1 - n_ctx / 2);
    pos = malloc((size_t)n_ctx * sizeof *pos);
    tok = malloc((size_t)n_ctx * sizeof *tok);
    want = malloc((size_t)n_ctx * sizeof *want);
    for (int i = 0; i < n_ctx; i++) pos[i] = i, want[i] = true;
    double sum = 0;
    long count = 0;
    const int first = n_ctx / 2;
    for (long c = 0; c < n_chunks; c++) {
        const int32_t *w = ids.v + (size_t)c * n_ctx;
        memcpy(tok, w, (size_t)n_ctx * sizeof *tok);
        if (bos) tok[0] = ag_tokenizer_bos(m->tok);
        m->kv->ops->seq_clear(m->kv, 0);
        if (ag_forward(m, &(ag_batch){.n = n_ctx, .token = tok, .pos = pos, .logits = want}, &err) != AG_OK) {
            fprintf(stderr, "\nautoglm perplexity: %s\n", err.msg);
            goto done;
        }
        for (int j = first; j < n_ctx - 1; j++, count++) sum += nll(ag_model_logits(m, (size_t)j), m->cfg.n_vocab, w[j + 1]);
        printf("[%ld]%.4f%s", c + 1, exp(sum / (double)count), c + 1 < n_chunks ? "," : "\n");
        fflush(stdout);
    }
    printf("Final estimate: PPL = %.4f over %ld predictions\n", exp(sum / (double)count), count);
    rc = AG_EXIT_OK;
done:
    free(pos);
    free(tok);
    free(want);
    free(ids.v);
    free(text);
    ag_model_free(m);
    return rc;
}
