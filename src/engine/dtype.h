/*
 * dtype.h - tensor element types as GGUF stores them, and their reference
 * conversions.
 *
 * The ids are ggml's (GGUF files carry them).  Quantized types are arrays of
 * blocks, byte-identical to ggml's block_q8_0 and block_q4_0 (sizes are
 * static_asserted), so weights are used in place from a mapped file and the
 * files we write load in llama.cpp.  The routines here are the plain scalar
 * references that SIMD kernels are tested against, and quantization follows
 * ggml's reference rounding so our Q8_0/Q4_0 bytes match llama.cpp's.
 */
#ifndef AG_ENGINE_DTYPE_H
#define AG_ENGINE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ag_dtype {
    AG_DTYPE_F32 = 0,
    AG_DTYPE_F16 = 1,
    AG_DTYPE_Q4_0 = 2,
    AG_DTYPE_Q4_1 = 3,
    AG_DTYPE_Q5_0 = 6,
    AG_DTYPE_Q5_1 = 7,
    AG_DTYPE_Q8_0 = 8,
    AG_DTYPE_Q2_K = 10,
    AG_DTYPE_Q3_K = 11,
    AG_DTYPE_Q4_K = 12,
    AG_DTYPE_Q5_K = 13,
    AG_DTYPE_Q6_K = 14,
    AG_DTYPE_Q8_K = 15,
    AG_DTYPE_IQ4_NL = 20,
    AG_DTYPE_BF16 = 30,
} ag_dtype;

#define AG_QK8_0 32
#define AG_QK4_0 32
#define AG_QK_K 256

/* ggml block_q8_0: x[i] = d * qs[i] */
typedef struct ag_block_q8_0 {
    uint16_t d; /* fp16 scale */
    int8_t qs[AG_QK8_0];
} ag_block_q8_0;

/* ggml block_q4_0: x[j] = d * ((qs[j] & 15) - 8), x[j + 16] = d * ((qs[j] >> 4) - 8) */
typedef struct ag_block_q4_0 {
    uint16_t d; /* fp16 scale */
    uint8_t qs[AG_QK4_0 / 2];
} ag_block_q4_0;

/* ggml block_q4_1: x[j] = d * (qs[j] & 15) + m, x[j + 16] = d * (qs[j] >> 4) + m */
typedef struct ag_block_q4_1 {
    uint16_t d, m;
    uint8_t qs[16];
} ag_block_q4_1;

/* ggml block_q5_0: as Q4_0 with a fifth bit, bit j of qh (little-endian u32) for x[j]; q - 16 */
typedef struct ag_block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[16];
} ag_block_q5_0;

/* ggml block_q5_1: the same five bits, x = d * q + m */
typedef struct ag_block_q5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} ag_block_q5_1;

/* ggml block_iq4_nl: x[j] = d * kvalues[qs[j] & 15], x[j + 16] = d * kvalues[qs[j] >> 4] (a non-linear grid) */
typedef struct ag_block_iq4_nl {
    uint16_t d;
    uint8_t qs[16];
} ag_block_iq4_nl;
extern const int8_t ag_iq4nl_values[16];

/*
 * ggml block_q2_K: 16 sub-blocks of 16; x = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4),
 * q 2 bits: element 128h + 32k + l is bits 2k, 2k+1 of qs[32h + l].
 */
typedef struct ag_block_q2_k {
    uint8_t scales[AG_QK_K / 16];
    uint8_t qs[AG_QK_K / 4];
    uint16_t d, dmin;
} ag_block_q2_k;

/*
 * ggml block_q3_K: Q2_K's layout of 2-bit q plus a third bit, bit e / 32 of
 * hmask[e % 32]; x = d * (sc_j - 32) * (q + 4 * bit - 4), sc_j 6 bits packed in
 * scales[12] (ag_q3k_scale).
 */
typedef struct ag_block_q3_k {
    uint8_t hmask[AG_QK_K / 8];
    uint8_t qs[AG_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} ag_block_q3_k;

/*
 * ggml block_q4_K: 8 sub-blocks of 32; x = d * sc_j * q - dmin * m_j with 6-bit
 * sc_j, m_j packed in scales[12] (ag_q4k_scale_min).  Sub-blocks 2g and 2g+1 are
 * the low and high nibbles of qs[32g .. 32g+31].
 */
typedef struct ag_block_q4_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[AG_QK_K / 2];
} ag_block_q4_k;

/* ggml block_q5_K: Q4_K plus a fifth bit: bit j of qh[l] is element 32j + l's */
typedef struct ag_block_q5_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[AG_QK_K / 8];
    uint8_t qs[AG_QK_K / 2];
} ag_block_q5_k;

/* ggml block_q6_K: 16 sub-blocks of 16; x = d * scales[j] * (q - 32), q 6 bits (low 4 in ql, high 2 in qh) */
typedef struct ag_block_q6_k {
    uint8_t ql[AG_QK_K / 2];
    uint8_t qh[AG_QK_K / 4];
    int8_t scales[AG_QK_K / 16];
    uint16_t d;
} ag_block_q6_k;

/* ggml block_q8_K (activations): x = d * qs, bsums[j] = sum of qs[16j .. 16j+15] */
typedef struct ag_block_q8_k {
    float d;
    int8_t qs[AG_QK_K];
    int16_t bsums[AG_QK_K / 16];
} ag_block_q8_k;

_Static_assert(sizeof(ag_block_q8_0) == 34, "block_q8_0 is 34 bytes in GGUF");
_Static_assert(sizeof(ag_block_q4_0) == 18, "block_q4_0 is 18 bytes in GGUF");
_Static_assert(sizeof(ag_block_q4_1) == 20, "block_q4_1 is 20 bytes in GGUF");
_Static_assert(sizeof(ag_block_q5_0) == 22, "block_q5_0 is 22 bytes in GGUF");
_Static_assert(sizeof(ag_block_q5_1) == 24, "block_q5_1 is 24 bytes in GGUF");
_Static_assert(sizeof(ag_block_iq4_nl) == 18, "block_iq4_nl is 18 bytes in GGUF");
_Static_assert(sizeof(ag_block_q2_k) == 84, "block_q2_K is 84 bytes in GGUF");
_Static_assert(sizeof(ag_block_q3_k) == 110, "block_q3_K is 110 bytes in GGUF");
_Static_assert(sizeof(ag_block_q4_k) == 144, "block_q4_K is 144 bytes in GGUF");
_Static_assert(sizeof(ag_block_q5_k) == 176, "block_q5_K is 176 bytes in GGUF");
_Static_assert(sizeof(ag_block_q6_k) == 210, "block_q6_K is 210 bytes in GGUF");
_Static_assert(sizeof(ag_block_q8_k) == 292, "block_q8_K is 292 bytes in ggml");

/* A Q5_0/Q5_1 block's 32 levels, 0..31: the nibbles of qs and the bits of qh (a little-endian u32). */
static inline void ag_q5_levels(const uint8_t *qs, const uint8_t *qh4, int *q) {
    uint32_t qh = (uint32_t)qh4[0] | (uint32_t)qh4[1] << 8 | (uint32_t)qh4[2] << 16 | (uint32_t)qh4[3] << 24;
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        q[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

/* A Q2_K/Q3_K block's 2-bit level of element e (0..255). */
static inline int ag_q2k_level(const uint8_t *qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

/* Sub-block j's (0..15) scale of a Q3_K block, -32..31. */
static inline int ag_q3k_scale(int j, const uint8_t *s) {
    int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4, hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* Sub-block j's 6-bit scale and min of a Q4_K/Q5_K block (ggml's get_scale_min_k4). */
static inline void ag_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63, *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* True for the ids a GGUF tensor may have here (the enum above, but Q8_K, which is only for activations). */
bool ag_dtype_supported(uint32_t ggml_type);
/* True for the quantized (block) types. */
bool ag_dtype_is_quant(ag_dtype t);
/* Name as llama.cpp prints it ("f32", "q8_0", ...); for any ggml id, "type-N" when unknown. */
const char *ag_dtype_name(uint32_t ggml_type);
/* Parse a name ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", ...); -1 when not a tensor type here. */
int ag_dtype_parse(const char *name);
/* Elements per block (1 for float types) and bytes per block. */
size_t ag_dtype_block_elems(ag_dtype t);
size_t ag_dtype_block_bytes(ag_dtype t);
/* Bytes of n elements; false when n is not a whole number of blocks or the size overflows. */
bool ag_dtype_bytes(ag_dtype t, uint64_t n, uint64_t *bytes);

float ag_f16_to_f32(uint16_t h);
uint16_t ag_f32_to_f16(float f); /* round to nearest even; overflow to infinity */
float ag_bf16_to_f32(uint16_t h);
uint16_t ag_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

/* n elements (a whole number of blocks) from t to float and back. */
void ag_dtype_to_f32(ag_dtype t, const void *src, float *dst, size_t n);
void ag_dtype_from_f32(ag_dtype t, const float *src, void *dst, size_t n);

/*
 * The K-quant and 5-bit references (kquant.c): ggml's quantize_row_*_ref
 * searches (make_qkx2_quants, make_qx_quants) and dequantizers, n a whole
 * number of blocks.  Reached through ag_dtype_to_f32/ag_dtype_from_f32.
 */
void ag_kquant_to_f32(ag_dtype t, const void *src, float *dst, size_t n);
void ag_kquant_from_f32(ag_dtype t, const float *src, void *dst, size_t n);
/* ggml's nearest_int: round half to even through the float mantissa, |f| <= 4194303. */
static inline int ag_nearest_int(float f) {
    union {
        float f;
        int32_t i;
    } u = {f + 12582912.f};
    return (u.i & 0x007fffff) - 0x00400000;
}

/*
 * The first block of t in data[0, bytes) whose scales are not finite, or -1:
 * ggml refuses such blocks at load (ggml_validate_row_data), and so do we.
 */
int64_t ag_dtype_find_bad_block(ag_dtype t, const void *data, uint64_t bytes);

#endif
