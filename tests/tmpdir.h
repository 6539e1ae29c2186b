/*
 * tmpdir.h - a private scratch directory for a test binary, made in
 * $TMPDIR (or /tmp) and removed with everything in it.  Include after
 * defining _POSIX_C_SOURCE (mkdtemp).
 */
#ifndef AG_TEST_TMPDIR_H
#define AG_TEST_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Make $TMPDIR/ag_test_<tag>_<random> into buf; 0 on success, -1 otherwise. */
static inline int ag_test_tmpdir_make(char *buf, size_t cap, const char *tag) {
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(buf, cap, "%s/ag_test_%s_", tmp && *tmp ? tmp : "/tmp", tag);
    if (n < 0 || (size_t)n + 7 > cap) return -1;
    memset(buf + n, 'X', 6); /* the six characters mkdtemp replaces */
    buf[n + 6] = '\0';
    return mkdtemp(buf) ? 0 : -1;
}

/* Remove dir and its contents; 0 on success. */
static inline int ag_test_tmpdir_remove(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
