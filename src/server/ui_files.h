/*
 * ui_files.h - the web UI's files (src/server/ui/) as bytes in the binary,
 * written into a C file at build time by cmake/embed.cmake and served by ui.c.
 */
#ifndef AG_SERVER_UI_FILES_H
#define AG_SERVER_UI_FILES_H

#include <stddef.h>

typedef struct ag_ui_file {
    const char *name; /* its path under /ui/ ("app.js"); index.html is also GET / */
    const unsigned char *data;
    size_t len;
} ag_ui_file;

extern const ag_ui_file ag_ui_files[];
extern const size_t ag_ui_n_files;

#endif
