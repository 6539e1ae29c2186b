/*
 * str.c - span helpers and strict parsing; see str.h.
 */
#define _GNU_SOURCE /* strtod_l, uselocale */
#include "base/str.h"

#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ag_str ag_str_from_cstr(const char *s) { return (ag_str){s, strlen(s)}; }

bool ag_str_eq(ag_str a, ag_str b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }

bool ag_str_eq_cstr(ag_str a, const char *s) { return ag_str_eq(a, ag_str_from_cstr(s)); }

static inline char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c; }

bool ag_str_ieq(ag_str a, ag_str b) {
    if (a.n != b.n) return false;
    for (size_t i = 0; i < a.n; i++)
        if (ascii_lower(a.p[i]) != ascii_lower(b.p[i])) return false;
    return true;
}

bool ag_str_starts_with(ag_str s, ag_str prefix) {
    return s.n >= prefix.n && (prefix.n == 0 || memcmp(s.p, prefix.p, prefix.n) == 0);
}

static inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

ag_str ag_str_trim(ag_str s) {
    while (s.n && is_space(s.p[0])) s.p++, s.n--;
    while (s.n && is_space(s.p[s.n - 1])) s.n--;
    return s;
}

ag_status ag_str_parse_u64(ag_str s, uint64_t *out) {
    if (s.n == 0) return AG_EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        unsigned d = (unsigned char)s.p[i] - '0';
        if (d > 9) return AG_EINVAL;
        if (v > (UINT64_MAX - d) / 10) return AG_ELIMIT;
        v = v * 10 + d;
    }
    *out = v;
    return AG_OK;
}

ag_status ag_str_parse_duration_us(ag_str s, uint64_t *out_us) {
    size_t n = 0, digits = 0;
    bool dot = false;
    for (; n < s.n && ((s.p[n] >= '0' && s.p[n] <= '9') || (s.p[n] == '.' && !dot)); n++) {
        if (s.p[n] == '.') dot = true;
        else digits++;
    }
    if (!digits) return AG_EINVAL;
    ag_str unit = {s.p + n, s.n - n};
    double scale = !unit.n || ag_str_eq_cstr(unit, "s") ? 1e6 : ag_str_eq_cstr(unit, "ms") ? 1e3
                 : ag_str_eq_cstr(unit, "us") ? 1 : ag_str_eq_cstr(unit, "m") ? 60e6 : -1;
    if (scale < 0) return AG_EINVAL;
    char num[64];
    if (n >= sizeof num) return AG_ELIMIT;
    memcpy(num, s.p, n);
    num[n] = 0;
    double us = ag_strtod_c(num, NULL) * scale;
    if (!(us < 0x1p63)) return AG_ELIMIT;
    *out_us = (uint64_t)(us + 0.5);
    return AG_OK;
}

ag_status ag_str_parse_duration_ms(ag_str s, uint64_t *out_ms) {
    uint64_t us;
    ag_status st = ag_str_parse_duration_us(s, &us);
    if (st == AG_OK) *out_ms = us / 1000 + (us % 1000 != 0);
    return st;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

double ag_strtod_c(const char *s, char **end) {
    pthread_once(&c_locale_once, c_locale_init);
    return c_locale ? strtod_l(s, end, c_locale) : strtod(s, end);
}

int ag_snprintf_c(char *out, size_t size, const char *fmt, ...) {
    pthread_once(&c_locale_once, c_locale_init);
    locale_t prev = c_locale ? uselocale(c_locale) : (locale_t)0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    if (prev) uselocale(prev);
    return n;
}
