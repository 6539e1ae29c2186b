/*
 * testsrv.h - a target with known timings for checking `autoglm bench`
 * (see testsrv.c): every response after delay_ms; streamed requests get
 * `chunks` SSE text chunks chunk_interval_ms apart.
 */
#ifndef AG_TOOLS_TESTSRV_H
#define AG_TOOLS_TESTSRV_H

typedef struct ag_testsrv_opts {
    int port; /* 0: any free one (printed) */
    int delay_ms, chunks, chunk_interval_ms;
} ag_testsrv_opts;

/* Serve on 127.0.0.1 until SIGTERM or SIGINT; the process exit code. */
int ag_testsrv_run(const ag_testsrv_opts *o);

#endif
