/*
 * rcache.c - response cache keys and values (see rcache.h).  Values:
 * u32 choices, u64 prompt, completion and cached tokens, then per choice a
 * u8 finish, a u32 length and the text, then a u32 length and the
 * response's JSON after its opening; integers little-endian as memcpy writes
 * them on x86-64 and arm64, the machines that share a Redis tier.
 */
#include "server/rcache.h"

#include "base/alloc.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bool ag_rcache_cacheable(const ag_api_request *r, bool nondeterministic) {
    if (r->logprobs || r->tools.choice != AG_TOOL_CHOICE_NONE) return false; /* tool answers are rendered apart */
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
    add_str(h, "autoglm response cache v2", 25); /* v2: values carry the rendered response */
    add_str(h, tenant, tenant ? tenant_len : 0);
    add_str(h, r->cache_namespace, r->cache_namespace ? strlen(r->cache_namespace) : 0);
    add_str(h, model, strlen(model));
    int32_t head[6] = {(int32_t)r->kind, r->n, r->max_tokens, (int32_t)r->n_prompts, r->ignore_eos, r->min_tokens};
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
    add_str(h, r->gbnf, r->gbnf_len); /* structured output: the grammar's text */
    unsigned n = 0;
    uint8_t d[EVP_MAX_MD_SIZE];
    EVP_DigestFinal_ex(h, d, &n);
    EVP_MD_CTX_free(h);
    memcpy(key, d, 32);
}

void ag_rcache_encode(const ag_api_meta *m, const ag_rcache_choice *ch, uint32_t n, const ag_api_usage *u, ag_buf *out) {
    int64_t t[3] = {u->prompt_tokens, u->completion_tokens, u->cached_tokens};
    ag_buf_append(out, &n, sizeof n);
    ag_buf_append(out, t, sizeof t);
    ag_api_choice *api = ag_xcalloc(n ? n : 1, sizeof *api);
    for (uint32_t i = 0; i < n; i++) {
        ag_buf_append(out, &ch[i].finish, 1);
        ag_buf_append(out, &ch[i].len, sizeof ch[i].len);
        ag_buf_append(out, ch[i].text, ch[i].len);
        api[i] = (ag_api_choice){ch[i].text, ch[i].len, ag_api_finish_reason((ag_finish)ch[i].finish), NULL, NULL, 0};
    }
    uint32_t rest_len = 0;
    size_t at = out->len;
    ag_buf_append(out, &rest_len, sizeof rest_len);
    size_t open = ag_api_response_write(m, api, n, u, out);
    free(api);
    if (out->err != AG_OK) return;
    size_t rest = at + sizeof rest_len + open;
    rest_len = (uint32_t)(out->len - rest);
    memcpy(out->data + at, &rest_len, sizeof rest_len);
    memmove(out->data + at + sizeof rest_len, out->data + rest, rest_len); /* keep the rest, not the opening */
    out->len = at + sizeof rest_len + rest_len;
}

bool ag_rcache_decode(const char *p, size_t len, ag_rcache_value *v) {
    int64_t t[3];
    if (len < sizeof v->n + sizeof t) return false;
    memcpy(&v->n, p, sizeof v->n);
    memcpy(t, p + sizeof v->n, sizeof t);
    v->usage = (ag_api_usage){t[0], t[1], t[2]};
    size_t at = sizeof v->n + sizeof t;
    for (int i = 0; i < 3; i++)
        if (t[i] < 0 || t[i] > INT32_MAX) return false; /* token counts; their sum must not overflow */
    if (v->n > AG_API_MAX_CHOICES) return false;
    for (uint32_t i = 0; i < v->n; i++) {
        ag_rcache_choice *ch = &v->ch[i];
        if (len - at < 5) return false;
        ch->finish = (uint8_t)p[at];
        memcpy(&ch->len, p + at + 1, sizeof ch->len);
        at += 5;
        if (len - at < ch->len) return false;
        ch->text = p + at;
        at += ch->len;
    }
    uint32_t rest_len;
    if (len - at < sizeof rest_len) return false;
    memcpy(&rest_len, p + at, sizeof rest_len);
    at += sizeof rest_len;
    v->rest = p + at, v->rest_len = rest_len;
    return rest_len > 0 && len - at == rest_len;
}
