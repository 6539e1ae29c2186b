/*
 * chat_template.h - the chat formats autoglm renders messages into.
 *
 * Models ship a Jinja template (tokenizer.chat_template); rather than carry a
 * Jinja interpreter we recognize the handful of formats that cover the
 * families we run and render them in C, byte for byte as the Hugging Face
 * template would with add_generation_prompt=true (tests hold the exact
 * strings).  llama.cpp's server does the same for its built-in list.
 */
#ifndef AG_SERVER_CHAT_TEMPLATE_H
#define AG_SERVER_CHAT_TEMPLATE_H

#include "base/buf.h"
#include "base/str.h"

#include <stddef.h>

typedef enum ag_chat_template {
    AG_CHAT_TEMPLATE_CHATML, /* Qwen and many others: <|im_start|>role\n...<|im_end|>\n */
    AG_CHAT_TEMPLATE_LLAMA2, /* <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] */
    AG_CHAT_TEMPLATE_LLAMA3, /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    AG_CHAT_TEMPLATE_MISTRAL, /* <s>[INST] ... [/INST]...</s> */
    AG_CHAT_TEMPLATE_CHATGLM4, /* GLM-4: [gMASK]<sop><|role|>\n... then <|assistant|>\n */
    AG_CHAT_TEMPLATE_GLMEDGE, /* GLM-Edge: <|role|>\n... then <|assistant|> */
    AG_CHAT_TEMPLATE_COUNT
} ag_chat_template;

typedef struct ag_chat_msg {
    ag_str role;    /* system, developer, user, assistant or tool */
    ag_str content; /* text parts already joined */
} ag_chat_msg;

/* "chatml", "llama2", ...; -1 for an unknown name. */
int ag_chat_template_from_name(const char *name);
const char *ag_chat_template_name(ag_chat_template t);
/* Recognize a model's Jinja template text; chatml when it is absent or unknown (llama.cpp's default). */
ag_chat_template ag_chat_template_detect(ag_str jinja);
/* The text that ends an assistant turn ("<|im_end|>"), to be added to the stop tokens. */
const char *ag_chat_template_end(ag_chat_template t);

/* Append the rendered conversation, ready for the assistant's reply, to out. */
void ag_chat_template_render(ag_chat_template t, const ag_chat_msg *msgs, size_t n, ag_buf *out);

#endif
