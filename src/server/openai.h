/*
 * openai.h - the OpenAI API's request and response shapes, apart from any
 * socket: parsing and validating a chat or completions request into prompts
 * and engine settings, and writing responses, stream chunks and errors in the
 * exact JSON the official SDKs read.
 *
 * Validation follows the OpenAI reference: a known field of the wrong type or
 * out of range is a 400 naming it in `param`; unknown fields are ignored.
 * The context check uses vLLM's wording (the message names the context length
 * and the request's token counts) with OpenAI's code
 * "context_length_exceeded".
 *
 * Everything a parsed request holds lives in the caller's arena, copied out of
 * the body, so the body's buffer may be reused as soon as parsing returns.
 */
#ifndef AG_SERVER_OPENAI_H
#define AG_SERVER_OPENAI_H

#include "autoglm/engine.h"
#include "base/arena.h"
#include "base/buf.h"
#include "base/str.h"
#include "server/chat_template.h"

#include <stdbool.h>
#include <stdint.h>

#define AG_API_MAX_STOP 4
#define AG_API_MAX_N 128       /* choices per prompt */
#define AG_API_MAX_CHOICES 256 /* prompts x n */
#define AG_API_MAX_TOOLS 128   /* OpenAI's */

typedef struct ag_api_error {
    int status;        /* HTTP status */
    const char *type;  /* "invalid_request_error", ... */
    const char *param; /* the offending field, or NULL */
    const char *code;  /* "context_length_exceeded", ..., or NULL */
    char message[512];
    uint32_t retry_after_s; /* 429 and 503: the Retry-After to send (0: 1 s) */
} ag_api_error;

/* Fill *err and return AG_EINVAL (for `return ag_api_fail(...)`). */
ag_status ag_api_fail(ag_api_error *err, int status, const char *type, const char *param, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

typedef enum ag_api_kind { AG_API_CHAT, AG_API_COMPLETION } ag_api_kind;

struct ag_grammar;
struct ag_grammar_lru;

/* tool_choice: no tools in the prompt or the answer; the model's choice; at least one call; this function. */
typedef enum ag_tool_choice {
    AG_TOOL_CHOICE_NONE,
    AG_TOOL_CHOICE_AUTO,
    AG_TOOL_CHOICE_REQUIRED,
    AG_TOOL_CHOICE_NAMED
} ag_tool_choice;

typedef struct ag_api_tool {
    ag_str name, description; /* into the request's JSON */
    ag_str tool_json;         /* the whole {"type":"function","function":{...}} as compact JSON (arena) */
    ag_str params_json;       /* its parameters schema as compact JSON (arena); {"type":"object"} when absent */
} ag_api_tool;

typedef struct ag_api_tools {
    ag_api_tool *v;
    size_t n;
    ag_tool_choice choice;
    size_t named; /* AG_TOOL_CHOICE_NAMED: the function's index */
    bool parallel; /* parallel_tool_calls: more than one call in an answer */
} ag_api_tools;

/* What parsing needs to know of the model being served. */
typedef struct ag_api_model {
    const char *name; /* the served model name: the only accepted `model` */
    const ag_engine *engine; /* its tokenizer */
    int32_t ctx, n_vocab;
    ag_chat_template tmpl;
    int32_t end_token; /* the chat turn's end token (<|im_end|>), or -1 */
    struct ag_grammar_lru *grammars; /* compiled grammars by text (the loop thread's) */
    uint32_t schema_max_depth, schema_max_properties; /* --schema-max-depth, --schema-max-properties (0: defaults) */
} ag_api_model;

typedef struct ag_api_request {
    ag_api_kind kind;
    int32_t **prompts; /* n_prompts token arrays */
    int32_t *n_prompt;
    size_t n_prompts;
    int n;              /* choices per prompt */
    int32_t max_tokens; /* per choice */
    bool stream, include_usage;
    ag_sampling sampling;
    const char *stop[AG_API_MAX_STOP]; /* NUL-terminated copies */
    size_t n_stop;
    ag_logit_bias *logit_bias;
    size_t n_logit_bias;
    bool logprobs;
    int32_t top_logprobs;
    int priority;
    bool seeded; /* `seed` was given: sampled output is reproducible (and cacheable) */
    /* the response cache's controls, from a "cache": {"ttl": seconds, "namespace": "..."} object */
    int64_t cache_ttl_s;         /* -1: the server's default */
    const char *cache_namespace; /* NUL-terminated; NULL: "default" */
    const char *cache_salt;      /* vLLM's: a namespace for the prefix (KV) cache; NULL: none */
    bool ignore_eos;             /* vLLM's and llama.cpp's: generate max_tokens whatever the model says */
    int32_t min_tokens;          /* vLLM's: end tokens are banned before this many */
    /* structured output: response_format json_object/json_schema, llama.cpp's `grammar`, or the tool-call format */
    struct ag_grammar *grammar; /* a reference (ag_api_request_deinit); NULL: free text */
    const char *gbnf;           /* its text (arena), part of the response cache's key */
    size_t gbnf_len;
    ag_api_tools tools;
} ag_api_request;

/*
 * Parse and validate a request body; AG_OK, or AG_EINVAL with *err (status
 * 400 or 404), or AG_NOMEM with *err (503) when the request's memory (taken
 * from the arena's try tier, never the aborting one) runs out.
 */
ag_status ag_api_request_parse(const ag_api_model *m, ag_api_kind kind, const char *body, size_t len, ag_arena *arena,
                               ag_api_request *out, ag_api_error *err);

/* Release what a parsed request holds outside its arena (the grammar's reference). */
void ag_api_request_deinit(ag_api_request *r);

/* The engine request of choice i (prompt i / n); borrowed pointers into *r. */
void ag_api_engine_request(const ag_api_request *r, const ag_api_model *m, size_t choice, ag_request *out);

/* {"error":{"message","type","param","code"}} */
void ag_api_error_write(const ag_api_error *err, ag_buf *out);

/* The fixed parts of one response: its id, creation time and model. */
typedef struct ag_api_meta {
    ag_api_kind kind;
    char id[48];
    int64_t created;
    const char *model;
} ag_api_meta;

void ag_api_meta_init(ag_api_meta *m, ag_api_kind kind, const char *model, uint64_t unique);

typedef struct ag_api_usage {
    int64_t prompt_tokens, completion_tokens, cached_tokens;
} ag_api_usage;

/* Log-probability entries of one choice, written as the API wants them as tokens arrive. */
typedef struct ag_api_logprobs {
    ag_buf content; /* chat: objects of "content"; completions: the four parallel arrays */
    ag_buf tokens, token_logprobs, top_logprobs, text_offset;
    size_t n;
    int64_t offset; /* completions: text offset of the next token */
} ag_api_logprobs;

void ag_api_logprobs_init(ag_api_logprobs *lp);
void ag_api_logprobs_deinit(ag_api_logprobs *lp);
void ag_api_logprobs_reset(ag_api_logprobs *lp);
/* Add the token of an event (its text advances the completions offset). */
void ag_api_logprobs_add(ag_api_logprobs *lp, ag_api_kind kind, const ag_engine *e, const ag_event *ev);

/* A tool call of an answer: {"id","type":"function","function":{"name","arguments"}}. */
typedef struct ag_api_tool_call {
    const char *id, *name;
    const char *args; /* the arguments' JSON text, sent as a string */
    size_t args_len;
} ag_api_tool_call;

/* One choice of a whole (non-streamed) response. */
typedef struct ag_api_choice {
    const char *text; /* with tool calls: the content outside them ("content": null when empty) */
    size_t len;
    const char *finish_reason;
    const ag_api_logprobs *logprobs; /* NULL: "logprobs": null */
    const ag_api_tool_call *calls;
    size_t n_calls;
} ag_api_choice;

/*
 * A whole response's JSON, appended to out.  It returns the length of its
 * opening (`{"id":...,"object":...,"created":N`), the only part that differs
 * between two responses carrying the same choices; the rest is what the
 * response cache keeps and sends after ag_api_response_open_write's opening.
 */
size_t ag_api_response_write(const ag_api_meta *m, const ag_api_choice *choices, size_t n, const ag_api_usage *u,
                             ag_buf *out);
void ag_api_response_open_write(const ag_api_meta *m, ag_buf *out);
/*
 * One stream chunk's JSON (without the SSE framing): a delta of text for
 * choice `index` (chat: with the role when `first`), and/or its finish
 * reason; usage_null adds "usage":null as OpenAI does when usage was asked.
 */
void ag_api_chunk_write(const ag_api_meta *m, int index, bool first, const char *text, size_t len,
                        const char *finish_reason, const ag_api_logprobs *lp, bool usage_null, ag_buf *out);
/*
 * A stream chunk of a tool call's delta for choice `index`, as OpenAI sends
 * them: the call's first chunk carries index, id, type and name with empty
 * arguments (id non-NULL), the later ones index and an arguments fragment.
 */
void ag_api_tool_chunk_write(const ag_api_meta *m, int index, size_t call, const char *id, const char *name,
                             const char *args, size_t args_len, bool usage_null, ag_buf *out);
/* The last chunk when stream_options.include_usage: "choices":[] and the usage. */
void ag_api_usage_chunk_write(const ag_api_meta *m, const ag_api_usage *u, ag_buf *out);

/*
 * POST /tokenize: {"prompt"|"content": text, "add_special": bool} or
 * {"messages": [...]} (rendered with the chat template) -> {"count",
 * "max_model_len", "tokens"} (vLLM's shape).  POST /detokenize: {"tokens":
 * [ids]} -> {"prompt": text}.  The response JSON is appended to out.
 */
ag_status ag_api_tokenize(const ag_api_model *m, const char *body, size_t len, ag_arena *arena, ag_buf *out,
                          ag_api_error *err);
ag_status ag_api_detokenize(const ag_api_model *m, const char *body, size_t len, ag_arena *arena, ag_buf *out,
                            ag_api_error *err);

/* The finish_reason of an engine finish ("stop" or "length"). */
const char *ag_api_finish_reason(ag_finish f);

#endif
