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
    AG_DTYPE_Q8_0 = 8,
    AG_DTYPE_BF16 = 30,
} ag_dtype;

#define AG_QK8_0 32
#define AG_QK4_0 32

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

_Static_assert(sizeof(ag_block_q8_0) == 34, "block_q8_0 is 34 bytes in GGUF");
_Static_assert(sizeof(ag_block_q4_0) == 18, "block_q4_0 is 18 bytes in GGUF");

/* True for the ids this engine computes with (the enum above). */
bool ag_dtype_supported(uint32_t ggml_type);
/* Name as llama.cpp prints it ("f32", "q8_0", ...); for any ggml id, "type-N" when unknown. */
const char *ag_dtype_name(uint32_t ggml_type);
/* Parse a name ("f32", "f16", "bf16", "q8_0", "q4_0"); -1 when not supported. */
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

#endif
