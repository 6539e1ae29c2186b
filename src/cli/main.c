/*
 * main.c - the autoglm binary: a table of subcommands and the global flags.
 *
 * Subcommands arrive with their issues (serve, run, convert, ...); each one
 * owns its own flags and --help.  Everything here is process-level: argument
 * dispatch, exit codes, the version string.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"bench", ag_cmd_bench, "load-test an OpenAI-compatible server: sweep, knee, baseline, report"},
    {"chat", ag_cmd_chat, "an interactive chat with any OpenAI-compatible server (libautoglm)"},
    {"chaos", ag_cmd_chaos, "a TCP proxy that injects network faults (latency, bandwidth, resets, HTTP errors)"},
    {"tune", ag_cmd_tune, "measure serve settings against a workload; print the best under an SLO as a command"},
    {"complete", ag_cmd_complete, "one completion from any OpenAI-compatible server, with retries (libautoglm)"},
    {"convert", ag_cmd_convert, "convert a Hugging Face checkpoint directory to GGUF"},
    {"inspect", ag_cmd_inspect, "print a GGUF model's metadata and tensor table"},
    {"json", ag_cmd_json, "check and re-format JSON files with autoglm's strict parser"},
    {"perplexity", ag_cmd_perplexity, "measure a model's perplexity on a text file (llama.cpp's method)"},
    {"quantize", ag_cmd_quantize, "rewrite a GGUF model's weights as q8_0, q4_0, f16, bf16 or f32"},
    {"run", ag_cmd_run, "generate a continuation of a prompt, streamed to stdout"},
    {"serve", ag_cmd_serve, "serve a model over an OpenAI-compatible HTTP API"},
    {"tokenize", ag_cmd_tokenize, "print the token ids (or pieces) of a text with a model's tokenizer"},
};

static void print_help(FILE *out) {
    fprintf(out,
            "autoglm %s - OpenAI-compatible LLM inference server\n\n"
            "usage: autoglm <command> [options]\n"
            "       autoglm --version | --help\n\n"
            "commands:\n",
            AG_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'autoglm <command> --help' for a command's options.\n");
}

int ag_cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "autoglm %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return AG_EXIT_USAGE;
}

int ag_cli_is_help(const char *arg) { return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0; }

ag_status ag_cli_read_file(const char *path, char **data, size_t *len) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return AG_EIO;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    ag_status st = buf ? AG_OK : AG_NOMEM;
    while (st == AG_OK) {
        if (n == cap) {
            char *p = cap > ((size_t)-1) / 2 ? NULL : realloc(buf, cap * 2);
            if (!p) {
                st = AG_NOMEM;
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) st = AG_EIO;
            break;
        }
    }
    int saved = errno;
    if (f != stdin) fclose(f);
    if (st != AG_OK) {
        free(buf);
        errno = saved;
        return st;
    }
    *data = buf;
    *len = n;
    return AG_OK;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return AG_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (ag_cli_is_help(cmd) || strcmp(cmd, "help") == 0) {
        print_help(stdout);
        return AG_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("autoglm %s\n", AG_VERSION);
        return AG_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
    if (cmd[0] == '-') fprintf(stderr, "autoglm: unknown option '%s' (try 'autoglm --help')\n", cmd);
    else fprintf(stderr, "autoglm: unknown command '%s' (try 'autoglm --help')\n", cmd);
    return AG_EXIT_USAGE;
}
