/*
 * ui.c - the web UI: GET / is its page and GET /ui/NAME its other files
 * (src/server/ui/, compiled in by cmake/embed.cmake; --no-ui turns it off).
 *
 * The files are fixed for the binary's life, so each is coded in gzip and
 * zstd once, at startup, and every answer is a copy of bytes already made.
 * Each coded form has its own strong ETag (a hash of the file, and the
 * coding), answers say Cache-Control: no-cache, and a request whose
 * If-None-Match names the tag gets 304 with no body: a browser revalidates
 * on every load and downloads only after an upgrade.  The Content-Security-
 * Policy lets the page run only the UI's own script and talk only to this
 * origin (no inline script, no CDN, no frames), so the API key it holds
 * cannot be sent elsewhere by injected markup.
 */
#define _POSIX_C_SOURCE 200809L
#include "server/internal.h"

#include "base/alloc.h"
#include "base/hash.h"
#include "server/ui_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UI_HEADERS                                                                                                   \
    "Cache-Control: no-cache\r\n"                                                                                    \
    "Vary: Accept-Encoding\r\n"                                                                                      \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "      \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"                            \
    "X-Content-Type-Options: nosniff\r\n"                                                                            \
    "Referrer-Policy: no-referrer\r\n"

typedef struct ui_form {
    ag_buf bytes;  /* the file in this coding (identity: empty, the file's own bytes are used) */
    char etag[40]; /* "HASH-CODING", quotes included */
} ui_form;

typedef struct ui_entry {
    const ag_ui_file *file;
    const char *ctype;
    ui_form form[AG_CODING_UNKNOWN];
} ui_entry;

struct ag_ui {
    ui_entry *e;
    size_t n;
};

static const char *content_type(const char *name) {
    static const struct {
        const char *ext, *ctype;
    } types[] = {{".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},   {".svg", "image/svg+xml"},
                 {".png", "image/png"}};
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0) return types[i].ctype;
    return "application/octet-stream";
}

struct ag_ui *ag_ui_new(void) {
    struct ag_ui *ui = ag_xcalloc(1, sizeof *ui);
    ui->e = ag_xcalloc(ag_ui_n_files, sizeof *ui->e);
    ui->n = ag_ui_n_files;
    for (size_t i = 0; i < ui->n; i++) {
        ui_entry *e = &ui->e[i];
        e->file = &ag_ui_files[i];
        e->ctype = content_type(e->file->name);
        uint64_t h = ag_hash_bytes(e->file->data, e->file->len, 0x75690a);
        for (int k = 0; k < AG_CODING_UNKNOWN; k++) {
            ui_form *f = &e->form[k];
            ag_buf_init(&f->bytes);
            snprintf(f->etag, sizeof f->etag, "\"%016llx-%s\"", (unsigned long long)h,
                     ag_http_coding_name((ag_http_coding)k));
            if (k != AG_CODING_IDENTITY &&
                ag_http_encode((ag_http_coding)k, e->file->data, e->file->len, &f->bytes) != AG_OK) {
                ag_ui_free(ui);
                return NULL;
            }
        }
    }
    return ui;
}

void ag_ui_free(struct ag_ui *ui) {
    if (!ui) return;
    for (size_t i = 0; i < ui->n; i++)
        for (int k = 0; k < AG_CODING_UNKNOWN; k++) ag_buf_deinit(&ui->e[i].form[k].bytes);
    free(ui->e);
    free(ui);
}

bool ag_ui_serve(conn *c, ag_str path) {
    struct ag_ui *ui = c->s->ui;
    ag_str name = ag_str_eq_cstr(path, "/") ? AG_STR_LIT("index.html") : (ag_str){path.p + 4, path.n - 4};
    const ui_entry *e = NULL;
    for (size_t i = 0; i < ui->n && !e; i++)
        if (ag_str_eq_cstr(name, ui->e[i].file->name)) e = &ui->e[i];
    if (!e) return false;
    ag_http_coding cod = c->coding_whole; /* gzip or zstd when Accept-Encoding asks, else identity */
    const ui_form *f = &e->form[cod];
    const char *body = cod == AG_CODING_IDENTITY ? (const char *)e->file->data : f->bytes.data;
    size_t len = cod == AG_CODING_IDENTITY ? e->file->len : f->bytes.len;
    char extra[640];
    snprintf(extra, sizeof extra, UI_HEADERS "ETag: %s\r\n%s%s%s", f->etag, cod ? "Content-Encoding: " : "",
             cod ? ag_http_coding_name(cod) : "", cod ? "\r\n" : "");
    if (ag_http_etag_match(ag_http_header_get(&c->req, "if-none-match"), ag_str_from_cstr(f->etag))) {
        ag_conn_write_head(c, 304, NULL, 0, extra);
    } else {
        ag_conn_write_head(c, 200, e->ctype, (int64_t)len, extra);
        if (!c->head_only) ag_conn_send(c, body, len);
    }
    ag_conn_request_done(c);
    return true;
}
