/*
 * bodies.h - deterministic JSON inputs for bench_json: OpenAI chat request
 * bodies of three sizes and a generic record corpus.  Same seed, same bytes.
 */
#ifndef AG_BENCH_BODIES_H
#define AG_BENCH_BODIES_H
#include "base/buf.h"

/* ~1 KB: a short multi-turn chat request with sampling parameters. */
void bench_body_chat_1k(ag_buf *out);
/* ~64 KB: a long pasted document in one user message (escaped newlines, quotes). */
void bench_body_chat_64k(ag_buf *out);
/* ~1 MB: a long conversation, about a third of the text CJK/emoji/accented, some as \u escapes. */
void bench_body_chat_1m(ag_buf *out);
/* ~1 MB: generic records (ints, doubles, booleans, nulls, short strings, nesting). */
void bench_body_generic_1m(ag_buf *out);
#endif
