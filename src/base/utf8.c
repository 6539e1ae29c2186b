/*
 * utf8.c - strict UTF-8 validation, decoding and encoding; see utf8.h.
 *
 * The validator is a scalar decoder with an ASCII fast path: most JSON and
 * prompt text is ASCII, which the SIMD loop clears 32 or 16 bytes at a time.
 * Multi-byte sequences go through the table of RFC 3629 section 4 byte by
 * byte; a SIMD multi-byte validator (Keiser-Lemire) is the upgrade if CJK-heavy
 * input ever dominates a profile.
 */
#include "base/utf8.h"

#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Valid range of the second byte for each lead byte (RFC 3629 section 4). */
static inline int second_ok(uint8_t lead, uint8_t b) {
    switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return (b & 0xC0) == 0x80;
    }
}

static inline size_t seq_len(uint8_t lead) {
    if (lead < 0x80) return 1;
    if (lead < 0xC2) return 0; /* continuation byte or overlong C0/C1 */
    if (lead < 0xE0) return 2;
    if (lead < 0xF0) return 3;
    if (lead < 0xF5) return 4;
    return 0;
}

size_t ag_utf8_decode(const uint8_t *p, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    uint8_t lead = p[0];
    size_t len = seq_len(lead);
    if (len == 1) {
        *cp = lead;
        return 1;
    }
    if (len == 0 || n < len || !second_ok(lead, p[1])) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    uint32_t c;
    switch (len) {
    case 2: c = ((uint32_t)(lead & 0x1F) << 6) | (p[1] & 0x3F); break;
    case 3: c = ((uint32_t)(lead & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F); break;
    default:
        c = ((uint32_t)(lead & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) | ((uint32_t)(p[2] & 0x3F) << 6) |
            (p[3] & 0x3F);
    }
    *cp = c;
    return len;
}

size_t ag_utf8_invalid_len(const uint8_t *p, size_t n) {
    if (n == 0) return 0;
    size_t len = seq_len(p[0]);
    if (len <= 1 || n < 2 || !second_ok(p[0], p[1])) return 1;
    size_t i = 2;
    while (i < len && i < n && (p[i] & 0xC0) == 0x80) i++;
    return i; /* a truncated but well-begun sequence is one maximal subpart */
}

size_t ag_utf8_encode(uint32_t cp, uint8_t out[4]) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

size_t ag_utf8_valid_prefix_generic(const uint8_t *p, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        size_t len = ag_utf8_decode(p + i, n - i, &cp);
        if (len == 0) return i;
        i += len;
    }
    return n;
}

/* Bytes from p[0] that are ASCII, found a vector at a time. */
static inline size_t ascii_run(const uint8_t *p, size_t n) {
    size_t i = 0;
#if defined(__AVX2__)
    for (; i + 32 <= n; i += 32) {
        unsigned m = (unsigned)_mm256_movemask_epi8(_mm256_loadu_si256((const __m256i *)(p + i)));
        if (m) return i + (size_t)__builtin_ctz(m);
    }
#elif defined(__SSE2__)
    for (; i + 16 <= n; i += 16) {
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(p + i)));
        if (m) return i + (size_t)__builtin_ctz(m);
    }
#endif
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & 0x8080808080808080ull) break;
    }
    while (i < n && p[i] < 0x80) i++;
    return i;
}

size_t ag_utf8_valid_prefix(const uint8_t *p, size_t n) {
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        i += ascii_run(p + i, n - i);
        /* then a run of multi-byte sequences, decoded until ASCII returns */
        while (i < n && p[i] >= 0x80) {
            size_t len = ag_utf8_decode(p + i, n - i, &cp);
            if (len == 0) return i;
            i += len;
        }
    }
    return n;
}
