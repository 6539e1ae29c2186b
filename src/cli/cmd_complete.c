/*
 * cmd_complete.c - `autoglm complete`: one completion (or chat turn) from any
 * OpenAI-compatible server through libautoglm's client, so its retry policy,
 * budget and deadlines can be watched from a shell: --verbose prints every
 * attempt, its outcome, the table row that decided, and the wait.  With
 * --prompts-file, every line of a file is completed through an ag_batcher
 * (array-prompt requests of up to --max-batch prompts) and printed as JSON
 * lines in the file's order.
 */
#define _POSIX_C_SOURCE 200809L
#include "autoglm/client.h"
#include "base/alloc.h"
#include "base/buf.h"
#include "base/str.h"
#include "cli/cli.h"
#include "json/json.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char complete_usage[] =
    "usage: autoglm complete [--base-url URL] -p TEXT [--model NAME] [--max-tokens N] [--chat] [--stream]\n"
    "                        [--api-key KEY] [--retries N] [--timeout D] [--connect-timeout D]\n"
    "                        [--first-byte-timeout D] [--insecure | --cacert F] [--compress] [--hedge]\n"
    "                        [--http2]"
    "                        [--temperature T] [--verbose]\n"
    "       autoglm complete [--base-url URL] --prompts-file F [--max-batch N] [--max-wait D] [options above]\n\n"
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
    "  --http2               HTTP/2: h2c by prior knowledge on http://, ALPN h2 on https://\n"
    "  --hedge               no answer after 1 s (later: the p95 of answers so far): send a copy, take the first\n"
    "  --temperature T       sent when given (the server's default otherwise)\n"
    "  --verbose             each attempt on stderr: outcome, status, time, the rule that decided, the wait\n"
    "  --prompts-file F      complete each line of F ('-': stdin) through a batcher: array-prompt requests of up\n"
    "                        to --max-batch N prompts (default 16; 1: a request each), a batch leaving when full\n"
    "                        or after --max-wait D (default 10ms); prints {\"prompt\",\"text\"} (or \"error\") JSON\n"
    "                        lines in the file's order; exits 1 when any failed\n";

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

/* --prompts-file: every line through an ag_batcher at once; the results, in order, when all are in. */
typedef struct batch_run {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t left;
    ag_client_result *res;
} batch_run;

typedef struct batch_slot {
    batch_run *run;
    size_t i;
} batch_slot;

static void batch_one_done(ag_client_result *r, void *ud) {
    batch_slot *s = ud;
    pthread_mutex_lock(&s->run->mu);
    s->run->res[s->i] = *r;
    r->body = r->text = NULL; /* kept in res */
    if (--s->run->left == 0) pthread_cond_signal(&s->run->cv);
    pthread_mutex_unlock(&s->run->mu);
}

static int complete_file(ag_client *cl, const char *path, const char *params, const ag_batcher_options *bo) {
    char *text = NULL;
    size_t len = 0;
    if (ag_cli_read_file(path, &text, &len) != AG_OK) {
        fprintf(stderr, "autoglm complete: %s: cannot read\n", path);
        return AG_EXIT_FAIL;
    }
    ag_str *lines = NULL;
    size_t n = 0;
    for (size_t at = 0; at < len;) {
        size_t e = at;
        while (e < len && text[e] != '\n') e++;
        if (e > at) {
            if (!(n & (n - 1))) lines = ag_xrealloc(lines, (n ? 2 * n : 1) * sizeof *lines); /* at each power of two */
            lines[n++] = (ag_str){text + at, e - at - (text[e - 1] == '\r')};
        }
        at = e + 1;
    }
    ag_batcher *b;
    ag_err err;
    if (ag_batcher_new(cl, params, bo, &b, &err) != AG_OK) {
        fprintf(stderr, "autoglm complete: %s\n", err.msg);
        free(lines), free(text);
        return AG_EXIT_USAGE;
    }
    batch_run run = {.left = n, .res = ag_xcalloc(n ? n : 1, sizeof *run.res)};
    batch_slot *slots = ag_xcalloc(n ? n : 1, sizeof *slots);
    pthread_mutex_init(&run.mu, NULL);
    pthread_cond_init(&run.cv, NULL);
    for (size_t i = 0; i < n; i++) {
        slots[i] = (batch_slot){&run, i};
        ag_batcher_complete_async(b, lines[i].p, lines[i].n, batch_one_done, &slots[i]);
    }
    pthread_mutex_lock(&run.mu);
    while (run.left) pthread_cond_wait(&run.cv, &run.mu);
    pthread_mutex_unlock(&run.mu);
    ag_batcher_free(b);
    int rc = AG_EXIT_OK;
    ag_buf out;
    ag_buf_init(&out);
    for (size_t i = 0; i < n; i++) {
        ag_client_result *r = &run.res[i];
        ag_jw w;
        out.len = 0;
        ag_jw_init(&w, &out, 0, AG_UTF8_REPLACE);
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "prompt"), ag_jw_str(&w, lines[i].p, lines[i].n);
        if (r->outcome == AG_CLIENT_OK) ag_jw_keyc(&w, "text"), ag_jw_str(&w, r->text, r->text_len);
        else ag_jw_keyc(&w, "error"), ag_jw_strc(&w, r->error), rc = AG_EXIT_FAIL;
        ag_jw_obj_end(&w);
        ag_buf_append_char(&out, '\n');
        fwrite(out.data, 1, out.len, stdout);
        ag_client_result_free(r);
    }
    ag_buf_deinit(&out);
    pthread_cond_destroy(&run.cv);
    pthread_mutex_destroy(&run.mu);
    free(run.res), free(slots), free(lines), free(text);
    return rc;
}

int ag_cmd_complete(int argc, char **argv) {
    ag_client_options o = ag_client_options_default();
    const char *base = NULL, *prompt = NULL, *model = "autoglm-tiny", *prompts_file = NULL;
    long max_tokens = 64;
    float temperature = -1;
    ag_batcher_options bo = ag_batcher_options_default();
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
        else if (strcmp(a, "--prompts-file") == 0) prompts_file = argv[++i];
        else if (strcmp(a, "--temperature") == 0) {
            if (!ag_cli_float("complete", a, argv[++i], &temperature) || temperature < 0 || temperature > 2)
                return USAGE("--temperature must be a number from 0 to 2");
        } else if (strcmp(a, "--max-batch") == 0) {
            long v;
            if (!ag_cli_int("complete", a, argv[++i], 1, 256, &v)) return AG_EXIT_USAGE;
            bo.max_batch = (int)v;
        } else if (strcmp(a, "--max-wait") == 0) {
            uint64_t ms;
            if (ag_str_parse_duration_ms(ag_str_from_cstr(argv[++i]), &ms) != AG_OK || ms > 60000)
                return USAGE("--max-wait needs a duration up to 1m, such as 10ms");
            bo.max_wait_ms = (uint32_t)ms;
        }
        else if (strcmp(a, "--max-tokens") == 0) {
            if (!ag_cli_int("complete", a, argv[++i], 1, 1 << 20, &max_tokens)) return AG_EXIT_USAGE;
        } else return USAGE("unknown option '%s' (try 'autoglm complete --help')", a);
    }
    char url[1024];
    int rc = ag_cli_client_finish("complete", &o, base, url, sizeof url);
    if (rc >= 0) return rc;
    if (!prompt == !prompts_file) return USAGE("give one of -p TEXT and --prompts-file F");
    if (prompts_file && (chat || stream)) return USAGE("--prompts-file takes neither --chat nor --stream");

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
    } else if (prompt) {
        ag_jw_keyc(&w, "prompt"), ag_jw_strc(&w, prompt);
    }
    ag_jw_keyc(&w, "max_tokens"), ag_jw_int(&w, max_tokens);
    if (temperature >= 0) ag_jw_keyc(&w, "temperature"), ag_jw_double(&w, temperature);
    if (!prompts_file) ag_jw_keyc(&w, "stream"), ag_jw_bool(&w, stream);
    ag_jw_obj_end(&w);

    ag_client *cl;
    ag_err err;
    if (ag_client_new(&o, &cl, &err) != AG_OK) {
        ag_buf_deinit(&body);
        fprintf(stderr, "autoglm complete: %s\n", err.msg);
        return AG_EXIT_FAIL;
    }
    if (prompts_file) {
        rc = complete_file(cl, prompts_file, body.data, &bo);
        ag_client_free(cl);
        ag_buf_deinit(&body);
        return rc;
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
