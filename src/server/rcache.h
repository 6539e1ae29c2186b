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
 * a small binary form, then the whole response's JSON after its opening (id
 * and time): a whole-response hit sends a fresh opening and then those bytes
 * straight from the shared value, a streamed hit is replayed as SSE chunks
 * of the same shape a generation streams.
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

/* The value of a finished request whose response meta m names (its kind and model). */
void ag_rcache_encode(const ag_api_meta *m, const ag_rcache_choice *ch, uint32_t n, const ag_api_usage *u, ag_buf *out);

typedef struct ag_rcache_value {
    ag_rcache_choice ch[AG_API_MAX_CHOICES]; /* texts point into the value */
    uint32_t n;
    ag_api_usage usage;
    const char *rest; /* the response JSON after ag_api_response_open_write's opening */
    size_t rest_len;
} ag_rcache_value;

/* False when p is malformed or holds more than AG_API_MAX_CHOICES choices. */
bool ag_rcache_decode(const char *p, size_t len, ag_rcache_value *v);

#endif
