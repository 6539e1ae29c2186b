/*
 * tools.c - tool calling's prompt text, grammar and answer parser per chat
 * format (see tools.h).  One table row per format says where a call's name
 * and arguments sit; the prompt text follows each family's own template.
 */
#include "server/tools.h"

#include "base/alloc.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fmt {
    const char *open;    /* before the name */
    const char *mid;     /* between the name and the arguments */
    const char *close;   /* after the arguments */
    const char *sep;     /* between two calls; NULL: one call per answer */
    const char *trigger; /* where "auto"'s lazy grammar starts; NULL: none */
} fmt;

static const fmt *format_of(ag_chat_template t) {
    static const fmt hermes = {"<tool_call>\n{\"name\": \"", "\", \"arguments\": ", "}\n</tool_call>", "\n", "<tool_call>"};
    static const fmt llama3 = {"{\"name\": \"", "\", \"parameters\": ", "}", NULL, "{\"name\": \""};
    static const fmt glm4 = {"", "\n", "", NULL, NULL};
    switch (t) {
    case AG_CHAT_TEMPLATE_CHATML: return &hermes;
    case AG_CHAT_TEMPLATE_LLAMA3: return &llama3;
    case AG_CHAT_TEMPLATE_CHATGLM4: return &glm4;
    default: return NULL;
    }
}

bool ag_tools_template_supported(ag_chat_template t) { return format_of(t) != NULL; }

/* ---- the prompt ------------------------------------------------------------------- */

static ag_str arena_text(ag_arena *a, const ag_buf *b) {
    char *p = ag_arena_try_strndup(a, b->data ? b->data : "", b->len);
    return (ag_str){p, p ? b->len : 0};
}

/* The tools' description in the family's words (each template's text, verbatim). */
static void tools_block(ag_chat_template t, const ag_api_tools *tools, ag_buf *o) {
    if (t == AG_CHAT_TEMPLATE_CHATML) {
        ag_buf_append_str(o, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                             "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
        for (size_t i = 0; i < tools->n; i++) {
            ag_buf_append_char(o, '\n');
            ag_buf_append(o, tools->v[i].tool_json.p, tools->v[i].tool_json.n);
        }
        ag_buf_append_str(o, "\n</tools>\n\nFor each function call, return a json object with function name and "
                             "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                             "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
    } else if (t == AG_CHAT_TEMPLATE_LLAMA3) {
        ag_buf_append_str(o, "Given the following functions, please respond with a JSON for a function call with its "
                             "proper arguments that best answers the given prompt.\n\nRespond in the format "
                             "{\"name\": function name, \"parameters\": dictionary of argument name and its value}."
                             "Do not use variables.\n\n");
        for (size_t i = 0; i < tools->n; i++) {
            ag_buf_append(o, tools->v[i].tool_json.p, tools->v[i].tool_json.n);
            ag_buf_append_str(o, "\n\n");
        }
    } else { /* GLM-4 */
        ag_buf_append_str(o, "# 可用工具");
        for (size_t i = 0; i < tools->n; i++) {
            ag_buf_appendf(o, "\n\n## %.*s\n\n", (int)tools->v[i].name.n, tools->v[i].name.p);
            ag_buf_append(o, tools->v[i].tool_json.p, tools->v[i].tool_json.n);
            ag_buf_append_str(o, "\n在调用上述函数时，请使用 Json 格式表示调用的参数。");
        }
    }
}

void ag_tools_past_call(ag_chat_template t, ag_str name, ag_str args, bool first, ag_buf *out) {
    if (t == AG_CHAT_TEMPLATE_CHATML && (out->len || !first)) ag_buf_append_char(out, '\n');
    const fmt *f = format_of(t);
    if (!f) return;
    ag_buf_append_str(out, f->open);
    ag_buf_append(out, name.p, name.n);
    ag_buf_append_str(out, f->mid);
    ag_buf_append(out, args.p, args.n);
    ag_buf_append_str(out, f->close);
}

ag_status ag_tools_messages(ag_chat_template t, const ag_api_tools *tools, ag_chat_msg **msgs, size_t *n,
                            ag_arena *a) {
    ag_chat_msg *in = *msgs, *out = ag_arena_try_alloc(a, (*n + 1) * sizeof *out);
    if (!out) return AG_NOMEM;
    size_t k = 0;
    ag_buf b;
    ag_buf_init(&b);
    bool show = tools->choice != AG_TOOL_CHOICE_NONE && tools->n;
    bool has_system = *n && (ag_str_eq_cstr(in[0].role, "system") || ag_str_eq_cstr(in[0].role, "developer"));
    if (show && t != AG_CHAT_TEMPLATE_LLAMA3) { /* the tools go into the system turn */
        if (has_system && in[0].content.n) {
            ag_buf_append(&b, in[0].content.p, in[0].content.n);
            ag_buf_append_str(&b, "\n\n");
        }
        tools_block(t, tools, &b);
        out[k++] = (ag_chat_msg){AG_STR_LIT("system"), arena_text(a, &b)};
        ag_buf_reset(&b);
    }
    bool first_user = true;
    for (size_t i = show && t != AG_CHAT_TEMPLATE_LLAMA3 && has_system ? 1 : 0; i < *n; i++) {
        ag_chat_msg m = in[i];
        if (ag_str_eq_cstr(m.role, "tool")) {
            if (t == AG_CHAT_TEMPLATE_CHATML) { /* a run of results is one user turn */
                for (; i < *n && ag_str_eq_cstr(in[i].role, "tool"); i++) {
                    if (b.len) ag_buf_append_char(&b, '\n');
                    ag_buf_append_str(&b, "<tool_response>\n");
                    ag_buf_append(&b, in[i].content.p, in[i].content.n);
                    ag_buf_append_str(&b, "\n</tool_response>");
                }
                i--;
                m = (ag_chat_msg){AG_STR_LIT("user"), arena_text(a, &b)};
                ag_buf_reset(&b);
            } else if (t == AG_CHAT_TEMPLATE_LLAMA3) {
                m.role = AG_STR_LIT("ipython");
            }
        } else if (show && t == AG_CHAT_TEMPLATE_LLAMA3 && first_user && ag_str_eq_cstr(m.role, "user")) {
            tools_block(t, tools, &b);
            ag_buf_append(&b, m.content.p, m.content.n);
            m.content = arena_text(a, &b);
            ag_buf_reset(&b);
            first_user = false;
        }
        out[k++] = m;
    }
    ag_status st = b.err;
    ag_buf_deinit(&b);
    for (size_t i = 0; i < k; i++)
        if (!out[i].content.p) st = AG_NOMEM;
    *msgs = out, *n = k;
    return st;
}

/* ---- the grammar ------------------------------------------------------------------- */

ag_status ag_tools_gbnf(ag_chat_template t, const ag_api_tools *tools, const ag_schema_opts *so, ag_buf *g,
                        const char **trigger, ag_err *err) {
    const fmt *f = format_of(t);
    *trigger = NULL;
    if (!f) return ag_err_set(err, AG_EINVAL, "tool calling is not supported with this chat template");
    ag_schema_gbnf_common(g);
    size_t first = 0, last = tools->n;
    if (tools->choice == AG_TOOL_CHOICE_NAMED) first = tools->named, last = first + 1;
    ag_buf call;
    ag_buf_init(&call);
    ag_buf_append_str(&call, "call ::= ");
    ag_gbnf_literal(&call, f->open, strlen(f->open));
    ag_buf_append_str(&call, " (");
    for (size_t i = first; i < last; i++) {
        const ag_api_tool *tool = &tools->v[i]; /* parameters describe an object: openai.c checked */
        char rule[32];
        snprintf(rule, sizeof rule, "tool-%zu", i);
        ag_status st = ag_schema_to_gbnf(tool->params_json.p, tool->params_json.n, rule, so, g, err);
        if (st != AG_OK) {
            ag_buf_deinit(&call);
            return ag_err_set(err, st, "tools[%zu].function.parameters: %s", i, err->msg);
        }
        ag_buf_append_str(&call, i > first ? " | " : " ");
        ag_buf name;
        ag_buf_init(&name);
        ag_buf_append(&name, tool->name.p, tool->name.n);
        ag_buf_append_str(&name, f->mid);
        ag_gbnf_literal(&call, name.data, name.len);
        ag_buf_deinit(&name);
        ag_buf_appendf(&call, " %s", rule);
    }
    ag_buf_append_str(&call, " ) ");
    ag_gbnf_literal(&call, f->close, strlen(f->close));
    ag_buf_append_char(&call, '\n');
    ag_buf_append(g, call.data, call.len);
    ag_buf_deinit(&call);
    if (f->sep && tools->parallel && tools->choice != AG_TOOL_CHOICE_NAMED) { /* a named function: one call (vLLM) */
        ag_buf_append_str(g, "root ::= call (");
        ag_gbnf_literal(g, f->sep, strlen(f->sep));
        ag_buf_append_str(g, " call)*\n");
    } else {
        ag_buf_append_str(g, "root ::= call\n");
    }
    if (tools->choice == AG_TOOL_CHOICE_AUTO) {
        if (!f->trigger) { /* GLM-4: no opening text to wait for; the answer is parsed only */
            ag_buf_reset(g);
            ag_buf_append_str(g, "root ::= [\\x00-\\U0010FFFF]*\n");
        }
        *trigger = f->trigger;
    }
    return g->err;
}

/* ---- the answer's parser ---------------------------------------------------------- */

void ag_toolparse_init(ag_toolparse *p, ag_chat_template t, const ag_api_tools *tools, uint64_t seed) {
    memset(p, 0, sizeof *p);
    p->t = t;
    p->tools = tools;
    p->seed = seed;
    ag_buf_init(&p->content);
    ag_buf_init(&p->held);
    const fmt *f = format_of(t);
    if (f && !*f->open) p->state = tools->choice == AG_TOOL_CHOICE_AUTO ? AG_TOOLPARSE_PROBE : AG_TOOLPARSE_NAME;
}

void ag_toolparse_deinit(ag_toolparse *p) {
    for (size_t i = 0; i < p->n_calls; i++) ag_buf_deinit(&p->calls[i].args);
    free(p->calls);
    ag_buf_deinit(&p->content);
    ag_buf_deinit(&p->held);
}

static void call_begin(ag_toolparse *p, const char *name, size_t len) {
    p->calls = ag_xrealloc(p->calls, (p->n_calls + 1) * sizeof *p->calls);
    ag_toolcall *c = &p->calls[p->n_calls++];
    memset(c, 0, sizeof *c);
    ag_buf_init(&c->args);
    snprintf(c->name, sizeof c->name, "%.*s", (int)len, name);
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint64_t z = p->seed + 0x9e3779b97f4a7c15ull * p->n_calls;
    memcpy(c->id, "call_", 5);
    for (int i = 0; i < 24; i++) {
        z ^= z >> 31, z *= 0xbf58476d1ce4e5b9ull, z ^= z >> 27;
        c->id[5 + i] = alnum[(z >> 40) % 62];
    }
    c->id[29] = 0;
    p->depth = 0, p->in_str = p->esc = p->any_args = false;
}

static bool is_prefix(const char *s, size_t n, const char *of) { return n <= strlen(of) && memcmp(s, of, n) == 0; }

/* After a call's closing text: the next call's separator and opening (the grammar allows nothing else), or text. */
static void after_call(ag_toolparse *p, const fmt *f) {
    if (f->sep && p->tools->parallel && p->tools->choice != AG_TOOL_CHOICE_NAMED) {
        p->state = AG_TOOLPARSE_OPEN;
        p->skip = strlen(f->sep) + strlen(f->open);
    } else {
        p->state = AG_TOOLPARSE_TEXT;
    }
}

static void push_byte(ag_toolparse *p, const fmt *f, char c) {
    switch (p->state) {
    case AG_TOOLPARSE_CONTENT:
        ag_buf_append_char(&p->held, c);
        while (p->held.len && !is_prefix(p->held.data, p->held.len, f->open)) { /* what cannot open a call is content */
            ag_buf_append_char(&p->content, p->held.data[0]);
            memmove(p->held.data, p->held.data + 1, --p->held.len);
        }
        if (p->held.len == strlen(f->open)) {
            ag_buf_reset(&p->held);
            p->state = AG_TOOLPARSE_NAME;
        }
        return;
    case AG_TOOLPARSE_PROBE: /* GLM-4 auto: a first line naming a tool opens a call */
        if (c == '\n') {
            for (size_t i = 0; i < p->tools->n; i++)
                if (ag_str_eq(p->tools->v[i].name, (ag_str){p->held.data ? p->held.data : "", p->held.len})) {
                    call_begin(p, p->held.data, p->held.len);
                    ag_buf_reset(&p->held);
                    p->state = AG_TOOLPARSE_ARGS;
                    return;
                }
        } else {
            ag_buf_append_char(&p->held, c);
            for (size_t i = 0; i < p->tools->n; i++)
                if (p->held.len <= p->tools->v[i].name.n && memcmp(p->held.data, p->tools->v[i].name.p, p->held.len) == 0)
                    return;
        }
        ag_toolparse_finish(p); /* not a call: what was held is content */
        if (c == '\n') ag_buf_append_char(&p->content, c);
        p->state = AG_TOOLPARSE_TEXT;
        return;
    case AG_TOOLPARSE_OPEN:
        if (p->skip && --p->skip == 0) p->state = AG_TOOLPARSE_NAME;
        return;
    case AG_TOOLPARSE_NAME:
        if (c == f->mid[0]) {
            call_begin(p, p->name, p->name_len);
            p->name_len = 0;
            p->skip = strlen(f->mid) - 1;
            p->state = p->skip ? AG_TOOLPARSE_MID : AG_TOOLPARSE_ARGS;
        } else if (p->name_len < sizeof p->name - 1) {
            p->name[p->name_len++] = c;
        }
        return;
    case AG_TOOLPARSE_MID:
        if (--p->skip == 0) p->state = AG_TOOLPARSE_ARGS;
        return;
    case AG_TOOLPARSE_ARGS: {
        ag_toolcall *call = &p->calls[p->n_calls - 1];
        ag_buf_append_char(&call->args, c);
        if (p->in_str) {
            if (p->esc) p->esc = false;
            else if (c == '\\') p->esc = true;
            else if (c == '"') p->in_str = false;
            return;
        }
        if (c == '"') p->in_str = true;
        else if (c == '{' || c == '[') p->depth++, p->any_args = true;
        else if ((c == '}' || c == ']') && --p->depth == 0 && p->any_args) {
            p->skip = strlen(f->close);
            if (p->skip) p->state = AG_TOOLPARSE_CLOSE;
            else after_call(p, f);
        }
        return;
    }
    case AG_TOOLPARSE_CLOSE:
        if (--p->skip == 0) after_call(p, f);
        return;
    case AG_TOOLPARSE_TEXT:
        ag_buf_append_char(&p->content, c);
        return;
    }
}

void ag_toolparse_push(ag_toolparse *p, const char *text, size_t len) {
    const fmt *f = format_of(p->t);
    if (!f) {
        ag_buf_append(&p->content, text, len);
        return;
    }
    for (size_t i = 0; i < len; i++) push_byte(p, f, text[i]);
}

void ag_toolparse_finish(ag_toolparse *p) {
    if (p->held.len) ag_buf_append(&p->content, p->held.data, p->held.len);
    ag_buf_reset(&p->held);
}
