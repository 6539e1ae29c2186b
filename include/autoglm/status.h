/*
 * status.h - the one status enum every autoglm library returns.
 *
 * Libraries return an ag_status and never print or exit; only the CLI's main
 * turns a status into a message and an exit code.  AG_OK is zero and every
 * failure is negative, so "if (st < 0)" reads as "if it failed".
 */
#ifndef AUTOGLM_STATUS_H
#define AUTOGLM_STATUS_H

typedef enum ag_status {
    AG_OK = 0,
    AG_ERR = -1,       /* generic failure; the callee says more where it can */
    AG_AGAIN = -2,     /* need more input or a retry later (incremental parsers) */
    AG_NOMEM = -3,     /* a try-allocation failed (request-sized memory) */
    AG_BUSY = -4,      /* a bounded queue is full */
    AG_DONE = -5,      /* nothing more to do (end of stream) */
    AG_EINVAL = -6,    /* the caller passed something malformed */
    AG_EIO = -7,       /* an operating-system I/O call failed; errno holds why */
    AG_ENOTFOUND = -8, /* a named thing does not exist */
    AG_ELIMIT = -9,    /* a configured limit (size, depth, count) was exceeded */
    AG_ETIMEOUT = -10, /* a deadline passed */
    AG_ECANCELED = -11 /* the operation was cancelled by its owner */
} ag_status;

/* A short, static, lower-case description of st; never NULL. */
const char *ag_strerror(ag_status st);

/*
 * A one-line reason to go with a failing status, for errors whose cause the
 * caller should show (a file's byte offset and what was wrong there).  The
 * caller owns it, usually on its stack; functions that fill it say so.
 */
typedef struct ag_err {
    char msg[256];
} ag_err;

/* Format into err (NULL is allowed and ignored); returns st, so `return ag_err_set(err, AG_EINVAL, ...)`. */
ag_status ag_err_set(ag_err *err, ag_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
