/*
 * json_write.c - the streaming JSON writer; see json.h.
 *
 * The writer keeps one byte of state per open container (has it an element
 * yet? is it an object?) so commas, colons and indentation come out right
 * without the caller tracking them.  Escaping is base's
 * ag_buf_append_json_str, shared with the JSON log format.  Doubles are
 * written with the fewest significant digits that read back to the same
 * double, in the C locale.
 */
#include "json/json.h"

#include "base/str.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

void ag_jw_init(ag_jw *w, ag_buf *out, uint8_t indent, ag_utf8_policy policy) {
    memset(w, 0, sizeof *w);
    w->out = out;
    w->indent = indent;
    w->policy = policy;
}

static void misuse(ag_jw *w) {
    if (w->out->err == AG_OK) w->out->err = AG_EINVAL;
}

static void newline_indent(ag_jw *w, unsigned depth) {
    static const char spaces[] = "                                                                ";
    ag_buf_append_char(w->out, '\n');
    size_t n = (size_t)depth * w->indent;
    while (n) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        ag_buf_append(w->out, spaces, k);
        n -= k;
    }
}

/* Separator and indentation before an array element or object key. */
static void before_element(ag_jw *w) {
    if (w->depth == 0) return;
    if (!w->first[w->depth]) ag_buf_append_char(w->out, ',');
    w->first[w->depth] = 0;
    if (w->indent) newline_indent(w, w->depth);
}

/* Called before every value; 0 when the value may be written here. */
static int before_value(ag_jw *w) {
    if (w->depth > 0 && w->in_obj[w->depth]) {
        if (!w->key_pending) {
            misuse(w);
            return -1;
        }
        w->key_pending = false;
        return 0;
    }
    before_element(w);
    return 0;
}

static void open_container(ag_jw *w, char c, int is_obj) {
    if (before_value(w)) return;
    if (w->depth == AG_JW_MAX_DEPTH) {
        if (w->out->err == AG_OK) w->out->err = AG_ELIMIT;
        return;
    }
    ag_buf_append_char(w->out, c);
    w->depth++;
    w->first[w->depth] = 1;
    w->in_obj[w->depth] = (uint8_t)is_obj;
}

static void close_container(ag_jw *w, char c, int is_obj) {
    if (w->depth == 0 || w->in_obj[w->depth] != is_obj || w->key_pending) {
        misuse(w);
        return;
    }
    if (w->indent && !w->first[w->depth]) newline_indent(w, w->depth - 1u);
    w->depth--;
    ag_buf_append_char(w->out, c);
}

void ag_jw_obj_begin(ag_jw *w) { open_container(w, '{', 1); }
void ag_jw_obj_end(ag_jw *w) { close_container(w, '}', 1); }
void ag_jw_arr_begin(ag_jw *w) { open_container(w, '[', 0); }
void ag_jw_arr_end(ag_jw *w) { close_container(w, ']', 0); }

void ag_jw_key(ag_jw *w, const char *key, size_t len) {
    if (w->depth == 0 || !w->in_obj[w->depth] || w->key_pending) {
        misuse(w);
        return;
    }
    before_element(w);
    ag_buf_append_json_str(w->out, key, len, w->policy);
    if (w->indent) ag_buf_append(w->out, ": ", 2);
    else ag_buf_append_char(w->out, ':');
    w->key_pending = true;
}

void ag_jw_keyc(ag_jw *w, const char *key) { ag_jw_key(w, key, strlen(key)); }

void ag_jw_str(ag_jw *w, const char *s, size_t len) {
    if (before_value(w)) return;
    ag_buf_append_json_str(w->out, s, len, w->policy);
}

void ag_jw_strc(ag_jw *w, const char *s) { ag_jw_str(w, s, strlen(s)); }

void ag_jw_int(ag_jw *w, int64_t v) {
    if (before_value(w)) return;
    char tmp[24];
    char *e = tmp + sizeof tmp, *p = e;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    ag_buf_append(w->out, p, (size_t)(e - p));
}

size_t ag_json_format_double(double v, char *out) {
    /* For normal doubles the nearest 15-, 16- or 17-digit decimal is the
     * shortest that round-trips (15 = DBL_DIG always does if any shorter
     * one would); subnormals have fewer bits, so search from 1 digit. */
    int prec = fabs(v) < DBL_MIN ? 1 : 15;
    int n = 0;
    for (; prec <= 17; prec++) {
        n = ag_snprintf_c(out, 32, "%.*g", prec, v);
        if (ag_strtod_c(out, NULL) == v) break;
    }
    /* Keep it visibly a double so it parses back as one. */
    if (!strpbrk(out, ".eEn")) {
        memcpy(out + n, ".0", 3);
        n += 2;
    }
    return (size_t)n;
}

void ag_jw_double(ag_jw *w, double v) {
    if (!isfinite(v)) { /* JSON has no NaN or infinity */
        misuse(w);
        return;
    }
    if (before_value(w)) return;
    char tmp[40];
    ag_buf_append(w->out, tmp, ag_json_format_double(v, tmp));
}

void ag_jw_bool(ag_jw *w, bool v) {
    if (before_value(w)) return;
    if (v) ag_buf_append(w->out, "true", 4);
    else ag_buf_append(w->out, "false", 5);
}

void ag_jw_null(ag_jw *w) {
    if (before_value(w)) return;
    ag_buf_append(w->out, "null", 4);
}

void ag_jw_value(ag_jw *w, const ag_json_val *v) {
    if (w->out->err != AG_OK) return; /* also bounds recursion: depth errors stop the descent */
    switch (ag_json_type_of(v)) {
    case AG_JSON_NULL: ag_jw_null(w); break;
    case AG_JSON_FALSE: ag_jw_bool(w, false); break;
    case AG_JSON_TRUE: ag_jw_bool(w, true); break;
    case AG_JSON_INT: ag_jw_int(w, v->u.i); break;
    case AG_JSON_DOUBLE: ag_jw_double(w, v->u.d); break;
    case AG_JSON_STRING: ag_jw_str(w, v->u.s, v->len); break;
    case AG_JSON_ARRAY:
        ag_jw_arr_begin(w);
        for (uint32_t i = 0; i < v->len; i++) ag_jw_value(w, &v->u.items[i]);
        ag_jw_arr_end(w);
        break;
    case AG_JSON_OBJECT:
        ag_jw_obj_begin(w);
        for (uint32_t i = 0; i < v->len; i++) {
            ag_jw_key(w, v->u.members[i].key.u.s, v->u.members[i].key.len);
            ag_jw_value(w, &v->u.members[i].val);
        }
        ag_jw_obj_end(w);
        break;
    }
}
