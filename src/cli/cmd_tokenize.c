/*
 * cmd_tokenize.c - `autoglm tokenize`: text to token ids (or pieces) with a
 * model's own tokenizer, for checking what a prompt costs and comparing with
 * other implementations.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"
#include "engine/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char tokenize_usage[] =
    "usage: autoglm tokenize --model M.gguf [--ids | --pieces] [--no-bos] [--special] [--lines] [FILE|-]\n\n"
    "Print the token ids of FILE (default: stdin), space-separated.\n"
    "  --pieces    print each token's text from the vocabulary instead of its id\n"
    "  --no-bos    do not add the beginning-of-sequence token (default: as the model says)\n"
    "  --special   match special-token texts such as <|im_start|> in the input\n"
    "  --lines     tokenize each line on its own (without its newline), one output line each\n";

static void print_ids(const ag_tokenizer *t, const ag_ids *ids, int pieces) {
    for (size_t i = 0; i < ids->n; i++) {
        if (i) putchar(' ');
        if (pieces) {
            ag_str s = ag_token_text(t, ids->v[i]);
            fwrite(s.p, 1, s.n, stdout);
        } else {
            printf("%d", ids->v[i]);
        }
    }
    putchar('\n');
}

int ag_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *input = "-";
    int pieces = 0, no_bos = 0, special = 0, lines = 0, have_input = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (ag_cli_is_help(a)) {
            fputs(tokenize_usage, stdout);
            return AG_EXIT_OK;
        } else if (strcmp(a, "--model") == 0 || strcmp(a, "-m") == 0) {
            if (i + 1 >= argc) return ag_cli_usage_error("tokenize", "%s needs a file", a);
            model = argv[++i];
        } else if (strcmp(a, "--ids") == 0) {
            pieces = 0;
        } else if (strcmp(a, "--pieces") == 0) {
            pieces = 1;
        } else if (strcmp(a, "--no-bos") == 0) {
            no_bos = 1;
        } else if (strcmp(a, "--special") == 0) {
            special = 1;
        } else if (strcmp(a, "--lines") == 0) {
            lines = 1;
        } else if (a[0] == '-' && a[1] != '\0') {
            return ag_cli_usage_error("tokenize", "unknown option '%s' (try 'autoglm tokenize --help')", a);
        } else if (have_input++) {
            return ag_cli_usage_error("tokenize", "takes one FILE");
        } else {
            input = a;
        }
    }
    if (!model) return ag_cli_usage_error("tokenize", "needs --model M.gguf");
    ag_err err = {{0}};
    ag_gguf_file *f = NULL;
    ag_tokenizer *t = NULL;
    if (ag_gguf_open(model, &f, &err) != AG_OK || ag_tokenizer_load(f, &t, &err) != AG_OK) {
        fprintf(stderr, "autoglm tokenize: %s: %s\n", model, err.msg);
        ag_gguf_close(f); /* NULL when the open failed */
        return AG_EXIT_FAIL;
    }
    ag_gguf_close(f); /* the tokenizer keeps its own copies */
    char *text = NULL;
    size_t len = 0;
    int rc = AG_EXIT_OK;
    if (ag_cli_read_file(input, &text, &len) != AG_OK) {
        fprintf(stderr, "autoglm tokenize: %s: cannot read\n", input);
        rc = AG_EXIT_FAIL;
    }
    bool add_bos = !no_bos && ag_tokenizer_add_bos_default(t);
    for (size_t start = 0; rc == AG_EXIT_OK && (start < len || (!lines && start == 0));) {
        size_t end = len;
        if (lines) {
            const char *nl = memchr(text + start, '\n', len - start);
            end = nl ? (size_t)(nl - text) : len;
        }
        ag_ids ids = {0};
        if (ag_tokenize(t, text + start, end - start, add_bos, special, &ids, &err) != AG_OK) {
            fprintf(stderr, "autoglm tokenize: %s: %s\n", input, err.msg);
            rc = AG_EXIT_FAIL;
        } else {
            print_ids(t, &ids, pieces);
        }
        free(ids.v);
        start = end + 1;
        if (!lines) break;
    }
    free(text);
    ag_tokenizer_free(t);
    return rc;
}
