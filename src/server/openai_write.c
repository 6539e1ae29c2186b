/*
 * openai_write.c - the OpenAI API's response shapes (see openai.h): whole
 * responses, stream chunks, usage, errors and log-probabilities, written with
 * the JSON writer in the exact field order the official SDKs' fixtures show.
 * Parsing is openai.c.
 */
#include "server/openai.h"

#include "base/clock.h"
#include "json/json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define INVALID "invalid_request_error"

/* ---- writing ------------------------------------------------------------------------------ */

void ag_api_error_write(const ag_api_error *err, ag_buf *out) {
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "error");
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "message");
    ag_jw_strc(&w, err->message);
    ag_jw_keyc(&w, "type");
    ag_jw_strc(&w, err->type ? err->type : INVALID);
    ag_jw_keyc(&w, "param");
    if (err->param) ag_jw_strc(&w, err->param);
    else ag_jw_null(&w);
    ag_jw_keyc(&w, "code");
    if (err->code) ag_jw_strc(&w, err->code);
    else ag_jw_null(&w);
    ag_jw_obj_end(&w);
    ag_jw_obj_end(&w);
}

void ag_api_meta_init(ag_api_meta *m, ag_api_kind kind, const char *model, uint64_t unique) {
    m->kind = kind;
    m->model = model;
    m->created = (int64_t)(ag_clock_wall_ns() / 1000000000ull);
    snprintf(m->id, sizeof m->id, "%s-%016llx", kind == AG_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)(unique * 0x9e3779b97f4a7c15ull ^ ag_clock_wall_ns()));
}

const char *ag_api_finish_reason(ag_finish f) { return f == AG_FINISH_STOP ? "stop" : "length"; }

/* The opening that differs from one response to the next: id and creation time. */
static void head_open(ag_jw *w, const ag_api_meta *m, bool chunk) {
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "id");
    ag_jw_strc(w, m->id);
    ag_jw_keyc(w, "object");
    ag_jw_strc(w, m->kind == AG_API_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    ag_jw_keyc(w, "created");
    ag_jw_int(w, m->created);
}

/* The rest of the opening, the same for every response of this server. */
static void head_rest(ag_jw *w, const ag_api_meta *m) {
    ag_jw_keyc(w, "model");
    ag_jw_strc(w, m->model);
    ag_jw_keyc(w, "system_fingerprint");
    ag_jw_strc(w, "autoglm");
}

static void head(ag_jw *w, const ag_api_meta *m, bool chunk) {
    head_open(w, m, chunk);
    head_rest(w, m);
}

static void usage(ag_jw *w, const ag_api_usage *u) {
    ag_jw_keyc(w, "usage");
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "prompt_tokens");
    ag_jw_int(w, u->prompt_tokens);
    ag_jw_keyc(w, "completion_tokens");
    ag_jw_int(w, u->completion_tokens);
    ag_jw_keyc(w, "total_tokens");
    ag_jw_int(w, u->prompt_tokens + u->completion_tokens);
    ag_jw_keyc(w, "prompt_tokens_details");
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "cached_tokens");
    ag_jw_int(w, u->cached_tokens);
    ag_jw_obj_end(w);
    ag_jw_obj_end(w);
}

/* "logprobs": {"content":[...]} (chat) or {"tokens","token_logprobs","top_logprobs","text_offset"}; null when absent. */
static void logprobs(ag_jw *w, const ag_api_meta *m, const ag_api_logprobs *lp) {
    ag_jw_keyc(w, "logprobs");
    if (!lp) {
        ag_jw_null(w);
        return;
    }
    /* the entries are pre-written JSON: splice them in, keeping the writer's comma state right */
    ag_buf *o = w->out;
    ag_jw_obj_begin(w);
    if (m->kind == AG_API_CHAT) {
        ag_buf_append_str(o, "\"content\":[");
        ag_buf_append(o, lp->content.data, lp->content.len);
        ag_buf_append_str(o, "]");
    } else {
        const ag_buf *parts[] = {&lp->tokens, &lp->token_logprobs, &lp->top_logprobs, &lp->text_offset};
        const char *names[] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
        for (int i = 0; i < 4; i++) ag_buf_appendf(o, "%s\"%s\":[%.*s]", i ? "," : "", names[i], (int)parts[i]->len,
                                                   parts[i]->data ? parts[i]->data : "");
    }
    w->first[w->depth] = false;
    ag_jw_obj_end(w);
}

void ag_api_response_open_write(const ag_api_meta *m, ag_buf *out) {
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    head_open(&w, m, false);
}

size_t ag_api_response_write(const ag_api_meta *m, const ag_api_choice *ch, size_t n, const ag_api_usage *u,
                             ag_buf *out) {
    size_t start = out->len;
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    head_open(&w, m, false);
    size_t open = out->len - start;
    head_rest(&w, m);
    ag_jw_keyc(&w, "choices");
    ag_jw_arr_begin(&w);
    for (size_t i = 0; i < n; i++) {
        ag_jw_obj_begin(&w);
        ag_jw_keyc(&w, "index");
        ag_jw_int(&w, (int64_t)i);
        if (m->kind == AG_API_CHAT) {
            ag_jw_keyc(&w, "message");
            ag_jw_obj_begin(&w);
            ag_jw_keyc(&w, "role");
            ag_jw_strc(&w, "assistant");
            ag_jw_keyc(&w, "content");
            if (ch[i].n_calls && !ch[i].len) ag_jw_null(&w);
            else ag_jw_str(&w, ch[i].text, ch[i].len);
            if (ch[i].n_calls) {
                ag_jw_keyc(&w, "tool_calls");
                ag_jw_arr_begin(&w);
                for (size_t k = 0; k < ch[i].n_calls; k++) {
                    const ag_api_tool_call *tc = &ch[i].calls[k];
                    ag_jw_obj_begin(&w);
                    ag_jw_keyc(&w, "id");
                    ag_jw_strc(&w, tc->id);
                    ag_jw_keyc(&w, "type");
                    ag_jw_strc(&w, "function");
                    ag_jw_keyc(&w, "function");
                    ag_jw_obj_begin(&w);
                    ag_jw_keyc(&w, "name");
                    ag_jw_strc(&w, tc->name);
                    ag_jw_keyc(&w, "arguments");
                    ag_jw_str(&w, tc->args, tc->args_len);
                    ag_jw_obj_end(&w);
                    ag_jw_obj_end(&w);
                }
                ag_jw_arr_end(&w);
            }
            ag_jw_obj_end(&w);
        } else {
            ag_jw_keyc(&w, "text");
            ag_jw_str(&w, ch[i].text, ch[i].len);
        }
        logprobs(&w, m, ch[i].logprobs);
        ag_jw_keyc(&w, "finish_reason");
        ag_jw_strc(&w, ch[i].finish_reason);
        ag_jw_obj_end(&w);
    }
    ag_jw_arr_end(&w);
    usage(&w, u);
    ag_jw_obj_end(&w);
    return open;
}

/* A stream chunk's frame: the head, then one choice opened at its index (its delta or text follows). */
static void chunk_open(ag_jw *w, const ag_api_meta *m, int index) {
    head(w, m, true);
    ag_jw_keyc(w, "choices");
    ag_jw_arr_begin(w);
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "index");
    ag_jw_int(w, index);
}

/* ... and its end: log-probabilities, the finish reason, and "usage": null when usage was asked for. */
static void chunk_close(ag_jw *w, const ag_api_meta *m, const ag_api_logprobs *lp, const char *finish_reason,
                        bool usage_null) {
    logprobs(w, m, lp);
    ag_jw_keyc(w, "finish_reason");
    if (finish_reason) ag_jw_strc(w, finish_reason);
    else ag_jw_null(w);
    ag_jw_obj_end(w);
    ag_jw_arr_end(w);
    if (usage_null) {
        ag_jw_keyc(w, "usage");
        ag_jw_null(w);
    }
    ag_jw_obj_end(w);
}

void ag_api_chunk_write(const ag_api_meta *m, int index, bool first, const char *text, size_t len,
                        const char *finish_reason, const ag_api_logprobs *lp, bool usage_null, ag_buf *out) {
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    chunk_open(&w, m, index);
    if (m->kind == AG_API_CHAT) {
        ag_jw_keyc(&w, "delta");
        ag_jw_obj_begin(&w);
        if (first) {
            ag_jw_keyc(&w, "role");
            ag_jw_strc(&w, "assistant");
        }
        if (len || first) {
            ag_jw_keyc(&w, "content");
            ag_jw_str(&w, text, len);
        }
        ag_jw_obj_end(&w);
    } else {
        ag_jw_keyc(&w, "text");
        ag_jw_str(&w, text, len);
    }
    chunk_close(&w, m, lp, finish_reason, usage_null);
}

void ag_api_tool_chunk_write(const ag_api_meta *m, int index, size_t call, const char *id, const char *name,
                             const char *args, size_t args_len, bool usage_null, ag_buf *out) {
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    chunk_open(&w, m, index);
    ag_jw_keyc(&w, "delta");
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "tool_calls");
    ag_jw_arr_begin(&w);
    ag_jw_obj_begin(&w);
    ag_jw_keyc(&w, "index");
    ag_jw_int(&w, (int64_t)call);
    if (id) {
        ag_jw_keyc(&w, "id");
        ag_jw_strc(&w, id);
        ag_jw_keyc(&w, "type");
        ag_jw_strc(&w, "function");
    }
    ag_jw_keyc(&w, "function");
    ag_jw_obj_begin(&w);
    if (id) {
        ag_jw_keyc(&w, "name");
        ag_jw_strc(&w, name);
    }
    ag_jw_keyc(&w, "arguments");
    ag_jw_str(&w, args, args_len);
    ag_jw_obj_end(&w);
    ag_jw_obj_end(&w);
    ag_jw_arr_end(&w);
    ag_jw_obj_end(&w);
    chunk_close(&w, m, NULL, NULL, usage_null);
}

void ag_api_usage_chunk_write(const ag_api_meta *m, const ag_api_usage *u, ag_buf *out) {
    ag_jw w;
    ag_jw_init(&w, out, 0, AG_UTF8_REPLACE);
    head(&w, m, true);
    ag_jw_keyc(&w, "choices");
    ag_jw_arr_begin(&w);
    ag_jw_arr_end(&w);
    usage(&w, u);
    ag_jw_obj_end(&w);
}

/* ---- log-probabilities ------------------------------------------------------------------------ */

static void each_buf(ag_api_logprobs *lp, void (*f)(ag_buf *)) {
    ag_buf *all[] = {&lp->content, &lp->tokens, &lp->token_logprobs, &lp->top_logprobs, &lp->text_offset};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) f(all[i]);
}

void ag_api_logprobs_init(ag_api_logprobs *lp) {
    memset(lp, 0, sizeof *lp);
    each_buf(lp, ag_buf_init);
}

void ag_api_logprobs_deinit(ag_api_logprobs *lp) { each_buf(lp, ag_buf_deinit); }

/* Forget the entries but keep the text offset, which runs on across a stream's chunks. */
void ag_api_logprobs_reset(ag_api_logprobs *lp) {
    each_buf(lp, ag_buf_reset);
    lp->n = 0;
}

/* {"token":..., "logprob":..., "bytes":[...]} without the closing brace, so top_logprobs can follow. */
static void token_entry(ag_jw *w, const ag_engine *tok, int32_t id, float logprob, ag_buf *scratch) {
    ag_buf_reset(scratch);
    ag_engine_token_bytes(tok, id, scratch);
    ag_jw_obj_begin(w);
    ag_jw_keyc(w, "token");
    ag_jw_str(w, scratch->data ? scratch->data : "", scratch->len);
    ag_jw_keyc(w, "logprob");
    ag_jw_double(w, isfinite(logprob) ? logprob : -9999.0);
    ag_jw_keyc(w, "bytes");
    ag_jw_arr_begin(w);
    for (size_t i = 0; i < scratch->len; i++) ag_jw_int(w, (unsigned char)scratch->data[i]);
    ag_jw_arr_end(w);
}

void ag_api_logprobs_add(ag_api_logprobs *lp, ag_api_kind kind, const ag_engine *tok, const ag_event *ev) {
    ag_buf piece;
    ag_buf_init(&piece);
    ag_jw w;
    if (kind == AG_API_CHAT) {
        if (lp->n) ag_buf_append_char(&lp->content, ',');
        ag_jw_init(&w, &lp->content, 0, AG_UTF8_REPLACE);
        token_entry(&w, tok, ev->token, ev->logprob, &piece);
        ag_jw_keyc(&w, "top_logprobs");
        ag_jw_arr_begin(&w);
        for (int32_t k = 0; k < ev->n_top; k++) {
            token_entry(&w, tok, ev->top_token[k], ev->top_logprob[k], &piece);
            ag_jw_obj_end(&w);
        }
        ag_jw_arr_end(&w);
        ag_jw_obj_end(&w);
    } else {
        const char *sep = lp->n ? "," : "";
        ag_buf_append_str(&lp->tokens, sep);
        ag_engine_token_bytes(tok, ev->token, &piece);
        ag_buf_append_json_str(&lp->tokens, piece.data ? piece.data : "", piece.len, AG_UTF8_REPLACE);
        char num[40];
        ag_json_format_double(isfinite(ev->logprob) ? ev->logprob : -9999.0, num);
        ag_buf_appendf(&lp->token_logprobs, "%s%s", sep, num);
        ag_buf_appendf(&lp->text_offset, "%s%lld", sep, (long long)lp->offset);
        ag_buf_append_str(&lp->top_logprobs, sep);
        ag_jw_init(&w, &lp->top_logprobs, 0, AG_UTF8_REPLACE);
        ag_jw_obj_begin(&w);
        for (int32_t k = 0; k < ev->n_top; k++) {
            ag_buf_reset(&piece);
            ag_engine_token_bytes(tok, ev->top_token[k], &piece);
            ag_jw_key(&w, piece.data ? piece.data : "", piece.len);
            ag_jw_double(&w, isfinite(ev->top_logprob[k]) ? ev->top_logprob[k] : -9999.0);
        }
        ag_jw_obj_end(&w);
        lp->offset += (int64_t)ev->text_len;
    }
    lp->n++;
    ag_buf_deinit(&piece);
}
