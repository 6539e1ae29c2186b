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

#include <stddef.h>

#define AG_EXIT_OK 0
#define AG_EXIT_FAIL 1
#define AG_EXIT_USAGE 2

int ag_cmd_json(int argc, char **argv);
int ag_cmd_convert(int argc, char **argv);
int ag_cmd_inspect(int argc, char **argv);
int ag_cmd_quantize(int argc, char **argv);
int ag_cmd_tokenize(int argc, char **argv);

/* One-line usage error: "autoglm <cmd>: <message>" on stderr; returns AG_EXIT_USAGE. */
int ag_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when arg is -h or --help. */
int ag_cli_is_help(const char *arg);

/*
 * Read a whole file ("-" is stdin) into a malloc'd buffer the caller frees;
 * AG_EIO with errno set when it cannot be read.
 */
ag_status ag_cli_read_file(const char *path, char **data, size_t *len);

#endif
