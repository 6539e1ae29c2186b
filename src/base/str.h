/*
 * str.h - byte spans and the small string helpers the CLI and config code
 * share: comparison, trimming, and strict number / duration / size parsing
 * (no locale, no silent truncation: trailing garbage is an error).
 */
#ifndef AG_BASE_STR_H
#define AG_BASE_STR_H

#include "autoglm/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A borrowed span of bytes; not NUL-terminated in general. */
typedef struct ag_str {
    const char *p;
    size_t n;
} ag_str;

#define AG_STR_LIT(s) ((ag_str){(s), sizeof(s) - 1})

ag_str ag_str_from_cstr(const char *s);
bool ag_str_eq(ag_str a, ag_str b);
bool ag_str_eq_cstr(ag_str a, const char *s);
/* ASCII case-insensitive equality (HTTP header names, enum-like options). */
bool ag_str_ieq(ag_str a, ag_str b);
bool ag_str_starts_with(ag_str s, ag_str prefix);
/* s without leading and trailing ASCII whitespace (space, \t, \r, \n). */
ag_str ag_str_trim(ag_str s);

/* Decimal unsigned integer, the whole span; AG_EINVAL or AG_ELIMIT on overflow. */
ag_status ag_str_parse_u64(ag_str s, uint64_t *out);
/*
 * A duration, the one grammar every flag and admin API uses: a decimal number
 * (digits, at most one '.') and a unit, us, ms, s or m; a bare number is
 * seconds.  "250ms", "1.5s", "40us", "2m".  AG_EINVAL on anything else
 * (signs, spaces, exponents), AG_ELIMIT past 2^63 microseconds.
 */
ag_status ag_str_parse_duration_us(ag_str s, uint64_t *out_us);
/* The same, in milliseconds, rounded up (so a positive duration stays positive). */
ag_status ag_str_parse_duration_ms(ag_str s, uint64_t *out_ms);

/*
 * Locale-independent number text: strtod and snprintf in the "C" locale
 * whatever setlocale() the program made, so JSON and metrics never print
 * "0,5".  Both are correctly rounded (glibc).
 */
double ag_strtod_c(const char *s, char **end);
int ag_snprintf_c(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
