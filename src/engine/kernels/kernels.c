/*
 * kernels.c - the variant table lookup (CPUID at run time), the activation
 * preparation shared by all variants, and the scalar `generic` variant: the
 * plainly written reference every SIMD kernel is tested against, and the
 * fallback on CPUs without AVX2.
 */
#include "engine/kernels/kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

int ag_wtype_of(ag_dtype t) {
    switch (t) {
    case AG_DTYPE_F32: return AG_W_F32;
    case AG_DTYPE_F16: return AG_W_F16;
    case AG_DTYPE_BF16: return AG_W_BF16;
    case AG_DTYPE_Q8_0: return AG_W_Q8_0;
    case AG_DTYPE_Q4_0: return AG_W_Q4_0;
    case AG_DTYPE_Q4_1: return AG_W_Q4_1;
    case AG_DTYPE_Q5_0: return AG_W_Q5_0;
    case AG_DTYPE_Q5_1: return AG_W_Q5_1;
    case AG_DTYPE_IQ4_NL: return AG_W_IQ4_NL;
    case AG_DTYPE_Q2_K: return AG_W_Q2_K;
    case AG_DTYPE_Q3_K: return AG_W_Q3_K;
    case AG_DTYPE_Q4_K: return AG_W_Q4_K;
    case AG_DTYPE_Q5_K: return AG_W_Q5_K;
    case AG_DTYPE_Q6_K: return AG_W_Q6_K;
    case AG_DTYPE_Q8_K: return -1;
    }
    return -1;
}

ag_dtype ag_wtype_act(ag_wtype w) {
    switch (w) {
    case AG_W_BF16: return AG_DTYPE_BF16;
    case AG_W_Q8_0:
    case AG_W_Q8_0_R16:
    case AG_W_Q4_0:
    case AG_W_Q4_0_R16:
    case AG_W_Q4_1:
    case AG_W_Q5_0:
    case AG_W_Q5_1:
    case AG_W_IQ4_NL: return AG_DTYPE_Q8_0;
    case AG_W_Q2_K:
    case AG_W_Q2_K_R16:
    case AG_W_Q3_K:
    case AG_W_Q3_K_R16:
    case AG_W_Q4_K:
    case AG_W_Q4_K_R16:
    case AG_W_Q5_K:
    case AG_W_Q5_K_R16:
    case AG_W_Q6_K:
    case AG_W_Q6_K_R16: return AG_DTYPE_Q8_K;
    default: return AG_DTYPE_F32;
    }
}

size_t ag_kern_act_row_bytes(ag_wtype w, size_t n) {
    if (ag_wtype_act(w) == AG_DTYPE_Q8_0) return ag_kern_act_side_offset(n) + n / 32 * sizeof(ag_kern_act_side);
    uint64_t b = 0;
    ag_dtype_bytes(ag_wtype_act(w), n, &b);
    return (size_t)b;
}

void ag_kern_act_prepare(const ag_kernels *k, ag_wtype w, const float *x, void *dst, size_t n) {
    switch (ag_wtype_act(w)) {
    case AG_DTYPE_F32: memcpy(dst, x, n * sizeof(float)); break;
    case AG_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = ag_f32_to_bf16(x[i]);
        break;
    case AG_DTYPE_Q8_K: k->quantize_q8_k(x, dst, n); break;
    default: {
        k->quantize_q8_0(x, dst, n);
        if (!ag_wtype_reads_sides(w)) break;
        const ag_block_q8_0 *b = dst;
        ag_kern_act_side *side = (ag_kern_act_side *)((char *)dst + ag_kern_act_side_offset(n));
        for (size_t i = 0; i < n / 32; i++) {
            int32_t sum = 0;
            for (int j = 0; j < 32; j++) sum += b[i].qs[j];
            side[i] = (ag_kern_act_side){ag_f16_to_f32(b[i].d), sum};
        }
        break;
    }
    }
}

void ag_rope_freqs(int n_rot, float base, const float *factors, float *inv_freq) {
    for (int i = 0; i < n_rot / 2; i++) {
        double f = pow((double)base, -2.0 * i / n_rot);
        inv_freq[i] = (float)(factors ? f / factors[i] : f);
    }
}

void ag_rope_table(int32_t pos, const float *inv_freq, int n_rot, float *cs) {
    for (int i = 0; i < n_rot / 2; i++) {
        float a = (float)pos * inv_freq[i];
        cs[2 * i] = cosf(a), cs[2 * i + 1] = sinf(a);
    }
}

void ag_rope_apply(float *v, int n_heads, int head_dim, int n_rot, bool neox, const float *cs) {
    int half = n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            float x0 = x[i0], x1 = x[i1];
            x[i0] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
            x[i1] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
        }
    }
}

typedef struct scratch {
    void *p;
    size_t n;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *v) {
    scratch *s = v;
    free(s->p);
    free(s);
}
static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

void *ag_kern_scratch(size_t bytes) {
    pthread_once(&scratch_once, scratch_init);
    scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s) != 0) abort();
    }
    if (s->n < bytes) {
        free(s->p);
        s->n = (bytes + 63) / 64 * 64;
        s->p = aligned_alloc(64, s->n);
        if (!s->p) abort();
    }
    return s->p;
}

/* ---- generic ------------------------------------------------------------ */

/* Round half to even, as the SIMD variants' cvtps/round do, so all give the same bytes. */
static void quantize_q8_0_generic(const float *x, ag_block_q8_0 *y, size_t n) {
    for (size_t b = 0; b < n / AG_QK8_0; b++, x += AG_QK8_0) {
        float amax = 0;
        for (int i = 0; i < AG_QK8_0; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = ag_f32_to_f16(d);
        for (int i = 0; i < AG_QK8_0; i++) y[b].qs[i] = (int8_t)nearbyintf(x[i] * id);
    }
}

static float dot_f32_generic(const float *a, const float *b, size_t n) {
    float s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static float dot_f16_generic(const uint16_t *a, const float *b, size_t n) {
    float s = 0;
    for (size_t i = 0; i < n; i++) s += ag_f16_to_f32(a[i]) * b[i];
    return s;
}

static float dot_bf16_generic(const uint16_t *a, const uint16_t *b, size_t n) {
    float s = 0;
    for (size_t i = 0; i < n; i++) s += ag_bf16_to_f32(a[i]) * ag_bf16_to_f32(b[i]);
    return s;
}

static float dot_q8_0_generic(const ag_block_q8_0 *w, const ag_block_q8_0 *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) {
        int32_t acc = 0;
        for (int i = 0; i < AG_QK8_0; i++) acc += (int32_t)w[b].qs[i] * x[b].qs[i];
        s += ag_f16_to_f32(w[b].d) * ag_f16_to_f32(x[b].d) * (float)acc;
    }
    return s;
}

static float dot_q4_0_generic(const ag_block_q4_0 *w, const ag_block_q8_0 *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) {
        int32_t acc = 0;
        for (int j = 0; j < AG_QK4_0 / 2; j++) {
            acc += ((w[b].qs[j] & 15) - 8) * x[b].qs[j];
            acc += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + AG_QK4_0 / 2];
        }
        s += ag_f16_to_f32(w[b].d) * ag_f16_to_f32(x[b].d) * (float)acc;
    }
    return s;
}

/* sum of a Q8_0 block's bytes, for the types with a min (x = d * q + m) */
static int32_t q8_0_sum(const ag_block_q8_0 *x) {
    int32_t s = 0;
    for (int i = 0; i < AG_QK8_0; i++) s += x->qs[i];
    return s;
}

static float dot_q4_1_generic(const ag_block_q4_1 *w, const ag_block_q8_0 *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) {
        int32_t acc = 0;
        for (int j = 0; j < 16; j++) acc += (w[b].qs[j] & 15) * x[b].qs[j] + (w[b].qs[j] >> 4) * x[b].qs[j + 16];
        float dx = ag_f16_to_f32(x[b].d);
        s += ag_f16_to_f32(w[b].d) * dx * (float)acc + ag_f16_to_f32(w[b].m) * dx * (float)q8_0_sum(&x[b]);
    }
    return s;
}

/* One Q5_0/Q5_1 block's integer dot product with a Q8_0 block, the levels less `offset` (16 or 0). */
static int32_t dot5_block(const uint8_t *qs, const uint8_t *qh, int offset, const ag_block_q8_0 *x) {
    int q[32];
    ag_q5_levels(qs, qh, q);
    int32_t acc = 0;
    for (int j = 0; j < 32; j++) acc += (q[j] - offset) * x->qs[j];
    return acc;
}

static float dot_q5_0_generic(const ag_block_q5_0 *w, const ag_block_q8_0 *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++)
        s += ag_f16_to_f32(w[b].d) * ag_f16_to_f32(x[b].d) * (float)dot5_block(w[b].qs, w[b].qh, 16, &x[b]);
    return s;
}

static float dot_q5_1_generic(const ag_block_q5_1 *w, const ag_block_q8_0 *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) {
        float dx = ag_f16_to_f32(x[b].d);
        s += ag_f16_to_f32(w[b].d) * dx * (float)dot5_block(w[b].qs, w[b].qh, 0, &x[b]) +
             ag_f16_to_f32(w[b].m) * dx * (float)q8_0_sum(&x[b]);
    }
    return s;
}

static float dot_iq4_nl_generic(const ag_block_iq4_nl *w, const ag_block_q8_0 *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) {
        int32_t acc = 0;
        for (int j = 0; j < 16; j++)
            acc += ag_iq4nl_values[w[b].qs[j] & 15] * x[b].qs[j] + ag_iq4nl_values[w[b].qs[j] >> 4] * x[b].qs[j + 16];
        s += ag_f16_to_f32(w[b].d) * ag_f16_to_f32(x[b].d) * (float)acc;
    }
    return s;
}

/* Q2_K against Q8_K: d_x * (d * sum_g (sc_g & 15) * sum q x - dmin * sum_g (sc_g >> 4) * bsums[g]). */
static float dot_q2_k_generic(const ag_block_q2_k *w, const ag_block_q8_k *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) {
        int32_t sumi = 0, summ = 0;
        for (int g = 0; g < 16; g++) {
            int32_t p = 0;
            for (int e = 16 * g; e < 16 * g + 16; e++) p += ag_q2k_level(w[b].qs, e) * x[b].qs[e];
            sumi += (w[b].scales[g] & 15) * p;
            summ += (w[b].scales[g] >> 4) * x[b].bsums[g];
        }
        s += x[b].d * (ag_f16_to_f32(w[b].d) * (float)sumi - ag_f16_to_f32(w[b].dmin) * (float)summ);
    }
    return s;
}

/* Q3_K against Q8_K: d_x * d * sum_g sc_g * sum (q + 4 * bit - 4) x. */
static float dot_q3_k_generic(const ag_block_q3_k *w, const ag_block_q8_k *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) {
        int32_t sumi = 0;
        for (int g = 0; g < 16; g++) {
            int32_t p = 0;
            for (int e = 16 * g; e < 16 * g + 16; e++)
                p += (ag_q2k_level(w[b].qs, e) + 4 * ((w[b].hmask[e % 32] >> (e / 32)) & 1) - 4) * x[b].qs[e];
            sumi += ag_q3k_scale(g, w[b].scales) * p;
        }
        s += x[b].d * ag_f16_to_f32(w[b].d) * (float)sumi;
    }
    return s;
}

/*
 * Q4_K/Q5_K against Q8_K, per super-block:
 *   d_x * (d * sum_j sc_j * sum_{i in j} q_i x_i - dmin * sum_j m_j * (bsums[2j] + bsums[2j+1]))
 * The min term needs only the activation's 16-element sums.
 */
static float dot_k45(const uint8_t *scales, uint16_t d, uint16_t dmin, const uint8_t *qs, const uint8_t *qh,
                     const ag_block_q8_k *x) {
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        ag_q4k_scale_min(j, scales, &sc, &m);
        int32_t p = 0;
        for (int l = 0; l < 32; l++) {
            int q = j & 1 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 15;
            if (qh) q |= ((qh[l] >> j) & 1) << 4;
            p += q * x->qs[32 * j + l];
        }
        sumi += sc * p;
        summ += m * (x->bsums[2 * j] + x->bsums[2 * j + 1]);
    }
    return x->d * (ag_f16_to_f32(d) * (float)sumi - ag_f16_to_f32(dmin) * (float)summ);
}

static float dot_q4_k_generic(const ag_block_q4_k *w, const ag_block_q8_k *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) s += dot_k45(w[b].scales, w[b].d, w[b].dmin, w[b].qs, NULL, &x[b]);
    return s;
}

static float dot_q5_k_generic(const ag_block_q5_k *w, const ag_block_q8_k *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) s += dot_k45(w[b].scales, w[b].d, w[b].dmin, w[b].qs, w[b].qh, &x[b]);
    return s;
}

/* Q6_K against Q8_K: d_x * d * sum_g sc_g * sum_{i in g} (q_i - 32) x_i over 16 groups of 16. */
static float dot_q6_k_generic(const ag_block_q6_k *w, const ag_block_q8_k *x, size_t nb) {
    float s = 0;
    for (size_t b = 0; b < nb; b++) {
        int32_t sumi = 0;
        for (int e = 0; e < AG_QK_K; e += 16) {
            int32_t p = 0;
            for (int i = e; i < e + 16; i++) {
                int h = i / 128, k = (i % 128) / 32, l = i % 32;
                uint8_t lo = w[b].ql[64 * h + 32 * (k & 1) + l];
                int q = (k < 2 ? lo & 15 : lo >> 4) | ((w[b].qh[32 * h + l] >> (2 * k)) & 3) << 4;
                p += (q - 32) * x[b].qs[i];
            }
            sumi += w[b].scales[e / 16] * p;
        }
        s += x[b].d * ag_f16_to_f32(w[b].d) * (float)sumi;
    }
    return s;
}

static void quantize_q8_k_generic(const float *x, ag_block_q8_k *y, size_t n) { ag_dtype_from_f32(AG_DTYPE_Q8_K, x, y, n); }

static void attn_pv_generic(float *o, size_t ldo, const float *p, size_t ldp, const float *v, size_t d, const int *n,
                            size_t rows) {
    for (size_t i = 0; i < rows; i++)
        for (int k = 0; k < n[i]; k++)
            for (size_t j = 0; j < d; j++) o[i * ldo + j] = fmaf(p[i * ldp + (size_t)k], v[(size_t)k * d + j], o[i * ldo + j]);
}

static void attn_pv_f16_generic(float *o, const float *p, const void *v, size_t vstride, size_t d, int n) {
    ag_kern_attn_pv_f16_from(o, p, v, vstride, 0, d, n);
}

static void f16_to_f32_generic(const void *x, float *y, size_t n) { ag_dtype_to_f32(AG_DTYPE_F16, x, y, n); }

static void f32_to_f16_generic(const float *x, void *y, size_t n) { ag_dtype_from_f32(AG_DTYPE_F16, x, y, n); }

static void silu_mul_generic(float *g, const float *u, size_t n) { ag_kern_silu_mul_from(g, u, 0, n); }

static float softmax_exp_generic(float *row, int n, float mx) {
    float lane[8] = {0};
    return ag_kern_softmax_exp_from(row, 0, n, mx, lane);
}

/* One matmul per type from its dot product: every (row, token) pair independently. */
#define GENERIC_MATMUL(linkage, name, dot, wt, xt, len)                                                               \
    linkage void name(const void *w, size_t w_stride, const void *x, size_t x_stride, size_t n, size_t r0, size_t r1, \
                      size_t T, float *y, size_t ldy) {                                                                \
        for (size_t t = 0; t < T; t++)                                                                                 \
            for (size_t r = r0; r < r1; r++)                                                                           \
                y[t * ldy + r] = dot((const wt *)((const char *)w + r * w_stride),                                    \
                                     (const xt *)((const char *)x + t * x_stride), len);                              \
    }
GENERIC_MATMUL(static, matmul_f32_generic, dot_f32_generic, float, float, n)
GENERIC_MATMUL(static, matmul_f16_generic, dot_f16_generic, uint16_t, float, n)
GENERIC_MATMUL(static, matmul_bf16_generic, dot_bf16_generic, uint16_t, uint16_t, n)
GENERIC_MATMUL(static, matmul_q8_0_generic, dot_q8_0_generic, ag_block_q8_0, ag_block_q8_0, n / AG_QK8_0)
GENERIC_MATMUL(static, matmul_q4_0_generic, dot_q4_0_generic, ag_block_q4_0, ag_block_q8_0, n / AG_QK4_0)
GENERIC_MATMUL(static, matmul_q5_0_generic, dot_q5_0_generic, ag_block_q5_0, ag_block_q8_0, n / 32)
GENERIC_MATMUL(static, matmul_iq4_nl_generic, dot_iq4_nl_generic, ag_block_iq4_nl, ag_block_q8_0, n / 32)
GENERIC_MATMUL(static, matmul_q2_k_generic, dot_q2_k_generic, ag_block_q2_k, ag_block_q8_k, n / AG_QK_K)
GENERIC_MATMUL(static, matmul_q3_k_generic, dot_q3_k_generic, ag_block_q3_k, ag_block_q8_k, n / AG_QK_K)
GENERIC_MATMUL(static, matmul_q4_k_generic, dot_q4_k_generic, ag_block_q4_k, ag_block_q8_k, n / AG_QK_K)
GENERIC_MATMUL(static, matmul_q5_k_generic, dot_q5_k_generic, ag_block_q5_k, ag_block_q8_k, n / AG_QK_K)
GENERIC_MATMUL(static, matmul_q6_k_generic, dot_q6_k_generic, ag_block_q6_k, ag_block_q8_k, n / AG_QK_K)
GENERIC_MATMUL(, ag_kern_matmul_q4_1_generic, dot_q4_1_generic, ag_block_q4_1, ag_block_q8_0, n / 32)
GENERIC_MATMUL(, ag_kern_matmul_q5_1_generic, dot_q5_1_generic, ag_block_q5_1, ag_block_q8_0, n / 32)
#undef GENERIC_MATMUL

const ag_kernels ag_kernels_generic = {
    .name = "generic",
    .matmul = {matmul_f32_generic, matmul_f16_generic, matmul_bf16_generic, matmul_q8_0_generic, matmul_q4_0_generic,
               ag_kern_matmul_q4_1_generic, matmul_q5_0_generic, ag_kern_matmul_q5_1_generic, matmul_iq4_nl_generic,
               matmul_q2_k_generic, matmul_q3_k_generic, matmul_q4_k_generic, matmul_q5_k_generic, matmul_q6_k_generic,
               ag_kern_matmul_q8_0_r16_generic, ag_kern_matmul_q4_0_r16_generic, ag_kern_matmul_f16_r16_generic,
               ag_kern_matmul_q4_k_r16_generic, ag_kern_matmul_q6_k_r16_generic, ag_kern_matmul_q5_k_r16_generic,
               ag_kern_matmul_q3_k_r16_generic, ag_kern_matmul_q2_k_r16_generic},
    .quantize_q8_0 = quantize_q8_0_generic,
    .quantize_q8_k = quantize_q8_k_generic,
    .attn_pv = attn_pv_generic,
    .attn_pv_f16 = attn_pv_f16_generic,
    .f16_to_f32 = f16_to_f32_generic,
    .f32_to_f16 = f32_to_f16_generic,
    .softmax_exp = softmax_exp_generic,
    .silu_mul = silu_mul_generic,
};

/* ---- selection ---------------------------------------------------------- */

#if defined(__x86_64__)
/* F16C from CPUID directly: clang 14's __builtin_cpu_supports does not know the name. */
static bool cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

static bool cpu_has(const char *name) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (strcmp(name, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    if (strcmp(name, "avx512") == 0) /* Zen 4, Sapphire Rapids and later: VNNI and BF16 dot products */
        return cpu_has("avx2") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("avx512bf16");
#endif
    return strcmp(name, "generic") == 0;
}

const ag_kernels *ag_kernels_by_name(const char *name) {
    if (!cpu_has(name)) return NULL;
#if defined(__x86_64__)
    if (strcmp(name, "avx512") == 0) return &ag_kernels_avx512;
    if (strcmp(name, "avx2") == 0) return &ag_kernels_avx2;
#endif
    return &ag_kernels_generic;
}

const ag_kernels *ag_kernels_get(void) {
    const char *want = getenv("AG_KERNELS");
    const ag_kernels *k = want ? ag_kernels_by_name(want) : NULL;
    if (k) return k;
    static const char *const best[] = {"avx512", "avx2", "generic"};
    for (size_t i = 0; i < sizeof best / sizeof best[0]; i++)
        if ((k = ag_kernels_by_name(best[i]))) return k;
    return &ag_kernels_generic;
}
