/*
 * rcache.h - what the server's response cache stores and under which key.
 *
 * Only reproducible requests are cacheable: greedy (temperature 0) or seeded
 * ones, unless the server allows any; requests for log-probabilities are not
 * (their entries would be large and are rarely repeated).  The key is
 * SHA-256 (OpenSSL) over the tenant (the API key, hashed), the namespace, the
 * model, the kind of request, the prompt *tokens* (so equivalent JSON
 * spellings and chat renderings meet) and every parameter that changes
 * output; `stream` and `stream_options` are not in it, so streamed and whole
 * answers of one request share an entry.
 *
 * The value is the choices (finish reason and text) and the token counts, in
 * a small binary form; a hit is rendered as a whole response or replayed as
 * an SSE stream of the same chunk shape.
 */
#ifndef AG_SERVER_RCACHE_H
#define AG_SERVER_RCACHE_H

#include "base/buf.h"
#include "server/openai.h"

#include <stdbool.h>
#include <stdint.h>

bool ag_rcache_cacheable(const ag_api_request *r, bool nondeterministic);
/* The entry key; tenant may be NULL (no authentication). */
void ag_rcache_key(const ag_api_request *r, const char *model, const char *tenant, size_t tenant_len, uint8_t key[32]);
/* The tag of a namespace (for DELETE /v1/cache?namespace=...). */
uint64_t ag_rcache_tag(const char *ns);

typedef struct ag_rcache_choice {
    const char *text;
    uint32_t len;
    uint8_t finish; /* ag_finish */
} ag_rcache_choice;

void ag_rcache_encode(const ag_rcache_choice *ch, uint32_t n, const ag_api_usage *u, ag_buf *out);
/* Decode into ch[0..*n) (texts point into p); false when malformed or more than cap choices. */
bool ag_rcache_decode(const char *p, size_t len, ag_rcache_choice *ch, uint32_t cap, uint32_t *n, ag_api_usage *u);

#endif
