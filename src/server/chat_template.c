/*
 * chat_template.c - rendering chat messages in the built-in formats (see
 * chat_template.h).  Each renderer follows its Hugging Face template's Jinja
 * line by line; comments name where we had to choose (roles the template
 * does not know).  "developer" is OpenAI's newer name for "system".
 */
#include "server/chat_template.h"

#include <string.h>

static const char *const names[AG_CHAT_TEMPLATE_COUNT] = {"chatml", "llama2", "llama3", "mistral", "chatglm4", "glmedge"};

int ag_chat_template_from_name(const char *name) {
    for (int i = 0; i < AG_CHAT_TEMPLATE_COUNT; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

const char *ag_chat_template_name(ag_chat_template t) { return names[t]; }

static bool contains(ag_str hay, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= hay.n; i++)
        if (memcmp(hay.p + i, needle, n) == 0) return true;
    return false;
}

/* In llama.cpp's order (llm_chat_detect_template), so a template both know is read the same way. */
ag_chat_template ag_chat_template_detect(ag_str jinja) {
    if (contains(jinja, "<|im_start|>")) return AG_CHAT_TEMPLATE_CHATML;
    if (contains(jinja, "[gMASK]<sop>")) return AG_CHAT_TEMPLATE_CHATGLM4;
    /* <|end|> is Phi-3's and </s> Falcon 3's, both with these role tokens too */
    if (contains(jinja, "<|assistant|>") && contains(jinja, "<|user|>") && !contains(jinja, "<|end|>") &&
        !contains(jinja, "</s>"))
        return AG_CHAT_TEMPLATE_GLMEDGE;
    if (contains(jinja, "<|start_header_id|>")) return AG_CHAT_TEMPLATE_LLAMA3;
    if (contains(jinja, "[INST]")) return contains(jinja, "<<SYS>>") ? AG_CHAT_TEMPLATE_LLAMA2 : AG_CHAT_TEMPLATE_MISTRAL;
    return AG_CHAT_TEMPLATE_CHATML;
}

const char *ag_chat_template_end(ag_chat_template t) {
    switch (t) {
    case AG_CHAT_TEMPLATE_CHATML: return "<|im_end|>";
    case AG_CHAT_TEMPLATE_LLAMA3: return "<|eot_id|>";
    case AG_CHAT_TEMPLATE_CHATGLM4:
    case AG_CHAT_TEMPLATE_GLMEDGE: return "<|user|>"; /* GLM has no end marker: the next role token closes a turn */
    default: return "</s>";
    }
}

static bool is_system(ag_str role) { return ag_str_eq_cstr(role, "system") || ag_str_eq_cstr(role, "developer"); }

static void append(ag_buf *out, ag_str s) { ag_buf_append(out, s.p, s.n); }

/* {% for m in messages %}<|im_start|>{{role}}\n{{content}}<|im_end|>\n{% endfor %}<|im_start|>assistant\n */
static void render_chatml(const ag_chat_msg *m, size_t n, ag_buf *out) {
    for (size_t i = 0; i < n; i++) {
        ag_buf_append_str(out, "<|im_start|>");
        if (is_system(m[i].role)) ag_buf_append_str(out, "system");
        else append(out, m[i].role);
        ag_buf_append_char(out, '\n');
        append(out, m[i].content);
        ag_buf_append_str(out, "<|im_end|>\n");
    }
    ag_buf_append_str(out, "<|im_start|>assistant\n");
}

/* <|begin_of_text|> then per message <|start_header_id|>role<|end_header_id|>\n\n{{content|trim}}<|eot_id|> */
static void render_llama3(const ag_chat_msg *m, size_t n, ag_buf *out) {
    ag_buf_append_str(out, "<|begin_of_text|>");
    for (size_t i = 0; i < n; i++) {
        ag_buf_append_str(out, "<|start_header_id|>");
        if (is_system(m[i].role)) ag_buf_append_str(out, "system");
        else append(out, m[i].role);
        ag_buf_append_str(out, "<|end_header_id|>\n\n");
        append(out, ag_str_trim(m[i].content));
        ag_buf_append_str(out, "<|eot_id|>");
    }
    ag_buf_append_str(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/*
 * Llama 2 chat: a leading system message goes into the first user turn as
 * <<SYS>>\n...\n<</SYS>>\n\n; each user turn is <s>[INST] {{content.strip()}}
 * [/INST], each assistant turn " {{content.strip()}} </s>".  Mistral's
 * template has no system role; like llama.cpp we put the system text before
 * the first user message, separated by a blank line.  Tool results are read as
 * user turns by both, as neither template knows the role.
 */
static void render_inst(const ag_chat_msg *m, size_t n, bool llama2, ag_buf *out) {
    ag_str system = {NULL, 0};
    size_t i = 0;
    if (n && is_system(m[0].role)) system = m[i++].content;
    if (!llama2) ag_buf_append_str(out, "<s>");
    bool first_user = true;
    for (; i < n; i++) {
        if (ag_str_eq_cstr(m[i].role, "assistant")) {
            if (llama2) {
                ag_buf_append_char(out, ' ');
                append(out, ag_str_trim(m[i].content));
                ag_buf_append_str(out, " </s>");
            } else {
                append(out, m[i].content);
                ag_buf_append_str(out, "</s>");
            }
            continue;
        }
        if (is_system(m[i].role)) continue; /* only a leading system message has a place */
        ag_buf_append_str(out, llama2 ? "<s>[INST] " : "[INST] ");
        ag_buf body;
        ag_buf_init(&body);
        if (first_user && system.p) {
            if (llama2) ag_buf_append_str(&body, "<<SYS>>\n");
            ag_buf_append(&body, system.p, system.n);
            ag_buf_append_str(&body, llama2 ? "\n<</SYS>>\n\n" : "\n\n");
        }
        first_user = false;
        ag_buf_append(&body, m[i].content.p, m[i].content.n);
        ag_str text = {body.data ? body.data : "", body.len};
        append(out, llama2 ? ag_str_trim(text) : text);
        ag_buf_deinit(&body);
        ag_buf_append_str(out, " [/INST]");
    }
}

/*
 * GLM: <|role|>\n{{content}} per message, untrimmed and with no end marker;
 * GLM-4 opens with [gMASK]<sop> (special tokens, not BOS) and asks for the
 * reply with <|assistant|>\n, GLM-Edge with a bare <|assistant|>.  Tool
 * results go in GLM's <|observation|> role, as its own template puts them.
 */
static void render_glm(const ag_chat_msg *m, size_t n, bool glm4, ag_buf *out) {
    if (glm4) ag_buf_append_str(out, "[gMASK]<sop>");
    for (size_t i = 0; i < n; i++) {
        ag_buf_append_str(out, "<|");
        if (is_system(m[i].role)) ag_buf_append_str(out, "system");
        else if (ag_str_eq_cstr(m[i].role, "tool")) ag_buf_append_str(out, "observation");
        else append(out, m[i].role);
        ag_buf_append_str(out, "|>\n");
        append(out, m[i].content);
    }
    ag_buf_append_str(out, glm4 ? "<|assistant|>\n" : "<|assistant|>");
}

void ag_chat_template_render(ag_chat_template t, const ag_chat_msg *msgs, size_t n, ag_buf *out) {
    switch (t) {
    case AG_CHAT_TEMPLATE_LLAMA3: render_llama3(msgs, n, out); break;
    case AG_CHAT_TEMPLATE_LLAMA2: render_inst(msgs, n, true, out); break;
    case AG_CHAT_TEMPLATE_MISTRAL: render_inst(msgs, n, false, out); break;
    case AG_CHAT_TEMPLATE_CHATGLM4: render_glm(msgs, n, true, out); break;
    case AG_CHAT_TEMPLATE_GLMEDGE: render_glm(msgs, n, false, out); break;
    default: render_chatml(msgs, n, out); break;
    }
}
