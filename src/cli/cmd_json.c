/*
 * cmd_json.c - `autoglm json check|fmt`: the JSON library on files.
 *
 * check: exit 0 when every file is valid JSON, 1 otherwise, printing
 * FILE:LINE:COL: reason for each invalid one (the format compilers use, so
 * editors jump to it).  fmt: parse and re-serialize, pretty by default.
 */
#define _POSIX_C_SOURCE 200809L
#include "base/alloc.h"
#include "base/arena.h"
#include "base/buf.h"
#include "base/str.h"
#include "cli/cli.h"
#include "json/json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char json_usage[] =
    "usage: autoglm json check [--max-depth N] FILE...\n"
    "       autoglm json fmt [--compact | --indent N] [--max-depth N] FILE|-\n\n"
    "check   exit 0 when every FILE is valid JSON (RFC 8259, UTF-8), else print\n"
    "        FILE:LINE:COL: reason for each invalid one and exit 1\n"
    "fmt     parse FILE (or stdin for -) and write it re-serialized to stdout\n\n"
    "options:\n"
    "  --max-depth N   nesting limit (default 128)\n"
    "  --compact       fmt: no whitespace\n"
    "  --indent N      fmt: spaces per level (default 2, at most 16)\n";

typedef struct json_flags {
    ag_json_opts opts;
    int indent;
    int n_files;
    char **files;
} json_flags;

static int parse_uint_flag(const char *cmd, const char *flag, const char *val, uint64_t max, uint64_t *out) {
    if (!val) return ag_cli_usage_error(cmd, "%s needs a value", flag);
    if (ag_str_parse_u64(ag_str_from_cstr(val), out) != AG_OK || *out > max)
        return ag_cli_usage_error(cmd, "%s takes a whole number from 0 to %llu, not '%s'", flag,
                                  (unsigned long long)max, val);
    return 0;
}

static int parse_flags(const char *cmd, int argc, char **argv, json_flags *f) {
    memset(f, 0, sizeof *f);
    f->indent = 2;
    f->files = ag_xcalloc((size_t)argc + 1, sizeof *f->files);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        uint64_t v;
        if (strcmp(a, "--max-depth") == 0) {
            if (parse_uint_flag(cmd, a, i + 1 < argc ? argv[++i] : NULL, 1u << 20, &v)) return AG_EXIT_USAGE;
            f->opts.max_depth = (uint32_t)v;
        } else if (strcmp(a, "--indent") == 0) {
            if (parse_uint_flag(cmd, a, i + 1 < argc ? argv[++i] : NULL, 16, &v)) return AG_EXIT_USAGE;
            f->indent = (int)v;
        } else if (strcmp(a, "--compact") == 0) {
            f->indent = 0;
        } else if (a[0] == '-' && a[1] != '\0') {
            return ag_cli_usage_error(cmd, "unknown option '%s' (try 'autoglm json --help')", a);
        } else {
            f->files[f->n_files++] = argv[i];
        }
    }
    return 0;
}

/* Parse one file; on failure print FILE:LINE:COL: reason.  Returns the status. */
static ag_status parse_file(const char *path, const ag_json_opts *opts, ag_arena *arena, char **data,
                            ag_json_val **root) {
    size_t len;
    ag_status st = ag_cli_read_file(path, data, &len);
    if (st != AG_OK) {
        fprintf(stderr, "%s: cannot read: %s\n", path, st == AG_EIO ? strerror(errno) : ag_strerror(st));
        return st;
    }
    ag_json_err err;
    st = ag_json_parse(*data, len, opts, arena, root, &err);
    if (st != AG_OK) printf("%s:%zu:%zu: %s\n", path, err.line, err.col, err.reason);
    return st;
}

static int cmd_check(json_flags *f) {
    if (f->n_files == 0) return ag_cli_usage_error("json check", "no FILE given (try 'autoglm json --help')");
    int bad = 0;
    ag_arena arena;
    ag_arena_init(&arena, 0);
    for (int i = 0; i < f->n_files; i++) {
        char *data = NULL;
        ag_json_val *root;
        if (parse_file(f->files[i], &f->opts, &arena, &data, &root) != AG_OK) bad++;
        free(data);
        ag_arena_reset(&arena);
    }
    ag_arena_deinit(&arena);
    return bad ? AG_EXIT_FAIL : AG_EXIT_OK;
}

static int cmd_fmt(json_flags *f) {
    if (f->n_files != 1) return ag_cli_usage_error("json fmt", "takes exactly one FILE (or - for stdin)");
    ag_arena arena;
    ag_arena_init(&arena, 0);
    char *data = NULL;
    ag_json_val *root;
    int rc = AG_EXIT_FAIL;
    if (parse_file(f->files[0], &f->opts, &arena, &data, &root) == AG_OK) {
        ag_buf out;
        ag_buf_init(&out);
        ag_jw w;
        ag_jw_init(&w, &out, (uint8_t)f->indent, AG_UTF8_REJECT);
        ag_jw_value(&w, root);
        ag_buf_append_char(&out, '\n');
        if (out.err == AG_OK) {
            fwrite(out.data, 1, out.len, stdout);
            rc = AG_EXIT_OK;
        } else {
            fprintf(stderr, "%s: cannot write: %s\n", f->files[0], ag_strerror(out.err));
        }
        ag_buf_deinit(&out);
    }
    free(data);
    ag_arena_deinit(&arena);
    return rc;
}

int ag_cmd_json(int argc, char **argv) {
    if (argc == 0 || ag_cli_is_help(argv[0])) {
        fputs(json_usage, argc == 0 ? stderr : stdout);
        return argc == 0 ? AG_EXIT_USAGE : AG_EXIT_OK;
    }
    const char *sub = argv[0];
    int is_check = strcmp(sub, "check") == 0, is_fmt = strcmp(sub, "fmt") == 0;
    if (!is_check && !is_fmt) return ag_cli_usage_error("json", "unknown subcommand '%s' (try 'autoglm json --help')", sub);
    for (int i = 1; i < argc; i++)
        if (ag_cli_is_help(argv[i])) {
            fputs(json_usage, stdout);
            return AG_EXIT_OK;
        }
    json_flags f;
    int rc = parse_flags(is_check ? "json check" : "json fmt", argc - 1, argv + 1, &f);
    if (rc == 0) rc = is_check ? cmd_check(&f) : cmd_fmt(&f);
    free(f.files);
    return rc;
}
