/*
 * utf8.c - strict UTF-8 validation, decoding and encoding; see utf8.h.
 *
 * With AVX2 the validator checks 32 bytes per step for every byte class
 * (Keiser and Lemire, "Validating UTF-8 in less than one instruction per
 * byte", 2021): three 16-entry nibble tables, looked up with vpshufb on the
 * previous byte's two nibbles and the current byte's high nibble, AND to a
 * set of error bits; continuation bytes that a 3- or 4-byte lead two or
 * three bytes back expects cancel the "two continuations" bit.  The tables
 * below were derived from those error classes and checked against the
 * byte-pair definition for all 65,536 pairs; the tests compare the whole
 * validator against the scalar one.  Only the yes/no answer is vectorized:
 * on invalid input the scalar pass finds the offset.  Without AVX2, ASCII
 * runs are skipped a vector (or word) at a time and the rest decoded.
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

#if defined(__AVX2__)
/* Error bits: 0 too short, 1 too long, 2 overlong 3-byte, 3 too large, 4 surrogate,
 * 5 overlong 2-byte, 6 overlong 4-byte or too large (8x), 7 two continuations. */
#define T16(...) _mm256_setr_epi8(__VA_ARGS__, __VA_ARGS__)
#define PREV(cur, prev, n) _mm256_alignr_epi8((cur), _mm256_permute2x128_si256((prev), (cur), 0x21), 16 - (n))

static int valid_avx2(const uint8_t *p, size_t n) {
    const __m256i prev_hi = T16(0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, (char)0x80, (char)0x80, (char)0x80,
                                (char)0x80, 0x21, 0x01, 0x15, 0x49);
    const __m256i prev_lo = T16((char)0xE7, (char)0xA3, (char)0x83, (char)0x83, (char)0x8B, (char)0xCB, (char)0xCB,
                                (char)0xCB, (char)0xCB, (char)0xCB, (char)0xCB, (char)0xCB, (char)0xCB, (char)0xDB,
                                (char)0xCB, (char)0xCB);
    const __m256i cur_hi = T16(0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, (char)0xE6, (char)0xAE, (char)0xBA,
                               (char)0xBA, 0x01, 0x01, 0x01, 0x01);
    /* a byte at position 29/30/31 at or above F0/E0/C0 starts a sequence the block cannot finish */
    const __m256i incomplete_max = _mm256_setr_epi8(
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, (char)(0xF0 - 1), (char)(0xE0 - 1), (char)(0xC0 - 1));
    const __m256i nib = _mm256_set1_epi8(0x0F);
    __m256i prev = _mm256_setzero_si256(), err = _mm256_setzero_si256(), prev_incomplete = _mm256_setzero_si256();
    uint8_t tail[32];
    int after_ascii = 1; /* the previous block was all ASCII (or there was none): no sequence is open */
    for (size_t i = 0; i < n;) {
        if (after_ascii && n - i >= 128) { /* ASCII stretches: 128 bytes per test */
            __m256i a = _mm256_loadu_si256((const __m256i *)(p + i)), b = _mm256_loadu_si256((const __m256i *)(p + i + 32));
            __m256i c = _mm256_loadu_si256((const __m256i *)(p + i + 64)), d = _mm256_loadu_si256((const __m256i *)(p + i + 96));
            if (_mm256_movemask_epi8(_mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d))) == 0) {
                prev = d;
                i += 128;
                continue;
            }
        }
        __m256i in;
        if (n - i >= 32) {
            in = _mm256_loadu_si256((const __m256i *)(p + i));
        } else { /* zero padding: an unfinished sequence before it reads as "too short" */
            memset(tail, 0, sizeof tail);
            memcpy(tail, p + i, n - i);
            in = _mm256_loadu_si256((const __m256i *)tail);
        }
        i += 32;
        after_ascii = _mm256_movemask_epi8(in) == 0;
        if (after_ascii) { /* only a sequence left open before this block can fail here */
            err = _mm256_or_si256(err, prev_incomplete);
            prev_incomplete = _mm256_setzero_si256();
            prev = in;
            continue;
        }
        __m256i prev1 = PREV(in, prev, 1);
        __m256i special = _mm256_and_si256(
            _mm256_and_si256(_mm256_shuffle_epi8(prev_hi, _mm256_and_si256(_mm256_srli_epi16(prev1, 4), nib)),
                             _mm256_shuffle_epi8(prev_lo, _mm256_and_si256(prev1, nib))),
            _mm256_shuffle_epi8(cur_hi, _mm256_and_si256(_mm256_srli_epi16(in, 4), nib)));
        __m256i third = _mm256_subs_epu8(PREV(in, prev, 2), _mm256_set1_epi8((char)(0xE0 - 0x80)));
        __m256i fourth = _mm256_subs_epu8(PREV(in, prev, 3), _mm256_set1_epi8((char)(0xF0 - 0x80)));
        __m256i must_cont = _mm256_and_si256(_mm256_or_si256(third, fourth), _mm256_set1_epi8((char)0x80));
        err = _mm256_or_si256(err, _mm256_xor_si256(must_cont, special));
        prev_incomplete = _mm256_subs_epu8(in, incomplete_max);
        prev = in;
    }
    err = _mm256_or_si256(err, prev_incomplete);
    return _mm256_testz_si256(err, err);
}
#else
/* Bytes from p[0] that are ASCII, found a vector at a time. */
static inline size_t ascii_run(const uint8_t *p, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
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

#endif

size_t ag_utf8_valid_prefix(const uint8_t *p, size_t n) {
#if defined(__AVX2__)
    if (n < 32) { /* short pieces (streamed tokens, keys): words, no vector setup */
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) return ag_utf8_valid_prefix_generic(p, n);
        }
        while (i < n && p[i] < 0x80) i++;
        return i == n ? n : ag_utf8_valid_prefix_generic(p, n);
    }
    return valid_avx2(p, n) ? n : ag_utf8_valid_prefix_generic(p, n);
#else
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
#endif
}
