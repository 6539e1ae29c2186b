/*
 * dtype.c - reference conversions for the tensor types of dtype.h.
 *
 * Half precision is converted in software here (exact, round to nearest
 * even, subnormals and non-finites handled); kernels use F16C where the CPU
 * has it and are tested against these.  Q8_0 and Q4_0 quantize as ggml's
 * reference quantize_row_q8_0_ref / quantize_row_q4_0_ref do; the K-quants
 * and the 5-bit types live in kquant.c.
 */
#include "engine/dtype.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

bool ag_dtype_supported(uint32_t t) {
    switch (t) {
    case AG_DTYPE_F32:
    case AG_DTYPE_F16:
    case AG_DTYPE_BF16:
    case AG_DTYPE_Q8_0:
    case AG_DTYPE_Q4_0:
    case AG_DTYPE_Q4_1:
    case AG_DTYPE_Q5_0:
    case AG_DTYPE_Q5_1:
    case AG_DTYPE_IQ4_NL:
    case AG_DTYPE_Q2_K:
    case AG_DTYPE_Q3_K:
    case AG_DTYPE_Q4_K:
    case AG_DTYPE_Q5_K:
    case AG_DTYPE_Q6_K: return true;
    default: return false;
    }
}

bool ag_dtype_is_quant(ag_dtype t) { return ag_dtype_block_elems(t) > 1; }

const char *ag_dtype_name(uint32_t t) {
    /* ggml's ids, so an unsupported file is refused by name */
    static const char *const names[] = {
        [0] = "f32",      [1] = "f16",     [2] = "q4_0",    [3] = "q4_1",     [6] = "q5_0",    [7] = "q5_1",
        [8] = "q8_0",     [9] = "q8_1",    [10] = "q2_k",   [11] = "q3_k",    [12] = "q4_k",   [13] = "q5_k",
        [14] = "q6_k",    [15] = "q8_k",   [16] = "iq2_xxs", [17] = "iq2_xs", [18] = "iq3_xxs", [19] = "iq1_s",
        [20] = "iq4_nl",  [21] = "iq3_s",  [22] = "iq2_s",  [23] = "iq4_xs",  [24] = "i8",      [25] = "i16",
        [26] = "i32",     [27] = "i64",    [28] = "f64",    [29] = "iq1_m",   [30] = "bf16",    [34] = "tq1_0",
        [35] = "tq2_0",   [39] = "mxfp4",
    };
    if (t < sizeof names / sizeof names[0] && names[t]) return names[t];
    static _Thread_local char buf[24];
    snprintf(buf, sizeof buf, "type-%u", t);
    return buf;
}

int ag_dtype_parse(const char *name) {
    static const ag_dtype all[] = {AG_DTYPE_F32,  AG_DTYPE_F16,  AG_DTYPE_BF16, AG_DTYPE_Q8_0,
                                   AG_DTYPE_Q4_0, AG_DTYPE_Q4_1, AG_DTYPE_Q5_0, AG_DTYPE_Q5_1,
                                   AG_DTYPE_IQ4_NL, AG_DTYPE_Q2_K, AG_DTYPE_Q3_K, AG_DTYPE_Q4_K,
                                   AG_DTYPE_Q5_K, AG_DTYPE_Q6_K};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, ag_dtype_name(all[i])) == 0) return (int)all[i];
    return -1;
}

size_t ag_dtype_block_elems(ag_dtype t) {
    switch (t) {
    case AG_DTYPE_F32:
    case AG_DTYPE_F16:
    case AG_DTYPE_BF16: return 1;
    case AG_DTYPE_Q2_K:
    case AG_DTYPE_Q3_K:
    case AG_DTYPE_Q4_K:
    case AG_DTYPE_Q5_K:
    case AG_DTYPE_Q6_K:
    case AG_DTYPE_Q8_K: return AG_QK_K;
    default: return 32;
    }
}

size_t ag_dtype_block_bytes(ag_dtype t) {
    switch (t) {
    case AG_DTYPE_F32: return 4;
    case AG_DTYPE_F16:
    case AG_DTYPE_BF16: return 2;
    case AG_DTYPE_Q8_0: return sizeof(ag_block_q8_0);
    case AG_DTYPE_Q4_0: return sizeof(ag_block_q4_0);
    case AG_DTYPE_Q4_1: return sizeof(ag_block_q4_1);
    case AG_DTYPE_Q5_0: return sizeof(ag_block_q5_0);
    case AG_DTYPE_Q5_1: return sizeof(ag_block_q5_1);
    case AG_DTYPE_IQ4_NL: return sizeof(ag_block_iq4_nl);
    case AG_DTYPE_Q2_K: return sizeof(ag_block_q2_k);
    case AG_DTYPE_Q3_K: return sizeof(ag_block_q3_k);
    case AG_DTYPE_Q4_K: return sizeof(ag_block_q4_k);
    case AG_DTYPE_Q5_K: return sizeof(ag_block_q5_k);
    case AG_DTYPE_Q6_K: return sizeof(ag_block_q6_k);
    case AG_DTYPE_Q8_K: return sizeof(ag_block_q8_k);
    }
    return 0;
}

bool ag_dtype_bytes(ag_dtype t, uint64_t n, uint64_t *bytes) {
    uint64_t be = ag_dtype_block_elems(t), bb = ag_dtype_block_bytes(t);
    if (bb == 0 || n % be) return false;
    uint64_t blocks = n / be;
    if (blocks > UINT64_MAX / bb) return false;
    *bytes = blocks * bb;
    return true;
}

static inline uint32_t f32_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

static inline float bits_f32(uint32_t x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}

float ag_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 31) return bits_f32(sign | 0x7F800000u | (mant << 13));
    if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
    if (mant == 0) return bits_f32(sign);
    int shifts = 0; /* subnormal: normalize */
    while (!(mant & 0x400)) mant <<= 1, shifts++;
    return bits_f32(sign | ((uint32_t)(113 - shifts) << 23) | ((mant & 0x3FF) << 13));
}

uint16_t ag_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xFF, mant = x & 0x7FFFFF;
    if (exp == 0xFF) return (uint16_t)(sign | 0x7C00 | (mant ? 0x200 | (mant >> 13) : 0)); /* NaN stays NaN */
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7C00);
    if (e <= 0) { /* subnormal half, or zero */
        if (e < -10) return sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e), half = mant >> shift, rem = mant & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* a carry may reach infinity: correct */
    return (uint16_t)(sign | half);
}

float ag_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t ag_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((x + 0x7FFF + ((x >> 16) & 1)) >> 16);
}

static void quantize_q8_0(const float *x, ag_block_q8_0 *y, size_t n) {
    for (size_t b = 0; b < n / AG_QK8_0; b++, x += AG_QK8_0) {
        float amax = 0;
        for (int j = 0; j < AG_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = ag_f32_to_f16(d);
        for (int j = 0; j < AG_QK8_0; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void quantize_q4_0(const float *x, ag_block_q4_0 *y, size_t n) {
    for (size_t b = 0; b < n / AG_QK4_0; b++, x += AG_QK4_0) {
        float amax = 0, max = 0; /* the value of largest magnitude, with its sign */
        for (int j = 0; j < AG_QK4_0; j++)
            if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
        float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = ag_f32_to_f16(d);
        for (int j = 0; j < AG_QK4_0 / 2; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + AG_QK4_0 / 2] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void ag_dtype_to_f32(ag_dtype t, const void *src, float *dst, size_t n) {
    switch (t) {
    case AG_DTYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case AG_DTYPE_F16:
        for (size_t i = 0; i < n; i++) dst[i] = ag_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case AG_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = ag_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case AG_DTYPE_Q8_0:
        for (size_t b = 0; b < n / AG_QK8_0; b++) {
            const ag_block_q8_0 *blk = (const ag_block_q8_0 *)src + b;
            float d = ag_f16_to_f32(blk->d);
            for (int j = 0; j < AG_QK8_0; j++) dst[b * AG_QK8_0 + (size_t)j] = d * (float)blk->qs[j];
        }
        break;
    case AG_DTYPE_Q4_0:
        for (size_t b = 0; b < n / AG_QK4_0; b++) {
            const ag_block_q4_0 *blk = (const ag_block_q4_0 *)src + b;
            float d = ag_f16_to_f32(blk->d);
            float *y = dst + b * AG_QK4_0;
            for (int j = 0; j < AG_QK4_0 / 2; j++) {
                y[j] = d * (float)((blk->qs[j] & 0x0F) - 8);
                y[j + AG_QK4_0 / 2] = d * (float)((blk->qs[j] >> 4) - 8);
            }
        }
        break;
    default: ag_kquant_to_f32(t, src, dst, n); break;
    }
}

void ag_dtype_from_f32(ag_dtype t, const float *src, void *dst, size_t n) {
    switch (t) {
    case AG_DTYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case AG_DTYPE_F16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = ag_f32_to_f16(src[i]);
        break;
    case AG_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = ag_f32_to_bf16(src[i]);
        break;
    case AG_DTYPE_Q8_0: quantize_q8_0(src, dst, n); break;
    case AG_DTYPE_Q4_0: quantize_q4_0(src, dst, n); break;
    default: ag_kquant_from_f32(t, src, dst, n); break;
    }
}

/*
 * Where each block type keeps its fp16 scales: offsets of up to two of them
 * (d, then m or dmin) from the block's start.  -1: none.
 */
static void scale_offsets(ag_dtype t, int *a, int *b) {
    *a = 0, *b = -1;
    switch (t) {
    case AG_DTYPE_Q4_1:
    case AG_DTYPE_Q5_1:
    case AG_DTYPE_Q4_K:
    case AG_DTYPE_Q5_K: *b = 2; break;
    case AG_DTYPE_Q6_K: *a = (int)offsetof(ag_block_q6_k, d); break;
    case AG_DTYPE_Q3_K: *a = (int)offsetof(ag_block_q3_k, d); break;
    case AG_DTYPE_Q2_K: *a = (int)offsetof(ag_block_q2_k, d), *b = (int)offsetof(ag_block_q2_k, dmin); break;
    default: break;
    }
}

int64_t ag_dtype_find_bad_block(ag_dtype t, const void *data, uint64_t bytes) {
    if (!ag_dtype_is_quant(t) || t == AG_DTYPE_Q8_K) return -1;
    size_t bb = ag_dtype_block_bytes(t);
    int a, b;
    scale_offsets(t, &a, &b);
    const uint8_t *p = data;
    for (uint64_t i = 0; i < bytes / bb; i++, p += bb) {
        uint16_t h;
        memcpy(&h, p + a, 2);
        bool bad = (h & 0x7C00) == 0x7C00; /* fp16 infinity or NaN */
        if (b >= 0) memcpy(&h, p + b, 2), bad |= (h & 0x7C00) == 0x7C00;
        if (bad) return (int64_t)i;
    }
    return -1;
}
