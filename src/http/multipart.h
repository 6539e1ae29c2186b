/*
 * multipart.h - multipart/form-data bodies (RFC 7578 over RFC 2046), as
 * POST /v1/files receives them from the OpenAI SDKs and curl -F.
 *
 * The body is whole in memory when this runs (the connection has read it,
 * within its size limit), so the parser is a single pass over it that
 * hands back spans into the caller's buffer: no copy, no allocation.
 * Every part's head is held to AG_MULTIPART_MAX_HEAD bytes and the body to
 * AG_MULTIPART_MAX_PARTS parts; what breaks the grammar is AG_EINVAL with a
 * one-line reason for a 400.
 */
#ifndef AG_HTTP_MULTIPART_H
#define AG_HTTP_MULTIPART_H

#include "autoglm/status.h"
#include "base/str.h"

#include <stddef.h>

#define AG_MULTIPART_MAX_PARTS 16   /* form fields in one body */
#define AG_MULTIPART_MAX_HEAD 4096  /* bytes of one part's header lines */
#define AG_MULTIPART_MAX_BOUNDARY 70 /* RFC 2046's limit */

typedef struct ag_multipart_part {
    ag_str name;     /* Content-Disposition's name */
    ag_str filename; /* its filename (p NULL when absent) */
    ag_str ctype;    /* the part's Content-Type (p NULL when absent) */
    ag_str data;
} ag_multipart_part;

/* The boundary parameter of a multipart/form-data Content-Type; AG_EINVAL when it is another type or has none. */
ag_status ag_multipart_boundary(ag_str content_type, ag_str *boundary);

/* Split body into its parts (at most cap; more is AG_ELIMIT).  reason: a static line on failure. */
ag_status ag_multipart_parse(const char *body, size_t len, ag_str boundary, ag_multipart_part *parts, size_t cap,
                             size_t *n, const char **reason);

#endif
