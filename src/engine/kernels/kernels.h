/*
 * kernels.h - the compute kernels the forward pass is built from, behind one
 * table so a variant (AVX2, AVX-512, later CUDA) can replace another without
 * the model code knowing.
 *
 * The heavy one is the matrix product: y[t][r] = W[r,:] . x[t,:] for a batch
 * of T activation rows against weight rows [r0, r1).  Each weight type reads
 * its activations in a matching "dot type" (ggml's vec_dot_type), prepared
 * once per product by ag_kern_act_prepare: F32 and F16 weights take F32
 * activations, BF16 takes BF16, the 32-weight quantized types take
 * activations quantized to Q8_0 blocks and the K-quants Q8_K super-blocks,
 * so the inner loop is an integer dot product.  Variants tile
 * rows x tokens so a weight row loaded once serves several tokens (prefill)
 * and several rows are in flight at once (decode).
 *
 * Every variant has the scalar `generic` twin as its reference; the tests
 * compare them on odd shapes.  ag_kernels_get() picks the best variant this
 * CPU supports (CPUID at run time), or the one AG_KERNELS names
 * (generic, avx2, avx512) for tests and benchmarks.
 */
#ifndef AG_ENGINE_KERNELS_H
#define AG_ENGINE_KERNELS_H

#include "engine/dtype.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The weight types the matrix product takes, as a dense index. */
typedef enum ag_wtype {
    AG_W_F32,
    AG_W_F16,
    AG_W_BF16,
    AG_W_Q8_0,
    AG_W_Q4_0,
    AG_W_Q4_1,
    AG_W_Q5_0,
    AG_W_Q5_1,
    AG_W_IQ4_NL,
    AG_W_Q2_K,
    AG_W_Q3_K,
    AG_W_Q4_K,
    AG_W_Q5_K,
    AG_W_Q6_K,
    /* load-time layouts (repack.c), never in a file: 16 rows' blocks interleaved */
    AG_W_Q8_0_R16,
    AG_W_Q4_0_R16,
    AG_W_F16_R16,
    AG_W_Q4_K_R16,
    AG_W_Q6_K_R16,
    AG_W_Q5_K_R16,
    AG_W_Q3_K_R16,
    AG_W_Q2_K_R16,
    AG_W_COUNT
} ag_wtype;

/* -1 when the dtype has no matrix kernel. */
int ag_wtype_of(ag_dtype t);
/* The activation dtype a weight type's product reads. */
ag_dtype ag_wtype_act(ag_wtype w);

/*
 * y[t * ldy + r] = W[r,:] . x[t,:] for r in [r0, r1), t in [0, T).  Row r of W
 * starts at w + r * w_stride bytes; activation row t at x + t * x_stride bytes,
 * in the weight type's activation dtype.  n is the row length in elements (a
 * multiple of the weight type's block: 32, or 256 for the K-quants).
 */
typedef void (*ag_matmul_fn)(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n, size_t r0,
                             size_t r1, size_t T, float *y, size_t ldy);

typedef struct ag_kernels {
    const char *name;
    ag_matmul_fn matmul[AG_W_COUNT];
    /* n floats to Q8_0 blocks (n a multiple of 32); every variant gives the same bytes. */
    void (*quantize_q8_0)(const float *x, ag_block_q8_0 *y, size_t n);
    /* n floats to Q8_K blocks (n a multiple of 256): ggml's quantize_row_q8_K_ref's bytes in every variant. */
    void (*quantize_q8_k)(const float *x, ag_block_q8_k *y, size_t n);
    /*
     * Attention's P . V (forward.c): o[i][0..d) += p[i][k] * v[k][0..d) for
     * k = 0..n[i]-1 in order, rows i = 0..rows-1 (o's rows ldo floats apart,
     * p's ldp, v's d); one fused multiply-add per element per k, so every
     * variant gives the generic twin's bits.
     */
    void (*attn_pv)(float *o, size_t ldo, const float *p, size_t ldp, const float *v, size_t d, const int *n,
                    size_t rows);
    /*
     * One row's P . V straight from the cache's fp16 values: o[0..d) +=
     * p[k] * v_k[0..d) for k = 0..n-1 in order, v_k the d halves at v + k *
     * vstride bytes; attn_pv's FMAs on the widened values, so its bits.  A
     * decode row uses each value once: widening a tile first would write and
     * read it again.
     */
    void (*attn_pv_f16)(float *o, const float *p, const void *v, size_t vstride, size_t d, int n);
    /* n fp16 values to float (exact); the F16 tiles' widening (tile.h's AG_WIDEN_F16) in the SIMD variants. */
    void (*f16_to_f32)(const void *x, float *y, size_t n);
    /* n floats to fp16, rounded to nearest even (ag_f32_to_f16's bits): keys and values into the cache. */
    void (*f32_to_f16)(const float *x, void *y, size_t n);
    /*
     * The softmax's numerators: row[p] = ag_kern_exp(row[p] - mx) for
     * p < n; returns their sum as eight lanes (p mod 8, each in order of p)
     * added by ag_kern_sum8, so every variant gives the generic twin's bits.
     */
    float (*softmax_exp)(float *row, int n, float mx);
    /* SwiGLU's gate: g[i] = g[i] / (1 + ag_kern_exp(-g[i])) * u[i], the generic twin's bits in every variant. */
    void (*silu_mul)(float *g, const float *u, size_t n);
} ag_kernels;

/* The variant to use on this CPU (or AG_KERNELS's choice when that is supported here). */
const ag_kernels *ag_kernels_get(void);
/* A variant by name, or NULL when this build or CPU lacks it. */
const ag_kernels *ag_kernels_by_name(const char *name);

/* Bytes of one activation row of n elements in w's activation dtype. */
size_t ag_kern_act_row_bytes(ag_wtype w, size_t n);
/*
 * Convert n floats into w's activation dtype at dst (ag_kern_act_row_bytes(w,
 * n) bytes); a Q8_0 row's sides (below) only when ag_wtype_reads_sides(w).
 */
void ag_kern_act_prepare(const ag_kernels *k, ag_wtype w, const float *x, void *dst, size_t n);

/*
 * A per-thread, cache-line aligned scratch buffer of at least `bytes`, valid
 * until the thread's next call; freed when the thread exits.  Aborts on OOM
 * (it is sized by the model's shape, checked at load).
 */
void *ag_kern_scratch(size_t bytes);

/*
 * Rotary position embedding, in three steps so the model computes each part
 * once: frequencies at load, cos/sin per position per chunk, the rotation
 * per head.  Only the first n_rot dimensions of a head turn (GLM rotates
 * half of each head) and frequencies run over n_rot, not the head size:
 *   inv_freq[i] = base^(-2i / n_rot) / factors[i]   (factors NULL: 1)
 *   cs[2i], cs[2i+1] = cos, sin(pos * inv_freq[i])  for i < n_rot / 2
 * Pair i is (2i, 2i+1), adjacent (GPT-J; Llama GGUFs, whose converter
 * permutes Q/K into this order, and GLM natively), or (i, i + n_rot/2) with
 * neox (Qwen, Hugging Face's rotate_half); dimensions n_rot.. pass as they are.
 */
void ag_rope_freqs(int n_rot, float base, const float *factors, float *inv_freq);
void ag_rope_table(int32_t pos, const float *inv_freq, int n_rot, float *cs);
void ag_rope_apply(float *v, int n_heads, int head_dim, int n_rot, bool neox, const float *cs);

/*
 * Repacked weights (repack.c says the layout and why).  A matrix of a type
 * with a repacked form, whose rows are a multiple of AG_REPACK_ROWS, may be
 * rewritten at load into groups of 16 rows; its product is then called with
 * w_stride = the bytes of one group, and r0, r1 multiples of 16.  A row's
 * result is the same bits in every variant (the generic twin included) and
 * however many tokens share the call.
 */
enum { AG_REPACK_ROWS = 16 };
/* A repacked Q4_K group's bytes per super-block (repack.c): levels, scales, mins, then d and dmin as the file's fp16. */
enum { AG_R16_Q4K_SCALES = 2048, AG_R16_Q4K_MINS = 2048 + 128, AG_R16_Q4K_D = 2048 + 256, AG_R16_Q4K_SB = 2048 + 320 };
/* A repacked Q5_K group's super-block: 512 bytes of fifth bits (8 pieces of 64), then a Q4_K super-block's bytes. */
enum { AG_R16_Q5K_QH = 512, AG_R16_Q5K_SB = AG_R16_Q5K_QH + AG_R16_Q4K_SB };
/*
 * A repacked Q6_K group's bytes per super-block (repack.c): scales, 8
 * chunks of pieces in the order the kernels read them, d; the file's 16 x 210.
 * The offsets of low-nibble piece (m, k), k 0..15, and high-bit piece
 * (m, k), k 0..7, of half m:
 */
enum { AG_R16_Q6K_SCALES = 0, AG_R16_Q6K_D = 256 + 3072, AG_R16_Q6K_SB = 256 + 3072 + 32 };
static inline size_t ag_r16_q6k_ql(int m, int k) { return 256 + (size_t)((m * 4 + k % 8 / 2) * 6 + (k >= 8) * 2 + k % 2) * 64; }
static inline size_t ag_r16_q6k_qh(int m, int k) { return 256 + (size_t)((m * 4 + k / 2) * 6 + 4 + k % 2) * 64; }
/*
 * A repacked Q3_K group's bytes per super-block (repack.c): Q6_K's scales,
 * 8 high-bit pieces of 64, 16 pieces of 2-bit levels (piece (m, k) of half
 * m at AG_R16_Q3K_QL + (8m + k) * 64), d; the file's 16 x 110 and 64 more.
 */
enum { AG_R16_Q3K_QH = 256, AG_R16_Q3K_QL = 256 + 512, AG_R16_Q3K_D = 256 + 512 + 1024, AG_R16_Q3K_SB = 256 + 512 + 1024 + 32 };
/* A repacked Q2_K group's super-block: the file's scale bytes (scale | min << 4) as Q6_K's scales, Q3_K's 16 level pieces, d, dmin. */
enum { AG_R16_Q2K_QL = 256, AG_R16_Q2K_D = 256 + 1024, AG_R16_Q2K_SB = 256 + 1024 + 64 };
/* The repacked type of w, or -1 when it has none. */
int ag_wtype_repacked(ag_wtype w);
/* Bytes of one 16-row group of rows of n elements in repacked type r (a multiple of 64). */
size_t ag_kern_repack_group_bytes(ag_wtype r, size_t n);
/* Rows [0, rows) of src (row r at src + r * src_stride, type w) into dst, 64-byte aligned, in w's repacked type. */
void ag_kern_repack(ag_wtype w, const void *src, size_t src_stride, size_t rows, size_t n, void *dst);

/*
 * A Q8_0 activation row (what ag_kern_act_prepare writes for the types that
 * read Q8_0) is its nb = n / 32 blocks, then from ag_kern_act_side_offset(n)
 * one side per block: what the repacked products need besides the bytes,
 * computed once per row rather than by every thread's every chunk of rows.
 */
typedef struct ag_kern_act_side {
    float d;     /* the block's scale */
    int32_t sum; /* the sum of its 32 int8 values (the unsigned levels' offset correction) */
} ag_kern_act_side;
static inline size_t ag_kern_act_side_offset(size_t n) { return (n / 32 * sizeof(ag_block_q8_0) + 7) / 8 * 8; }
/* Whether w's products read the sides (the repacked quantized types). */
static inline bool ag_wtype_reads_sides(ag_wtype w) { return w == AG_W_Q8_0_R16 || w == AG_W_Q4_0_R16; }
/* The repacked products' generic twins: the definition the SIMD variants are tested against. */
void ag_kern_matmul_f16_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                    size_t r0, size_t r1, size_t T, float *y, size_t ldy);
void ag_kern_matmul_q8_0_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                     size_t r0, size_t r1, size_t T, float *y, size_t ldy);
void ag_kern_matmul_q4_k_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                     size_t r0, size_t r1, size_t T, float *y, size_t ldy);
void ag_kern_matmul_q4_0_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                     size_t r0, size_t r1, size_t T, float *y, size_t ldy);
void ag_kern_matmul_q6_k_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                     size_t r0, size_t r1, size_t T, float *y, size_t ldy);
void ag_kern_matmul_q3_k_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                     size_t r0, size_t r1, size_t T, float *y, size_t ldy);
void ag_kern_matmul_q2_k_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                     size_t r0, size_t r1, size_t T, float *y, size_t ldy);
void ag_kern_matmul_q5_k_r16_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n,
                                     size_t r0, size_t r1, size_t T, float *y, size_t ldy);

/* The variants (defined in kernels_<name>.c; NULL-free tables, checked at run time by ag_kernels_by_name). */
extern const ag_kernels ag_kernels_generic;
#if defined(__x86_64__)
extern const ag_kernels ag_kernels_avx2;
extern const ag_kernels ag_kernels_avx512;
#endif

/* Shared scalar helpers for the variants' tails. */
static inline float ag_kern_f16(uint16_t h) { return ag_f16_to_f32(h); }

/*
 * e^x for the softmax (x <= 0) and SiLU: Cody-Waite reduction to r = x - n ln2
 * with |r| <= ln2/2, Cephes' degree-6 polynomial, then 2^n by the exponent
 * bits.  Every step is one rounding or one fused multiply-add, so a SIMD
 * variant taking the same steps lane by lane gives these bits (libm's expf
 * is a different function on each libc).  Within 2 ulp of e^x on
 * [-87, 88]; below -87 (e^-87 is under FLT_MIN) and NaN give 0, above 88
 * e^88 (SiLU's g / (1 + e^-g) is then g * 6e-39, zero to a float sum).
 */
enum { AG_KERN_EXP_LO = -87, AG_KERN_EXP_HI = 88 };
static const float ag_kern_exp_c[] = {1.9875691500E-4f, 1.3981999507E-3f, 8.3334519073E-3f,
                                      4.1665795894E-2f, 1.6666665459E-1f, 5.0000001201E-1f};
#define AG_KERN_LOG2E 1.44269504088896341f
#define AG_KERN_LN2_HI 0.693359375f
#define AG_KERN_LN2_LO -2.12194440e-4f
static inline float ag_kern_exp(float x) {
    if (!(x >= (float)AG_KERN_EXP_LO)) return 0;
    if (x > (float)AG_KERN_EXP_HI) x = (float)AG_KERN_EXP_HI;
    const float n = nearbyintf(x * AG_KERN_LOG2E);
    float r = fmaf(n, -AG_KERN_LN2_HI, x);
    r = fmaf(n, -AG_KERN_LN2_LO, r);
    float p = ag_kern_exp_c[0];
    for (int i = 1; i < 6; i++) p = fmaf(p, r, ag_kern_exp_c[i]);
    const float y = fmaf(p, r * r, r) + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* Eight lane sums added in the order a 256-bit horizontal sum takes: (0+4, 1+5, 2+6, 3+7), then pairs. */
static inline float ag_kern_sum8(const float l[8]) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* softmax_exp from key p on, lane holding keys 0..p-1's sums: the generic twin from 0, a SIMD variant's tail. */
static inline float ag_kern_softmax_exp_from(float *row, int p, int n, float mx, float lane[8]) {
    for (; p < n; p++) lane[p % 8] += row[p] = ag_kern_exp(row[p] - mx);
    return ag_kern_sum8(lane);
}

/* attn_pv_f16 from column j on (each column over the keys in order): the generic twin from 0, a SIMD variant's tail. */
static inline void ag_kern_attn_pv_f16_from(float *o, const float *p, const void *v, size_t vstride, size_t j, size_t d,
                                            int n) {
    for (; j < d; j++)
        for (int k = 0; k < n; k++) {
            const uint16_t *vk = (const uint16_t *)((const char *)v + (size_t)k * vstride);
            o[j] = fmaf(p[k], ag_kern_f16(vk[j]), o[j]);
        }
}

/* silu_mul from element i on: the generic twin from 0, a SIMD variant's tail. */
static inline void ag_kern_silu_mul_from(float *g, const float *u, size_t i, size_t n) {
    for (; i < n; i++) g[i] = g[i] / (1.0f + ag_kern_exp(-g[i])) * u[i];
}

/*
 * The generic products of the types a variant leaves to plain C (Q4_1 and
 * Q5_1, rare fallbacks in llama-quantize's mixes): every table names one.
 */
void ag_kern_matmul_q4_1_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n, size_t r0,
                                 size_t r1, size_t T, float *y, size_t ldy);
void ag_kern_matmul_q5_1_generic(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n, size_t r0,
                                 size_t r1, size_t T, float *y, size_t ldy);

#endif
