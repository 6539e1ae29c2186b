/*
 * matcher.c - running a compiled grammar: interned parse states, their
 * transitions by byte, token masks over a vocabulary trie, and the
 * per-request matcher (see grammar.h for the design).
 *
 * A state is a canonical set of stacks (sorted, no duplicates), encoded as
 * words [len, e_0 .. e_len-1] one stack after another in the cache's pool;
 * e_len-1 is the top, always a byte-class element (an empty stack means the
 * grammar may end).  States are interned by content in an open-addressing
 * table, so equal positions reached by different paths (or requests) share
 * one id, one transition table and one mask.
 *
 * Invariant: ids are valid for one cache generation.  When the cache grows
 * past limits.cache_bytes it is emptied between calls (never during a mask
 * walk) and the generation advances; a matcher keeps its state's words and
 * re-interns them when it sees a new generation.
 */
#include "grammar/internal.h"

#include "base/alloc.h"
#include "base/hash.h"
#include "base/utf8.h"

#include <stdlib.h>
#include <string.h>

/* ---- vocabulary trie ---------------------------------------------------------- */

typedef struct vnode {
    uint32_t end;    /* one past this node's subtree */
    uint32_t tok_lo; /* the subtree's tokens are ids[tok_lo .. end's tok_lo); this node's own the first n_tok */
    uint32_t n_tok;
    uint8_t byte;
    bool text;       /* every token below reads, from this node's byte on, as whole characters of text (below) */
    bool ascii;      /* ... and as ASCII text only */
    uint8_t chars;   /* the most bytes of ASCII text any of them has from here (255: that many or more) */
} vnode;

struct ag_grammar_vocab {
    size_t n;           /* tokens */
    uint8_t *bytes;     /* every token's bytes, one after another */
    uint32_t *off, *len; /* [n]: where token i's bytes are; len 0 for tokens the grammar never produces */
    vnode *nodes; /* the trie in preorder (one array: the mask walk reads each node once, in order) */
    size_t n_nodes;
    uint32_t n_sorted; /* tokens in the trie */
    int32_t *ids;
};

/*
 * "Text": printable ASCII but the quote and the backslash, or any valid
 * multi-byte UTF-8 character: what a JSON string's body takes raw.  A state
 * that every such character leads back to (a string body, gst.text_loop)
 * accepts a whole subtree of text tokens without a walk (walk_trie).
 */
static bool text_ascii(uint8_t b) { return b >= 0x20 && b < 0x7F && b != '"' && b != '\\'; }


typedef struct vtok {
    const uint8_t *p;
    uint32_t len;
    int32_t id;
} vtok;

static int cmp_vtok(const void *a, const void *b) {
    const vtok *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

ag_grammar_vocab *ag_grammar_vocab_create(size_t n, void (*token_bytes)(void *ctx, int32_t id, ag_buf *out),
                                          bool (*skip)(void *ctx, int32_t id), void *ctx) {
    ag_grammar_vocab *v = ag_xcalloc(1, sizeof *v);
    v->n = n;
    v->off = ag_xcalloc(n ? n : 1, sizeof *v->off);
    v->len = ag_xcalloc(n ? n : 1, sizeof *v->len);
    ag_buf all;
    ag_buf_init(&all);
    for (size_t i = 0; i < n; i++) {
        v->off[i] = (uint32_t)all.len;
        if (skip && skip(ctx, (int32_t)i)) continue;
        token_bytes(ctx, (int32_t)i, &all);
        v->len[i] = (uint32_t)(all.len - v->off[i]);
    }
    size_t total = all.len;
    v->bytes = (uint8_t *)ag_buf_detach(&all, NULL);
    vtok *t = ag_xmalloc((n ? n : 1) * sizeof *t);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (v->len[i]) t[m++] = (vtok){v->bytes + v->off[i], v->len[i], (int32_t)i};
    qsort(t, m, sizeof *t, cmp_vtok);
    v->nodes = ag_xcalloc(total + 1, sizeof *v->nodes);
    v->ids = ag_xmalloc((m ? m : 1) * sizeof *v->ids);
    uint32_t max_len = 0;
    for (size_t i = 0; i < m; i++) max_len = t[i].len > max_len ? t[i].len : max_len;
    uint32_t *path = ag_xmalloc((max_len + 1) * sizeof *path);
    bool *text = ag_xmalloc((max_len + 1) * sizeof *text); /* text[d]: the token's bytes from d on are text */
    bool *ascii = ag_xmalloc((max_len + 1) * sizeof *ascii); /* ascii[d]: ... and ASCII only */
    uint32_t depth = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t lcp = 0;
        if (i) {
            uint32_t k = t[i].len < t[i - 1].len ? t[i].len : t[i - 1].len;
            while (lcp < k && t[i].p[lcp] == t[i - 1].p[lcp]) lcp++;
        }
        while (depth > lcp) v->nodes[path[--depth]].end = (uint32_t)v->n_nodes;
        for (; depth < t[i].len; depth++) {
            uint32_t node = (uint32_t)v->n_nodes++;
            v->nodes[node] = (vnode){.byte = t[i].p[depth], .tok_lo = (uint32_t)i, .text = true, .ascii = true};
            path[depth] = node;
        }
        v->nodes[path[t[i].len - 1]].n_tok++; /* its own tokens come first in its subtree: a prefix sorts first */
        v->ids[i] = t[i].id;
        text[t[i].len] = ascii[t[i].len] = true;
        for (uint32_t d = t[i].len; d-- > 0;) {
            uint32_t cp;
            size_t c = text_ascii(t[i].p[d]) ? 1 : t[i].p[d] >= 0x80 ? ag_utf8_decode(t[i].p + d, t[i].len - d, &cp) : 0;
            text[d] = c && text[d + c];
            ascii[d] = c == 1 && ascii[d + 1];
            vnode *node = &v->nodes[path[d]];
            node->text &= text[d];
            node->ascii &= ascii[d];
            uint32_t n_ascii = t[i].len - d;
            if (ascii[d] && n_ascii > node->chars) node->chars = (uint8_t)(n_ascii < 255 ? n_ascii : 255);
        }
    }
    while (depth > 0) v->nodes[path[--depth]].end = (uint32_t)v->n_nodes;
    v->n_sorted = (uint32_t)m;
    free(ascii);
    free(text);
    free(path);
    free(t);
    return v;
}

void ag_grammar_vocab_free(ag_grammar_vocab *v) {
    if (!v) return;
    free(v->bytes);
    free(v->off);
    free(v->len);
    free(v->nodes);
    free(v->ids);
    free(v);
}

size_t ag_grammar_vocab_size(const ag_grammar_vocab *v) { return v->n; }

/* ---- interned states ------------------------------------------------------------ */

enum { UNKNOWN = -2, DEAD = -1 };

typedef struct gst {
    uint32_t off, n_words, n_stacks;
    bool complete; /* holds the empty stack */
    int32_t ascii_next; /* the state every ASCII text byte leads to; DEAD when they differ; UNKNOWN */
    int16_t ascii_run;  /* ASCII text bytes accepted in a row from here (up to 254); -1 unknown */
    int8_t text_loop;   /* every text character leads back here (1), or not (0); -1 unknown */
    int32_t *next; /* [256] by byte: a state id, DEAD, or UNKNOWN; NULL until first asked */
    uint64_t *mask; /* allowed tokens; NULL until asked */
    uint32_t n_allowed;
    uint64_t hash;
} gst;

struct ag_gcache {
    const ag_grammar_vocab *vocab;
    uint32_t *pool; /* states' words */
    size_t n_pool, cap_pool;
    gst *st;
    size_t n_st, cap_st;
    int32_t *table; /* open addressing over state ids, -1 empty */
    size_t table_mask;
    size_t bytes, resets, masks;
    uint64_t gen;
    /* building a state: stacks as [len, words...], and their canonical order */
    uint32_t *scratch;
    size_t n_scratch, cap_scratch;
    uint32_t n_built;
    bool overflow;
    uint32_t *order;
    size_t cap_order;
};

static void pool_reserve(uint32_t **p, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    *p = ag_xrealloc(*p, c * sizeof **p);
    *cap = c;
}

static void cache_clear(ag_gcache *c) {
    for (size_t i = 0; i < c->n_st; i++) {
        free(c->st[i].next);
        free(c->st[i].mask);
    }
    c->n_st = c->n_pool = c->bytes = 0;
    if (c->table) memset(c->table, 0xFF, (c->table_mask + 1) * sizeof *c->table);
    c->gen++;
}

void ag_gcache_free(ag_gcache *c) {
    if (!c) return;
    cache_clear(c);
    free(c->pool);
    free(c->st);
    free(c->table);
    free(c->scratch);
    free(c->order);
    free(c);
}

static ag_gcache *cache_of(ag_grammar *g, const ag_grammar_vocab *v) {
    if (!g->cache) {
        g->cache = ag_xcalloc(1, sizeof *g->cache);
        g->cache->gen = 1;
    }
    ag_gcache *c = g->cache;
    if (c->vocab != v) {
        cache_clear(c);
        c->vocab = v;
    }
    return c;
}

/* One stack onto the state being built; too deep or too many stacks set the overflow flag and drop it. */
static void emit(const ag_grammar *g, ag_gcache *c, const uint32_t *stk, uint32_t len) {
    if (len > g->lim.max_depth || c->n_built >= g->lim.max_stacks) {
        c->overflow = true;
        return;
    }
    pool_reserve(&c->scratch, &c->cap_scratch, c->n_scratch + len + 1);
    c->scratch[c->n_scratch++] = len;
    memcpy(c->scratch + c->n_scratch, stk, len * sizeof *stk);
    c->n_scratch += len;
    c->n_built++;
}

/*
 * Expand stk (len words, ours to change) until its top is a byte class:
 * an END pops the frame, a RULE becomes its continuation (dropped when the
 * reference ends its alternative: a tail call) with each of the rule's
 * alternatives pushed on a copy.  Terminates because the grammar has no left
 * recursion (gbnf.c checks).
 */
static void advance(const ag_grammar *g, ag_gcache *c, uint32_t *stk, uint32_t len) {
    for (;;) {
        if (len == 0) {
            emit(g, c, stk, 0);
            return;
        }
        uint32_t p = stk[len - 1];
        ag_gelem e = g->el[p];
        if (e.type == AG_GELEM_END) {
            len--;
            continue;
        }
        if (e.type == AG_GELEM_BYTES) {
            emit(g, c, stk, len);
            return;
        }
        if (g->el[p + 1].type == AG_GELEM_END) len--;
        else stk[len - 1] = p + 1;
        if (len + 1 > g->lim.max_depth) {
            c->overflow = true;
            return;
        }
        uint32_t *copy = ag_xmalloc((len + 1) * sizeof *copy);
        for (uint32_t a = 0; a < g->alt_n[e.v]; a++) {
            memcpy(copy, stk, len * sizeof *stk);
            copy[len] = g->alt_start[g->alt_first[e.v] + a];
            advance(g, c, copy, len + 1);
        }
        free(copy);
        return;
    }
}

static int cmp_stack_words(const uint32_t *a, const uint32_t *b) {
    if (a[0] != b[0]) return a[0] < b[0] ? -1 : 1;
    for (uint32_t i = 1; i <= a[0]; i++)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
}

/* Sort the built stacks' offsets (insertion sort: a state holds few stacks). */
static void sort_built(ag_gcache *c) {
    pool_reserve(&c->order, &c->cap_order, c->n_built + 1);
    uint32_t k = 0;
    for (size_t o = 0; o < c->n_scratch; o += c->scratch[o] + 1) c->order[k++] = (uint32_t)o;
    for (uint32_t i = 1; i < k; i++) {
        uint32_t x = c->order[i], j = i;
        while (j > 0 && cmp_stack_words(c->scratch + c->order[j - 1], c->scratch + x) > 0) {
            c->order[j] = c->order[j - 1];
            j--;
        }
        c->order[j] = x;
    }
}

static void table_grow(ag_gcache *c) {
    size_t cap = c->table ? 2 * (c->table_mask + 1) : 1024;
    free(c->table);
    c->table = ag_xmalloc(cap * sizeof *c->table);
    memset(c->table, 0xFF, cap * sizeof *c->table);
    c->table_mask = cap - 1;
    for (size_t i = 0; i < c->n_st; i++) {
        size_t h = c->st[i].hash & c->table_mask;
        while (c->table[h] >= 0) h = (h + 1) & c->table_mask;
        c->table[h] = (int32_t)i;
    }
}

/* The id of the state built in scratch (canonical: sorted, duplicates dropped); DEAD when it holds no stack. */
static int32_t intern_built(ag_gcache *c) {
    if (c->n_built == 0) return DEAD;
    sort_built(c);
    size_t start = c->n_pool;
    uint32_t n_stacks = 0;
    bool complete = false;
    const uint32_t *prev = NULL;
    for (uint32_t i = 0; i < c->n_built; i++) {
        const uint32_t *s = c->scratch + c->order[i];
        if (prev && cmp_stack_words(prev, s) == 0) continue;
        pool_reserve(&c->pool, &c->cap_pool, c->n_pool + s[0] + 1);
        memcpy(c->pool + c->n_pool, s, (s[0] + 1) * sizeof *s);
        c->n_pool += s[0] + 1;
        complete |= s[0] == 0;
        n_stacks++;
        prev = s;
    }
    size_t n_words = c->n_pool - start;
    uint64_t h = ag_hash_bytes(c->pool + start, n_words * sizeof *c->pool, 0x9a77a5);
    if (!c->table || 4 * (c->n_st + 1) > 3 * (c->table_mask + 1)) table_grow(c);
    size_t i = h & c->table_mask;
    for (; c->table[i] >= 0; i = (i + 1) & c->table_mask) {
        const gst *o = &c->st[c->table[i]];
        if (o->hash == h && o->n_words == n_words &&
            memcmp(c->pool + o->off, c->pool + start, n_words * sizeof *c->pool) == 0) {
            c->n_pool = start;
            return c->table[i];
        }
    }
    if (c->n_st == c->cap_st) {
        c->cap_st = c->cap_st ? 2 * c->cap_st : 256;
        c->st = ag_xrealloc(c->st, c->cap_st * sizeof *c->st);
    }
    int32_t id = (int32_t)c->n_st++;
    c->st[id] = (gst){.off = (uint32_t)start, .n_words = (uint32_t)n_words, .n_stacks = n_stacks,
                      .complete = complete, .ascii_next = UNKNOWN, .ascii_run = -1, .text_loop = -1, .hash = h};
    c->table[i] = id;
    c->bytes += sizeof(gst) + n_words * sizeof *c->pool + 2 * sizeof *c->table;
    return id;
}

static void built_reset(ag_gcache *c) {
    c->n_scratch = 0;
    c->n_built = 0;
    c->overflow = false;
}

static int32_t initial_state(const ag_grammar *g, ag_gcache *c) {
    built_reset(c);
    uint32_t s[1];
    for (uint32_t a = 0; a < g->alt_n[g->root]; a++) {
        s[0] = g->alt_start[g->alt_first[g->root] + a];
        advance(g, c, s, 1);
    }
    return intern_built(c);
}

/* The state after byte b from state s (computed once, then a table load). */
static int32_t step_slow(const ag_grammar *g, ag_gcache *c, int32_t s, uint8_t b) {
    if (!c->st[s].next) {
        c->st[s].next = ag_xmalloc(256 * sizeof *c->st[s].next);
        for (int i = 0; i < 256; i++) c->st[s].next[i] = UNKNOWN;
        c->bytes += 256 * sizeof(int32_t);
    }
    built_reset(c);
    uint32_t *w = ag_xmalloc((g->lim.max_depth + 1) * sizeof *w);
    const gst *S = &c->st[s];
    for (uint32_t o = S->off, k = 0; k < S->n_stacks; k++) {
        uint32_t len = c->pool[o];
        const uint32_t *stk = c->pool + o + 1;
        o += len + 1;
        if (!len) continue;
        uint32_t top = stk[len - 1];
        if (!ag_gcls_has(g->cls[g->el[top].v], b)) continue;
        memcpy(w, stk, len * sizeof *w);
        w[len - 1] = top + 1;
        advance(g, c, w, len); /* never interns: S stays valid */
    }
    free(w);
    int32_t id = intern_built(c);
    c->st[s].next[b] = id;
    return id;
}

static inline int32_t step(const ag_grammar *g, ag_gcache *c, int32_t s, uint8_t b) {
    const int32_t *nx = c->st[s].next;
    if (nx && nx[b] != UNKNOWN) return nx[b];
    return step_slow(g, c, s, b);
}

static int32_t walk_bytes(const ag_grammar *g, ag_gcache *c, int32_t s, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n && s >= 0; i++) s = step(g, c, s, p[i]);
    return s;
}

/* Answers of continues_to already found, for one text_loop check (the states after a lead byte are few). */
typedef struct cont_memo {
    int32_t x[32];
    int8_t k[32];
    bool ok[32];
    int n;
} cont_memo;

/* Whether every k-byte run of continuation bytes from state x ends at state s. */
static bool continues_to(const ag_grammar *g, ag_gcache *c, int32_t x, int k, int32_t s, cont_memo *memo) {
    if (k == 0) return x == s;
    for (int i = 0; i < memo->n; i++)
        if (memo->x[i] == x && memo->k[i] == k) return memo->ok[i];
    bool ok = true;
    for (int b = 0x80; b <= 0xBF && ok; b++) {
        int32_t y = step(g, c, x, (uint8_t)b);
        ok = y >= 0 && continues_to(g, c, y, k - 1, s, memo);
    }
    if (memo->n < 32) memo->x[memo->n] = x, memo->k[memo->n] = (int8_t)k, memo->ok[memo->n++] = ok;
    return ok;
}

/* The state every ASCII text byte leads to from s, or DEAD when they do not all lead to one. */
static int32_t ascii_next(const ag_grammar *g, ag_gcache *c, int32_t s) {
    if (c->st[s].ascii_next != UNKNOWN) return c->st[s].ascii_next;
    int32_t to = step(g, c, s, ' ');
    for (int b = 0x21; b < 0x7F && to >= 0; b++)
        if (text_ascii((uint8_t)b) && step(g, c, s, (uint8_t)b) != to) to = DEAD;
    c->st[s].ascii_next = to;
    return to;
}

/*
 * Whether every text character (text_ascii, or a valid multi-byte UTF-8
 * character) leads from s back to s, as in a JSON string's body: then every
 * token that is text from some byte on is accepted there.  Checked once per
 * state (the ASCII part first, which most states fail); the continuation runs
 * collapse quickly since the states after a lead byte are few.
 */
static bool text_loop(const ag_grammar *g, ag_gcache *c, int32_t s) {
    if (c->st[s].text_loop >= 0) return c->st[s].text_loop;
    static const struct { uint8_t lead_lo, lead_hi, lo, hi, more; } leads[] = {
        {0xC2, 0xDF, 0x80, 0xBF, 0}, {0xE0, 0xE0, 0xA0, 0xBF, 1}, {0xE1, 0xEC, 0x80, 0xBF, 1}, {0xED, 0xED, 0x80, 0x9F, 1},
        {0xEE, 0xEF, 0x80, 0xBF, 1}, {0xF0, 0xF0, 0x90, 0xBF, 2}, {0xF1, 0xF3, 0x80, 0xBF, 2}, {0xF4, 0xF4, 0x80, 0x8F, 2}};
    bool ok = ascii_next(g, c, s) == s;
    cont_memo memo = {.n = 0};
    for (size_t r = 0; r < sizeof leads / sizeof leads[0] && ok; r++)
        for (int l = leads[r].lead_lo; l <= leads[r].lead_hi && ok; l++) {
            int32_t x = step(g, c, s, (uint8_t)l);
            ok = x >= 0;
            for (int b2 = leads[r].lo; b2 <= leads[r].hi && ok; b2++) {
                int32_t y = step(g, c, x, (uint8_t)b2);
                ok = y >= 0 && continues_to(g, c, y, leads[r].more, s, &memo);
            }
        }
    c->st[s].text_loop = ok;
    return ok;
}

enum { RUN_ANY = 255 }; /* any number in a row (vnode.chars saturates there too) */

/*
 * How many ASCII text bytes in a row s accepts, following ascii_next (a
 * counted string, maxLength, is a chain of states), up to 254, or RUN_ANY
 * for a loop.  The chain's answers are filled from its end.
 */
static int ascii_run(const ag_grammar *g, ag_gcache *c, int32_t s) {
    if (c->st[s].ascii_run >= 0) return c->st[s].ascii_run;
    int32_t chain[RUN_ANY];
    int n = 0, run;
    for (int32_t x = s;;) {
        if (c->st[x].ascii_run >= 0) {
            run = c->st[x].ascii_run;
            break;
        }
        int32_t y = ascii_next(g, c, x);
        if (y < 0 || n == RUN_ANY - 1) { /* no run, or one too long to follow: walked as usual */
            c->st[x].ascii_run = 0;
            run = 0;
            break;
        }
        if (y == x) {
            c->st[x].ascii_run = RUN_ANY;
            run = RUN_ANY;
            break;
        }
        chain[n++] = x;
        x = y;
    }
    while (n-- > 0) {
        if (run != RUN_ANY) run = run + 1 < RUN_ANY ? run + 1 : RUN_ANY - 1;
        c->st[chain[n]].ascii_run = (int16_t)run;
    }
    return c->st[s].ascii_run;
}

/* Mark every token under trie nodes [begin, end) that state s accepts whole. */
static void walk_trie(const ag_grammar *g, ag_gcache *c, const ag_grammar_vocab *v, uint32_t begin, uint32_t end,
                      int32_t s, uint64_t *mask, uint32_t *count) {
    bool loop = text_loop(g, c, s);
    int run = loop ? RUN_ANY : ascii_run(g, c, s);
    const int32_t *nx = c->st[s].next; /* s's transitions (a table of its own: it stays put as states are added) */
    for (uint32_t i = begin; i < end; i = v->nodes[i].end) {
        const vnode *n = &v->nodes[i];
        /* text from here that s takes whole (a string's body; a counted one as far as its count goes): all in */
        if ((loop && n->text) || (n->ascii && run && (run == RUN_ANY || n->chars <= run))) {
            uint32_t hi = n->end < v->n_nodes ? v->nodes[n->end].tok_lo : v->n_sorted;
            for (uint32_t k = n->tok_lo; k < hi; k++) mask[v->ids[k] >> 6] |= 1ull << (v->ids[k] & 63);
            *count += hi - n->tok_lo;
            continue;
        }
        int32_t ns = nx ? nx[n->byte] : UNKNOWN;
        if (ns == UNKNOWN) {
            ns = step_slow(g, c, s, n->byte);
            nx = c->st[s].next;
        }
        if (ns < 0) continue;
        for (uint32_t k = 0; k < n->n_tok; k++) {
            int32_t id = v->ids[n->tok_lo + k];
            mask[id >> 6] |= 1ull << (id & 63);
        }
        *count += n->n_tok;
        if (i + 1 < n->end) walk_trie(g, c, v, i + 1, n->end, ns, mask, count);
    }
}

/* ---- matcher -------------------------------------------------------------------- */

struct ag_grammar_matcher {
    ag_grammar *g;
    const ag_grammar_vocab *v;
    int32_t state; /* in generation gen; DEAD after a rejected lazy start */
    uint64_t gen;
    uint32_t *words; /* the state's stacks, to find it again after the cache starts over */
    size_t n_words, cap_words;
    bool active;
    uint64_t *none; /* the empty mask, for a dead state */
    ag_buf tail; /* lazy grammars before the trigger: the output's last bytes */
};

static void remember(ag_grammar_matcher *m, ag_gcache *c) {
    m->gen = c->gen;
    if (m->state < 0) return;
    const gst *S = &c->st[m->state];
    pool_reserve(&m->words, &m->cap_words, S->n_words);
    memcpy(m->words, c->pool + S->off, S->n_words * sizeof *m->words);
    m->n_words = S->n_words;
}

/* The matcher's state id in the current generation, emptying an overfull cache first. */
static int32_t current(ag_grammar_matcher *m, ag_gcache **cp) {
    ag_gcache *c = cache_of(m->g, m->v);
    *cp = c;
    if (c->bytes > m->g->lim.cache_bytes) {
        cache_clear(c);
        c->resets++;
    }
    if (m->gen != c->gen && m->state >= 0) {
        built_reset(c);
        for (size_t o = 0; o < m->n_words; o += m->words[o] + 1) emit(m->g, c, m->words + o + 1, m->words[o]);
        m->state = intern_built(c);
        m->gen = c->gen;
    }
    atomic_store_explicit(&m->g->cache_bytes, c->bytes, memory_order_relaxed); /* what the last call grew */
    return m->state;
}

ag_grammar_matcher *ag_grammar_matcher_create(ag_grammar *g, const ag_grammar_vocab *v) {
    ag_grammar_matcher *m = ag_xcalloc(1, sizeof *m);
    m->g = ag_grammar_retain(g);
    m->v = v;
    ag_buf_init(&m->tail);
    ag_gcache *c = cache_of(g, v);
    m->state = initial_state(g, c);
    remember(m, c);
    m->active = !g->trigger_len;
    return m;
}

void ag_grammar_matcher_free(ag_grammar_matcher *m) {
    if (!m) return;
    ag_grammar_release(m->g);
    free(m->words);
    free(m->none);
    ag_buf_deinit(&m->tail);
    free(m);
}

bool ag_grammar_matcher_active(const ag_grammar_matcher *m) { return m->active; }

bool ag_grammar_matcher_can_end(ag_grammar_matcher *m) {
    if (!m->active) return true;
    ag_gcache *c;
    int32_t s = current(m, &c);
    return s >= 0 && c->st[s].complete;
}

bool ag_grammar_matcher_must_end(ag_grammar_matcher *m) {
    if (!m->active) return false;
    ag_gcache *c;
    int32_t s = current(m, &c);
    return s >= 0 && c->st[s].complete && c->st[s].n_stacks == 1;
}

bool ag_grammar_matcher_allows(ag_grammar_matcher *m, int32_t id) {
    if (!m->active) return true;
    if (id < 0 || (size_t)id >= m->v->n || !m->v->len[id]) return false;
    ag_gcache *c;
    int32_t s = current(m, &c);
    return s >= 0 && walk_bytes(m->g, c, s, m->v->bytes + m->v->off[id], m->v->len[id]) >= 0;
}

const uint64_t *ag_grammar_matcher_mask(ag_grammar_matcher *m, size_t *n_allowed) {
    *n_allowed = 0;
    if (!m->active) return NULL;
    ag_gcache *c;
    int32_t s = current(m, &c);
    size_t words = (m->v->n + 63) / 64;
    if (s < 0) { /* dead: nothing is allowed */
        if (!m->none) m->none = ag_xcalloc(words ? words : 1, sizeof *m->none);
        return m->none;
    }
    if (!c->st[s].mask) {
        uint64_t *mask = ag_xcalloc(words ? words : 1, sizeof *mask);
        uint32_t count = 0;
        walk_trie(m->g, c, m->v, 0, (uint32_t)m->v->n_nodes, s, mask, &count);
        c->st[s].mask = mask; /* c->st may have moved during the walk: index again */
        c->st[s].n_allowed = count;
        c->bytes += words * sizeof *mask;
        c->masks++;
    }
    *n_allowed = c->st[s].n_allowed;
    return c->st[s].mask;
}

bool ag_grammar_matcher_accept_bytes(ag_grammar_matcher *m, const uint8_t *p, size_t n) {
    ag_gcache *c;
    if (!m->active) {
        /* look for the trigger in what came so far: keep only a trigger's length of the past */
        size_t tl = m->g->trigger_len;
        ag_buf_append(&m->tail, p, n);
        const char *t = m->tail.data;
        for (size_t at = 0; at + tl <= m->tail.len; at++)
            if (memcmp(t + at, m->g->trigger, tl) == 0) {
                m->active = true;
                int32_t s = current(m, &c);
                int32_t ns = s >= 0 ? walk_bytes(m->g, c, s, (const uint8_t *)t + at, m->tail.len - at) : DEAD;
                m->state = ns;
                remember(m, c);
                ag_buf_reset(&m->tail);
                return ns >= 0;
            }
        if (m->tail.len >= tl) {
            size_t keep = tl - 1;
            memmove(m->tail.data, m->tail.data + m->tail.len - keep, keep);
            m->tail.len = keep;
        }
        return true;
    }
    int32_t s = current(m, &c);
    if (s < 0) return false;
    int32_t ns = walk_bytes(m->g, c, s, p, n);
    if (ns < 0) return false;
    m->state = ns;
    remember(m, c);
    return true;
}

bool ag_grammar_matcher_accept(ag_grammar_matcher *m, int32_t id) {
    if (id < 0 || (size_t)id >= m->v->n || !m->v->len[id]) return !m->active && id >= 0 && (size_t)id < m->v->n;
    return ag_grammar_matcher_accept_bytes(m, m->v->bytes + m->v->off[id], m->v->len[id]);
}

size_t ag_grammar_cache_bytes(const ag_grammar *g) {
    return atomic_load_explicit(&((ag_grammar *)g)->cache_bytes, memory_order_relaxed);
}

void ag_grammar_cache_stats_get(const ag_grammar *g, ag_grammar_cache_stats *out) {
    const ag_gcache *c = g->cache;
    *out = (ag_grammar_cache_stats){0};
    if (!c) return;
    out->states = c->n_st;
    out->masks = c->masks;
    out->bytes = c->bytes;
    out->resets = c->resets;
}
