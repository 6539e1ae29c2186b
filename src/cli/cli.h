/*
 * cli.h - what the subcommands of the autoglm binary share.
 *
 * Each subcommand is a function taking the arguments after its name and
 * returning the process exit code: 0 success, 1 the command ran and found a
 * problem (an invalid file, a failed check), 2 a usage error.  Usage errors
 * print one line to stderr.
 */
#ifndef AG_CLI_H
#define AG_CLI_H

#include "autoglm/status.h"
#include "engine/model.h"

#include <stdbool.h>
#include <stddef.h>

#define AG_EXIT_OK 0
#define AG_EXIT_FAIL 1
#define AG_EXIT_USAGE 2

int ag_cmd_json(int argc, char **argv);
int ag_cmd_convert(int argc, char **argv);
int ag_cmd_inspect(int argc, char **argv);
int ag_cmd_quantize(int argc, char **argv);
int ag_cmd_tokenize(int argc, char **argv);
int ag_cmd_run(int argc, char **argv);
int ag_cmd_perplexity(int argc, char **argv);
int ag_cmd_serve(int argc, char **argv);
int ag_cmd_bench(int argc, char **argv);
int ag_cmd_chaos(int argc, char **argv);
int ag_cmd_complete(int argc, char **argv);
int ag_cmd_chat(int argc, char **argv);
int ag_cmd_tune(int argc, char **argv);

/*
 * The flags the client commands (complete, chat) share: --base-url, --api-key, --retries, --timeout,
 * --connect-timeout, --first-byte-timeout, --insecure, --cacert.  ag_cli_client_flag consumes argv[*i] (and
 * its value) when it is one of them: 1 consumed, 0 not ours, -1 usage error already printed.  Then
 * ag_cli_client_finish fills what was not given from AUTOGLM_BASE_URL / OPENAI_BASE_URL and AUTOGLM_API_KEY /
 * OPENAI_API_KEY, drops a trailing /v1 from the base URL into url, and returns -1, or an exit status after a
 * usage error.
 */
struct ag_client_options;
int ag_cli_client_flag(const char *cmd, int argc, char **argv, int *i, struct ag_client_options *o, const char **base);
int ag_cli_client_finish(const char *cmd, struct ag_client_options *o, const char *base, char *url, size_t cap);

/* One-line usage error: "autoglm <cmd>: <message>" on stderr; returns AG_EXIT_USAGE. */
int ag_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when arg is -h or --help. */
int ag_cli_is_help(const char *arg);

/*
 * Read a whole file ("-" is stdin) into a malloc'd buffer the caller frees;
 * AG_EIO with errno set when it cannot be read.
 */
ag_status ag_cli_read_file(const char *path, char **data, size_t *len);

/*
 * Option values: the text after a flag as a whole number in [lo, hi] (lo >= 0)
 * or a finite float in the C locale.  On failure they print a one-line usage
 * error and return false.
 */
bool ag_cli_int(const char *cmd, const char *flag, const char *text, long lo, long hi, long *out);
bool ag_cli_float(const char *cmd, const char *flag, const char *text, float *out);

/*
 * The flags every model-running command shares: --model/-m, --threads,
 * --ctx, --kernels, --no-repack.  ag_cli_model_flag consumes argv[*i] (and its value) when
 * it is one of them: 1 consumed, 0 not ours, -1 usage error already printed.
 */
typedef struct ag_cli_model_opts {
    const char *path;
    ag_model_params params;
} ag_cli_model_opts;
#define AG_CLI_MODEL_FLAGS_HELP                                                                                        \
    "  -m, --model M.gguf   the model (required)\n"                                                                    \
    "  --threads N          compute threads (default: physical cores)\n"                                               \
    "  --ctx N              context length in tokens (default: min(model's, 4096))\n"                                  \
    "  --kernels NAME       generic, avx2 or avx512 (default: the best this CPU has)\n"                                \
    "  --no-repack          use F16/Q8_0/Q4_0/Q4_K/Q5_K/Q6_K matrices in place from the file (default:\n"              \
    "                       16-row groups in memory)\n"
int ag_cli_model_flag(const char *cmd, int argc, char **argv, int *i, ag_cli_model_opts *o);

#endif
