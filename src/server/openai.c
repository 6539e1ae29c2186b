/*
 * openai.c - OpenAI request validation (see openai.h; responses are openai_write.c).
 *
 * Parsing is one pass over the JSON DOM: each known field is read by a typed
 * getter that reports a wrong type or range with the field's name, so every
 * 400 says which parameter was wrong.  Prompts are tokenized here, on the
 * caller's thread, with special-token texts parsed (as llama.cpp's server and
 * Hugging Face tokenizers do), so a chat template's markers become their ids.
 */
#include "server/openai.h"

#include "grammar/grammar.h"
#include "server/tools.h"

#include "base/clock.h"
#include "base/str.h"
#include "json/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ag_status ag_api_fail(ag_api_error *err, int status, const char *type, const char *param, const char *code,
                      const char *fmt, ...) {
    err->status = status, err->type = type, err->param = param, err->code = code, err->retry_after_s = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return AG_EINVAL;
}

#define INVALID "invalid_request_error"

/* ---- typed field getters: absent or null leaves *out alone ------------------------ */

static const ag_json_val *field(const ag_json_val *obj, const char *key) {
    const ag_json_val *v = ag_json_obj_getc(obj, key);
    return v && v->type != AG_JSON_NULL ? v : NULL;
}

static ag_status get_number(const ag_json_val *obj, const char *key, double lo, double hi, float *out,
                            ag_api_error *err) {
    const ag_json_val *v = field(obj, key);
    double d;
    if (!v) return AG_OK;
    if (!ag_json_get_double(v, &d)) return ag_api_fail(err, 400, INVALID, key, NULL, "'%s' must be a number", key);
    if (!(d >= lo && d <= hi))
        return ag_api_fail(err, 400, INVALID, key, NULL, "'%s' must be between %g and %g, got %g", key, lo, hi, d);
    *out = (float)d;
    return AG_OK;
}

static ag_status get_int(const ag_json_val *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                         ag_api_error *err) {
    const ag_json_val *v = field(obj, key);
    int64_t i;
    if (!v) return AG_OK;
    if (!ag_json_get_int(v, &i)) return ag_api_fail(err, 400, INVALID, key, NULL, "'%s' must be an integer", key);
    if (i < lo || i > hi)
        return ag_api_fail(err, 400, INVALID, key, NULL, "'%s' must be between %lld and %lld, got %lld", key,
                           (long long)lo, (long long)hi, (long long)i);
    *out = i;
    return AG_OK;
}

static ag_status get_bool(const ag_json_val *obj, const char *key, bool *out, ag_api_error *err) {
    const ag_json_val *v = field(obj, key);
    if (v && !ag_json_get_bool(v, out)) return ag_api_fail(err, 400, INVALID, key, NULL, "'%s' must be a boolean", key);
    return AG_OK;
}

/* Request-sized memory ran out: a 503, never an abort (the try tier). */
static ag_status nomem(ag_api_error *err) {
    ag_api_fail(err, 503, "service_unavailable", NULL, NULL, "out of memory while reading the request; retry later");
    return AG_NOMEM;
}

static ag_status parse_object(const char *body, size_t len, ag_arena *a, ag_json_val **root, ag_api_error *err) {
    ag_json_err je;
    ag_status st = ag_json_parse(body, len, NULL, a, root, &je);
    if (st == AG_NOMEM) return nomem(err);
    if (st != AG_OK)
        return ag_api_fail(err, 400, INVALID, NULL, NULL,
                           "We could not parse the JSON body of your request: %s at line %zu, column %zu", je.reason,
                           je.line, je.col);
    if ((*root)->type != AG_JSON_OBJECT)
        return ag_api_fail(err, 400, INVALID, NULL, NULL, "the request body must be a JSON object");
    return AG_OK;
}

/* ---- prompts ------------------------------------------------------------------------ */

/* Tokenize text into the arena as prompt slot i. */
static ag_status add_text_prompt(const ag_api_model *m, const char *text, size_t len, bool add_bos, ag_arena *a,
                                 ag_api_request *r, size_t i, const char *param, ag_api_error *err) {
    ag_tokens ids = {0};
    ag_err e;
    ag_status st = ag_engine_tokenize(m->engine, text, len, add_bos, true, &ids, &e);
    if (st != AG_OK) {
        free(ids.v);
        if (st == AG_NOMEM) return nomem(err);
        return ag_api_fail(err, 400, INVALID, param, NULL, "'%s' cannot be tokenized: %s", param, e.msg);
    }
    r->prompts[i] = ag_arena_try_alloc(a, (ids.n ? ids.n : 1) * sizeof(int32_t));
    if (!r->prompts[i]) {
        free(ids.v);
        return nomem(err);
    }
    if (ids.n) memcpy(r->prompts[i], ids.v, ids.n * sizeof(int32_t));
    r->n_prompt[i] = (int32_t)ids.n;
    free(ids.v);
    return AG_OK;
}

static ag_status add_id_prompt(const ag_api_model *m, const ag_json_val *arr, ag_arena *a, ag_api_request *r,
                               size_t i, ag_api_error *err) {
    size_t n = ag_json_len(arr);
    if (!(r->prompts[i] = ag_arena_try_alloc(a, (n ? n : 1) * sizeof(int32_t)))) return nomem(err);
    for (size_t k = 0; k < n; k++) {
        int64_t id;
        if (!ag_json_get_int(ag_json_arr_at(arr, k), &id) || id < 0 || id >= m->n_vocab)
            return ag_api_fail(err, 400, INVALID, "prompt", NULL, "'prompt' token ids must be integers in 0..%d",
                               m->n_vocab - 1);
        r->prompts[i][k] = (int32_t)id;
    }
    r->n_prompt[i] = (int32_t)n;
    return AG_OK;
}

static ag_status alloc_prompts(ag_arena *a, ag_api_request *r, size_t n, ag_api_error *err) {
    r->n_prompts = n;
    r->prompts = ag_arena_try_alloc(a, n * sizeof *r->prompts);
    r->n_prompt = ag_arena_try_alloc(a, n * sizeof *r->n_prompt);
    return r->prompts && r->n_prompt ? AG_OK : nomem(err);
}

/* prompt: a string, an array of strings, an array of token ids, or an array of such arrays. */
static ag_status parse_prompt(const ag_api_model *m, const ag_json_val *p, ag_arena *a, ag_api_request *r,
                              ag_api_error *err) {
    bool bos = ag_engine_add_bos_default(m->engine);
    if (!p) return ag_api_fail(err, 400, INVALID, "prompt", NULL, "'prompt' is required");
    if (p->type == AG_JSON_STRING) {
        if (alloc_prompts(a, r, 1, err) != AG_OK) return AG_NOMEM;
        return add_text_prompt(m, p->u.s, p->len, bos, a, r, 0, "prompt", err);
    }
    if (p->type != AG_JSON_ARRAY || p->len == 0)
        return ag_api_fail(err, 400, INVALID, "prompt", NULL,
                           "'prompt' must be a string, an array of strings, or token ids (non-empty)");
    const ag_json_val *first = ag_json_arr_at(p, 0);
    if (first->type == AG_JSON_INT || first->type == AG_JSON_DOUBLE) {
        if (alloc_prompts(a, r, 1, err) != AG_OK) return AG_NOMEM;
        return add_id_prompt(m, p, a, r, 0, err);
    }
    if (p->len > AG_API_MAX_CHOICES)
        return ag_api_fail(err, 400, INVALID, "prompt", NULL, "'prompt' holds more than %d prompts", AG_API_MAX_CHOICES);
    if (alloc_prompts(a, r, p->len, err) != AG_OK) return AG_NOMEM;
    for (size_t i = 0; i < p->len; i++) {
        const ag_json_val *v = ag_json_arr_at(p, i);
        ag_status st;
        if (v->type == AG_JSON_STRING) st = add_text_prompt(m, v->u.s, v->len, bos, a, r, i, "prompt", err);
        else if (v->type == AG_JSON_ARRAY && v->type == first->type) st = add_id_prompt(m, v, a, r, i, err);
        else
            st = ag_api_fail(err, 400, INVALID, "prompt", NULL,
                             "'prompt' arrays must hold only strings or only arrays of token ids");
        if (st != AG_OK) return st;
    }
    return AG_OK;
}

/* Message content: a string, null (assistant turns with tool calls), or an array of text parts, joined. */
static ag_status message_content(const ag_json_val *c, ag_arena *a, ag_str *out, ag_api_error *err) {
    if (!c || c->type == AG_JSON_NULL) {
        *out = (ag_str){"", 0};
        return AG_OK;
    }
    if (c->type == AG_JSON_STRING) {
        *out = ag_json_str(c);
        return AG_OK;
    }
    if (c->type != AG_JSON_ARRAY)
        return ag_api_fail(err, 400, INVALID, "messages", NULL, "message content must be a string or an array of parts");
    size_t total = 0;
    for (size_t i = 0; i < c->len; i++) {
        const ag_json_val *part = ag_json_arr_at(c, i);
        ag_str type = ag_json_str(ag_json_obj_getc(part, "type"));
        const ag_json_val *text = ag_json_obj_getc(part, "text");
        if (!ag_str_eq_cstr(type, "text") || !ag_json_is(text, AG_JSON_STRING))
            return ag_api_fail(err, 400, INVALID, "messages", NULL,
                               "only text content parts ({\"type\":\"text\",\"text\":...}) are supported");
        total += text->len;
    }
    char *p = ag_arena_try_alloc(a, total + 1);
    if (!p) return nomem(err);
    size_t at = 0;
    for (size_t i = 0; i < c->len; i++) {
        const ag_json_val *text = ag_json_obj_getc(ag_json_arr_at(c, i), "text");
        memcpy(p + at, text->u.s, text->len);
        at += text->len;
    }
    *out = (ag_str){p, at};
    return AG_OK;
}

/* An assistant turn's past tool_calls, written after its content in the model's call format. */
static ag_status past_calls(const ag_api_model *m, const ag_json_val *calls, size_t i, ag_arena *a, ag_str *content,
                            ag_api_error *err) {
    if (!ag_json_is(calls, AG_JSON_ARRAY))
        return ag_api_fail(err, 400, INVALID, "messages", NULL, "'messages[%zu].tool_calls' must be an array", i);
    if (!ag_tools_template_supported(m->tmpl))
        return ag_api_fail(err, 400, INVALID, "messages", NULL,
                           "tool calls in messages are not supported with this model's chat template (%s)",
                           ag_chat_template_name(m->tmpl));
    ag_buf b;
    ag_buf_init(&b);
    ag_buf_append(&b, content->p, content->n);
    for (size_t k = 0; k < calls->len; k++) {
        const ag_json_val *fn = ag_json_obj_getc(ag_json_arr_at(calls, k), "function");
        ag_str name = ag_json_str(ag_json_obj_getc(fn, "name")), args = ag_json_str(ag_json_obj_getc(fn, "arguments"));
        if (!name.p || !args.p) {
            ag_buf_deinit(&b);
            return ag_api_fail(err, 400, INVALID, "messages", NULL,
                               "'messages[%zu].tool_calls[%zu]' needs function.name and function.arguments strings", i, k);
        }
        ag_tools_past_call(m->tmpl, name, args, k == 0, &b);
    }
    char *p = b.err == AG_OK ? ag_arena_try_strndup(a, b.data ? b.data : "", b.len) : NULL;
    *content = (ag_str){p, b.len};
    ag_buf_deinit(&b);
    return p ? AG_OK : nomem(err);
}

static ag_status parse_messages(const ag_api_model *m, const ag_json_val *msgs, ag_arena *a, ag_api_request *r,
                                ag_api_error *err) {
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
    if (!ag_json_is(msgs, AG_JSON_ARRAY) || msgs->len == 0)
        return ag_api_fail(err, 400, INVALID, "messages", NULL, "'messages' must be a non-empty array");
    ag_chat_msg *cm = ag_arena_try_alloc(a, msgs->len * sizeof *cm);
    if (!cm) return nomem(err);
    bool any_tool = false;
    for (size_t i = 0; i < msgs->len; i++) {
        const ag_json_val *msg = ag_json_arr_at(msgs, i);
        if (!ag_json_is(msg, AG_JSON_OBJECT))
            return ag_api_fail(err, 400, INVALID, "messages", NULL, "'messages[%zu]' must be an object", i);
        ag_str role = ag_json_str(ag_json_obj_getc(msg, "role"));
        bool known = false;
        for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++) known |= ag_str_eq_cstr(role, roles[k]);
        if (!known)
            return ag_api_fail(err, 400, INVALID, "messages", NULL,
                               "'messages[%zu].role' must be one of system, developer, user, assistant, tool", i);
        cm[i].role = role;
        ag_status st = message_content(ag_json_obj_getc(msg, "content"), a, &cm[i].content, err);
        if (st != AG_OK) return st;
        const ag_json_val *calls = field(msg, "tool_calls");
        if (calls && (st = past_calls(m, calls, i, a, &cm[i].content, err)) != AG_OK) return st;
        if (ag_str_eq_cstr(role, "tool")) any_tool = true;
    }
    size_t n = msgs->len;
    if ((any_tool || r->tools.choice != AG_TOOL_CHOICE_NONE) && ag_tools_template_supported(m->tmpl) &&
        ag_tools_messages(m->tmpl, &r->tools, &cm, &n, a) != AG_OK)
        return nomem(err);
    ag_buf text;
    ag_buf_init(&text);
    ag_chat_template_render(m->tmpl, cm, n, &text);
    ag_status st = text.err != AG_OK ? nomem(err) : alloc_prompts(a, r, 1, err);
    if (st == AG_OK) st = add_text_prompt(m, text.data ? text.data : "", text.len, false, a, r, 0, "messages", err);
    ag_buf_deinit(&text);
    return st;
}

/* ---- the other fields ------------------------------------------------------------------ */

static ag_status parse_stop(const ag_json_val *root, ag_arena *a, ag_api_request *r, ag_api_error *err) {
    const ag_json_val *s = field(root, "stop");
    if (!s) return AG_OK;
    if (s->type == AG_JSON_STRING) {
        if (s->len && !(r->stop[r->n_stop++] = ag_arena_try_strndup(a, s->u.s, s->len))) return nomem(err);
        return AG_OK;
    }
    if (s->type != AG_JSON_ARRAY || s->len > AG_API_MAX_STOP)
        return ag_api_fail(err, 400, INVALID, "stop", NULL, "'stop' must be a string or an array of at most %d strings",
                           AG_API_MAX_STOP);
    for (size_t i = 0; i < s->len; i++) {
        const ag_json_val *v = ag_json_arr_at(s, i);
        if (v->type != AG_JSON_STRING)
            return ag_api_fail(err, 400, INVALID, "stop", NULL, "'stop' must be a string or an array of strings");
        if (v->len && !(r->stop[r->n_stop++] = ag_arena_try_strndup(a, v->u.s, v->len))) return nomem(err);
    }
    return AG_OK;
}

static ag_status parse_logit_bias(const ag_api_model *m, const ag_json_val *root, ag_arena *a, ag_api_request *r,
                                  ag_api_error *err) {
    const ag_json_val *b = field(root, "logit_bias");
    if (!b) return AG_OK;
    if (b->type != AG_JSON_OBJECT)
        return ag_api_fail(err, 400, INVALID, "logit_bias", NULL, "'logit_bias' must be an object of token ids to biases");
    if (!(r->logit_bias = ag_arena_try_alloc(a, (b->len ? b->len : 1) * sizeof *r->logit_bias))) return nomem(err);
    for (size_t i = 0; i < b->len; i++) {
        const ag_json_member *mb = &b->u.members[i];
        uint64_t id;
        double bias;
        if (ag_str_parse_u64((ag_str){mb->key.u.s, mb->key.len}, &id) != AG_OK || id >= (uint64_t)m->n_vocab)
            return ag_api_fail(err, 400, INVALID, "logit_bias", NULL, "'logit_bias' keys must be token ids in 0..%d",
                               m->n_vocab - 1);
        if (!ag_json_get_double(&mb->val, &bias) || !(bias >= -100 && bias <= 100))
            return ag_api_fail(err, 400, INVALID, "logit_bias", NULL, "'logit_bias' values must be numbers in -100..100");
        /* -100 is OpenAI's "ban": make it exact rather than merely unlikely */
        r->logit_bias[r->n_logit_bias++] = (ag_logit_bias){(int32_t)id, bias <= -100 ? -INFINITY : (float)bias};
    }
    return AG_OK;
}

static ag_status parse_logprobs(ag_api_kind kind, const ag_json_val *root, ag_api_request *r, ag_api_error *err) {
    int64_t top = 0;
    if (kind == AG_API_COMPLETION) { /* legacy: logprobs is the number of alternatives, 0..5 */
        const ag_json_val *v = field(root, "logprobs");
        if (get_int(root, "logprobs", 0, 5, &top, err) != AG_OK) return AG_EINVAL;
        r->logprobs = v != NULL;
        r->top_logprobs = (int32_t)top;
        return AG_OK;
    }
    if (get_bool(root, "logprobs", &r->logprobs, err) != AG_OK) return AG_EINVAL;
    if (get_int(root, "top_logprobs", 0, AG_MAX_TOP_LOGPROBS, &top, err) != AG_OK) return AG_EINVAL;
    if (field(root, "top_logprobs") && !r->logprobs)
        return ag_api_fail(err, 400, INVALID, "top_logprobs", NULL, "'top_logprobs' needs 'logprobs' set to true");
    r->top_logprobs = (int32_t)top;
    return AG_OK;
}

/* "cache": {"ttl": seconds, "namespace": "name"} (LiteLLM's per-request controls). */
static ag_status parse_cache(const ag_json_val *root, ag_arena *a, ag_api_request *r, ag_api_error *err) {
    r->cache_ttl_s = -1;
    const ag_json_val *c = field(root, "cache");
    if (!c) return AG_OK;
    if (c->type != AG_JSON_OBJECT) return ag_api_fail(err, 400, INVALID, "cache", NULL, "'cache' must be an object");
    if (get_int(c, "ttl", 0, 365LL * 86400, &r->cache_ttl_s, err)) return AG_EINVAL;
    if (!field(c, "ttl")) r->cache_ttl_s = -1;
    const ag_json_val *ns = field(c, "namespace");
    if (ns && (ns->type != AG_JSON_STRING || ns->len == 0 || ns->len > 128))
        return ag_api_fail(err, 400, INVALID, "cache.namespace", NULL, "'cache.namespace' must be a string of 1 to 128 bytes");
    if (ns && !(r->cache_namespace = ag_arena_try_strndup(a, ns->u.s, ns->len))) return nomem(err);
    return AG_OK;
}

/* vLLM's extensions: "cache_salt" (the prefix cache's namespace), "ignore_eos", "min_tokens". */
static ag_status parse_vllm(const ag_json_val *root, ag_arena *a, ag_api_request *r, ag_api_error *err) {
    int64_t min_tokens = 0;
    if (get_bool(root, "ignore_eos", &r->ignore_eos, err) || get_int(root, "min_tokens", 0, INT32_MAX, &min_tokens, err))
        return AG_EINVAL;
    r->min_tokens = (int32_t)min_tokens;
    const ag_json_val *salt = field(root, "cache_salt");
    if (salt && (salt->type != AG_JSON_STRING || salt->len == 0 || salt->len > 256))
        return ag_api_fail(err, 400, INVALID, "cache_salt", NULL, "'cache_salt' must be a string of 1 to 256 bytes");
    if (salt && !(r->cache_salt = ag_arena_try_strndup(a, salt->u.s, salt->len))) return nomem(err);
    return AG_OK;
}

static ag_status parse_sampling(const ag_json_val *root, ag_api_request *r, ag_api_error *err) {
    ag_sampling *s = &r->sampling;
    float top_p = 1;
    int64_t top_k = 0, seed = 0;
    s->temperature = 1.0f; /* OpenAI's default */
    if (get_number(root, "temperature", 0, 2, &s->temperature, err) || get_number(root, "top_p", 0, 1, &top_p, err) ||
        get_int(root, "top_k", -1, INT32_MAX, &top_k, err) || get_number(root, "min_p", 0, 1, &s->min_p, err) ||
        get_number(root, "presence_penalty", -2, 2, &s->presence_penalty, err) ||
        get_number(root, "frequency_penalty", -2, 2, &s->frequency_penalty, err) ||
        get_number(root, "repetition_penalty", 1e-6, 10, &s->repetition_penalty, err) ||
        get_int(root, "seed", INT64_MIN, INT64_MAX, &seed, err))
        return AG_EINVAL;
    s->top_p = top_p > 0 ? top_p : 1e-9f; /* 0 keeps only the most likely token; the engine reads 0 as off */
    s->top_k = top_k > 0 ? (int32_t)top_k : 0;
    s->seed = (uint64_t)seed;
    r->seeded = field(root, "seed") != NULL;
    if (!r->seeded) { /* unseeded requests differ from one another, as OpenAI's do */
        static uint64_t counter;
        s->seed = ag_clock_wall_ns() ^ (++counter * 0x9e3779b97f4a7c15ull);
    }
    return AG_OK;
}

/* The context check, in vLLM's words with OpenAI's code. */
static ag_status check_context(const ag_api_model *m, ag_api_request *r, int64_t max_tokens, ag_api_error *err) {
    const char *param = r->kind == AG_API_CHAT ? "messages" : "prompt";
    int32_t longest = 0;
    for (size_t i = 0; i < r->n_prompts; i++) {
        if (r->n_prompt[i] == 0) return ag_api_fail(err, 400, INVALID, param, NULL, "'%s' is empty", param);
        longest = r->n_prompt[i] > longest ? r->n_prompt[i] : longest;
    }
    if (longest >= m->ctx)
        return ag_api_fail(err, 400, INVALID, param, "context_length_exceeded",
                           "This model's maximum context length is %d tokens. However, your request has %d input "
                           "tokens. Please reduce the length of the input messages.",
                           m->ctx, longest);
    if (max_tokens < 0) { /* unset: chat fills the context (vLLM), completions take OpenAI's 16 */
        max_tokens = r->kind == AG_API_CHAT ? m->ctx - longest : 16;
        if (max_tokens > m->ctx - longest) max_tokens = m->ctx - longest;
    } else if (max_tokens > m->ctx - longest) {
        return ag_api_fail(err, 400, INVALID, "max_tokens", "context_length_exceeded",
                           "'max_tokens' or 'max_completion_tokens' is too large: %lld. This model's maximum context "
                           "length is %d tokens and your request has %d input tokens (%lld > %d - %d).",
                           (long long)max_tokens, m->ctx, longest, (long long)max_tokens, m->ctx, longest);
    }
    r->max_tokens = (int32_t)max_tokens;
    return AG_OK;
}

/* ---- structured output and tools ---------------------------------------------------------- */

/* A JSON value's compact text, copied into the arena. */
static ag_status json_text(const ag_json_val *v, ag_arena *a, ag_str *out, ag_api_error *err) {
    ag_buf b;
    ag_buf_init(&b);
    ag_jw w;
    ag_jw_init(&w, &b, 0, AG_UTF8_REPLACE);
    ag_jw_value(&w, v);
    char *p = b.err == AG_OK ? ag_arena_try_strndup(a, b.data ? b.data : "", b.len) : NULL;
    *out = (ag_str){p, b.len};
    ag_buf_deinit(&b);
    return p ? AG_OK : nomem(err);
}

/* OpenAI's rule for response_format's and functions' names: [a-zA-Z0-9_-]{1,64}. */
static bool good_name(ag_str s) {
    if (s.n == 0 || s.n > 64) return false;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static ag_status parse_tools(const ag_api_model *m, const ag_json_val *root, ag_arena *a, ag_api_request *r,
                             ag_api_error *err) {
    const ag_json_val *tools = field(root, "tools"), *choice = field(root, "tool_choice");
    ag_api_tools *t = &r->tools;
    t->parallel = true;
    if (get_bool(root, "parallel_tool_calls", &t->parallel, err)) return AG_EINVAL;
    if (!tools) {
        if (choice && !ag_str_eq_cstr(ag_json_str(choice), "none"))
            return ag_api_fail(err, 400, INVALID, "tool_choice", NULL, "'tool_choice' is only allowed when 'tools' are given");
        return AG_OK;
    }
    if (r->kind != AG_API_CHAT) return ag_api_fail(err, 400, INVALID, "tools", NULL, "'tools' are a chat completions field");
    if (!ag_json_is(tools, AG_JSON_ARRAY) || tools->len > AG_API_MAX_TOOLS)
        return ag_api_fail(err, 400, INVALID, "tools", NULL, "'tools' must be an array of at most %d tools", AG_API_MAX_TOOLS);
    if (tools->len && !(t->v = ag_arena_try_alloc(a, tools->len * sizeof *t->v))) return nomem(err);
    for (size_t i = 0; i < tools->len; i++) {
        const ag_json_val *tool = ag_json_arr_at(tools, i), *fn = ag_json_obj_getc(tool, "function");
        if (!ag_str_eq_cstr(ag_json_str(ag_json_obj_getc(tool, "type")), "function") || !ag_json_is(fn, AG_JSON_OBJECT))
            return ag_api_fail(err, 400, INVALID, "tools", NULL, "'tools[%zu]' must be {\"type\": \"function\", \"function\": {...}}", i);
        ag_api_tool *d = &t->v[t->n++];
        d->name = ag_json_str(ag_json_obj_getc(fn, "name"));
        d->description = ag_json_str(ag_json_obj_getc(fn, "description"));
        if (!good_name(d->name))
            return ag_api_fail(err, 400, INVALID, "tools", NULL,
                               "'tools[%zu].function.name' must be 1 to 64 of a-z, A-Z, 0-9, _ and -", i);
        for (size_t k = 0; k < i; k++)
            if (ag_str_eq(t->v[k].name, d->name))
                return ag_api_fail(err, 400, INVALID, "tools", NULL, "two tools are named '%.*s'", (int)d->name.n, d->name.p);
        const ag_json_val *params = field(fn, "parameters"), *ptype = ag_json_obj_getc(params, "type");
        if (params && !ag_json_is(params, AG_JSON_OBJECT))
            return ag_api_fail(err, 400, INVALID, "tools", NULL, "'tools[%zu].function.parameters' must be an object", i);
        if (ptype && !ag_str_eq_cstr(ag_json_str(ptype), "object")) /* the answer's parser ends arguments at their brace */
            return ag_api_fail(err, 400, INVALID, "tools", "invalid_function_parameters",
                               "tools[%zu].function.parameters must describe an object", i);
        if (json_text(tool, a, &d->tool_json, err)) return AG_NOMEM;
        if (params && json_text(params, a, &d->params_json, err)) return AG_NOMEM;
        if (!params) d->params_json = AG_STR_LIT("{\"type\":\"object\",\"properties\":{}}");
    }
    t->choice = t->n ? AG_TOOL_CHOICE_AUTO : AG_TOOL_CHOICE_NONE;
    if (choice) {
        ag_str s = ag_json_str(choice);
        const ag_json_val *fn = ag_json_obj_getc(choice, "function");
        ag_str name = ag_json_str(ag_json_obj_getc(fn, "name"));
        if (ag_str_eq_cstr(s, "none")) t->choice = AG_TOOL_CHOICE_NONE;
        else if (ag_str_eq_cstr(s, "auto")) t->choice = AG_TOOL_CHOICE_AUTO;
        else if (ag_str_eq_cstr(s, "required")) t->choice = AG_TOOL_CHOICE_REQUIRED;
        else if (ag_json_is(choice, AG_JSON_OBJECT) && ag_str_eq_cstr(ag_json_str(ag_json_obj_getc(choice, "type")), "function") && name.p) {
            t->choice = AG_TOOL_CHOICE_NAMED;
            while (t->named < t->n && !ag_str_eq(t->v[t->named].name, name)) t->named++;
            if (t->named == t->n)
                return ag_api_fail(err, 400, INVALID, "tool_choice", NULL, "'tool_choice' names '%.*s', which is not in 'tools'",
                                   (int)(name.n > 64 ? 64 : name.n), name.p);
        } else {
            return ag_api_fail(err, 400, INVALID, "tool_choice", NULL,
                               "'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}");
        }
        if (t->choice != AG_TOOL_CHOICE_NONE && t->n == 0)
            return ag_api_fail(err, 400, INVALID, "tool_choice", NULL, "'tool_choice' asks for a call but 'tools' is empty");
    }
    if (t->choice != AG_TOOL_CHOICE_NONE && !ag_tools_template_supported(m->tmpl))
        return ag_api_fail(err, 400, INVALID, "tools", NULL,
                           "tool calling is not supported with this model's chat template (%s); it is with chatml, llama3 and chatglm4",
                           ag_chat_template_name(m->tmpl));
    return AG_OK;
}

/* Compile (or find) the request's grammar from its GBNF text; the text stays in the arena for the cache key. */
static ag_status use_grammar(const ag_api_model *m, ag_buf *gbnf, const char *trigger, const char *param,
                             const char *code, ag_arena *a, ag_api_request *r, ag_api_error *err) {
    if (gbnf->err != AG_OK) return nomem(err);
    ag_err e;
    ag_status st = m->grammars ? ag_grammar_lru_get(m->grammars, gbnf->data, gbnf->len, trigger, &r->grammar, &e)
                               : ag_grammar_compile(gbnf->data, gbnf->len, NULL, &r->grammar, &e);
    if (st != AG_OK) return ag_api_fail(err, 400, INVALID, param, code, "%s", e.msg);
    if (!(r->gbnf = ag_arena_try_strndup(a, gbnf->data, gbnf->len))) return nomem(err);
    r->gbnf_len = gbnf->len;
    return AG_OK;
}

/*
 * response_format (text, json_object, json_schema; llama.cpp's json_object
 * with a "schema"), llama.cpp's `grammar` (GBNF), and the tool-call grammar:
 * at most one of them constrains an answer.
 */
static ag_status parse_structured(const ag_api_model *m, const ag_json_val *root, ag_arena *a, ag_api_request *r,
                                  ag_api_error *err) {
    const ag_json_val *rf = field(root, "response_format"), *grammar = field(root, "grammar"), *schema = NULL;
    const char *name = NULL;
    size_t name_len = 0;
    bool json = false;
    if (rf) {
        ag_str type = ag_json_str(ag_json_obj_getc(rf, "type"));
        if (ag_str_eq_cstr(type, "json_object")) {
            json = true;
            schema = field(rf, "schema");
        } else if (ag_str_eq_cstr(type, "json_schema")) {
            const ag_json_val *js = field(rf, "json_schema");
            ag_str n = ag_json_str(ag_json_obj_getc(js, "name"));
            if (!ag_json_is(js, AG_JSON_OBJECT) || !good_name(n))
                return ag_api_fail(err, 400, INVALID, "response_format", NULL,
                                   "'response_format.json_schema' must be an object with a 'name' of 1 to 64 of a-z, A-Z, 0-9, _ and -");
            bool strict = false;
            if (get_bool(js, "strict", &strict, err)) return AG_EINVAL;
            json = true;
            schema = field(js, "schema");
            name = n.p, name_len = n.n;
            if (schema && !ag_json_is(schema, AG_JSON_OBJECT))
                return ag_api_fail(err, 400, INVALID, "response_format", NULL, "'response_format.json_schema.schema' must be an object");
        } else if (!ag_str_eq_cstr(type, "text")) {
            return ag_api_fail(err, 400, INVALID, "response_format", NULL,
                               "'response_format.type' must be one of \"text\", \"json_object\", \"json_schema\"");
        }
    }
    if (grammar && !ag_json_is(grammar, AG_JSON_STRING))
        return ag_api_fail(err, 400, INVALID, "grammar", NULL, "'grammar' must be a string (GBNF)");
    if (grammar && json)
        return ag_api_fail(err, 400, INVALID, "grammar", NULL, "Cannot use both a JSON response_format and a grammar");
    bool tools = r->tools.choice != AG_TOOL_CHOICE_NONE;
    if (tools && (grammar || json))
        return ag_api_fail(err, 400, INVALID, grammar ? "grammar" : "response_format", NULL,
                           "Cannot use %s with tools", grammar ? "custom grammar constraints" : "a JSON response_format");
    if (!grammar && !json && !tools) return AG_OK;
    ag_buf g;
    ag_buf_init(&g);
    ag_status st = AG_OK;
    const char *trigger = NULL;
    ag_schema_opts so = {.max_depth = m->schema_max_depth, .max_properties = m->schema_max_properties};
    ag_err e;
    if (grammar) {
        ag_buf_append(&g, grammar->u.s, grammar->len);
        st = use_grammar(m, &g, NULL, "grammar", NULL, a, r, err);
    } else if (json) {
        ag_schema_gbnf_common(&g);
        if (!schema) {
            ag_buf_append_str(&g, "root ::= json-object\n");
            st = use_grammar(m, &g, NULL, "response_format", NULL, a, r, err);
        } else {
            ag_str text;
            if (json_text(schema, a, &text, err)) st = AG_NOMEM;
            else if ((st = ag_schema_to_gbnf(text.p, text.n, "root", &so, &g, &e)) != AG_OK)
                st = ag_api_fail(err, 400, INVALID, "response_format", "invalid_json_schema", "Invalid schema for response_format '%.*s': %s",
                                 (int)name_len, name ? name : "", e.msg);
            else st = use_grammar(m, &g, NULL, "response_format", "invalid_json_schema", a, r, err);
        }
    } else {
        if ((st = ag_tools_gbnf(m->tmpl, &r->tools, &so, &g, &trigger, &e)) != AG_OK)
            st = ag_api_fail(err, 400, INVALID, "tools", "invalid_function_parameters", "%s", e.msg);
        else st = use_grammar(m, &g, trigger, "tools", "invalid_function_parameters", a, r, err);
    }
    ag_buf_deinit(&g);
    return st;
}

void ag_api_request_deinit(ag_api_request *r) {
    ag_grammar_release(r->grammar);
    r->grammar = NULL;
}

/* Fields we know but cannot honour are refused, never silently ignored. */
static ag_status refuse_unsupported(const ag_json_val *root, ag_api_error *err) {
    bool echo = false;
    int64_t best_of = 1;
    if (get_bool(root, "echo", &echo, err) || get_int(root, "best_of", 1, AG_API_MAX_N, &best_of, err)) return AG_EINVAL;
    if (echo) return ag_api_fail(err, 400, INVALID, "echo", NULL, "'echo' is not supported");
    if (best_of > 1) return ag_api_fail(err, 400, INVALID, "best_of", NULL, "'best_of' above 1 is not supported");
    if (field(root, "suffix")) return ag_api_fail(err, 400, INVALID, "suffix", NULL, "'suffix' is not supported");
    return AG_OK;
}

ag_status ag_api_request_parse(const ag_api_model *m, ag_api_kind kind, const char *body, size_t len, ag_arena *a,
                               ag_api_request *r, ag_api_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    ag_json_val *root;
    ag_status st = parse_object(body, len, a, &root, err);
    if (st != AG_OK) return st;
    const ag_json_val *model = ag_json_obj_getc(root, "model");
    if (!ag_json_is(model, AG_JSON_STRING)) return ag_api_fail(err, 400, INVALID, "model", NULL, "'model' must be a string");
    if (!ag_str_eq_cstr(ag_json_str(model), m->name))
        return ag_api_fail(err, 404, INVALID, "model", "model_not_found", "The model `%.*s` does not exist.",
                           (int)(model->len > 200 ? 200 : model->len), model->u.s);
    int64_t n = 1, max_tokens = -1, priority = 0;
    const ag_json_val *so = field(root, "stream_options");
    if (get_int(root, "n", 1, AG_API_MAX_N, &n, err) || get_bool(root, "stream", &r->stream, err) ||
        get_int(root, "max_tokens", 1, INT32_MAX, &max_tokens, err) ||
        get_int(root, "max_completion_tokens", 1, INT32_MAX, &max_tokens, err) ||
        get_int(root, "priority", INT32_MIN, INT32_MAX, &priority, err) || parse_sampling(root, r, err) ||
        parse_stop(root, a, r, err) || parse_logit_bias(m, root, a, r, err) || parse_logprobs(kind, root, r, err) ||
        parse_cache(root, a, r, err) || parse_vllm(root, a, r, err) || refuse_unsupported(root, err) ||
        parse_tools(m, root, a, r, err) || parse_structured(m, root, a, r, err))
        return err->status == 503 ? AG_NOMEM : AG_EINVAL;
    const ag_json_val *user = field(root, "user");
    if (user && user->type != AG_JSON_STRING) return ag_api_fail(err, 400, INVALID, "user", NULL, "'user' must be a string");
    if (so) {
        if (so->type != AG_JSON_OBJECT)
            return ag_api_fail(err, 400, INVALID, "stream_options", NULL, "'stream_options' must be an object");
        if (!r->stream)
            return ag_api_fail(err, 400, INVALID, "stream_options", NULL,
                               "'stream_options' is only allowed when 'stream' is true");
        if (get_bool(so, "include_usage", &r->include_usage, err)) return AG_EINVAL;
    }
    r->n = (int)n, r->priority = (int)priority;
    st = kind == AG_API_CHAT ? parse_messages(m, ag_json_obj_getc(root, "messages"), a, r, err)
                                       : parse_prompt(m, field(root, "prompt"), a, r, err);
    if (st != AG_OK) return st;
    if (r->n_prompts * (size_t)r->n > AG_API_MAX_CHOICES)
        return ag_api_fail(err, 400, INVALID, "n", NULL, "prompts times 'n' must be at most %d", AG_API_MAX_CHOICES);
    if (check_context(m, r, max_tokens, err) != AG_OK) return AG_EINVAL;
    if (r->min_tokens > r->max_tokens)
        return ag_api_fail(err, 400, INVALID, "min_tokens", NULL, "'min_tokens' (%d) must not exceed 'max_tokens' (%d)",
                           r->min_tokens, r->max_tokens);
    return AG_OK;
}

void ag_api_engine_request(const ag_api_request *r, const ag_api_model *m, size_t choice, ag_request *out) {
    size_t p = choice / (size_t)r->n;
    *out = (ag_request){.prompt = r->prompts[p],
                        .n_prompt = r->n_prompt[p],
                        .max_tokens = r->max_tokens,
                        .sampling = r->sampling,
                        .priority = r->priority,
                        .stop = r->stop,
                        .n_stop = r->n_stop,
                        .end_tokens = m->end_token >= 0 && r->kind == AG_API_CHAT ? &m->end_token : NULL,
                        .n_end_tokens = m->end_token >= 0 && r->kind == AG_API_CHAT ? 1 : 0,
                        .logit_bias = r->logit_bias,
                        .n_logit_bias = r->n_logit_bias,
                        .logprobs = r->logprobs,
                        .top_logprobs = r->top_logprobs,
                        .ignore_eos = r->ignore_eos,
                        .min_tokens = r->min_tokens,
                        .grammar = r->grammar};
    /*
     * n > 1: each choice its own stream, all reproducible from the seed.  The
     * seeds are mixed (murmur3's finalizer), not stepped by the generator's own
     * increment, which would make choice k's stream choice 0's shifted by k.
     */
    uint64_t k = (uint64_t)(choice % (size_t)r->n);
    if (k) {
        uint64_t z = out->sampling.seed + k;
        z = (z ^ (z >> 33)) * 0xff51afd7ed558ccdull;
        z = (z ^ (z >> 33)) * 0xc4ceb9fe1a85ec53ull;
        out->sampling.seed = z ^ (z >> 33);
    }
}

/* ---- tokenize and detokenize ------------------------------------------------------------ */

ag_status ag_api_tokenize(const ag_api_model *m, const char *body, size_t len, ag_arena *a, ag_buf *out,
                          ag_api_error *err) {
    ag_json_val *root;
    ag_api_request r = {.kind = AG_API_CHAT};
    bool add_special = true;
    if (parse_object(body, len, a, &root, err) || get_bool(root, "add_special", &add_special, err)) return AG_EINVAL;
    const ag_json_val *text = field(root, "prompt");
    if (!text) text = field(root, "content");
    ag_status st;
    if (field(root, "messages")) {
        st = parse_messages(m, field(root, "messages"), a, &r, err);
    } else if (ag_json_is(text, AG_JSON_STRING)) {
        st = alloc_prompts(a, &r, 1, err);
        if (st == AG_OK) st = add_text_prompt(m, text->u.s, text->len, add_special && ag_engine_add_bos_default(m->engine), a, &r, 0,
                             "prompt", err);
    } else {
        st = ag_api_fail(err, 400, INVALID, "prompt", NULL, "'prompt' (a string) or 'messages' is required");
    }
    if (st != AG_OK) return st;
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "count");
    ag_jw_int(&w, r.n_prompt[0]);
    ag_jw_keyc(&w, "max_model_len");
    ag_jw_int(&w, m->ctx);
    ag_jw_keyc(&w, "tokens");
    ag_jw_arr_begin(&w);
    for (int32_t i = 0; i < r.n_prompt[0]; i++) ag_jw_int(&w, r.prompts[0][i]);
    ag_jw_arr_end(&w);
    ag_jw_obj_end(&w);
    return AG_OK;
}

ag_status ag_api_detokenize(const ag_api_model *m, const char *body, size_t len, ag_arena *a, ag_buf *out,
                            ag_api_error *err) {
    ag_json_val *root;
    if (parse_object(body, len, a, &root, err)) return AG_EINVAL;
    const ag_json_val *toks = ag_json_obj_getc(root, "tokens");
    if (!ag_json_is(toks, AG_JSON_ARRAY))
        return ag_api_fail(err, 400, INVALID, "tokens", NULL, "'tokens' must be an array of token ids");
    int32_t *ids = ag_arena_try_alloc(a, (toks->len ? toks->len : 1) * sizeof *ids);
    if (!ids) return nomem(err);
    for (size_t i = 0; i < toks->len; i++) {
        int64_t id;
        if (!ag_json_get_int(ag_json_arr_at(toks, i), &id) || id < 0 || id >= m->n_vocab)
            return ag_api_fail(err, 400, INVALID, "tokens", NULL, "'tokens' must hold token ids in 0..%d",
                               m->n_vocab - 1);
        ids[i] = (int32_t)id;
    }
    ag_buf text;
    ag_buf_init(&text);
    if (ag_engine_detokenize(m->engine, ids, toks->len, &text, NULL) != AG_OK) {
        ag_buf_deinit(&text);
        return nomem(err);
    }
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "prompt");
    ag_jw_str(&w, text.data ? text.data : "", text.len);
    ag_jw_obj_end(&w);
    ag_buf_deinit(&text);
    return AG_OK;
}
