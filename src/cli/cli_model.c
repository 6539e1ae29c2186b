/*
 * cli_model.c - option parsing the model-running subcommands share:
 * numbers with range checks, and the --model/--threads/--ctx/--kernels/--no-repack set.
 */
#include "cli/cli.h"

#include "base/str.h"

#include <math.h>
#include <string.h>

bool ag_cli_int(const char *cmd, const char *flag, const char *text, long lo, long hi, long *out) {
    uint64_t v = 0;
    if (!text || ag_str_parse_u64(ag_str_from_cstr(text), &v) != AG_OK || v < (uint64_t)lo || v > (uint64_t)hi) {
        ag_cli_usage_error(cmd, "%s needs a whole number in %ld..%ld", flag, lo, hi);
        return false;
    }
    *out = (long)v;
    return true;
}

bool ag_cli_float(const char *cmd, const char *flag, const char *text, float *out) {
    char *end = NULL;
    double v = text ? ag_strtod_c(text, &end) : 0; /* "0.5" whatever the locale */
    if (!text || !*text || *end || !isfinite(v) || fabs(v) > 3e38) {
        ag_cli_usage_error(cmd, "%s needs a number", flag);
        return false;
    }
    *out = (float)v;
    return true;
}

int ag_cli_model_flag(const char *cmd, int argc, char **argv, int *i, ag_cli_model_opts *o) {
    const char *a = argv[*i], *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    long v;
    if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) {
        if (!val) return ag_cli_usage_error(cmd, "%s needs a file", a), -1;
        o->path = val;
    } else if (strcmp(a, "--threads") == 0 || strcmp(a, "-t") == 0) {
        if (!ag_cli_int(cmd, a, val, 1, 1024, &v)) return -1;
        o->params.n_threads = (int)v;
    } else if (strcmp(a, "--ctx") == 0 || strcmp(a, "-c") == 0) {
        if (!ag_cli_int(cmd, a, val, 1, 1 << 24, &v)) return -1;
        o->params.n_ctx = (int32_t)v;
    } else if (strcmp(a, "--no-repack") == 0) {
        o->params.no_repack = true;
        return 1; /* no value */
    } else if (strcmp(a, "--kernels") == 0) {
        if (!val) return ag_cli_usage_error(cmd, "%s needs a name", a), -1;
        o->params.kernels = val;
    } else {
        return 0;
    }
    (*i)++;
    return 1;
}
