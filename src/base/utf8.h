/*
 * utf8.h - UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing
 * past U+10FFFF) and encoding.
 *
 * ag_utf8_valid_prefix has a SIMD path (x86 AVX2/SSE2 when compiled in) that
 * skips ASCII runs and a scalar path for the rest; ag_utf8_valid_prefix_generic
 * is the plain reference the tests compare it with.
 */
#ifndef AG_BASE_UTF8_H
#define AG_BASE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the longest valid UTF-8 prefix of p[0..n): n means all valid. */
size_t ag_utf8_valid_prefix(const uint8_t *p, size_t n);
size_t ag_utf8_valid_prefix_generic(const uint8_t *p, size_t n);

/*
 * Length of the valid sequence starting at p[0] (1..4), or 0 when p[0] does
 * not start one; *cp receives the code point.  For invalid input the caller
 * skips ag_utf8_invalid_len(p, n) bytes (the maximal subpart, as Unicode's
 * "U+FFFD substitution of maximal subparts" practice).
 */
size_t ag_utf8_decode(const uint8_t *p, size_t n, uint32_t *cp);
size_t ag_utf8_invalid_len(const uint8_t *p, size_t n);

/* Write cp (<= 0x10FFFF, not a surrogate) to out; returns 1..4. */
size_t ag_utf8_encode(uint32_t cp, uint8_t out[4]);

#endif
