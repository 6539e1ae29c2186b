/*
 * rcache.c - response cache keys and values (see rcache.h).  Values:
 * u32 choices, u64 prompt, completion and cached tokens, then per choice a
 * u8 finish, a u32 length and the text; little-endian as written by memcpy
 * on the one machine that reads them (the L1 tier never leaves the process).
 */
#include "server/rcache.h"

#include <openssl/evp.h>
#include <string.h>

bool ag_rcache_cacheable(const ag_api_request *r, bool nondeterministic) {
    if (r->logprobs) return false;
    return nondeterministic || r->sampling.temperature == 0 || r->seeded;
}

static void add(EVP_MD_CTX *h, const void *p, size_t n) { EVP_DigestUpdate(h, p, n); }

/* Length-prefixed, so that no two field sequences hash the same bytes. */
static void add_str(EVP_MD_CTX *h, const char *s, size_t n) {
    uint64_t len = n;
    add(h, &len, sizeof len);
    add(h, s ? s : "", n);
}

uint64_t ag_rcache_tag(const char *ns) {
    uint8_t d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    const char *s = ns ? ns : "default";
    EVP_Digest(s, strlen(s), d, &n, EVP_sha256(), NULL);
    uint64_t t;
    memcpy(&t, d, sizeof t);
    return t;
}

void ag_rcache_key(const ag_api_request *r, const char *model, const char *tenant, size_t tenant_len, uint8_t key[32]) {
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    add_str(h, "autoglm response cache v1", 25);
    add_str(h, tenant, tenant ? tenant_len : 0);
    add_str(h, r->cache_namespace, r->cache_namespace ? strlen(r->cache_namespace) : 0);
    add_str(h, model, strlen(model));
    int32_t head[4] = {(int32_t)r->kind, r->n, r->max_tokens, (int32_t)r->n_prompts};
    add(h, head, sizeof head);
    for (size_t i = 0; i < r->n_prompts; i++) {
        add(h, &r->n_prompt[i], sizeof r->n_prompt[i]);
        add(h, r->prompts[i], (size_t)r->n_prompt[i] * sizeof(int32_t));
    }
    ag_sampling s = r->sampling;
    if (s.temperature == 0 && !r->seeded) s.seed = 0; /* greedy output does not depend on it */
    const float f[] = {s.temperature, s.top_p, s.min_p, s.repetition_penalty, s.frequency_penalty, s.presence_penalty};
    add(h, f, sizeof f);
    add(h, &s.top_k, sizeof s.top_k);
    add(h, &s.seed, sizeof s.seed);
    add(h, &r->n_stop, sizeof r->n_stop);
    for (size_t i = 0; i < r->n_stop; i++) add_str(h, r->stop[i], strlen(r->stop[i]));
    add(h, &r->n_logit_bias, sizeof r->n_logit_bias);
    for (size_t i = 0; i < r->n_logit_bias; i++) {
        add(h, &r->logit_bias[i].token, sizeof r->logit_bias[i].token);
        add(h, &r->logit_bias[i].bias, sizeof r->logit_bias[i].bias);
    }
    unsigned n = 0;
    uint8_t d[EVP_MAX_MD_SIZE];
    EVP_DigestFinal_ex(h, d, &n);
    EVP_MD_CTX_free(h);
    memcpy(key, d, 32);
}

void ag_rcache_encode(const ag_rcache_choice *ch, uint32_t n, const ag_api_usage *u, ag_buf *out) {
    int64_t t[3] = {u->prompt_tokens, u->completion_tokens, u->cached_tokens};
    ag_buf_append(out, &n, sizeof n);
    ag_buf_append(out, t, sizeof t);
    for (uint32_t i = 0; i < n; i++) {
        ag_buf_append(out, &ch[i].finish, 1);
        ag_buf_append(out, &ch[i].len, sizeof ch[i].len);
        ag_buf_append(out, ch[i].text, ch[i].len);
    }
}

bool ag_rcache_decode(const char *p, size_t len, ag_rcache_choice *ch, uint32_t cap, uint32_t *n, ag_api_usage *u) {
    int64_t t[3];
    if (len < sizeof *n + sizeof t) return false;
    memcpy(n, p, sizeof *n);
    memcpy(t, p + sizeof *n, sizeof t);
    u->prompt_tokens = t[0], u->completion_tokens = t[1], u->cached_tokens = t[2];
    size_t at = sizeof *n + sizeof t;
    if (*n > cap) return false;
    for (uint32_t i = 0; i < *n; i++) {
        if (len - at < 5) return false;
        ch[i].finish = (uint8_t)p[at];
        memcpy(&ch[i].len, p + at + 1, sizeof ch[i].len);
        at += 5;
        if (len - at < ch[i].len) return false;
        ch[i].text = p + at;
        at += ch[i].len;
    }
    return at == len;
}
