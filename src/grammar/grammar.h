/*
 * grammar.h - constrained decoding: grammars compiled to a byte-level
 * pushdown automaton, and the set of tokens each of its states allows.
 *
 * What the rest of autoglm sees:
 *   - ag_grammar: a compiled grammar, immutable once built (but for the mask
 *     cache below), refcounted so one compilation serves every request with
 *     the same schema.  Built from GBNF text (llama.cpp's syntax; JSON Schema
 *     and the tool-call formats are first translated to GBNF by schema.c).
 *   - ag_grammar_vocab: a vocabulary's token bytes as a trie, built once per
 *     model.
 *   - ag_grammar_matcher: one request's position in its grammar; it answers
 *     "may this token come next?", "which tokens may?" (a bitset over the
 *     vocabulary), "may generation end here?", and advances by a token.
 *
 * Design.  A grammar is a list of rules; a rule is alternatives of sequences
 * of elements: a byte class (256-bit set) or a reference to a rule.  Code
 * point classes ([^"\\], .) are compiled to alternatives of UTF-8 byte-range
 * sequences, so the automaton works on bytes and a token that ends inside a
 * multi-byte character needs no special state.  A parse position is a stack
 * of element positions (llama.cpp's representation); a state is the set of
 * stacks live after the bytes so far, expanded until each stack's top is a
 * byte class (an empty stack: the grammar may end here).  Rule references at
 * the end of an alternative are tail calls, so `x*` (a right-recursive rule)
 * never deepens the stack.
 *
 * Speed.  States are interned per grammar: each gets an id, a lazily filled
 * transition table by byte and, once asked for, its token mask, found by
 * walking the vocabulary's trie through the transition tables (a subtree is
 * skipped at the first byte no stack accepts, and accepted whole, unwalked,
 * where the state takes any text, as a JSON string's body does, and every
 * token below is text: matcher.c).  A mask is built once per state per
 * grammar; later requests and later tokens at that state reuse it.  XGrammar
 * splits masks into context-independent and dependent parts to share even
 * more; we share whole states, which covers JSON's repeated positions (string
 * bodies, digits, whitespace) and costs less code.  The cache is bounded
 * (ag_grammar_limits) and starts over when full.
 *
 * Threads: compile anywhere; a grammar's matchers and its cache belong to
 * one thread at a time (the engine thread), its refcount to any.
 */
#ifndef AG_GRAMMAR_GRAMMAR_H
#define AG_GRAMMAR_GRAMMAR_H

#include "autoglm/status.h"
#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ag_grammar ag_grammar;

/* Compile-time and run-time bounds, each named in its error. */
typedef struct ag_grammar_limits {
    size_t max_rules;      /* rules after repetitions and classes are expanded; 0: 20000 */
    size_t max_elements;   /* elements over all rules; 0: 400000 */
    uint32_t max_repeat;   /* the m and n of x{m,n}; 0: 2000 (llama.cpp's bound) */
    uint32_t max_stacks;   /* parse stacks live in one state (ambiguity); 0: 1024 */
    uint32_t max_depth;    /* a stack's depth (nesting); 0: 512 */
    size_t cache_bytes;    /* interned states, transition tables and masks per grammar; 0: 64 MiB */
} ag_grammar_limits;

/* Parse GBNF (llama.cpp's grammar syntax, start rule "root").  *out is the caller's (ag_grammar_release). */
ag_status ag_grammar_compile(const char *gbnf, size_t len, const ag_grammar_limits *lim, ag_grammar **out,
                             ag_err *err);
ag_grammar *ag_grammar_retain(ag_grammar *g);
void ag_grammar_release(ag_grammar *g);
/*
 * Make the grammar lazy: generation is free until the output contains
 * `word`; from the word's first byte on, the output must follow the grammar
 * (which therefore starts with the word).  llama.cpp's trigger words, for
 * tool_choice "auto".  Copied.
 */
void ag_grammar_set_trigger(ag_grammar *g, const char *word, size_t len);

/* ---- compiled grammars by text (lru.c): one thread's ------------------------- */

typedef struct ag_grammar_lru ag_grammar_lru;
/*
 * At most `capacity` grammars, and the least recently used go (their memory
 * with their last request) while their caches together pass budget_bytes;
 * each grammar's own cache is held to lim->cache_bytes.
 */
ag_grammar_lru *ag_grammar_lru_create(size_t capacity, size_t budget_bytes, const ag_grammar_limits *lim);
void ag_grammar_lru_free(ag_grammar_lru *c);
/* The grammar of gbnf with the given trigger (NULL: none), compiled now or found; *out is a new reference. */
ag_status ag_grammar_lru_get(ag_grammar_lru *c, const char *gbnf, size_t len, const char *trigger, ag_grammar **out,
                             ag_err *err);
void ag_grammar_lru_stats(const ag_grammar_lru *c, uint64_t *hits, uint64_t *misses, size_t *entries);

/* ---- JSON Schema -> GBNF (schema.c) ---------------------------------------- */

typedef struct ag_schema_opts {
    uint32_t max_depth;      /* nesting of schemas; 0: 32 */
    uint32_t max_properties; /* over the schema; 0: 5000 (OpenAI's) */
    uint32_t max_enum;       /* values of one enum; 0: 1000 (OpenAI's) */
} ag_schema_opts;

/*
 * Append to gbnf the rules of a JSON value following `schema` (JSON text),
 * under rule name `root` (and helper rules prefixed by it, so several schemas
 * can share one grammar: the tool-call formats do).  Unsupported keywords are
 * AG_EINVAL naming the keyword and its place ("properties/a/uniqueItems").
 */
ag_status ag_schema_to_gbnf(const char *schema, size_t len, const char *root, const ag_schema_opts *opts,
                            ag_buf *gbnf, ag_err *err);
/* A GBNF literal matching bytes s[0..n) exactly (quotes, backslashes, control bytes escaped). */
void ag_gbnf_literal(ag_buf *gbnf, const char *s, size_t n);
/* The rules every schema grammar uses (value, string, number, space, ...), once per grammar. */
void ag_schema_gbnf_common(ag_buf *gbnf);

/* ---- vocabularies and matching ---------------------------------------------- */

typedef struct ag_grammar_vocab ag_grammar_vocab;

/*
 * A vocabulary of n tokens: token_bytes(ctx, id, out) appends a token's bytes;
 * skip(ctx, id) is true for tokens the grammar never produces as text (control
 * tokens: their end-of-generation meaning is handled apart).
 */
ag_grammar_vocab *ag_grammar_vocab_create(size_t n, void (*token_bytes)(void *ctx, int32_t id, ag_buf *out),
                                          bool (*skip)(void *ctx, int32_t id), void *ctx);
void ag_grammar_vocab_free(ag_grammar_vocab *v);
size_t ag_grammar_vocab_size(const ag_grammar_vocab *v);

typedef struct ag_grammar_matcher ag_grammar_matcher;

/* A matcher at the grammar's start; holds a reference to g.  Borrows v. */
ag_grammar_matcher *ag_grammar_matcher_create(ag_grammar *g, const ag_grammar_vocab *v);
void ag_grammar_matcher_free(ag_grammar_matcher *m);
/* Whether the grammar constrains the next token (false while a lazy grammar waits for its trigger). */
bool ag_grammar_matcher_active(const ag_grammar_matcher *m);
/* The grammar accepts what came so far: end-of-generation tokens may come now. */
bool ag_grammar_matcher_can_end(ag_grammar_matcher *m);
/* The grammar accepts what came so far and nothing more can follow. */
bool ag_grammar_matcher_must_end(ag_grammar_matcher *m);
/* Whether token id may come next (by its bytes; end tokens are the caller's: can_end). */
bool ag_grammar_matcher_allows(ag_grammar_matcher *m, int32_t id);
/*
 * The tokens that may come next, one bit per token id ((n + 63) / 64 words),
 * borrowed until the next call on m or on any matcher of its grammar; NULL
 * while inactive.  *n_allowed counts them.
 */
const uint64_t *ag_grammar_matcher_mask(ag_grammar_matcher *m, size_t *n_allowed);
/* Advance by a token's bytes; false (state unchanged) when the grammar rejects them. */
bool ag_grammar_matcher_accept(ag_grammar_matcher *m, int32_t id);
bool ag_grammar_matcher_accept_bytes(ag_grammar_matcher *m, const uint8_t *p, size_t n);

/* The grammar's cache, for tests and the bench. */
typedef struct ag_grammar_cache_stats {
    size_t states, masks, bytes, resets;
} ag_grammar_cache_stats;
void ag_grammar_cache_stats_get(const ag_grammar *g, ag_grammar_cache_stats *out);
/* The cache's size as its owner last left it: any thread may read it (lru.c's budget). */
size_t ag_grammar_cache_bytes(const ag_grammar *g);

#endif
