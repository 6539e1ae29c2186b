/*
 * redis_url.h - redis://[[user]:password@]host[:port][/db], the one URL
 * grammar of every Redis this server talks to (the response cache's
 * tier, the Batch API's store).
 */
#ifndef AG_CACHE_REDIS_URL_H
#define AG_CACHE_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ag_redis_url {
    char host[256], user[256], password[256];
    int port, db;
} ag_redis_url;

/*
 * False with msg (naming flag) when the URL is malformed or asks for TLS
 * (rediss://), which Debian 12's hiredis 0.14 cannot do (TLS came with
 * hiredis 1.0's separate hiredis_ssl library).
 */
bool ag_redis_url_parse(const char *url, const char *flag, ag_redis_url *out, char *msg, size_t msg_cap);

#endif
