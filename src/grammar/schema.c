/*
 * schema.c - JSON Schema to GBNF, for response_format json_schema and tool
 * parameters.
 *
 * The subset is OpenAI's strict mode (../shared/refs: objects with required
 * properties and additionalProperties false, arrays with min/max items, enum,
 * const, anyOf, $defs/$ref with recursion, string/number/integer/boolean/
 * null) plus what non-strict schemas commonly carry: optional properties,
 * `type` lists, oneOf (as anyOf), a one-element allOf, `definitions` (zod),
 * string pattern/format/minLength/maxLength, integer bounds.  A keyword
 * outside the subset is an error naming it and where it is: a silent gap
 * would hand back output that does not match the schema (llama.cpp skips
 * unknown keywords; we side with OpenAI and refuse).
 *
 * The JSON written: properties in schema order, required ones first and then
 * the optional ones that appear (llama.cpp's rule), no other keys; whitespace
 * between tokens is `space` (none, one space, or one or two newlines and up to
 * 20 spaces or tabs), bounded so that a model cannot pad forever; none before
 * or after the value.  Numbers have no leading zeros and at most 16 digits per
 * part (llama.cpp's bounds).
 */
#include "grammar/grammar.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/utf8.h"
#include "json/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sctx {
    ag_buf *out;
    const char *root;
    ag_err *err;
    ag_status st;
    const ag_json_val *doc;
    ag_schema_opts opts;
    uint32_t n_props, n_rules;
    struct sref {
        const ag_json_val *target;
        char *rule;
    } *refs;
    size_t n_refs;
    char path[256]; /* where we are, for errors: "properties/a/items" */
} sctx;

void ag_schema_gbnf_common(ag_buf *g) {
    ag_buf_append_str(g,
                      "space ::= | \" \" | \"\\n\"{1,2} [ \\t]{0,20}\n"
                      "json-char ::= [^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
                      "json-string ::= \"\\\"\" json-char* \"\\\"\"\n"
                      "json-int ::= \"-\"? ([0] | [1-9] [0-9]{0,15})\n"
                      "json-number ::= json-int (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,16})?\n"
                      "json-boolean ::= \"true\" | \"false\"\n"
                      "json-null ::= \"null\"\n"
                      "json-value ::= json-object | json-array | json-string | json-number | json-boolean | json-null\n"
                      "json-object ::= \"{\" space (json-string space \":\" space json-value space (\",\" space "
                      "json-string space \":\" space json-value space)*)? \"}\"\n"
                      "json-array ::= \"[\" space (json-value space (\",\" space json-value space)*)? \"]\"\n");
}

__attribute__((format(printf, 3, 4))) static void fail(sctx *c, ag_status st, const char *fmt, ...) {
    if (c->st != AG_OK) return;
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->st = ag_err_set(c->err, st, "invalid schema%s%s: %s", c->path[0] ? " at " : "", c->path, msg);
}

/* A GBNF literal for bytes s[0..n): quotes, backslashes and control bytes escaped, UTF-8 kept. */
void ag_gbnf_literal(ag_buf *o, const char *s, size_t n) {
    ag_buf_append_char(o, '"');
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        if (b == '"' || b == '\\') ag_buf_appendf(o, "\\%c", b);
        else if (b == '\n') ag_buf_append_str(o, "\\n");
        else if (b < 0x20 || b == 0x7F) ag_buf_appendf(o, "\\x%02X", b);
        else ag_buf_append_char(o, (char)b);
    }
    ag_buf_append_char(o, '"');
}

/* A JSON value's compact text as a GBNF literal (const, enum). */
static void lit_json(ag_buf *o, const ag_json_val *v) {
    ag_buf t;
    ag_buf_init(&t);
    ag_jw w;
    ag_jw_init(&w, &t, 0, AG_UTF8_REPLACE);
    ag_jw_value(&w, v);
    ag_gbnf_literal(o, t.data, t.len);
    ag_buf_deinit(&t);
}

static char *new_rule(sctx *c) {
    char name[96];
    snprintf(name, sizeof name, "%s-%u", c->root, ++c->n_rules);
    return ag_xstrdup(name);
}

static const char *gen(sctx *c, const ag_json_val *s, uint32_t depth, char *name);

/* Push a path segment for errors; returns the length to restore. */
static size_t path_push(sctx *c, const char *seg, size_t n) {
    size_t at = strlen(c->path);
    snprintf(c->path + at, sizeof c->path - at, "%s%.*s", at ? "/" : "", (int)(n > 64 ? 64 : n), seg);
    return at;
}

static const char *gen_child(sctx *c, const ag_json_val *s, uint32_t depth, const char *seg, size_t n) {
    size_t at = path_push(c, seg, n);
    const char *r = gen(c, s, depth + 1, NULL);
    if (c->st == AG_OK) c->path[at] = 0;
    return r;
}

/* ---- references -------------------------------------------------------------- */

/* "#", "#/$defs/x", "#/definitions/x" or any JSON pointer into the document (~0 ~1 decoded). */
static const ag_json_val *resolve(sctx *c, ag_str ref) {
    if (ref.n == 0 || ref.p[0] != '#') {
        fail(c, AG_EINVAL, "only local $ref (\"#...\") is supported, not \"%.*s\"", (int)(ref.n > 80 ? 80 : ref.n), ref.p);
        return NULL;
    }
    const ag_json_val *v = c->doc;
    size_t i = 1;
    while (i < ref.n) {
        if (ref.p[i] != '/') break;
        size_t j = ++i;
        while (j < ref.n && ref.p[j] != '/') j++;
        char key[256];
        size_t k = 0;
        for (size_t x = i; x < j && k < sizeof key - 1; x++) {
            if (ref.p[x] == '~' && x + 1 < j && (ref.p[x + 1] == '0' || ref.p[x + 1] == '1')) {
                key[k++] = ref.p[++x] == '0' ? '~' : '/';
            } else {
                key[k++] = ref.p[x];
            }
        }
        v = ag_json_obj_get(v, key, k);
        if (!v) break;
        i = j;
    }
    if (!v || i < ref.n) fail(c, AG_EINVAL, "$ref \"%.*s\" points at nothing", (int)(ref.n > 80 ? 80 : ref.n), ref.p);
    return v;
}

static const char *gen_ref(sctx *c, ag_str ref, uint32_t depth) {
    const ag_json_val *target = resolve(c, ref);
    if (!target) return NULL;
    for (size_t i = 0; i < c->n_refs; i++)
        if (c->refs[i].target == target) return c->refs[i].rule;
    c->refs = ag_xrealloc(c->refs, (c->n_refs + 1) * sizeof *c->refs);
    char *rule = new_rule(c);
    c->refs[c->n_refs++] = (struct sref){target, rule};
    gen(c, target, depth + 1, rule); /* defines `rule`; a recursive $ref inside finds it above */
    return rule;
}

/* ---- integers with bounds ------------------------------------------------------- */

/*
 * Alternatives matching the decimal numbers lo..hi (0 <= lo <= hi), no
 * leading zeros: split into ranges where every digit position is a range
 * (the classic numeric-range regex construction: stops at ..9, ..99 from lo,
 * and before ..0, ..00 of hi+1).
 */
static void int_range(ag_buf *o, uint64_t lo, uint64_t hi, bool *first) {
    uint64_t stops[64];
    size_t n = 0;
    uint64_t p10 = 10;
    for (int k = 1; k < 20; k++, p10 *= 10) { /* fill lo by nines */
        uint64_t s = lo - lo % p10 + (p10 - 1);
        if (s >= hi || s < lo) break;
        stops[n++] = s;
        if (p10 > UINT64_MAX / 10) break;
    }
    p10 = 10;
    for (int k = 1; k < 20; k++, p10 *= 10) { /* fill hi+1 by zeros */
        uint64_t h = hi + 1, s = h - h % p10;
        if (s == 0 || s - 1 <= lo || s - 1 > hi) break;
        stops[n++] = s - 1;
        if (p10 > UINT64_MAX / 10) break;
    }
    stops[n++] = hi;
    for (size_t i = 1; i < n; i++) /* sort, few */
        for (size_t j = i; j > 0 && stops[j - 1] > stops[j]; j--) {
            uint64_t t = stops[j];
            stops[j] = stops[j - 1];
            stops[j - 1] = t;
        }
    uint64_t start = lo;
    for (size_t i = 0; i < n; i++) {
        if (i && stops[i] == stops[i - 1]) continue;
        char a[24], z[24];
        snprintf(a, sizeof a, "%llu", (unsigned long long)start);
        snprintf(z, sizeof z, "%llu", (unsigned long long)stops[i]);
        ag_buf_append_str(o, *first ? "(" : " | (");
        *first = false;
        size_t any = 0;
        for (size_t d = 0; a[d]; d++) {
            if (a[d] == z[d]) ag_buf_appendf(o, " \"%c\"", a[d]);
            else if (a[d] != '0' || z[d] != '9') ag_buf_appendf(o, " [%c-%c]", a[d], z[d]);
            else any++;
        }
        if (any) ag_buf_appendf(o, " [0-9]{%zu}", any);
        ag_buf_append_str(o, " )");
        start = stops[i] + 1;
    }
}

#define INT_CAP 9999999999999999LL /* 16 digits: json-int's bound */

static void gen_int_bounded(sctx *c, ag_buf *o, int64_t lo, int64_t hi) {
    if (lo > hi) {
        fail(c, AG_EINVAL, "no integer lies between minimum and maximum");
        return;
    }
    bool first = true;
    if (lo < 0) { /* -(max(1, -hi)) .. -lo as "-" and the magnitude */
        uint64_t mlo = hi < 0 ? (uint64_t)(-hi) : 1, mhi = (uint64_t)(-lo);
        ag_buf_append_str(o, "\"-\" (");
        bool f2 = true;
        int_range(o, mlo, mhi, &f2);
        ag_buf_append_str(o, ")");
        first = false;
    }
    if (hi >= 0) {
        if (!first) ag_buf_append_str(o, " | ");
        first = true;
        int_range(o, lo > 0 ? (uint64_t)lo : 0, (uint64_t)hi, &first);
    }
}

/* ---- strings: formats and patterns ------------------------------------------------ */

typedef struct cpr {
    uint32_t lo, hi;
} cpr;

/*
 * A set of content characters as GBNF matching their JSON-escaped form: the
 * characters JSON writes raw as one class, and an alternative for each one
 * that JSON escapes (", \, controls) the set holds.
 */
/* False when the set holds no character (the caller refuses the pattern). */
static bool json_chars(ag_buf *o, const cpr *set, size_t n, bool negate) {
    bool in[0x80] = {0};
    for (size_t i = 0; i < n; i++)
        for (uint32_t x = set[i].lo; x <= set[i].hi && x < 0x80; x++) in[x] = true;
    if (negate)
        for (int x = 0; x < 0x80; x++) in[x] = !in[x];
    ag_buf_append_str(o, "(");
    bool alt = false;
    /* the class: non-ASCII ranges as given, ASCII printable minus " and \ as computed */
    ag_buf cls;
    ag_buf_init(&cls);
    for (int x = 0x20; x < 0x7F; x++)
        if (in[x] && x != '"' && x != '\\') {
            if (x == ']' || x == '-' || x == '^' || x == '[') ag_buf_appendf(&cls, "\\%c", x);
            else ag_buf_append_char(&cls, (char)x);
        }
    if (negate) { /* complement of the set above U+007F */
        uint32_t next = 0x80;
        cpr *sorted = ag_xmalloc((n + 1) * sizeof *sorted);
        memcpy(sorted, set, n * sizeof *set);
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && sorted[j - 1].lo > sorted[j].lo; j--) {
                cpr t = sorted[j];
                sorted[j] = sorted[j - 1];
                sorted[j - 1] = t;
            }
        for (size_t i = 0; i < n; i++) {
            if (sorted[i].hi < next) continue;
            if (sorted[i].lo > next) ag_buf_appendf(&cls, "\\U%08X-\\U%08X", next, sorted[i].lo - 1);
            next = sorted[i].hi + 1;
        }
        if (next <= 0x10FFFF) ag_buf_appendf(&cls, "\\U%08X-\\U0010FFFF", next);
        free(sorted);
    } else {
        for (size_t i = 0; i < n; i++)
            if (set[i].hi >= 0x80) {
                uint32_t lo = set[i].lo < 0x80 ? 0x80 : set[i].lo;
                ag_buf_appendf(&cls, "\\U%08X-\\U%08X", lo, set[i].hi);
            }
    }
    if (cls.len) {
        ag_buf_appendf(o, "[%.*s]", (int)cls.len, cls.data);
        alt = true;
    }
    ag_buf_deinit(&cls);
    static const struct {
        uint8_t c;
        const char *esc;
    } escs[] = {{'"', "\"\\\\\\\"\""}, {'\\', "\"\\\\\\\\\""}, {'\n', "\"\\\\n\""}, {'\t', "\"\\\\t\""},
                {'\r', "\"\\\\r\""},  {'\b', "\"\\\\b\""},     {'\f', "\"\\\\f\""}};
    for (size_t i = 0; i < sizeof escs / sizeof escs[0]; i++)
        if (in[escs[i].c]) {
            ag_buf_appendf(o, "%s%s", alt ? " | " : "", escs[i].esc);
            alt = true;
        }
    for (int x = 0; x < 0x80; x++) /* other controls, and DEL (json-char's rule leaves it to an escape too) */
        if (in[x] && (x < 0x20 || x == 0x7F) && x != '\n' && x != '\t' && x != '\r' && x != '\b' && x != '\f') {
            ag_buf_appendf(o, "%s\"\\\\u%04x\"", alt ? " | " : "", x);
            alt = true;
        }
    ag_buf_append_str(o, ")");
    return alt;
}

static const cpr DIGITS[] = {{'0', '9'}}, WORD[] = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}},
                 SPACES[] = {{'\t', '\r'}, {' ', ' '}};

/* Parse one regex class item or escape into ranges; returns false (and fails) on what we do not support. */
static bool re_escape(sctx *c, const char **pp, const char *end, cpr *r, size_t *n, size_t cap, bool *neg_class) {
    const char *p = *pp;
    if (p >= end) return fail(c, AG_EINVAL, "pattern ends with a backslash"), false;
    const cpr *set = NULL;
    size_t k = 0;
    *neg_class = false;
    switch (*p) {
    case 'd': case 'D': set = DIGITS, k = 1; break;
    case 'w': case 'W': set = WORD, k = 4; break;
    case 's': case 'S': set = SPACES, k = 2; break;
    default: break;
    }
    if (set) {
        if (*n + k > cap) return fail(c, AG_ELIMIT, "pattern class too large"), false;
        memcpy(r + *n, set, k * sizeof *set);
        *n += k;
        *neg_class = *p == 'D' || *p == 'W' || *p == 'S';
        *pp = p + 1;
        return true;
    }
    uint32_t ch;
    switch (*p) {
    case 'n': ch = '\n'; break;
    case 't': ch = '\t'; break;
    case 'r': ch = '\r'; break;
    case 'f': ch = '\f'; break;
    case 'v': ch = '\v'; break;
    default:
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
            return fail(c, AG_EINVAL, "pattern escape \\%c is not supported", *p), false;
        ch = (uint8_t)*p;
    }
    if (*n + 1 > cap) return fail(c, AG_ELIMIT, "pattern class too large"), false;
    r[(*n)++] = (cpr){ch, ch};
    *pp = p + 1;
    return true;
}

/* One UTF-8 character of the pattern. */
static uint32_t re_char(const char **pp, const char *end) {
    const uint8_t *p = (const uint8_t *)*pp;
    uint32_t v;
    size_t n = ag_utf8_decode(p, (size_t)(end - *pp), &v);
    if (!n) v = *p, n = 1; /* the JSON parser hands over valid UTF-8; a stray byte stands for itself */
    *pp = (const char *)p + n;
    return v;
}

/*
 * A regex (ECMA-262 subset: literals, ., classes, \d \w \s and negations,
 * groups, (?: ), |, * + ? {m} {m,} {m,n}, lazy quantifiers read as greedy,
 * ^ and $ at the ends) over a string's content, as GBNF over its JSON text.
 * Without ^ or $ the pattern may be preceded or followed by anything, as JSON
 * Schema's unanchored patterns are.
 */
static void gen_pattern(sctx *c, ag_buf *o, ag_str pat) {
    const char *p = pat.p, *end = pat.p + pat.n;
    bool start = p < end && *p == '^', stop = end > p && end[-1] == '$' && (end - 1 == p || end[-2] != '\\');
    if (start) p++;
    if (stop) end--;
    ag_buf_append_str(o, "\"\\\"\" ");
    if (!start) ag_buf_append_str(o, "json-char* ");
    int open = 0;
    bool atom = false; /* something to repeat precedes: ECMA-262's "nothing to repeat" otherwise */
    ag_buf_append_str(o, "(");
    while (p < end && c->st == AG_OK) {
        char ch = *p;
        if ((ch == '*' || ch == '+' || ch == '?' || ch == '{') && !atom)
            return fail(c, AG_EINVAL, "pattern: '%c' has nothing to repeat", ch);
        atom = ch != '(' && ch != '|' && ch != '*' && ch != '+' && ch != '?' && ch != '{';
        if (ch == '(') {
            if (end - p >= 3 && p[1] == '?' && p[2] == ':') p += 2;
            else if (end - p >= 2 && p[1] == '?') return fail(c, AG_EINVAL, "pattern: lookarounds and named groups are not supported");
            p++, open++;
            ag_buf_append_str(o, " (");
        } else if (ch == ')') {
            if (!open--) return fail(c, AG_EINVAL, "pattern: unbalanced ')'");
            p++;
            ag_buf_append_str(o, " )");
        } else if (ch == '|') {
            p++;
            ag_buf_append_str(o, " |");
        } else if (ch == '*' || ch == '+' || ch == '?') {
            p++;
            ag_buf_append_char(o, ch);
            if (p < end && *p == '?') p++; /* lazy: same language */
        } else if (ch == '{') { /* {m}, {m,} or {m,n}, m <= n <= 2000 (the grammar's repetition bound) */
            const char *q = p + 1;
            long m = -1, n = -1;
            if (q < end && *q >= '0' && *q <= '9') m = strtol(q, (char **)&q, 10);
            bool comma = q < end && *q == ',';
            if (comma && ++q < end && *q >= '0' && *q <= '9') n = strtol(q, (char **)&q, 10);
            if (m < 0 || q >= end || *q != '}' || m > 2000 || n > 2000 || (n >= 0 && n < m))
                return fail(c, AG_EINVAL, "pattern: a bad {m,n} repetition (m <= n <= 2000)");
            if (!comma) ag_buf_appendf(o, "{%ld}", m);
            else if (n < 0) ag_buf_appendf(o, "{%ld,}", m);
            else ag_buf_appendf(o, "{%ld,%ld}", m, n);
            p = q + 1;
            if (p < end && *p == '?') p++;
        } else if (ch == '^' || ch == '$') {
            return fail(c, AG_EINVAL, "pattern: anchors are supported only at the ends");
        } else {
            cpr r[128];
            size_t n = 0;
            bool negate = false;
            if (ch == '.') {
                p++;
                r[n++] = (cpr){'\n', '\n'};
                negate = true;
            } else if (ch == '[') {
                p++;
                if (p < end && *p == '^') negate = true, p++;
                bool firstc = true;
                while (p < end && (*p != ']' || firstc) && c->st == AG_OK) {
                    firstc = false;
                    uint32_t lo;
                    if (*p == '\\') {
                        p++;
                        bool neg;
                        size_t before = n;
                        if (!re_escape(c, &p, end, r, &n, 120, &neg)) return;
                        if (neg) return fail(c, AG_EINVAL, "pattern: \\D \\W \\S inside a class are not supported");
                        if (n - before != 1 || p >= end || *p != '-' || p + 1 >= end || p[1] == ']') continue;
                        lo = r[--n].lo;
                    } else {
                        lo = re_char(&p, end);
                    }
                    uint32_t hi = lo;
                    if (p + 1 < end && *p == '-' && p[1] != ']') {
                        p++;
                        if (*p == '\\') {
                            p++;
                            bool neg;
                            if (!re_escape(c, &p, end, r, &n, 120, &neg)) return;
                            hi = r[--n].lo;
                        } else {
                            hi = re_char(&p, end);
                        }
                        if (hi < lo) return fail(c, AG_EINVAL, "pattern: a class range runs backwards");
                    }
                    if (n >= 120) return fail(c, AG_ELIMIT, "pattern class too large");
                    r[n++] = (cpr){lo, hi};
                }
                if (p >= end) return fail(c, AG_EINVAL, "pattern: unterminated class");
                p++;
            } else if (ch == '\\') {
                p++;
                if (!re_escape(c, &p, end, r, &n, 120, &negate)) return;
            } else {
                uint32_t v = re_char(&p, end);
                r[n++] = (cpr){v, v};
            }
            ag_buf_append_char(o, ' ');
            if (!json_chars(o, r, n, negate)) return fail(c, AG_EINVAL, "pattern: a class that matches no character");
        }
    }
    if (c->st != AG_OK) return;
    if (open) return fail(c, AG_EINVAL, "pattern: unbalanced '('");
    ag_buf_append_str(o, " )");
    if (!stop) ag_buf_append_str(o, " json-char*");
    ag_buf_append_str(o, " \"\\\"\"");
}

static const struct {
    const char *name, *gbnf;
} FORMATS[] = {
    {"date", "[0-9]{4} \"-\" (\"0\" [1-9] | \"1\" [0-2]) \"-\" (\"0\" [1-9] | [12] [0-9] | \"3\" [01])"},
    {"time", "([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,9})? "
             "(\"Z\" | [+-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])"},
    {"date-time", NULL}, /* date "T" time */
    {"uuid", "[0-9a-fA-F]{8} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{12}"},
    {"ipv4", "oct \".\" oct \".\" oct \".\" oct"},
    {"email", "[a-zA-Z0-9._%+\\-]{1,64} \"@\" [a-zA-Z0-9\\-]{1,63} (\".\" [a-zA-Z0-9\\-]{1,63}){1,8}"},
    {"hostname", "[a-zA-Z0-9] ([a-zA-Z0-9\\-]{0,61} [a-zA-Z0-9])? (\".\" [a-zA-Z0-9] ([a-zA-Z0-9\\-]{0,61} [a-zA-Z0-9])?){0,8}"},
};

static void gen_format(sctx *c, ag_buf *o, ag_str f) {
    const char *date = FORMATS[0].gbnf, *time = FORMATS[1].gbnf;
    for (size_t i = 0; i < sizeof FORMATS / sizeof FORMATS[0]; i++) {
        if (!ag_str_eq_cstr(f, FORMATS[i].name)) continue;
        ag_buf_append_str(o, "\"\\\"\" (");
        if (strcmp(FORMATS[i].name, "date-time") == 0) {
            ag_buf_appendf(o, "(%s) \"T\" (%s)", date, time);
        } else if (strcmp(FORMATS[i].name, "ipv4") == 0) {
            const char *oct = "(\"25\" [0-5] | \"2\" [0-4] [0-9] | \"1\" [0-9] [0-9] | [1-9] [0-9] | [0-9])";
            ag_buf_appendf(o, "%s \".\" %s \".\" %s \".\" %s", oct, oct, oct, oct);
        } else {
            ag_buf_append_str(o, FORMATS[i].gbnf);
        }
        ag_buf_append_str(o, ") \"\\\"\"");
        return;
    }
    fail(c, AG_EINVAL, "string format \"%.*s\" is not supported (date, time, date-time, uuid, ipv4, email, hostname are)",
         (int)(f.n > 40 ? 40 : f.n), f.p);
}

/* ---- the schema walk ------------------------------------------------------------ */

static const char *const KNOWN[] = {
    "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum", "const",
    "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format", "minLength", "maxLength",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "title", "description", "$schema", "$id",
    "$comment", "default", "examples", "strict", "deprecated", "readOnly", "writeOnly"};

static bool get_u32(sctx *c, const ag_json_val *s, const char *key, uint32_t *out, bool *has) {
    const ag_json_val *v = ag_json_obj_getc(s, key);
    *has = v != NULL;
    if (!v) return true;
    int64_t x;
    if (!ag_json_get_int(v, &x) || x < 0 || x > 2000) { /* a count the grammar repeats: its max_repeat */
        fail(c, AG_EINVAL, "%s must be an integer from 0 to 2000", key);
        return false;
    }
    *out = (uint32_t)x;
    return true;
}

static void gen_object(sctx *c, ag_buf *o, const ag_json_val *s, uint32_t depth) {
    const ag_json_val *props = ag_json_obj_getc(s, "properties"), *req = ag_json_obj_getc(s, "required"),
                      *addl = ag_json_obj_getc(s, "additionalProperties");
    if (props && !ag_json_is(props, AG_JSON_OBJECT)) return fail(c, AG_EINVAL, "properties must be an object");
    if (req && !ag_json_is(req, AG_JSON_ARRAY)) return fail(c, AG_EINVAL, "required must be an array");
    bool addl_open = addl && !ag_json_is(addl, AG_JSON_FALSE);
    size_t n = ag_json_len(props);
    if (n && addl_open)
        return fail(c, AG_EINVAL, "additionalProperties other than false beside properties is not supported");
    if (!n && (!addl || addl_open)) { /* a map: any keys, values of the additionalProperties schema (any) */
        const char *val = "json-value";
        if (addl && !ag_json_is(addl, AG_JSON_TRUE)) val = gen_child(c, addl, depth, "additionalProperties", 20);
        if (!val) return;
        ag_buf_appendf(o, "\"{\" space (json-string space \":\" space %s space (\",\" space json-string space \":\" "
                          "space %s space)*)? \"}\"", val, val);
        return;
    }
    if ((c->n_props += (uint32_t)n) > c->opts.max_properties)
        return fail(c, AG_ELIMIT, "more than %u properties (max_properties)", c->opts.max_properties);
    for (size_t i = 0; i < ag_json_len(req); i++) {
        ag_str k = ag_json_str(ag_json_arr_at(req, i));
        if (!k.p || !ag_json_obj_get(props, k.p, k.n))
            return fail(c, AG_EINVAL, "required names \"%.*s\", which is not in properties", (int)(k.n > 60 ? 60 : k.n),
                        k.p ? k.p : "");
    }
    /* key-value rules, required ones first in schema order, then the optional ones */
    const char **kv = ag_xcalloc(n ? n : 1, sizeof *kv);
    bool *is_req = ag_xcalloc(n ? n : 1, sizeof *is_req);
    size_t order[2][n ? n : 1], n_req = 0, n_opt = 0;
    for (size_t i = 0; i < n && c->st == AG_OK; i++) {
        const ag_json_member *m = &props->u.members[i];
        for (size_t r = 0; r < ag_json_len(req); r++) {
            ag_str k = ag_json_str(ag_json_arr_at(req, r));
            if (k.n == m->key.len && memcmp(k.p, m->key.u.s, k.n) == 0) is_req[i] = true;
        }
        size_t at = path_push(c, "properties", 10);
        const char *val = gen_child(c, &m->val, depth, m->key.u.s, m->key.len);
        if (c->st == AG_OK) c->path[at] = 0;
        if (!val) break;
        char *rule = new_rule(c);
        ag_buf line;
        ag_buf_init(&line);
        ag_buf_appendf(&line, "%s ::= ", rule);
        ag_buf keytext;
        ag_buf_init(&keytext);
        ag_buf_append_json_str(&keytext, m->key.u.s, m->key.len, AG_UTF8_REPLACE);
        ag_gbnf_literal(&line, keytext.data, keytext.len);
        ag_buf_deinit(&keytext);
        ag_buf_appendf(&line, " space \":\" space %s\n", val);
        ag_buf_append(c->out, line.data, line.len);
        ag_buf_deinit(&line);
        kv[i] = rule;
        order[!is_req[i]][is_req[i] ? n_req++ : n_opt++] = i;
    }
    if (c->st == AG_OK) {
        ag_buf_append_str(o, "\"{\" space");
        for (size_t i = 0; i < n_req; i++) ag_buf_appendf(o, "%s %s", i ? " space \",\" space" : "", kv[order[0][i]]);
        if (n_req) {
            for (size_t i = 0; i < n_opt; i++) ag_buf_appendf(o, " (space \",\" space %s)?", kv[order[1][i]]);
        } else if (n_opt) { /* the first optional one present opens the list */
            ag_buf_append_str(o, " (");
            for (size_t i = 0; i < n_opt; i++) {
                ag_buf_appendf(o, "%s%s", i ? " | " : "", kv[order[1][i]]);
                for (size_t j = i + 1; j < n_opt; j++) ag_buf_appendf(o, " (space \",\" space %s)?", kv[order[1][j]]);
            }
            ag_buf_append_str(o, ")?");
        }
        ag_buf_append_str(o, " space \"}\"");
    }
    for (size_t i = 0; i < n; i++) free((char *)kv[i]);
    free(kv);
    free(is_req);
}

static void gen_array(sctx *c, ag_buf *o, const ag_json_val *s, uint32_t depth) {
    if (ag_json_obj_getc(s, "prefixItems")) return fail(c, AG_EINVAL, "prefixItems is not supported");
    const ag_json_val *items = ag_json_obj_getc(s, "items");
    const char *item = items ? gen_child(c, items, depth, "items", 5) : "json-value";
    if (!item) return;
    uint32_t min = 0, max = 0;
    bool has_min, has_max;
    if (!get_u32(c, s, "minItems", &min, &has_min) || !get_u32(c, s, "maxItems", &max, &has_max)) return;
    if (has_max && max < min) return fail(c, AG_EINVAL, "maxItems is below minItems");
    ag_buf_append_str(o, "\"[\" space ");
    if (has_max && max == 0) {
        ag_buf_append_str(o, "\"]\"");
        return;
    }
    if (min == 0) ag_buf_append_str(o, "(");
    ag_buf_appendf(o, "%s (space \",\" space %s)", item, item);
    uint32_t lo = min ? min - 1 : 0;
    if (has_max) ag_buf_appendf(o, "{%u,%u}", lo, max - 1);
    else ag_buf_appendf(o, "{%u,}", lo);
    ag_buf_append_str(o, min == 0 ? " space)? \"]\"" : " space \"]\"");
}

static void gen_string(sctx *c, ag_buf *o, const ag_json_val *s) {
    ag_str pattern = ag_json_str(ag_json_obj_getc(s, "pattern")), format = ag_json_str(ag_json_obj_getc(s, "format"));
    uint32_t min = 0, max = 0;
    bool has_min, has_max;
    if (!get_u32(c, s, "minLength", &min, &has_min) || !get_u32(c, s, "maxLength", &max, &has_max)) return;
    if ((pattern.p || format.p) && (has_min || has_max))
        return fail(c, AG_EINVAL, "minLength/maxLength with a pattern or format is not supported");
    if (pattern.p && format.p) return fail(c, AG_EINVAL, "pattern and format together are not supported");
    if (pattern.p) return gen_pattern(c, o, pattern);
    if (format.p) return gen_format(c, o, format);
    if (has_max && max < min) return fail(c, AG_EINVAL, "maxLength is below minLength");
    if (!has_min && !has_max) {
        ag_buf_append_str(o, "json-string");
    } else if (has_max) {
        ag_buf_appendf(o, "\"\\\"\" json-char{%u,%u} \"\\\"\"", min, max);
    } else {
        ag_buf_appendf(o, "\"\\\"\" json-char{%u,} \"\\\"\"", min);
    }
}

static bool get_bound(sctx *c, const ag_json_val *s, const char *key, int64_t *out) {
    const ag_json_val *v = ag_json_obj_getc(s, key);
    if (!v) return false;
    double d;
    if (!ag_json_get_double(v, &d) || d > (double)INT_CAP || d < -(double)INT_CAP) {
        fail(c, AG_EINVAL, "%s must be a number within 16 digits", key);
        return false;
    }
    *out = (int64_t)d;
    if (strcmp(key, "minimum") == 0 && (double)*out < d) (*out)++; /* 1.5 -> 2 */
    if (strcmp(key, "exclusiveMinimum") == 0) *out = (double)*out <= d ? *out + 1 : *out;
    if (strcmp(key, "maximum") == 0 && (double)*out > d) (*out)--;
    if (strcmp(key, "exclusiveMaximum") == 0) *out = (double)*out >= d ? *out - 1 : *out;
    return true;
}

static void gen_typed(sctx *c, ag_buf *o, const ag_json_val *s, ag_str type, uint32_t depth) {
    if (ag_str_eq_cstr(type, "object")) {
        gen_object(c, o, s, depth);
    } else if (ag_str_eq_cstr(type, "array")) {
        gen_array(c, o, s, depth);
    } else if (ag_str_eq_cstr(type, "string")) {
        gen_string(c, o, s);
    } else if (ag_str_eq_cstr(type, "integer") || ag_str_eq_cstr(type, "number")) {
        int64_t lo = -INT_CAP, hi = INT_CAP, v;
        bool bounded = false;
        if (get_bound(c, s, "minimum", &v)) lo = v > lo ? v : lo, bounded = true;
        if (get_bound(c, s, "exclusiveMinimum", &v)) lo = v > lo ? v : lo, bounded = true;
        if (get_bound(c, s, "maximum", &v)) hi = v < hi ? v : hi, bounded = true;
        if (get_bound(c, s, "exclusiveMaximum", &v)) hi = v < hi ? v : hi, bounded = true;
        if (c->st != AG_OK) return;
        if (ag_str_eq_cstr(type, "number")) {
            if (bounded) return fail(c, AG_EINVAL, "minimum/maximum on type number is not supported (on integer it is)");
            ag_buf_append_str(o, "json-number");
        } else if (bounded) {
            gen_int_bounded(c, o, lo, hi);
        } else {
            ag_buf_append_str(o, "json-int");
        }
    } else if (ag_str_eq_cstr(type, "boolean")) {
        ag_buf_append_str(o, "json-boolean");
    } else if (ag_str_eq_cstr(type, "null")) {
        ag_buf_append_str(o, "json-null");
    } else {
        fail(c, AG_EINVAL, "unknown type \"%.*s\"", (int)(type.n > 40 ? 40 : type.n), type.p);
    }
}

/*
 * Define rule `name` (a new one when NULL) for schema s and return its name
 * (owned by the refs list or a static: callers never free it... except the
 * kv rules gen_object frees itself).  NULL on an error.
 */
static const char *gen(sctx *c, const ag_json_val *s, uint32_t depth, char *name) {
    if (c->st != AG_OK) return NULL;
    if (depth > c->opts.max_depth) return fail(c, AG_ELIMIT, "nested deeper than %u (max_depth)", c->opts.max_depth), NULL;
    if (ag_json_is(s, AG_JSON_TRUE) || (ag_json_is(s, AG_JSON_OBJECT) && ag_json_len(s) == 0)) {
        if (!name) return "json-value";
        ag_buf_appendf(c->out, "%s ::= json-value\n", name);
        return name;
    }
    if (!ag_json_is(s, AG_JSON_OBJECT)) return fail(c, AG_EINVAL, "a schema must be an object or true"), NULL;
    for (size_t i = 0; i < ag_json_len(s); i++) {
        const ag_json_val *k = &s->u.members[i].key;
        bool known = false;
        for (size_t j = 0; j < sizeof KNOWN / sizeof KNOWN[0] && !known; j++)
            known = k->len == strlen(KNOWN[j]) && memcmp(k->u.s, KNOWN[j], k->len) == 0;
        if (!known)
            return fail(c, AG_EINVAL, "keyword \"%.*s\" is not supported", (int)(k->len > 60 ? 60 : k->len), k->u.s), NULL;
    }
    ag_str ref = ag_json_str(ag_json_obj_getc(s, "$ref"));
    if (ref.p) {
        const char *r = gen_ref(c, ref, depth);
        if (!r || !name) return r;
        ag_buf_appendf(c->out, "%s ::= %s\n", name, r);
        return name;
    }
    ag_buf body;
    ag_buf_init(&body);
    const ag_json_val *en = ag_json_obj_getc(s, "enum"), *cn = ag_json_obj_getc(s, "const"),
                      *any = ag_json_obj_getc(s, "anyOf"), *one = ag_json_obj_getc(s, "oneOf"),
                      *all = ag_json_obj_getc(s, "allOf"), *type = ag_json_obj_getc(s, "type");
    if (!any) any = one;
    if (cn) {
        lit_json(&body, cn);
    } else if (en) {
        if (!ag_json_is(en, AG_JSON_ARRAY) || ag_json_len(en) == 0) fail(c, AG_EINVAL, "enum must be a non-empty array");
        else if (ag_json_len(en) > c->opts.max_enum) fail(c, AG_ELIMIT, "enum has more than %u values (max_enum)", c->opts.max_enum);
        for (size_t i = 0; i < ag_json_len(en) && c->st == AG_OK; i++) {
            if (i) ag_buf_append_str(&body, " | ");
            lit_json(&body, ag_json_arr_at(en, i));
        }
    } else if (any) {
        if (!ag_json_is(any, AG_JSON_ARRAY) || ag_json_len(any) == 0) fail(c, AG_EINVAL, "anyOf must be a non-empty array");
        for (size_t i = 0; i < ag_json_len(any) && c->st == AG_OK; i++) {
            char seg[24];
            int n = snprintf(seg, sizeof seg, "anyOf/%zu", i);
            const char *r = gen_child(c, ag_json_arr_at(any, i), depth, seg, (size_t)n);
            if (r) ag_buf_appendf(&body, "%s%s", i ? " | " : "", r);
        }
    } else if (all) {
        if (!ag_json_is(all, AG_JSON_ARRAY) || ag_json_len(all) != 1) fail(c, AG_EINVAL, "allOf is supported with one schema only");
        const char *r = c->st == AG_OK ? gen_child(c, ag_json_arr_at(all, 0), depth, "allOf/0", 7) : NULL;
        if (r) ag_buf_append_str(&body, r);
    } else if (ag_json_is(type, AG_JSON_ARRAY)) {
        for (size_t i = 0; i < ag_json_len(type) && c->st == AG_OK; i++) {
            ag_str t = ag_json_str(ag_json_arr_at(type, i));
            if (!t.p) fail(c, AG_EINVAL, "type must be a string or an array of strings");
            ag_buf_append_str(&body, i ? " | (" : "(");
            if (t.p) gen_typed(c, &body, s, t, depth);
            ag_buf_append_str(&body, ")");
        }
        if (ag_json_len(type) == 0) fail(c, AG_EINVAL, "type must not be an empty array");
    } else if (type) {
        ag_str t = ag_json_str(type);
        if (!t.p) fail(c, AG_EINVAL, "type must be a string or an array of strings");
        else gen_typed(c, &body, s, t, depth);
    } else if (ag_json_obj_getc(s, "properties")) {
        gen_object(c, &body, s, depth);
    } else if (ag_json_obj_getc(s, "items")) {
        gen_array(c, &body, s, depth);
    } else {
        ag_buf_append_str(&body, "json-value"); /* only annotations: any value */
    }
    if (c->st != AG_OK) {
        ag_buf_deinit(&body);
        return NULL;
    }
    if (!name) {
        name = new_rule(c);
        c->refs = ag_xrealloc(c->refs, (c->n_refs + 1) * sizeof *c->refs); /* owned by the list, freed at the end */
        c->refs[c->n_refs++] = (struct sref){NULL, name};
    }
    ag_buf_appendf(c->out, "%s ::= %.*s\n", name, (int)body.len, body.data);
    ag_buf_deinit(&body);
    return name;
}

ag_status ag_schema_to_gbnf(const char *schema, size_t len, const char *root, const ag_schema_opts *opts,
                            ag_buf *gbnf, ag_err *err) {
    ag_arena arena;
    ag_arena_init(&arena, 0);
    ag_json_val *doc;
    ag_json_err jerr;
    ag_json_opts jo = {.max_depth = 64};
    sctx c = {.out = gbnf, .root = root, .err = err, .st = AG_OK};
    c.opts = opts ? *opts : (ag_schema_opts){0};
    if (!c.opts.max_depth) c.opts.max_depth = 32;
    if (!c.opts.max_properties) c.opts.max_properties = 5000;
    if (!c.opts.max_enum) c.opts.max_enum = 1000;
    if (ag_json_parse(schema, len, &jo, &arena, &doc, &jerr) != AG_OK) {
        ag_arena_deinit(&arena);
        return ag_err_set(err, AG_EINVAL, "invalid schema: not JSON (%s at byte %zu)", jerr.reason, jerr.offset);
    }
    c.doc = doc;
    char *top = ag_xstrdup(root);
    gen(&c, doc, 0, top);
    free(top);
    for (size_t i = 0; i < c.n_refs; i++) free(c.refs[i].rule);
    free(c.refs);
    ag_arena_deinit(&arena);
    return c.st;
}
