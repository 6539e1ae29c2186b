/*
 * cmd_chat.c - `autoglm chat`: an interactive chat with any OpenAI-compatible
 * server through libautoglm's client.  Each line is a user turn; the reply
 * streams as it arrives and joins the history that the next turn sends.
 * /reset forgets the history; Ctrl-C stops the reply under way (its call is
 * cancelled, so the server stops generating), not the program; Ctrl-D or
 * /quit ends it.
 */
#define _POSIX_C_SOURCE 200809L
#include "autoglm/client.h"
#include "base/buf.h"
#include "base/str.h"
#include "cli/cli.h"
#include "json/json.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char chat_usage[] =
    "usage: autoglm chat [--base-url URL] [--api-key KEY] [--model NAME] [--system TEXT] [--max-tokens N]\n"
    "                    [--timeout D] [--insecure | --cacert F] [--compress] [--hedge] [--http2]\n\n"
    "An interactive chat: each line you type is a turn, the reply streams back and joins the history.\n"
    "  /reset   forget the history (the system prompt stays)      /quit or Ctrl-D   leave\n"
    "  Ctrl-C   stop the reply under way (the server stops generating it)\n"
    "  --base-url URL   default $AUTOGLM_BASE_URL, then $OPENAI_BASE_URL (a trailing /v1 is fine)\n"
    "  --api-key KEY    default $AUTOGLM_API_KEY, then $OPENAI_API_KEY\n"
    "  --model NAME     default autoglm-tiny;  --system TEXT: a system prompt;  --max-tokens N: default 256\n"
    "  --timeout D      each reply's limit, retries included (default 600s)\n";

#define USAGE(...) ag_cli_usage_error("chat", __VA_ARGS__)

static ag_client *volatile g_client;
static volatile sig_atomic_t g_replying, g_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
    if (g_replying && g_client) ag_client_cancel(g_client);
}

static void print_delta(const char *text, size_t len, void *ud) {
    (void)ud;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

/* The history: role/content pairs, kept as two parallel lists of strings. */
typedef struct history {
    char **role, **content;
    size_t n, cap;
} history;

static void history_add(history *h, const char *role, const char *content, size_t len) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 16;
        h->role = realloc(h->role, h->cap * sizeof *h->role);
        h->content = realloc(h->content, h->cap * sizeof *h->content);
    }
    h->role[h->n] = strdup(role);
    h->content[h->n] = strndup(content, len);
    h->n++;
}

static void history_reset(history *h, size_t keep) {
    while (h->n > keep) h->n--, free(h->role[h->n]), free(h->content[h->n]);
}

static void request_body(const history *h, const char *model, long max_tokens, ag_buf *out) {
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "model"), ag_jw_strc(&w, model);
    ag_jw_keyc(&w, "messages"), ag_jw_arr_begin(&w);
    for (size_t i = 0; i < h->n; i++) {
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "role"), ag_jw_strc(&w, h->role[i]);
        ag_jw_keyc(&w, "content"), ag_jw_strc(&w, h->content[i]);
        ag_jw_obj_end(&w);
    }
    ag_jw_arr_end(&w);
    ag_jw_keyc(&w, "max_tokens"), ag_jw_int(&w, max_tokens);
    ag_jw_keyc(&w, "stream"), ag_jw_bool(&w, true);
    ag_jw_obj_end(&w);
}

int ag_cmd_chat(int argc, char **argv) {
    ag_client_options o = ag_client_options_default();
    const char *model = "autoglm-tiny", *system = NULL, *base = NULL;
    long max_tokens = 256;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int f = ag_cli_client_flag("chat", argc, argv, &i, &o, &base);
        if (f < 0) return AG_EXIT_USAGE;
        if (f) continue;
        if (ag_cli_is_help(a)) return fputs(chat_usage, stdout), AG_EXIT_OK;
        if (i + 1 >= argc) return USAGE("unknown option '%s' or it needs a value (try 'autoglm chat --help')", a);
        if (strcmp(a, "--model") == 0) model = argv[++i];
        else if (strcmp(a, "--system") == 0) system = argv[++i];
        else if (strcmp(a, "--max-tokens") == 0) {
            if (!ag_cli_int("chat", a, argv[++i], 1, 1 << 20, &max_tokens)) return AG_EXIT_USAGE;
        } else return USAGE("unknown option '%s' (try 'autoglm chat --help')", a);
    }
    char url[1024];
    int rc = ag_cli_client_finish("chat", &o, base, url, sizeof url);
    if (rc >= 0) return rc;
    ag_client *cl;
    ag_err err;
    if (ag_client_new(&o, &cl, &err) != AG_OK) {
        fprintf(stderr, "autoglm chat: %s\n", err.msg);
        return AG_EXIT_FAIL;
    }
    g_client = cl;
    struct sigaction sa = {.sa_handler = on_sigint}; /* no SA_RESTART: a Ctrl-C at the prompt ends the read */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    bool tty = isatty(0) && isatty(1);
    if (tty) fprintf(stderr, "autoglm chat: %s, model %s. /reset forgets, Ctrl-C stops a reply, Ctrl-D leaves.\n", url, model);
    history h = {0};
    if (system) history_add(&h, "system", system, strlen(system));
    size_t keep = h.n;
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (tty) fputs("> ", stdout), fflush(stdout);
        g_interrupted = 0;
        errno = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            if (errno == EINTR && g_interrupted) { /* Ctrl-C at the prompt: a fresh prompt */
                clearerr(stdin);
                if (tty) fputc('\n', stdout);
                continue;
            }
            break; /* Ctrl-D, or the end of piped input */
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n) continue;
        if (strcmp(line, "/quit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            history_reset(&h, keep);
            fputs("(history cleared)\n", stdout), fflush(stdout);
            continue;
        }
        history_add(&h, "user", line, (size_t)n);
        ag_buf body;
        ag_buf_init(&body);
        request_body(&h, model, max_tokens, &body);
        ag_client_request req = {.path = "/v1/chat/completions", .body = body.data, .body_len = body.len,
                                 .on_delta = print_delta};
        ag_client_result res;
        g_replying = 1;
        ag_status st = ag_client_call(cl, &req, &res);
        g_replying = 0;
        ag_buf_deinit(&body);
        if (st == AG_OK && res.outcome == AG_CLIENT_OK) {
            history_add(&h, "assistant", res.text, res.text_len);
            fputc('\n', stdout);
        } else {
            /* the turn is dropped: the next one is asked without it */
            free(h.role[--h.n]), free(h.content[h.n]);
            if (st == AG_OK && res.outcome == AG_CLIENT_CANCELLED) fputs("\n(stopped)\n", stdout);
            else fprintf(stdout, "\n"), fprintf(stderr, "autoglm chat: %s\n", st == AG_OK ? res.error : ag_strerror(st));
        }
        fflush(stdout);
        if (st == AG_OK) ag_client_result_free(&res);
    }
    free(line);
    history_reset(&h, 0);
    free(h.role), free(h.content);
    g_client = NULL;
    ag_client_free(cl);
    return AG_EXIT_OK;
}
