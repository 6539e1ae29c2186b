/*
 * lru.c - compiled grammars by their text, so that requests with the same
 * schema share one compilation and, more to the point, one mask cache (the
 * expensive part: a state's mask is a walk over the whole vocabulary, done
 * once per state for every request that uses the grammar).
 *
 * A small array in recency order: the server holds at most `capacity`
 * grammars (--grammar-cache), and a lookup compares a 64-bit hash before the
 * text.  Their caches grow on the engine thread as masks are built; each
 * publishes its size (ag_grammar_cache_bytes), and at every lookup the least
 * recently used grammars are let go while the sizes add up to more than the
 * budget (--grammar-cache-mb).  A grammar let go lives on while requests hold
 * it, so the memory is bounded by the budget plus the caches of grammars in
 * use.  One thread (the server's loop) uses the LRU; the grammars it hands out
 * are references the requests own.
 */
#include "grammar/grammar.h"

#include "base/alloc.h"
#include "base/hash.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    uint64_t hash;
    char *text; /* gbnf, then NUL, then the trigger */
    size_t len, trigger_len;
    ag_grammar *g;
} entry;

struct ag_grammar_lru {
    entry *e; /* most recent first */
    size_t n, cap, budget;
    ag_grammar_limits lim;
    uint64_t hits, misses, evicted;
};

ag_grammar_lru *ag_grammar_lru_create(size_t capacity, size_t budget_bytes, const ag_grammar_limits *lim) {
    ag_grammar_lru *c = ag_xcalloc(1, sizeof *c);
    c->cap = capacity ? capacity : 1;
    c->budget = budget_bytes;
    c->e = ag_xcalloc(c->cap, sizeof *c->e);
    if (lim) c->lim = *lim;
    return c;
}

static void entry_clear(entry *e) {
    free(e->text);
    ag_grammar_release(e->g);
}

void ag_grammar_lru_free(ag_grammar_lru *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) entry_clear(&c->e[i]);
    free(c->e);
    free(c);
}

/* Let the least recently used grammars go while their caches add up to more than the budget (never the first). */
static void keep_budget(ag_grammar_lru *c) {
    size_t total = 0;
    for (size_t i = 0; i < c->n; i++) total += ag_grammar_cache_bytes(c->e[i].g);
    while (c->n > 1 && total > c->budget) {
        total -= ag_grammar_cache_bytes(c->e[c->n - 1].g);
        entry_clear(&c->e[--c->n]);
        c->evicted++;
    }
}

ag_status ag_grammar_lru_get(ag_grammar_lru *c, const char *gbnf, size_t len, const char *trigger, ag_grammar **out,
                             ag_err *err) {
    size_t tl = trigger ? strlen(trigger) : 0;
    uint64_t h = ag_hash_bytes(gbnf, len, tl) ^ ag_hash_bytes(trigger ? trigger : "", tl, 7);
    for (size_t i = 0; i < c->n; i++) {
        entry *e = &c->e[i];
        if (e->hash != h || e->len != len || e->trigger_len != tl || memcmp(e->text, gbnf, len) != 0 ||
            (tl && memcmp(e->text + len + 1, trigger, tl) != 0))
            continue;
        entry hit = *e;
        memmove(c->e + 1, c->e, i * sizeof *c->e);
        c->e[0] = hit;
        c->hits++;
        *out = ag_grammar_retain(hit.g);
        keep_budget(c);
        return AG_OK;
    }
    c->misses++;
    ag_grammar *g;
    ag_status st = ag_grammar_compile(gbnf, len, &c->lim, &g, err);
    if (st != AG_OK) return st;
    if (tl) ag_grammar_set_trigger(g, trigger, tl);
    if (c->n == c->cap) entry_clear(&c->e[--c->n]);
    memmove(c->e + 1, c->e, c->n * sizeof *c->e);
    char *text = ag_xmalloc(len + tl + 2);
    memcpy(text, gbnf, len);
    text[len] = 0;
    if (tl) memcpy(text + len + 1, trigger, tl);
    text[len + 1 + tl] = 0;
    c->e[0] = (entry){h, text, len, tl, g};
    c->n++;
    *out = ag_grammar_retain(g);
    keep_budget(c);
    return AG_OK;
}

void ag_grammar_lru_stats(const ag_grammar_lru *c, uint64_t *hits, uint64_t *misses, size_t *entries) {
    *hits = c->hits, *misses = c->misses, *entries = c->n;
}
