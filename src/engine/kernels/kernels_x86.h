/*
 * kernels_x86.h - AVX2 kernels the AVX-512 variant reuses where wider
 * registers buy nothing (activation quantization, attention helpers).
 */
#ifndef AG_ENGINE_KERNELS_X86_H
#define AG_ENGINE_KERNELS_X86_H

#include "engine/kernels/kernels.h"

void ag_kern_quantize_q8_0_avx2(const float *x, ag_block_q8_0 *y, size_t n);
float ag_kern_dot_f32_avx2(const float *a, const float *b, size_t n);
float ag_kern_dot_f16_avx2(const uint16_t *a, const float *b, size_t n);
void ag_kern_axpy_f32_avx2(float *y, float a, const float *x, size_t n);
void ag_kern_axpy_f16_avx2(float *y, float a, const uint16_t *x, size_t n);

#endif
