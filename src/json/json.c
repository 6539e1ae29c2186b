/*
 * json.c - the JSON parser and the DOM accessors; see json.h for the contract.
 *
 * Design.  One pass over pre-validated UTF-8 with a goto state machine
 * (value / key / after-value) and two explicit stacks instead of recursion,
 * so depth is bounded by the configured limit and never by the C stack:
 *   - the value stack holds the finished children of every open container
 *     (an object's children are key,value pairs of 16-byte nodes, which is
 *     exactly the ag_json_member layout);
 *   - the frame stack holds, per open container, where its children start.
 * Closing a container copies its children once into one arena block and
 * pushes the container's node (RapidJSON's scheme): every node is copied at
 * most once and every container is contiguous.
 *
 * Strings: a vector scan (base/jscan.h) finds the first '"', '\\' or control byte; without a
 * backslash the node is a span into the input.  With one, the string is
 * decoded in a single pass into the arena (see parse_escaped).
 *
 * Numbers: digits are accumulated in a uint64; integers in range become
 * AG_JSON_INT; otherwise Clinger's fast path gives an exact double when the
 * decimal mantissa fits 2^53 and |exponent| <= 22, and strtod_l in the C
 * locale (ag_strtod_c) handles the rest (correctly rounded, locale-independent).
 */
#include "json/json.h"

#include "base/alloc.h"
#include "base/hash.h"
#include "base/jscan.h"
#include "base/utf8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


_Static_assert(sizeof(ag_json_val) == 16, "ag_json_val is one 16-byte node");
_Static_assert(sizeof(ag_json_member) == 2 * sizeof(ag_json_val), "a member is a key node and a value node");

enum { VAL_FLAG_INDEXED = 1 };

/* Lives just before the members of an indexed object (32 bytes keep them 16-aligned). */
typedef struct obj_index {
    uint32_t *slots; /* member index + 1; 0 is empty */
    uint64_t seed;
    uint32_t cap; /* power of two >= 2 * members */
    uint32_t pad;
    uint64_t pad2;
} obj_index;
_Static_assert(sizeof(obj_index) == 32, "obj_index keeps members aligned");

typedef struct frame {
    uint32_t start; /* first child in the value stack */
    uint8_t is_obj;
} frame;

#define LOCAL_VALS 128
#define LOCAL_FRAMES 32

typedef struct parser {
    ag_arena *arena;
    ag_json_val *vals;
    size_t n_vals, cap_vals;
    frame *frames;
    size_t n_frames, cap_frames;
    uint32_t max_depth;
    uint8_t *strbuf; /* next free byte for decoded strings; NULL until the first escape */
    const uint8_t *err_at;
    const char *reason;
    ag_status st; /* set with err_at and reason by set_error() */
    ag_json_val local_vals[LOCAL_VALS];
    frame local_frames[LOCAL_FRAMES];
} parser;

static ag_status set_error(parser *ps, const uint8_t *at, ag_status st, const char *reason) {
    ps->err_at = at;
    ps->reason = reason;
    ps->st = st;
    return st;
}

/* Grow a parser stack from its on-C-stack storage to the heap and beyond. */
static int grow_stack(void **items, size_t *cap, size_t elem, const void *local) {
    size_t ncap = *cap * 2;
    void *p;
    if (*items == local) {
        p = ag_try_malloc(ncap * elem);
        if (p) memcpy(p, *items, *cap * elem);
    } else {
        p = ag_try_realloc(*items, ncap * elem);
    }
    if (!p) return -1;
    *items = p;
    *cap = ncap;
    return 0;
}

/*
 * The next free value-stack slot (NULL when the stack cannot grow).  Scalars
 * are parsed straight into it and committed with n_vals++: building a node
 * in a local and copying it costs a store-forwarding stall per value (four
 * narrow stores read back as one 16-byte load), measured at a third of the
 * parse time on request bodies.
 */
static inline ag_json_val *val_slot(parser *ps) {
    if (ps->n_vals == ps->cap_vals &&
        grow_stack((void **)&ps->vals, &ps->cap_vals, sizeof(ag_json_val), ps->local_vals))
        return NULL;
    return &ps->vals[ps->n_vals];
}

static inline const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end) {
    /* one compare for the common case, a token right here */
    while (p < end && *p <= ' ' && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

/* ---- strings ---------------------------------------------------------- */

/* A hex digit's value plus one; 0 for every other byte. */
static const uint8_t hex_digit1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* Four hex digits at p (caller checked 4 bytes exist); -1 if any is not hex.  A table, not
 * compares: \u escapes are dense in non-ASCII text from ensure_ascii encoders. */
static inline int32_t hex4(const uint8_t *p) {
    int32_t a = hex_digit1[p[0]] - 1, b = hex_digit1[p[1]] - 1, c = hex_digit1[p[2]] - 1, d = hex_digit1[p[3]] - 1;
    if ((a | b | c | d) < 0) return -1;
    return (a << 12) | (b << 8) | (c << 4) | d;
}

/*
 * Escaped strings decode in one pass into ps->strbuf, one arena block taken
 * at the first escaped string and sized to the rest of the input plus one
 * vector: a string never decodes longer than its raw text, so the block
 * cannot run out (simdjson sizes its string buffer the same way).  The copy
 * loop stores whole vectors and advances to the first special byte, so the
 * bytes after it are scratch, overwritten next.
 */
#define STRBUF_SLACK 64 /* >= AG_JSCAN_VEC: the copy loop stores whole vectors */

/* The byte a one-letter escape stands for; 0: not an escape (\u is handled apart). */
static const uint8_t unescape[256] = {
    ['"'] = '"', ['\\'] = '\\', ['/'] = '/', ['b'] = '\b', ['f'] = '\f', ['n'] = '\n', ['r'] = '\r', ['t'] = '\t',
};

/* p: first byte of the string body; q: the first backslash in it (from the fast scan). */
static const uint8_t *parse_escaped(parser *ps, const uint8_t *p, const uint8_t *q, const uint8_t *end,
                                    ag_json_val *out) {
    if (!ps->strbuf) {
        ps->strbuf = ag_arena_try_alloc(ps->arena, (size_t)(end - p) + STRBUF_SLACK);
        if (!ps->strbuf) return set_error(ps, p, AG_NOMEM, "out of memory"), NULL;
    }
    uint8_t *const start = ps->strbuf;
    memcpy(start, p, (size_t)(q - p));
    uint8_t *d = start + (q - p);
    p = q;
    for (;;) {
        /* here *p is special or p == end */
        if (p == end) return set_error(ps, end, AG_EINVAL, "unterminated string"), NULL;
        if (*p == '"') break;
        if (*p < 0x20) return set_error(ps, p, AG_EINVAL, "control character in string (must be escaped)"), NULL;
        if (end - p < 2) return set_error(ps, end, AG_EINVAL, "unterminated string"), NULL;
        uint8_t e = p[1];
        if (e != 'u') {
            /* a table, not a switch: the escape kind changes from one to the next, and an
             * indirect jump mispredicts on that (measured: the top cost on chat bodies) */
            uint8_t c = unescape[e];
            if (!c) return set_error(ps, p, AG_EINVAL, "invalid escape sequence in string"), NULL;
            *d++ = c;
            p += 2;
        } else {
            if (end - p < 6) return set_error(ps, p, AG_EINVAL, "truncated \\u escape"), NULL;
            int32_t cp = hex4(p + 2);
            if (cp < 0) return set_error(ps, p, AG_EINVAL, "invalid hex digit in \\u escape"), NULL;
            const uint8_t *esc = p;
            p += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return set_error(ps, esc, AG_EINVAL, "lone low surrogate in \\u escape"), NULL;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                int32_t lo = (end - p >= 6 && p[0] == '\\' && p[1] == 'u') ? hex4(p + 2) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return set_error(ps, esc, AG_EINVAL, "high surrogate not followed by a low surrogate"), NULL;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            d += ag_utf8_encode((uint32_t)cp, d);
        }
        if (p < end && *p == '\\') continue; /* escapes come in runs: skip a vector round */
        /* copy up to the next special byte */
#ifdef AG_JSCAN_VEC
        for (;;) {
            if (end - p < AG_JSCAN_VEC) {
                while (p < end && !ag_jscan_special(*p)) *d++ = *p++;
                break;
            }
            uint64_t m = ag_jscan_mask(p, d);
            if (m) {
                unsigned k = (unsigned)__builtin_ctzll(m);
                p += k;
                d += k;
                break;
            }
            p += AG_JSCAN_VEC;
            d += AG_JSCAN_VEC;
        }
#else
        const uint8_t *r = ag_jscan_generic(p, end);
        memcpy(d, p, (size_t)(r - p));
        d += r - p;
        p = r;
#endif
    }
    out->type = AG_JSON_STRING;
    out->flags = 0;
    out->len = (uint32_t)(d - start);
    out->u.s = (const char *)start;
    ps->strbuf = d;
    return p + 1;
}

/* p is just past the opening quote.  Returns the byte after the closing quote, or NULL. */
static inline const uint8_t *parse_string(parser *ps, const uint8_t *p, const uint8_t *end, ag_json_val *out) {
    const uint8_t *q = ag_jscan(p, end);
    if (q < end && *q == '"') {
        out->type = AG_JSON_STRING;
        out->flags = 0;
        out->len = (uint32_t)(q - p);
        out->u.s = (const char *)p;
        return q + 1;
    }
    if (q == end) return set_error(ps, end, AG_EINVAL, "unterminated string"), NULL;
    if (*q < 0x20) return set_error(ps, q, AG_EINVAL, "control character in string (must be escaped)"), NULL;
    return parse_escaped(ps, p, q, end, out);
}

/* ---- numbers ---------------------------------------------------------- */

/* Correctly rounded decimal-to-double of s[0..n) in the C locale. */
static double slow_strtod(const uint8_t *s, size_t n, int *nomem) {
    char small[64];
    char *buf = small;
    if (n >= sizeof small && !(buf = ag_try_malloc(n + 1))) {
        *nomem = 1;
        return 0;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    double d = ag_strtod_c(buf, NULL);
    if (buf != small) free(buf);
    return d;
}

static const double exact_pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static inline int is_digit(uint8_t c) { return (unsigned)(c - '0') < 10; }

static const uint8_t *parse_number(parser *ps, const uint8_t *p, const uint8_t *end, ag_json_val *out) {
    const uint8_t *start = p;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        if (++p == end) return set_error(ps, p, AG_EINVAL, "invalid number: '-' without digits"), NULL;
    }
    uint64_t mant = 0;
    int n_digits = 0;  /* significant digits accumulated into mant (<= 19) */
    int dropped = 0;   /* integer digits beyond those 19 */
    int64_t exp10 = 0; /* decimal exponent applied to mant */
    int truncated = 0; /* mant is not the exact decimal mantissa */
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) return set_error(ps, p, AG_EINVAL, "invalid number: leading zero"), NULL;
    } else if (is_digit(*p)) {
        for (; p < end && is_digit(*p); p++) {
            if (n_digits < 19) {
                mant = mant * 10 + (uint64_t)(*p - '0');
                if (mant) n_digits++;
            } else {
                dropped++;
                truncated = 1;
            }
        }
    } else {
        return set_error(ps, p, AG_EINVAL, "invalid number: expected a digit"), NULL;
    }
    int is_int = 1;
    if (p < end && *p == '.') {
        is_int = 0;
        p++;
        if (p == end || !is_digit(*p)) return set_error(ps, p, AG_EINVAL, "invalid number: expected a digit after '.'"), NULL;
        for (; p < end && is_digit(*p); p++) {
            if (n_digits < 19) {
                mant = mant * 10 + (uint64_t)(*p - '0');
                if (mant) n_digits++;
                exp10--;
            } else if (*p != '0') {
                truncated = 1;
            }
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p == end || !is_digit(*p)) return set_error(ps, p, AG_EINVAL, "invalid number: expected a digit in exponent"), NULL;
        int64_t e = 0;
        for (; p < end && is_digit(*p); p++)
            if (e < 100000000) e = e * 10 + (*p - '0'); /* far past any double's range: clamp */
        exp10 += eneg ? -e : e;
    }
    exp10 += dropped;
    out->flags = 0;
    if (is_int && !truncated) {
        if (!neg && mant <= (uint64_t)INT64_MAX) {
            out->type = AG_JSON_INT;
            out->u.i = (int64_t)mant;
            return p;
        }
        if (neg && mant != 0 && mant <= (uint64_t)INT64_MAX + 1) {
            out->type = AG_JSON_INT;
            out->u.i = mant == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mant;
            return p;
        }
    }
    out->type = AG_JSON_DOUBLE;
    double d;
    if (mant == 0 && !truncated) {
        d = 0.0; /* any exponent: still zero, sign kept below (-0 stays -0.0) */
    } else if (!truncated && mant <= (1ull << 53) && exp10 >= -22 && exp10 <= 22) {
        d = (double)mant; /* Clinger: both operands exact, one rounding */
        d = exp10 < 0 ? d / exact_pow10[-exp10] : d * exact_pow10[exp10];
    } else {
        int nomem = 0;
        d = slow_strtod(start + neg, (size_t)(p - start - neg), &nomem);
        if (nomem) return set_error(ps, start, AG_NOMEM, "out of memory"), NULL;
        if (isinf(d)) return set_error(ps, start, AG_EINVAL, "number out of range for a double"), NULL;
    }
    out->u.d = neg ? -d : d;
    return p;
}

/* ---- containers ------------------------------------------------------- */

static inline uint32_t index_cap(size_t n) {
    uint32_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

static inline int key_eq(const ag_json_val *a, const char *key, size_t len) {
    return a->len == len && memcmp(a->u.s, key, len) == 0;
}

/* Pop the top frame's n children into one arena block and push the array node. */
static ag_status close_array(parser *ps, const uint8_t *at) {
    frame f = ps->frames[--ps->n_frames];
    size_t n = ps->n_vals - f.start;
    ag_json_val arr = {.type = AG_JSON_ARRAY, .len = (uint32_t)n};
    if (n) {
        arr.u.items = ag_arena_try_alloc(ps->arena, n * sizeof(ag_json_val));
        if (!arr.u.items) return set_error(ps, at, AG_NOMEM, "out of memory");
        memcpy(arr.u.items, ps->vals + f.start, n * sizeof(ag_json_val));
    }
    ps->n_vals = f.start;
    ps->vals[ps->n_vals++] = arr; /* room: the frame's slot range just freed, or the frame itself pushed none */
    return AG_OK;
}

/*
 * Close an object: drop duplicate keys (last value wins, first position kept)
 * while copying members to the arena, and index objects of more than
 * AG_JSON_INDEX_MIN members.
 */
static ag_status close_object(parser *ps, const uint8_t *at) {
    frame f = ps->frames[--ps->n_frames];
    size_t n = (ps->n_vals - f.start) / 2;
    const ag_json_member *src = (const ag_json_member *)(ps->vals + f.start);
    ag_json_val obj = {.type = AG_JSON_OBJECT};
    if (n == 0) {
        /* nothing to copy */
    } else if (n <= AG_JSON_INDEX_MIN) {
        ag_json_member *dst = ag_arena_try_alloc(ps->arena, n * sizeof *dst);
        if (!dst) return set_error(ps, at, AG_NOMEM, "out of memory");
        /* Duplicates are rare: a 64-bit filter over (length, first and last byte) lets a
         * key with no filter hit skip the compare against earlier keys, so no-duplicate
         * objects cost O(n). */
        uint64_t seen = 0;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            const ag_json_val *k = &src[i].key;
            unsigned sig = k->len ? (unsigned)k->len * 7u + (uint8_t)k->u.s[0] * 3u + (uint8_t)k->u.s[k->len - 1] : 0;
            uint64_t bit = 1ull << (sig & 63);
            if (seen & bit) {
                size_t j = 0;
                while (j < m && !key_eq(&dst[j].key, k->u.s, k->len)) j++;
                if (j < m) {
                    dst[j].val = src[i].val;
                    continue;
                }
            }
            seen |= bit;
            dst[m++] = src[i];
        }
        obj.len = (uint32_t)m;
        obj.u.members = dst;
    } else {
        uint32_t cap = index_cap(n);
        char *blk = ag_arena_try_alloc(ps->arena, sizeof(obj_index) + n * sizeof(ag_json_member) + cap * 4u);
        if (!blk) return set_error(ps, at, AG_NOMEM, "out of memory");
        obj_index *ix = (obj_index *)blk;
        ag_json_member *dst = (ag_json_member *)(blk + sizeof(obj_index));
        ix->slots = (uint32_t *)(dst + n);
        ix->cap = cap;
        ix->seed = (uint64_t)(uintptr_t)blk * 0x9e3779b97f4a7c15ull;
        memset(ix->slots, 0, cap * 4u);
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            const ag_json_val *k = &src[i].key;
            uint32_t s = (uint32_t)ag_hash_bytes(k->u.s, k->len, ix->seed) & (cap - 1);
            while (ix->slots[s] && !key_eq(&dst[ix->slots[s] - 1].key, k->u.s, k->len)) s = (s + 1) & (cap - 1);
            if (ix->slots[s]) {
                dst[ix->slots[s] - 1].val = src[i].val;
            } else {
                dst[m] = src[i];
                ix->slots[s] = (uint32_t)++m;
            }
        }
        obj.flags = VAL_FLAG_INDEXED;
        obj.len = (uint32_t)m;
        obj.u.members = dst;
    }
    ps->n_vals = f.start;
    ps->vals[ps->n_vals++] = obj;
    return AG_OK;
}

static inline int push_frame(parser *ps, int is_obj) {
    if (ps->n_frames == ps->cap_frames &&
        grow_stack((void **)&ps->frames, &ps->cap_frames, sizeof(frame), ps->local_frames))
        return -1;
    /* a container pushes its own node where its first child would go, so reserve one slot */
    if (ps->n_vals == ps->cap_vals && grow_stack((void **)&ps->vals, &ps->cap_vals, sizeof(ag_json_val), ps->local_vals))
        return -1;
    ps->frames[ps->n_frames++] = (frame){(uint32_t)ps->n_vals, (uint8_t)is_obj};
    return 0;
}

/* ---- the state machine ------------------------------------------------ */

static ag_status parse_doc(parser *ps, const uint8_t *p, const uint8_t *end) {
    ag_json_val *v;
    ag_status st;
value:
    p = skip_ws(p, end);
    if (p == end) return set_error(ps, p, AG_EINVAL, "unexpected end of input, expected a value");
    switch (*p) {
    case '{':
    case '[': {
        int is_obj = *p == '{';
        if (ps->n_frames >= ps->max_depth) return set_error(ps, p, AG_ELIMIT, "nesting deeper than the depth limit");
        if (push_frame(ps, is_obj)) return set_error(ps, p, AG_NOMEM, "out of memory");
        p = skip_ws(p + 1, end);
        if (p < end && *p == (is_obj ? '}' : ']')) { /* empty container */
            if ((st = is_obj ? close_object(ps, p++) : close_array(ps, p++)) != AG_OK) return st;
            goto after;
        }
        if (is_obj) goto key;
        goto value;
    }
    default:
        if (!(v = val_slot(ps))) return set_error(ps, p, AG_NOMEM, "out of memory");
        switch (*p) {
        case '"':
            if (!(p = parse_string(ps, p + 1, end, v))) return ps->st;
            break;
        case 't':
            if (end - p < 4 || memcmp(p, "true", 4) != 0)
                return set_error(ps, p, AG_EINVAL, "invalid literal (expected true)");
            *v = (ag_json_val){.type = AG_JSON_TRUE};
            p += 4;
            break;
        case 'f':
            if (end - p < 5 || memcmp(p, "false", 5) != 0)
                return set_error(ps, p, AG_EINVAL, "invalid literal (expected false)");
            *v = (ag_json_val){.type = AG_JSON_FALSE};
            p += 5;
            break;
        case 'n':
            if (end - p < 4 || memcmp(p, "null", 4) != 0)
                return set_error(ps, p, AG_EINVAL, "invalid literal (expected null)");
            *v = (ag_json_val){.type = AG_JSON_NULL};
            p += 4;
            break;
        case '-': case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
            if (!(p = parse_number(ps, p, end, v))) return ps->st;
            break;
        default:
            return set_error(ps, p, AG_EINVAL, "unexpected character, expected a value");
        }
        ps->n_vals++;
    }
after:
    p = skip_ws(p, end);
    if (ps->n_frames == 0) {
        if (p != end) return set_error(ps, p, AG_EINVAL, "unexpected data after the JSON value");
        return AG_OK;
    }
    if (p == end) return set_error(ps, p, AG_EINVAL, "unexpected end of input inside a container");
    if (ps->frames[ps->n_frames - 1].is_obj) {
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            goto key;
        }
        if (*p == '}') {
            if ((st = close_object(ps, p++)) != AG_OK) return st;
            goto after;
        }
        return set_error(ps, p, AG_EINVAL, "expected ',' or '}' after object member");
    }
    if (*p == ',') {
        p++;
        goto value;
    }
    if (*p == ']') {
        if ((st = close_array(ps, p++)) != AG_OK) return st;
        goto after;
    }
    return set_error(ps, p, AG_EINVAL, "expected ',' or ']' after array element");
key:
    if (p == end) return set_error(ps, p, AG_EINVAL, "unexpected end of input, expected an object key");
    if (*p != '"') return set_error(ps, p, AG_EINVAL, "expected a string as object key");
    if (!(v = val_slot(ps))) return set_error(ps, p, AG_NOMEM, "out of memory");
    if (!(p = parse_string(ps, p + 1, end, v))) return ps->st;
    ps->n_vals++;
    p = skip_ws(p, end);
    if (p == end || *p != ':') return set_error(ps, p, AG_EINVAL, "expected ':' after object key");
    p++;
    goto value;
}

static void locate(const uint8_t *base, const uint8_t *at, ag_json_err *err) {
    size_t line = 1;
    const uint8_t *line_start = base;
    for (const uint8_t *q = base; q < at; q++)
        if (*q == '\n') line++, line_start = q + 1;
    err->offset = (size_t)(at - base);
    err->line = line;
    err->col = (size_t)(at - line_start) + 1;
}

ag_status ag_json_parse(const char *input, size_t len, const ag_json_opts *opts, ag_arena *arena,
                        ag_json_val **root, ag_json_err *err) {
    const uint8_t *base = (const uint8_t *)input;
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : AG_JSON_MAX_BYTES_CAP;
    if (max_bytes > AG_JSON_MAX_BYTES_CAP) max_bytes = AG_JSON_MAX_BYTES_CAP;
    if (len > max_bytes) {
        if (err) *err = (ag_json_err){max_bytes, 0, 0, "document larger than the size limit"};
        return AG_ELIMIT;
    }
    parser ps;
    ps.arena = arena;
    ps.vals = ps.local_vals;
    ps.n_vals = 0;
    ps.cap_vals = LOCAL_VALS;
    ps.frames = ps.local_frames;
    ps.n_frames = 0;
    ps.cap_frames = LOCAL_FRAMES;
    ps.max_depth = opts && opts->max_depth ? opts->max_depth : AG_JSON_DEFAULT_MAX_DEPTH;
    ps.strbuf = NULL;
    ps.err_at = NULL;
    ps.reason = NULL;
    ps.st = AG_OK;

    /* Validate UTF-8 first; on a bad byte, parse the valid prefix so that an
     * earlier syntax error is still reported first. */
    size_t valid = ag_utf8_valid_prefix(base, len);
    ag_status st = parse_doc(&ps, base, base + valid);
    if (valid < len && (st == AG_OK || ps.err_at >= base + valid)) {
        st = AG_EINVAL;
        ps.err_at = base + valid;
        ps.reason = "invalid UTF-8";
    }
    if (st == AG_OK) {
        ag_json_val *r = ag_arena_try_alloc(arena, sizeof *r);
        if (r) {
            *r = ps.vals[0];
            *root = r;
        } else {
            st = set_error(&ps, base + len, AG_NOMEM, "out of memory");
        }
    }
    if (st != AG_OK && err) {
        locate(base, ps.err_at, err);
        err->reason = ps.reason;
    }
    if (ps.vals != ps.local_vals) free(ps.vals);
    if (ps.frames != ps.local_frames) free(ps.frames);
    return st;
}

/* ---- accessors -------------------------------------------------------- */

const ag_json_val *ag_json_arr_at(const ag_json_val *arr, size_t i) {
    if (!arr || arr->type != AG_JSON_ARRAY || i >= arr->len) return NULL;
    return &arr->u.items[i];
}

const ag_json_val *ag_json_obj_get(const ag_json_val *obj, const char *key, size_t key_len) {
    if (!obj || obj->type != AG_JSON_OBJECT) return NULL;
    const ag_json_member *m = obj->u.members;
    if (obj->flags & VAL_FLAG_INDEXED) {
        const obj_index *ix = (const obj_index *)((const char *)m - sizeof(obj_index));
        uint32_t s = (uint32_t)ag_hash_bytes(key, key_len, ix->seed) & (ix->cap - 1);
        for (; ix->slots[s]; s = (s + 1) & (ix->cap - 1))
            if (key_eq(&m[ix->slots[s] - 1].key, key, key_len)) return &m[ix->slots[s] - 1].val;
        return NULL;
    }
    for (uint32_t i = 0; i < obj->len; i++)
        if (key_eq(&m[i].key, key, key_len)) return &m[i].val;
    return NULL;
}

const ag_json_val *ag_json_obj_getc(const ag_json_val *obj, const char *key) {
    return ag_json_obj_get(obj, key, strlen(key));
}

ag_str ag_json_str(const ag_json_val *v) {
    if (!v || v->type != AG_JSON_STRING) return (ag_str){NULL, 0};
    return (ag_str){v->u.s, v->len};
}

bool ag_json_get_int(const ag_json_val *v, int64_t *out) {
    if (!v) return false;
    if (v->type == AG_JSON_INT) {
        *out = v->u.i;
        return true;
    }
    /* 2^63 is exact as a double; [-2^63, 2^63) is int64's range */
    if (v->type == AG_JSON_DOUBLE && v->u.d == floor(v->u.d) && v->u.d >= -9223372036854775808.0 &&
        v->u.d < 9223372036854775808.0) {
        *out = (int64_t)v->u.d;
        return true;
    }
    return false;
}

bool ag_json_get_double(const ag_json_val *v, double *out) {
    if (!v) return false;
    if (v->type == AG_JSON_DOUBLE) *out = v->u.d;
    else if (v->type == AG_JSON_INT) *out = (double)v->u.i;
    else return false;
    return true;
}

bool ag_json_get_bool(const ag_json_val *v, bool *out) {
    if (!v || (v->type != AG_JSON_TRUE && v->type != AG_JSON_FALSE)) return false;
    *out = v->type == AG_JSON_TRUE;
    return true;
}

bool ag_json_equal(const ag_json_val *a, const ag_json_val *b) {
    if (!a || !b) return a == b;
    int a_num = a->type == AG_JSON_INT || a->type == AG_JSON_DOUBLE;
    int b_num = b->type == AG_JSON_INT || b->type == AG_JSON_DOUBLE;
    if (a_num && b_num) {
        if (a->type == AG_JSON_INT && b->type == AG_JSON_INT) return a->u.i == b->u.i;
        double x, y;
        ag_json_get_double(a, &x);
        ag_json_get_double(b, &y);
        return x == y && signbit(x) == signbit(y);
    }
    if (a->type != b->type || a->len != b->len) return false;
    switch (a->type) {
    case AG_JSON_STRING: return a->len == 0 || memcmp(a->u.s, b->u.s, a->len) == 0;
    case AG_JSON_ARRAY:
        for (uint32_t i = 0; i < a->len; i++)
            if (!ag_json_equal(&a->u.items[i], &b->u.items[i])) return false;
        return true;
    case AG_JSON_OBJECT:
        for (uint32_t i = 0; i < a->len; i++) {
            const ag_json_member *m = &a->u.members[i];
            if (!ag_json_equal(&m->val, ag_json_obj_get(b, m->key.u.s, m->key.len))) return false;
        }
        return true;
    default: return true; /* null, true, false */
    }
}

const char *ag_json_type_name(ag_json_type t) {
    static const char *const names[] = {"null", "boolean", "boolean", "integer", "number", "string", "array", "object"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}
