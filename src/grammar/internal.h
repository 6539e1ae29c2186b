/*
 * internal.h - the compiled grammar's layout, shared by gbnf.c (which builds
 * it) and matcher.c (which runs it).  Not for other subsystems: grammar.h is
 * the API.
 *
 * Elements are one flat array.  Rule r's alternatives are sequences that
 * start at alt_start[alt_first[r]] .. alt_start[alt_first[r] + alt_n[r] - 1];
 * each sequence ends with an END element.  A stack entry is an index into
 * the element array: the next element to match in that frame.
 */
#ifndef AG_GRAMMAR_INTERNAL_H
#define AG_GRAMMAR_INTERNAL_H

#include "grammar/grammar.h"

#include <stdatomic.h>

typedef enum ag_gelem_type {
    AG_GELEM_END,   /* end of an alternative: return to the frame below */
    AG_GELEM_RULE,  /* v: the rule to expand */
    AG_GELEM_BYTES, /* v: the byte class (index into cls) */
} ag_gelem_type;

typedef struct ag_gelem {
    uint32_t type; /* ag_gelem_type */
    uint32_t v;
} ag_gelem;

typedef struct ag_gcache ag_gcache; /* matcher.c's: interned states, transitions, masks */

struct ag_grammar {
    atomic_int refs;
    ag_grammar_limits lim;
    ag_gelem *el;
    uint32_t n_el;
    uint32_t *alt_start; /* element index of each alternative's first element */
    uint32_t *alt_first; /* [rule]: its first alternative in alt_start */
    uint32_t *alt_n;     /* [rule]: its number of alternatives */
    uint32_t n_rules, n_alts;
    uint64_t (*cls)[4];  /* byte classes, 256 bits each */
    uint32_t n_cls;
    uint32_t root;
    char *trigger; /* lazy grammars: the word that starts them */
    size_t trigger_len;
    ag_gcache *cache;
    atomic_size_t cache_bytes; /* the cache's size as of its owner's last call, for the LRU's budget (lru.c) */
};

static inline bool ag_gcls_has(const uint64_t c[4], uint8_t b) { return c[b >> 6] >> (b & 63) & 1; }

#endif
