/*
 * json.h - strict RFC 8259 JSON: a zero-copy parser into an arena DOM, and a
 * streaming writer into an ag_buf.
 *
 * Parser.  The whole input is UTF-8 validated first (a vector pass that is
 * nearly free on ASCII), so the grammar pass never looks at multi-byte
 * sequences again.  Values are 16-byte ag_json_val nodes.  Arrays and objects
 * store their children contiguously (O(1) index).  Strings without escapes
 * are spans into the input (zero-copy: the input must outlive the DOM);
 * strings with escapes are decoded into the arena.  Strings are therefore NOT
 * NUL-terminated.  Numbers are int64 when written without fraction or
 * exponent and in range, else a correctly rounded double; -0 is the double
 * -0.0; a number whose magnitude overflows a double is rejected.  Duplicate
 * object keys: the last value wins (kept at the first key's position).
 * Objects with more than AG_JSON_INDEX_MIN members get a hash index, so key
 * lookup is O(1) at any size; smaller ones (every request body we serve) are
 * scanned, comparing lengths first, which beats hashing the key up to ~32.
 *
 * Limits (ag_json_opts): nesting depth (default 128) and input size; each
 * failure names its byte offset, line, column and a short reason.
 *
 * Memory: every node and decoded string lives in the caller's arena, so a
 * per-request arena frees a whole document at once.  The parser's scratch
 * stack is malloc'd and freed before return.
 */
#ifndef AG_JSON_H
#define AG_JSON_H

#include "autoglm/status.h"
#include "base/arena.h"
#include "base/buf.h"
#include "base/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ag_json_type {
    AG_JSON_NULL,
    AG_JSON_FALSE,
    AG_JSON_TRUE,
    AG_JSON_INT,
    AG_JSON_DOUBLE,
    AG_JSON_STRING,
    AG_JSON_ARRAY,
    AG_JSON_OBJECT
} ag_json_type;

typedef struct ag_json_val ag_json_val;
typedef struct ag_json_member ag_json_member;

struct ag_json_val {
    uint8_t type;  /* ag_json_type */
    uint8_t flags; /* private to json.c */
    uint16_t pad;
    uint32_t len; /* string: bytes; array: items; object: members */
    union {
        int64_t i;
        double d;
        const char *s;            /* string bytes, not NUL-terminated */
        ag_json_val *items;       /* array */
        ag_json_member *members;  /* object */
    } u;
};

struct ag_json_member {
    ag_json_val key; /* always AG_JSON_STRING */
    ag_json_val val;
};

#define AG_JSON_INDEX_MIN 32          /* objects larger than this get a hash index */
#define AG_JSON_DEFAULT_MAX_DEPTH 128
#define AG_JSON_MAX_BYTES_CAP 0xFFFFFFFFu /* lengths are 32-bit */

typedef struct ag_json_opts {
    uint32_t max_depth; /* 0: AG_JSON_DEFAULT_MAX_DEPTH */
    size_t max_bytes;   /* 0: AG_JSON_MAX_BYTES_CAP */
} ag_json_opts;

typedef struct ag_json_err {
    size_t offset;      /* byte offset of the offending byte (0-based) */
    size_t line, col;   /* 1-based; col counts bytes */
    const char *reason; /* static text, e.g. "expected ':' after object key" */
} ag_json_err;

/*
 * Parse input[0..len) into *root.  Returns AG_OK; AG_EINVAL for malformed
 * JSON; AG_ELIMIT when depth or size limits are passed; AG_NOMEM when the
 * arena or the scratch stack cannot grow.  On failure *err says where (err
 * may be NULL) and the arena may hold garbage from the partial parse.
 * opts may be NULL for the defaults.
 */
ag_status ag_json_parse(const char *input, size_t len, const ag_json_opts *opts, ag_arena *arena,
                        ag_json_val **root, ag_json_err *err);

/* Accessors.  All accept NULL and return the "absent" answer for it. */
static inline ag_json_type ag_json_type_of(const ag_json_val *v) { return v ? (ag_json_type)v->type : AG_JSON_NULL; }
static inline bool ag_json_is(const ag_json_val *v, ag_json_type t) { return v && v->type == t; }
static inline size_t ag_json_len(const ag_json_val *v) { return v ? v->len : 0; }
const ag_json_val *ag_json_arr_at(const ag_json_val *arr, size_t i);
const ag_json_val *ag_json_obj_get(const ag_json_val *obj, const char *key, size_t key_len);
const ag_json_val *ag_json_obj_getc(const ag_json_val *obj, const char *key);
ag_str ag_json_str(const ag_json_val *v); /* {NULL,0} unless a string */
/* Numbers: get_int accepts an int, or a double with an exact int64 value; get_double accepts either. */
bool ag_json_get_int(const ag_json_val *v, int64_t *out);
bool ag_json_get_double(const ag_json_val *v, double *out);
bool ag_json_get_bool(const ag_json_val *v, bool *out);
/* Semantic equality: numbers by value (1 == 1.0), objects ignoring member order. */
bool ag_json_equal(const ag_json_val *a, const ag_json_val *b);
const char *ag_json_type_name(ag_json_type t);

/*
 * Streaming writer.  Calls append to w->out and insert commas, colons and
 * (when pretty) newlines and indentation themselves; inside an object, call
 * ag_jw_key before each value.  Misuse (a value where a key is due, too deep,
 * a non-finite double, invalid UTF-8 under AG_UTF8_REJECT) sets out->err, which
 * like every ag_buf error is sticky: check it once at the end.
 */
#define AG_JW_MAX_DEPTH 256

typedef struct ag_jw {
    ag_buf *out;           /* borrowed */
    ag_utf8_policy policy; /* for strings that are not valid UTF-8 */
    uint8_t indent;        /* spaces per level; 0 writes compact JSON */
    uint16_t depth;
    uint8_t first[AG_JW_MAX_DEPTH + 1];  /* no element written yet at this depth */
    uint8_t in_obj[AG_JW_MAX_DEPTH + 1]; /* container at this depth is an object */
    bool key_pending;                    /* a key was written; its value is next */
} ag_jw;

void ag_jw_init(ag_jw *w, ag_buf *out, uint8_t indent, ag_utf8_policy policy);
void ag_jw_obj_begin(ag_jw *w);
void ag_jw_obj_end(ag_jw *w);
void ag_jw_arr_begin(ag_jw *w);
void ag_jw_arr_end(ag_jw *w);
void ag_jw_key(ag_jw *w, const char *key, size_t len);
void ag_jw_keyc(ag_jw *w, const char *key);
void ag_jw_str(ag_jw *w, const char *s, size_t len);
void ag_jw_strc(ag_jw *w, const char *s);
void ag_jw_int(ag_jw *w, int64_t v);
void ag_jw_double(ag_jw *w, double v); /* shortest text that reads back exactly */
void ag_jw_bool(ag_jw *w, bool v);
void ag_jw_null(ag_jw *w);
/* Write a parsed value (and everything under it). */
void ag_jw_value(ag_jw *w, const ag_json_val *v);

/* Shortest round-trip text of a finite double into out (>= 32 bytes); returns its length. */
size_t ag_json_format_double(double v, char *out);

#endif
