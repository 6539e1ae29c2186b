/*
 * status.c - text for the ag_status codes of include/autoglm/status.h.
 */
#include "autoglm/status.h"

#include <stdarg.h>
#include <stdio.h>

const char *ag_strerror(ag_status st) {
    switch (st) {
    case AG_OK: return "ok";
    case AG_ERR: return "error";
    case AG_AGAIN: return "try again";
    case AG_NOMEM: return "out of memory";
    case AG_BUSY: return "busy";
    case AG_DONE: return "done";
    case AG_EINVAL: return "invalid argument";
    case AG_EIO: return "i/o error";
    case AG_ENOTFOUND: return "not found";
    case AG_ELIMIT: return "limit exceeded";
    case AG_ETIMEOUT: return "timed out";
    case AG_ECANCELED: return "canceled";
    }
    return "unknown status";
}

ag_status ag_err_set(ag_err *err, ag_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}
