/* redis_url.c - the Redis URL grammar (see redis_url.h). */
#include "cache/redis_url.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool ag_redis_url_parse(const char *u, const char *flag, ag_redis_url *out, char *msg, size_t msg_cap) {
    memset(out, 0, sizeof *out);
    if (strncmp(u, "rediss://", 9) == 0)
        return snprintf(msg, msg_cap, "%s: TLS (rediss://) needs hiredis 1.0 or later with hiredis_ssl; "
                                      "this build has hiredis %d.%d", flag, HIREDIS_MAJOR, HIREDIS_MINOR), false;
    if (strncmp(u, "redis://", 8) != 0) return snprintf(msg, msg_cap, "%s must start with redis://", flag), false;
    u += 8;
    const char *at = strrchr(u, '@');
    if (at) { /* user:password@, :password@ or password@ */
        const char *colon = memchr(u, ':', (size_t)(at - u));
        const char *pw = colon ? colon + 1 : u;
        if (colon) snprintf(out->user, sizeof out->user, "%.*s", (int)(colon - u), u);
        snprintf(out->password, sizeof out->password, "%.*s", (int)(at - pw), pw);
        u = at + 1;
    }
    const char *slash = strchr(u, '/'), *end = slash ? slash : u + strlen(u);
    const char *colon = memchr(u, ':', (size_t)(end - u));
    snprintf(out->host, sizeof out->host, "%.*s", (int)((colon ? colon : end) - u), u);
    out->port = colon ? atoi(colon + 1) : 6379;
    out->db = slash ? atoi(slash + 1) : 0;
    if (!out->host[0] || out->port <= 0 || out->port > 65535 || out->db < 0)
        return snprintf(msg, msg_cap, "%s: expected redis://[[user]:password@]host[:port][/db]", flag), false;
    return true;
}
