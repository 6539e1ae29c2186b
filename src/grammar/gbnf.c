/*
 * gbnf.c - GBNF text to a compiled grammar (internal.h's layout).
 *
 * The syntax is llama.cpp's (grammars/README.md): `name ::= alternatives`,
 * start rule `root`, "literals" and [classes] with \n \r \t \\ \" \[ \] \xHH
 * \uHHHH \UHHHHHHHH escapes, `.` for any character, ( groups ), postfix
 * * + ? {m} {m,} {m,n}, `#` comments, and a rule continuing over a newline
 * after `|` or inside parentheses.  Token references (<[id]>, <think>) are
 * refused by name: our grammars are over text.
 *
 * Everything becomes rules of byte-class and rule-reference elements:
 * literals byte by byte, code point classes through their UTF-8 byte ranges
 * (utf8_ranges), groups and repetitions as generated rules (x* is
 * `R ::= x R |`, x{m,n} is m copies then n-m nested optional rules, as
 * llama.cpp does).  Left recursion (a rule that can reach itself before
 * consuming a byte) would loop the matcher, so it is an error here.
 */
#include "grammar/internal.h"

#include "base/alloc.h"
#include "base/map.h"
#include "base/utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct seq {
    ag_gelem *e;
    size_t n, cap;
} seq;

typedef struct brule {
    char *name;
    bool defined;
    seq *alts;
    size_t n_alts, cap_alts;
} brule;

typedef struct builder {
    const char *src, *end;
    const ag_grammar_limits *lim;
    ag_err *err;
    ag_status st;
    brule *rules;
    size_t n_rules, cap_rules, n_elems;
    ag_map names; /* a named rule's id + 1, keyed by its name (the rule's own copy): schemas make thousands */
    uint64_t (*cls)[4];
    size_t n_cls, cap_cls;
} builder;

/* ---- building blocks ------------------------------------------------------------ */

static bool failed(const builder *b) { return b->st != AG_OK; }

static int line_of(const builder *b, const char *p) {
    int line = 1;
    for (const char *q = b->src; q < p && q < b->end; q++) line += *q == '\n';
    return line;
}

__attribute__((format(printf, 4, 5))) static void fail(builder *b, ag_status st, const char *p, const char *fmt, ...) {
    if (failed(b)) return;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p) b->st = ag_err_set(b->err, st, "grammar line %d: %s", line_of(b, p), msg);
    else b->st = ag_err_set(b->err, st, "grammar: %s", msg);
}

static void seq_push(builder *b, seq *s, uint32_t type, uint32_t v) {
    if (++b->n_elems > b->lim->max_elements) {
        fail(b, AG_ELIMIT, NULL, "more than %zu elements (the grammar's max_elements)", b->lim->max_elements);
        return;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 8;
        s->e = ag_xrealloc(s->e, s->cap * sizeof *s->e);
    }
    s->e[s->n++] = (ag_gelem){type, v};
}

static uint32_t rule_new(builder *b, const char *name, size_t len) {
    if (b->n_rules >= b->lim->max_rules) {
        fail(b, AG_ELIMIT, NULL, "more than %zu rules (the grammar's max_rules)", b->lim->max_rules);
        return 0;
    }
    if (b->n_rules == b->cap_rules) {
        b->cap_rules = b->cap_rules ? 2 * b->cap_rules : 32;
        b->rules = ag_xrealloc(b->rules, b->cap_rules * sizeof *b->rules);
    }
    b->rules[b->n_rules] = (brule){.name = ag_xstrndup(name, len)};
    return (uint32_t)b->n_rules++;
}

static uint32_t rule_find(builder *b, const char *name, size_t len) {
    void *id = ag_map_get(&b->names, name, len);
    if (id) return (uint32_t)((uintptr_t)id - 1);
    uint32_t r = rule_new(b, name, len);
    if (!failed(b)) ag_map_put(&b->names, b->rules[r].name, len, (void *)(uintptr_t)(r + 1));
    return r;
}

/* A rule of its own for a group or a repetition, named after the rule it serves. */
static uint32_t rule_generated(builder *b, uint32_t parent) {
    char name[96];
    int n = snprintf(name, sizeof name, "%.60s#%zu", b->rules[parent].name, b->n_rules); /* # : no user name clashes */
    return rule_new(b, name, (size_t)n);
}

static seq *alt_new(builder *b, uint32_t rule) {
    brule *r = &b->rules[rule];
    if (r->n_alts == r->cap_alts) {
        r->cap_alts = r->cap_alts ? 2 * r->cap_alts : 4;
        r->alts = ag_xrealloc(r->alts, r->cap_alts * sizeof *r->alts);
    }
    r->alts[r->n_alts] = (seq){0};
    return &r->alts[r->n_alts++];
}

static void alt_add(builder *b, uint32_t rule, const ag_gelem *e, size_t n) {
    seq *s = alt_new(b, rule);
    for (size_t i = 0; i < n && !failed(b); i++) seq_push(b, s, e[i].type, e[i].v);
}

static uint32_t class_id(builder *b, const uint64_t c[4]) {
    for (size_t i = 0; i < b->n_cls; i++)
        if (memcmp(b->cls[i], c, sizeof b->cls[i]) == 0) return (uint32_t)i;
    if (b->n_cls == b->cap_cls) {
        b->cap_cls = b->cap_cls ? 2 * b->cap_cls : 64;
        b->cls = ag_xrealloc(b->cls, b->cap_cls * sizeof *b->cls);
    }
    memcpy(b->cls[b->n_cls], c, sizeof b->cls[0]);
    return (uint32_t)b->n_cls++;
}

static uint32_t byte_range_class(builder *b, uint8_t lo, uint8_t hi) {
    uint64_t c[4] = {0};
    for (unsigned x = lo; x <= hi; x++) c[x >> 6] |= 1ull << (x & 63);
    return class_id(b, c);
}

/* ---- code point classes as UTF-8 byte ranges ------------------------------------- */

typedef struct cprange {
    uint32_t lo, hi;
} cprange;


/*
 * Split [lo, hi] (no surrogates inside) into ranges whose UTF-8 encodings are
 * a product of byte ranges, and add each as one alternative of `rule` (the
 * one-byte part as a single class: ascii[] collects it).  The split is the
 * classic one (Russ Cox's utf8 ranges): first at the encoding-length
 * boundaries, then wherever the lower continuation bytes are not full.
 */
static void utf8_ranges(builder *b, uint32_t rule, uint32_t lo, uint32_t hi, uint64_t ascii[4]) {
    static const uint32_t bounds[] = {0x7F, 0x7FF, 0xFFFF};
    if (failed(b)) return;
    for (int i = 0; i < 3; i++)
        if (lo <= bounds[i] && hi > bounds[i]) {
            utf8_ranges(b, rule, lo, bounds[i], ascii);
            utf8_ranges(b, rule, bounds[i] + 1, hi, ascii);
            return;
        }
    if (hi < 0x80) {
        for (uint32_t c = lo; c <= hi; c++) ascii[c >> 6] |= 1ull << (c & 63);
        return;
    }
    for (int i = 1; i < 4; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0) {
                utf8_ranges(b, rule, lo, lo | m, ascii);
                utf8_ranges(b, rule, (lo | m) + 1, hi, ascii);
                return;
            }
            if ((hi & m) != m) {
                utf8_ranges(b, rule, lo, (hi & ~m) - 1, ascii);
                utf8_ranges(b, rule, hi & ~m, hi, ascii);
                return;
            }
        }
    }
    uint8_t a[4], z[4];
    size_t n = ag_utf8_encode(lo, a);
    ag_utf8_encode(hi, z);
    ag_gelem e[4];
    for (size_t i = 0; i < n; i++) e[i] = (ag_gelem){AG_GELEM_BYTES, byte_range_class(b, a[i], z[i])};
    alt_add(b, rule, e, n);
}

static int cmp_range(const void *x, const void *y) {
    const cprange *a = x, *b = y;
    return (a->lo > b->lo) - (a->lo < b->lo);
}

/*
 * Append to s the element matching one code point of the set r[0..n) (negated:
 * its complement): a byte class when the set is ASCII only, else a reference
 * to a generated rule of UTF-8 alternatives.  Surrogates never match.
 */
static void emit_class(builder *b, uint32_t parent, seq *s, cprange *r, size_t n, bool negate) {
    qsort(r, n, sizeof *r, cmp_range);
    cprange *set = ag_xmalloc((n + 2) * sizeof *set);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) { /* merge */
        if (m && r[i].lo <= set[m - 1].hi + 1) {
            if (r[i].hi > set[m - 1].hi) set[m - 1].hi = r[i].hi;
        } else {
            set[m++] = r[i];
        }
    }
    if (negate) {
        cprange *c = ag_xmalloc((m + 2) * sizeof *c);
        size_t k = 0;
        uint32_t next = 0;
        for (size_t i = 0; i < m; i++) {
            if (set[i].lo > next) c[k++] = (cprange){next, set[i].lo - 1};
            next = set[i].hi + 1;
        }
        if (next <= 0x10FFFF) c[k++] = (cprange){next, 0x10FFFF};
        free(set);
        set = c, m = k;
    }
    if (m == 0) {
        fail(b, AG_EINVAL, NULL, "a character class in rule '%s' matches nothing", b->rules[parent].name);
        free(set);
        return;
    }
    if (set[m - 1].hi < 0x80) { /* ASCII: one class, no rule */
        uint64_t c[4] = {0};
        for (size_t i = 0; i < m; i++)
            for (uint32_t x = set[i].lo; x <= set[i].hi; x++) c[x >> 6] |= 1ull << (x & 63);
        seq_push(b, s, AG_GELEM_BYTES, class_id(b, c));
        free(set);
        return;
    }
    uint32_t rule = rule_generated(b, parent);
    uint64_t ascii[4] = {0};
    for (size_t i = 0; i < m && !failed(b); i++) {
        uint32_t lo = set[i].lo, hi = set[i].hi;
        if (lo <= 0xDFFF && hi >= 0xD800) { /* cut the surrogates out */
            if (lo < 0xD800) utf8_ranges(b, rule, lo, 0xD7FF, ascii);
            if (hi > 0xDFFF) utf8_ranges(b, rule, 0xE000, hi, ascii);
        } else {
            utf8_ranges(b, rule, lo, hi, ascii);
        }
    }
    if ((ascii[0] | ascii[1]) != 0) {
        ag_gelem e = {AG_GELEM_BYTES, class_id(b, ascii)};
        alt_add(b, rule, &e, 1);
    }
    free(set);
    seq_push(b, s, AG_GELEM_RULE, rule);
}

/* ---- the parser ----------------------------------------------------------------- */

static bool is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static const char *skip_space(const builder *b, const char *p, bool newline_ok) {
    while (p < b->end) {
        if (*p == ' ' || *p == '\t' || (newline_ok && (*p == '\n' || *p == '\r'))) {
            p++;
        } else if (*p == '#') {
            while (p < b->end && *p != '\n') p++;
        } else {
            break;
        }
    }
    return p;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One character of a literal or class at *pp (escapes decoded, UTF-8 decoded); -1 on an error. */
static int64_t parse_char(builder *b, const char **pp) {
    const char *p = *pp;
    if (p >= b->end) return fail(b, AG_EINVAL, p, "unexpected end of grammar"), -1;
    if (*p == '\\') {
        if (++p >= b->end) return fail(b, AG_EINVAL, p, "unexpected end of grammar after \\"), -1;
        int digits = *p == 'x' ? 2 : *p == 'u' ? 4 : *p == 'U' ? 8 : 0;
        if (digits) {
            uint32_t v = 0;
            for (int i = 1; i <= digits; i++) {
                int h = p + i < b->end ? hexval(p[i]) : -1;
                if (h < 0) return fail(b, AG_EINVAL, p, "bad \\%c escape: %d hex digits expected", *p, digits), -1;
                v = v << 4 | (uint32_t)h;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                return fail(b, AG_EINVAL, p, "escape \\%c names no character (U+%X)", *p, v), -1;
            *pp = p + 1 + digits;
            return v;
        }
        *pp = p + 1;
        switch (*p) {
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case '\\': case '"': case '[': case ']': case '-': case '^': case '/': return (uint8_t)*p;
        default: return fail(b, AG_EINVAL, p, "unknown escape \\%c", *p), -1;
        }
    }
    /* a UTF-8 character, whole */
    uint32_t v;
    size_t n = ag_utf8_decode((const uint8_t *)p, (size_t)(b->end - p), &v);
    if (!n) return fail(b, AG_EINVAL, p, "invalid UTF-8 in the grammar"), -1;
    *pp = p + n;
    return v;
}

static const char *parse_alternatives(builder *b, uint32_t rule, const char *p, bool nested);

/* Replace s[start..] by its repetition {min,max} (max UINT32_MAX: unbounded). */
static void repeat(builder *b, uint32_t parent, seq *s, size_t start, uint32_t min, uint32_t max, const char *at) {
    if (min > b->lim->max_repeat || (max != UINT32_MAX && max > b->lim->max_repeat)) {
        fail(b, AG_ELIMIT, at, "a repetition count above %u (the grammar's max_repeat)", b->lim->max_repeat);
        return;
    }
    if (max < min) {
        fail(b, AG_EINVAL, at, "repetition {%u,%u}: the maximum is below the minimum", min, max);
        return;
    }
    size_t n = s->n - start;
    ag_gelem *x = ag_xmalloc((n ? n : 1) * sizeof *x);
    if (n) memcpy(x, s->e + start, n * sizeof *x);
    s->n = start;
    for (uint32_t i = 0; i < min && !failed(b); i++)
        for (size_t k = 0; k < n; k++) seq_push(b, s, x[k].type, x[k].v);
    uint32_t last = UINT32_MAX;
    if (max == UINT32_MAX) { /* R ::= x R | */
        uint32_t r = rule_generated(b, parent);
        if (!failed(b)) {
            seq *a = alt_new(b, r);
            for (size_t k = 0; k < n && !failed(b); k++) seq_push(b, a, x[k].type, x[k].v);
            seq_push(b, a, AG_GELEM_RULE, r);
            alt_new(b, r);
            last = r;
        }
    } else {
        for (uint32_t i = min; i < max && !failed(b); i++) { /* R_i ::= x R_{i-1} | */
            uint32_t r = rule_generated(b, parent);
            if (failed(b)) break;
            seq *a = alt_new(b, r);
            for (size_t k = 0; k < n && !failed(b); k++) seq_push(b, a, x[k].type, x[k].v);
            if (last != UINT32_MAX) seq_push(b, a, AG_GELEM_RULE, last);
            alt_new(b, r);
            last = r;
        }
    }
    if (last != UINT32_MAX) seq_push(b, s, AG_GELEM_RULE, last);
    free(x);
}

static bool parse_uint(builder *b, const char **pp, uint32_t *out) {
    const char *p = *pp;
    uint64_t v = 0;
    if (p >= b->end || *p < '0' || *p > '9') return false;
    while (p < b->end && *p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p++ - '0');
        if (v > UINT32_MAX - 1) v = UINT32_MAX - 1;
    }
    *pp = p;
    *out = (uint32_t)v;
    return true;
}

static const char *parse_sequence(builder *b, uint32_t rule, seq *s, const char *p, bool nested) {
    size_t last_start = SIZE_MAX;
    while (p < b->end && !failed(b)) {
        const char *at = p;
        if (*p == '"') {
            last_start = s->n;
            p++;
            while (p < b->end && *p != '"' && !failed(b)) {
                int64_t c = parse_char(b, &p);
                if (c < 0) return p;
                uint8_t u[4];
                size_t n = ag_utf8_encode((uint32_t)c, u);
                for (size_t i = 0; i < n; i++) seq_push(b, s, AG_GELEM_BYTES, byte_range_class(b, u[i], u[i]));
            }
            if (p >= b->end) return fail(b, AG_EINVAL, at, "unterminated literal"), p;
            p++;
        } else if (*p == '[') {
            last_start = s->n;
            p++;
            bool negate = p < b->end && *p == '^';
            if (negate) p++;
            size_t n = 0, cap = 8;
            cprange *r = ag_xmalloc(cap * sizeof *r);
            while (p < b->end && *p != ']' && !failed(b)) {
                int64_t lo = parse_char(b, &p), hi = lo;
                if (lo >= 0 && p + 1 < b->end && *p == '-' && p[1] != ']') {
                    p++;
                    hi = parse_char(b, &p);
                    if (hi >= 0 && hi < lo) fail(b, AG_EINVAL, at, "a class range runs backwards");
                }
                if (failed(b)) break;
                if (n == cap) r = ag_xrealloc(r, (cap *= 2) * sizeof *r);
                r[n++] = (cprange){(uint32_t)lo, (uint32_t)hi};
            }
            if (!failed(b) && p >= b->end) fail(b, AG_EINVAL, at, "unterminated character class");
            if (!failed(b)) {
                p++;
                if (n == 0 && !negate) fail(b, AG_EINVAL, at, "an empty character class");
                else emit_class(b, rule, s, r, n, negate);
            }
            free(r);
        } else if (*p == '.') {
            last_start = s->n;
            p++;
            cprange none = {'\n', '\n'}; /* llama.cpp's `.`: any character but a newline */
            emit_class(b, rule, s, &none, 1, true);
        } else if (is_word(*p)) {
            last_start = s->n;
            const char *name = p;
            while (p < b->end && is_word(*p)) p++;
            uint32_t r = rule_find(b, name, (size_t)(p - name));
            seq_push(b, s, AG_GELEM_RULE, r);
            const char *q = skip_space(b, p, true);
            if (b->end - q >= 3 && memcmp(q, "::=", 3) == 0) /* the next rule's head inside this one */
                return fail(b, AG_EINVAL, at, "a rule definition inside a rule (a missing ')' or newline?)"), p;
        } else if (*p == '(') {
            last_start = s->n;
            uint32_t sub = rule_generated(b, rule);
            if (failed(b)) return p;
            p = parse_alternatives(b, sub, skip_space(b, p + 1, true), true);
            if (failed(b)) return p;
            if (p >= b->end || *p != ')') return fail(b, AG_EINVAL, at, "missing ) for this ("), p;
            p++;
            seq_push(b, s, AG_GELEM_RULE, sub);
        } else if (*p == '*' || *p == '+' || *p == '?' || *p == '{') {
            if (last_start == SIZE_MAX) return fail(b, AG_EINVAL, at, "'%c' follows nothing", *p), p;
            uint32_t min = 0, max = UINT32_MAX;
            if (*p == '+') min = 1;
            else if (*p == '?') max = 1;
            if (*p == '{') {
                p = skip_space(b, p + 1, false);
                if (!parse_uint(b, &p, &min)) return fail(b, AG_EINVAL, at, "a number expected after {"), p;
                p = skip_space(b, p, false);
                if (p < b->end && *p == ',') {
                    p = skip_space(b, p + 1, false);
                    if (p < b->end && *p != '}' && !parse_uint(b, &p, &max))
                        return fail(b, AG_EINVAL, at, "a number or } expected after {%u,", min), p;
                    p = skip_space(b, p, false);
                } else {
                    max = min;
                }
                if (p >= b->end || *p != '}') return fail(b, AG_EINVAL, at, "missing } of a repetition"), p;
            }
            p++;
            repeat(b, rule, s, last_start, min, max, at);
            last_start = SIZE_MAX;
        } else if (*p == '<') {
            return fail(b, AG_EINVAL, at, "token references (<...>) are not supported; write the token's text"), p;
        } else {
            break;
        }
        p = skip_space(b, p, nested);
    }
    return p;
}

static const char *parse_alternatives(builder *b, uint32_t rule, const char *p, bool nested) {
    for (;;) {
        seq *s = alt_new(b, rule);
        size_t idx = b->rules[rule].n_alts - 1;
        seq tmp = *s; /* parse into a copy: nested groups may grow this rule's alternatives array */
        b->rules[rule].alts[idx] = (seq){0};
        p = parse_sequence(b, rule, &tmp, p, nested);
        b->rules[rule].alts[idx] = tmp;
        if (failed(b) || p >= b->end || *p != '|') return p;
        p = skip_space(b, p + 1, true);
    }
}

/* ---- checks and the final layout -------------------------------------------------- */

/* Rules that can match the empty string (a fixed point). */
static bool *nullable_rules(const builder *b) {
    bool *nul = ag_xcalloc(b->n_rules ? b->n_rules : 1, sizeof *nul);
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t r = 0; r < b->n_rules; r++) {
            if (nul[r]) continue;
            for (size_t a = 0; a < b->rules[r].n_alts && !nul[r]; a++) {
                const seq *s = &b->rules[r].alts[a];
                size_t i = 0;
                while (i < s->n && s->e[i].type == AG_GELEM_RULE && nul[s->e[i].v]) i++;
                if (i == s->n) nul[r] = changed = true;
            }
        }
    }
    return nul;
}

/* DFS over "r may begin with rule q" edges; a back edge is left recursion. */
static bool left_recursive(const builder *b, const bool *nul, size_t r, uint8_t *mark) {
    if (mark[r] == 1) return true;
    if (mark[r] == 2) return false;
    mark[r] = 1;
    for (size_t a = 0; a < b->rules[r].n_alts; a++) {
        const seq *s = &b->rules[r].alts[a];
        for (size_t i = 0; i < s->n && s->e[i].type == AG_GELEM_RULE; i++) {
            if (left_recursive(b, nul, s->e[i].v, mark)) return true;
            if (!nul[s->e[i].v]) break;
        }
    }
    mark[r] = 2;
    return false;
}

static void builder_free(builder *b) {
    for (size_t r = 0; r < b->n_rules; r++) {
        for (size_t a = 0; a < b->rules[r].n_alts; a++) free(b->rules[r].alts[a].e);
        free(b->rules[r].alts);
        free(b->rules[r].name);
    }
    free(b->rules);
    free(b->cls);
    ag_map_deinit(&b->names);
}

static ag_grammar_limits limits_or_default(const ag_grammar_limits *l) {
    ag_grammar_limits d = l ? *l : (ag_grammar_limits){0};
    if (!d.max_rules) d.max_rules = 20000;
    if (!d.max_elements) d.max_elements = 400000;
    if (!d.max_repeat) d.max_repeat = 2000;
    if (!d.max_stacks) d.max_stacks = 1024;
    if (!d.max_depth) d.max_depth = 512;
    if (!d.cache_bytes) d.cache_bytes = 64u << 20;
    return d;
}

ag_status ag_grammar_compile(const char *gbnf, size_t len, const ag_grammar_limits *lim, ag_grammar **out,
                             ag_err *err) {
    *out = NULL;
    ag_grammar_limits l = limits_or_default(lim);
    builder b = {.src = gbnf, .end = gbnf + len, .lim = &l, .err = err, .st = AG_OK};
    ag_map_init(&b.names);
    const char *p = skip_space(&b, gbnf, true);
    while (p < b.end && !failed(&b)) {
        const char *name = p;
        while (p < b.end && is_word(*p)) p++;
        if (p == name) {
            fail(&b, AG_EINVAL, p, "a rule name expected");
            break;
        }
        uint32_t r = rule_find(&b, name, (size_t)(p - name));
        if (failed(&b)) break;
        if (b.rules[r].defined) {
            fail(&b, AG_EINVAL, name, "rule '%s' is defined twice", b.rules[r].name);
            break;
        }
        b.rules[r].defined = true;
        p = skip_space(&b, p, false);
        if (b.end - p < 3 || memcmp(p, "::=", 3) != 0) {
            fail(&b, AG_EINVAL, p, "'::=' expected after '%s'", b.rules[r].name);
            break;
        }
        p = parse_alternatives(&b, r, skip_space(&b, p + 3, true), false);
        if (failed(&b)) break;
        if (p < b.end && *p != '\n' && *p != '\r') {
            fail(&b, AG_EINVAL, p, "unexpected '%c'", *p);
            break;
        }
        p = skip_space(&b, p, true);
    }
    for (size_t r = 0; r < b.n_rules && !failed(&b); r++) {
        bool generated = !b.rules[r].defined && b.rules[r].n_alts; /* groups and repetitions */
        if (!b.rules[r].defined && !generated) fail(&b, AG_EINVAL, NULL, "rule '%s' is used but not defined", b.rules[r].name);
    }
    uint32_t root = 0;
    if (!failed(&b)) {
        void *id = ag_map_get(&b.names, "root", 4);
        if (!id) fail(&b, AG_EINVAL, NULL, "no rule named 'root'");
        root = id ? (uint32_t)((uintptr_t)id - 1) : 0;
    }
    if (!failed(&b)) {
        bool *nul = nullable_rules(&b);
        uint8_t *mark = ag_xcalloc(b.n_rules, 1);
        for (size_t r = 0; r < b.n_rules && !failed(&b); r++)
            if (left_recursive(&b, nul, r, mark))
                fail(&b, AG_EINVAL, NULL, "rule '%s' is left-recursive (it can reach itself before any text)",
                     b.rules[r].name);
        free(mark);
        free(nul);
    }
    if (failed(&b)) {
        ag_status st = b.st;
        builder_free(&b);
        return st;
    }
    ag_grammar *g = ag_xcalloc(1, sizeof *g);
    atomic_init(&g->refs, 1);
    g->lim = l;
    g->root = root;
    g->n_rules = (uint32_t)b.n_rules;
    size_t n_alts = 0, n_el = 0;
    for (size_t r = 0; r < b.n_rules; r++) {
        n_alts += b.rules[r].n_alts;
        for (size_t a = 0; a < b.rules[r].n_alts; a++) n_el += b.rules[r].alts[a].n + 1;
    }
    g->el = ag_xmalloc((n_el ? n_el : 1) * sizeof *g->el);
    g->alt_start = ag_xmalloc((n_alts ? n_alts : 1) * sizeof *g->alt_start);
    g->alt_first = ag_xmalloc(b.n_rules * sizeof *g->alt_first);
    g->alt_n = ag_xmalloc(b.n_rules * sizeof *g->alt_n);
    for (size_t r = 0; r < b.n_rules; r++) {
        g->alt_first[r] = g->n_alts;
        g->alt_n[r] = (uint32_t)b.rules[r].n_alts;
        for (size_t a = 0; a < b.rules[r].n_alts; a++) {
            const seq *s = &b.rules[r].alts[a];
            g->alt_start[g->n_alts++] = g->n_el;
            if (s->n) memcpy(g->el + g->n_el, s->e, s->n * sizeof *s->e); /* an empty alternative has no array */
            g->n_el += (uint32_t)s->n;
            g->el[g->n_el++] = (ag_gelem){AG_GELEM_END, 0};
        }
    }
    g->cls = b.cls, g->n_cls = (uint32_t)b.n_cls;
    b.cls = NULL;
    builder_free(&b);
    *out = g;
    return AG_OK;
}

void ag_grammar_set_trigger(ag_grammar *g, const char *word, size_t len) {
    free(g->trigger);
    g->trigger = len ? ag_xstrndup(word, len) : NULL;
    g->trigger_len = len;
}

ag_grammar *ag_grammar_retain(ag_grammar *g) {
    if (g) atomic_fetch_add(&g->refs, 1);
    return g;
}

void ag_gcache_free(ag_gcache *c); /* matcher.c */

void ag_grammar_release(ag_grammar *g) {
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1) return;
    ag_gcache_free(g->cache);
    free(g->el);
    free(g->alt_start);
    free(g->alt_first);
    free(g->alt_n);
    free(g->cls);
    free(g->trigger);
    free(g);
}
