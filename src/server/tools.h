/*
 * tools.h - OpenAI tool calling over the chat formats of the models we serve:
 * how tools and past calls are written into the prompt, the grammar an answer
 * with calls must follow, and the parser that turns an answer back into
 * content and tool_calls (whole, or as stream deltas).
 *
 * Formats (../shared/refs/structured-output-and-tools.md section 3):
 *   chatml   Hermes/Qwen 2.5: <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>, several
 *            separated by a newline; tools in the system turn inside <tools></tools>; results in a user turn
 *            as <tool_response>\n...\n</tool_response>.
 *   llama3   Llama 3.1 JSON: {"name": "f", "parameters": {...}}, one call per answer; tools in the first
 *            user turn; results in an ipython turn.
 *   chatglm4 GLM-4: the function's name on the first line, its JSON arguments after, one call per answer;
 *            tools in the system turn under "# 可用工具"; results in an observation turn.
 * tool_choice "required" and a named function constrain the answer with the
 * grammar from its first token; "auto" with a lazy grammar that starts at the
 * format's opening text (chatml, llama3); GLM-4's calls have no opening text,
 * so its "auto" is unconstrained and parsed (a first line naming a tool).
 */
#ifndef AG_SERVER_TOOLS_H
#define AG_SERVER_TOOLS_H

#include "grammar/grammar.h"
#include "server/openai.h"

bool ag_tools_template_supported(ag_chat_template t);

/*
 * Rewrite a conversation for the template when tools are in play: the tools'
 * description goes into the system turn (or the first user turn), consecutive
 * tool results become the turn the format reads them from.  msgs[0..*n) hold
 * each message's text already (past calls appended with ag_tools_past_call);
 * the result may have one more message (a system turn) and lives in the arena.
 */
ag_status ag_tools_messages(ag_chat_template t, const ag_api_tools *tools, ag_chat_msg **msgs, size_t *n,
                            ag_arena *a);
/* A past call of an assistant turn, in the format, appended to out (after its content). */
void ag_tools_past_call(ag_chat_template t, ag_str name, ag_str args, bool first, ag_buf *out);

/* The grammar of an answer with calls (its rules appended to gbnf) and the lazy trigger for "auto" (or NULL). */
ag_status ag_tools_gbnf(ag_chat_template t, const ag_api_tools *tools, const ag_schema_opts *so, ag_buf *gbnf,
                        const char **trigger, ag_err *err);

/*
 * The answer's parser: text goes in as it comes; content (text outside calls)
 * and calls come out, kept whole so the caller can diff them for stream
 * deltas (a call's name is complete before the call appears).
 */
typedef struct ag_toolcall {
    char id[32]; /* call_ and 24 alphanumerics */
    char name[72];
    ag_buf args; /* the arguments' JSON text as generated */
} ag_toolcall;

typedef enum ag_toolparse_state {
    AG_TOOLPARSE_CONTENT, /* text; watching for the opening */
    AG_TOOLPARSE_PROBE,   /* GLM-4 auto: is the first line a tool's name? */
    AG_TOOLPARSE_OPEN,    /* inside the opening text */
    AG_TOOLPARSE_NAME,
    AG_TOOLPARSE_MID,     /* between the name and the arguments */
    AG_TOOLPARSE_ARGS,
    AG_TOOLPARSE_CLOSE,   /* after the arguments, the format's closing text */
    AG_TOOLPARSE_TEXT,    /* after a call, or content that cannot open one any more */
} ag_toolparse_state;

typedef struct ag_toolparse {
    ag_chat_template t;
    const ag_api_tools *tools; /* borrowed */
    uint64_t seed;             /* for call ids */
    ag_toolparse_state state;
    ag_buf content, held; /* held: text that may be the start of an opening */
    ag_toolcall *calls;
    size_t n_calls;
    size_t skip;      /* bytes of fixed text still to pass (OPEN, MID, CLOSE) */
    int depth;        /* ARGS: nesting of the arguments' JSON */
    bool in_str, esc, any_args;
    char name[72];
    size_t name_len;
} ag_toolparse;

void ag_toolparse_init(ag_toolparse *p, ag_chat_template t, const ag_api_tools *tools, uint64_t seed);
void ag_toolparse_deinit(ag_toolparse *p);
void ag_toolparse_push(ag_toolparse *p, const char *text, size_t len);
/* The end of the answer: held text that opened nothing is content after all. */
void ag_toolparse_finish(ag_toolparse *p);

#endif
