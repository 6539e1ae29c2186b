/*
 * cmd_complete.c - `autoglm complete`: one completion (or chat turn) from any
 * OpenAI-compatible server through libautoglm's client, so its retry policy,
 * budget and deadlines can be watched from a shell: --verbose prints every
 * attempt, its outcome, the table row that decided, and the wait.
 */
#define _POSIX_C_SOURCE 200809L
#include "autoglm/client.h"
#include "base/buf.h"
#include "base/str.h"
#include "cli/cli.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char complete_usage[] =
    "usage: autoglm complete [--base-url URL] -p TEXT [--model NAME] [--max-tokens N] [--chat] [--stream]\n"
    "                        [--api-key KEY] [--retries N] [--timeout D] [--connect-timeout D]\n"
    "                        [--first-byte-timeout D] [--insecure | --cacert F] [--compress] [--hedge]\n"
    "                        [--verbose]\n\n"
    "One completion through libautoglm's client: connect errors, resets and timeouts are retried with backoff and\n"
    "full jitter, 429/503 after Retry-After, other 5xx at most twice, other 4xx fail at once (docs/client.md).\n"
    "  --base-url URL        the server (default $AUTOGLM_BASE_URL, then $OPENAI_BASE_URL); a trailing /v1 is fine\n"
    "  --api-key KEY         default $AUTOGLM_API_KEY, then $OPENAI_API_KEY\n"
    "  -p, --prompt TEXT     the prompt (--chat: the user's message)\n"
    "  --model NAME          default autoglm-tiny\n"
    "  --max-tokens N        default 64\n"
    "  --chat                /v1/chat/completions instead of /v1/completions\n"
    "  --stream              print the text as it arrives\n"
    "  --retries N           retries after the first attempt (default 2)\n"
    "  --timeout D           the whole call, retries included (default 600s); sent as X-Request-Timeout-Ms\n"
    "  --connect-timeout D   default 10s;  --first-byte-timeout D: default 60s\n"
    "  --insecure            https: take any certificate;  --cacert F: trust F's CAs\n"
    "  --compress            ask for gzip/zstd answers and gzip request bodies of 1 KiB or more\n"
    "  --hedge               no answer after 1 s (later: the p95 of answers so far): send a copy, take the first\n"
    "  --verbose             each attempt on stderr: outcome, status, time, the rule that decided, the wait\n";

#define USAGE(...) ag_cli_usage_error("complete", __VA_ARGS__)

static void print_delta(const char *text, size_t len, void *ud) {
    (void)ud;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static void print_attempt(const ag_client_attempt *a, void *ud) {
    (void)ud;
    fprintf(stderr, "autoglm complete: %sattempt %d: %s", a->hedge ? "hedged copy's " : "", a->number,
            ag_client_outcome_name(a->outcome));
    if (a->status) fprintf(stderr, " %d", a->status);
    fprintf(stderr, " after %.3f s [%s]", a->seconds, a->rule);
    if (a->detail) fprintf(stderr, ": %s", a->detail);
    if (a->retry) fprintf(stderr, "; retry in %.3f s", a->wait_s);
    else if (a->stop) fprintf(stderr, "; %s", a->stop);
    if (a->coding) fprintf(stderr, " (answer %s-coded)", a->coding);
    fputc('\n', stderr);
}

int ag_cmd_complete(int argc, char **argv) {
    ag_client_options o = ag_client_options_default();
    const char *base = NULL, *prompt = NULL, *model = "autoglm-tiny";
    long max_tokens = 64;
    bool chat = false, stream = false, verbose = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int f = ag_cli_client_flag("complete", argc, argv, &i, &o, &base);
        if (f < 0) return AG_EXIT_USAGE;
        if (f) continue;
        if (ag_cli_is_help(a)) return fputs(complete_usage, stdout), AG_EXIT_OK;
        else if (strcmp(a, "--chat") == 0) chat = true;
        else if (strcmp(a, "--stream") == 0) stream = true;
        else if (strcmp(a, "--verbose") == 0) verbose = true;
        else if (!val) return USAGE("unknown option '%s' or it needs a value (try 'autoglm complete --help')", a);
        else if (strcmp(a, "-p") == 0 || strcmp(a, "--prompt") == 0) prompt = argv[++i];
        else if (strcmp(a, "--model") == 0) model = argv[++i];
        else if (strcmp(a, "--max-tokens") == 0) {
            if (!ag_cli_int("complete", a, argv[++i], 1, 1 << 20, &max_tokens)) return AG_EXIT_USAGE;
        } else return USAGE("unknown option '%s' (try 'autoglm complete --help')", a);
    }
    char url[1024];
    int rc = ag_cli_client_finish("complete", &o, base, url, sizeof url);
    if (rc >= 0) return rc;
    if (!prompt) return USAGE("no prompt: give -p TEXT");

    ag_buf body;
    ag_buf_init(&body);
    ag_jw w;
    ag_jw_init(&w, &body, 0, AG_UTF8_REPLACE);
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "model"), ag_jw_strc(&w, model);
    if (chat) {
        ag_jw_keyc(&w, "messages"), ag_jw_arr_begin(&w), ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "role"), ag_jw_strc(&w, "user");
        ag_jw_keyc(&w, "content"), ag_jw_strc(&w, prompt);
        ag_jw_obj_end(&w), ag_jw_arr_end(&w);
    } else {
        ag_jw_keyc(&w, "prompt"), ag_jw_strc(&w, prompt);
    }
    ag_jw_keyc(&w, "max_tokens"), ag_jw_int(&w, max_tokens);
    ag_jw_keyc(&w, "stream"), ag_jw_bool(&w, stream);
    ag_jw_obj_end(&w);

    ag_client *cl;
    ag_err err;
    if (ag_client_new(&o, &cl, &err) != AG_OK) {
        ag_buf_deinit(&body);
        fprintf(stderr, "autoglm complete: %s\n", err.msg);
        return AG_EXIT_FAIL;
    }
    ag_client_request req = {.path = chat ? "/v1/chat/completions" : "/v1/completions", .body = body.data,
                             .body_len = body.len, .on_delta = stream ? print_delta : NULL,
                             .on_attempt = verbose ? print_attempt : NULL};
    ag_client_result res;
    ag_status st = ag_client_call(cl, &req, &res);
    ag_client_free(cl);
    ag_buf_deinit(&body);
    rc = AG_EXIT_OK;
    if (st != AG_OK) {
        fprintf(stderr, "autoglm complete: %s\n", ag_strerror(st));
        rc = AG_EXIT_FAIL;
    } else if (res.outcome != AG_CLIENT_OK) {
        if (stream && res.text_len) fputc('\n', stdout);
        fprintf(stderr, "autoglm complete: %s after %d attempt%s\n", res.error, res.attempts, res.attempts == 1 ? "" : "s");
        rc = AG_EXIT_FAIL;
    } else {
        if (!stream) fwrite(res.text, 1, res.text_len, stdout);
        fputc('\n', stdout);
    }
    ag_client_result_free(&res);
    return rc;
}
