/*
 * kquant.c - reference quantization and dequantization of the K-quants
 * (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, and Q8_K for activations) and of the
 * 32-weight types llama-quantize falls back to (Q4_1, Q5_0, Q5_1, IQ4_NL).
 *
 * Quantization follows ggml's quantize_row_*_ref step for step, since a file
 * from `autoglm quantize` should be interchangeable with llama-quantize's
 * (which takes these reference paths when no importance matrix is given):
 * per sub-block a weighted search for the scale and min that minimise the
 * squared error (make_qkx2_quants for Q2_K/Q4_K/Q5_K, make_q3_quants for
 * Q3_K, make_qx_quants for Q6_K, a grid search for IQ4_NL),
 * the sub-block scales quantized to 6 or 8 bits against one fp16 super-scale,
 * then every weight re-quantized against the stored (rounded) scales.
 * ggml_nearest_int is ag_nearest_int, fp16 rounding is ag_f32_to_f16 (both
 * round half to even), so ties fall the same way.
 */
#include "engine/dtype.h"

#include <float.h>
#include <stdbool.h>
#include <math.h>
#include <string.h>

#define GROUP_MAX_EPS 1e-15f

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- the 32-weight fallback types ---------------------------------------- */

/* Q4_1's and Q5_1's affine scale over a block of 32: d = (max - min) / nmax and m = min stored; returns 1 / d. */
static float affine_scale(const float *x, int nmax, uint16_t *d16, uint16_t *m16, float *min_out) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < 32; j++) min = fminf(min, x[j]), max = fmaxf(max, x[j]);
    float d = (max - min) / (float)nmax;
    *d16 = ag_f32_to_f16(d), *m16 = ag_f32_to_f16(min), *min_out = min;
    return d ? 1.0f / d : 0.0f;
}

static void quantize_q4_1(const float *x, ag_block_q4_1 *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32) {
        float min, id = affine_scale(x, 15, &y[i].d, &y[i].m, &min);
        for (int j = 0; j < 16; j++) {
            int q0 = (int8_t)((x[j] - min) * id + 0.5f), q1 = (int8_t)((x[j + 16] - min) * id + 0.5f);
            y[i].qs[j] = (uint8_t)((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
        }
    }
}

/* Q5_0 and Q5_1 share the packing: low nibbles in qs as Q4_0's, fifth bits in qh. */
static void pack5(const int *q, uint8_t *qs, uint8_t *qh_out) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
        qh |= (uint32_t)((q[j] >> 4) & 1) << j;
        qh |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
    }
    memcpy(qh_out, &qh, 4);
}

static void quantize_q5_0(const float *x, ag_block_q5_0 *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        float d = max / -16, id = d ? 1.0f / d : 0.0f;
        y[i].d = ag_f32_to_f16(d);
        int q[32];
        for (int j = 0; j < 32; j++) {
            int v = (int8_t)(x[j] * id + 16.5f);
            q[j] = v < 31 ? v : 31;
        }
        pack5(q, y[i].qs, y[i].qh);
    }
}

static void quantize_q5_1(const float *x, ag_block_q5_1 *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32) {
        float min, id = affine_scale(x, 31, &y[i].d, &y[i].m, &min);
        int q[32];
        for (int j = 0; j < 32; j++) q[j] = (uint8_t)((x[j] - min) * id + 0.5f);
        pack5(q, y[i].qs, y[i].qh);
    }
}

/* ---- the searches --------------------------------------------------------- */

/*
 * Unsigned levels 0..nmax with a min: x ~ scale * L + min (min <= 0), weighted
 * least squares over nstep+1 trial scales around nmax / (max - min), each
 * judged by its weighted squared (or, use_mad, absolute) error.  Returns the
 * scale; *the_min gets -min.
 */
static inline float err_of(float diff, bool use_mad) { return use_mad ? fabsf(diff) : diff * diff; }

static float make_qkx2_quants(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                              uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(ag_nearest_int(iscale * (x[i] - min)), 0, nmax);
        best += w[i] * err_of(scale * L[i] + min - x[i], use_mad);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(ag_nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) err += w[i] * err_of(this_scale * Laux[i] + this_min - x[i], use_mad);
            if (err < best) {
                memcpy(L, Laux, (size_t)n);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/*
 * The start Q3_K's and Q6_K's searches share: levels l = nearest(-nmax / max
 * * x), clamped to -nmax..nmax-1, from the value of largest magnitude, with
 * their sums sum w x l and sum w l^2 (weights x^2).  False for an all-zero
 * group (L zeroed).
 */
static bool signed_levels(int n, int nmax, const float *x, int8_t *L, float *max_out, float *sumlx, float *suml2) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return false;
    }
    float iscale = -nmax / max;
    *sumlx = *suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(ag_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        *sumlx += w * x[i] * l;
        *suml2 += w * l * l;
    }
    *max_out = max;
    return true;
}

/*
 * Signed levels -nmax..nmax-1 stored as L + nmax, weights x^2 (ggml's
 * rmse_type 1): the scale from the value of largest magnitude, then 18 trial
 * scales around it, keeping the one that maximises (sum w x l)^2 / sum w l^2.
 */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max, sumlx, suml2, iscale;
    if (!signed_levels(n, nmax, x, L, &max, &sumlx, &suml2)) return 0.f;
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(ag_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + clampi(ag_nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/*
 * Q3_K's and Q6_K's first step: each of the 16 groups of 16 searched for its
 * scale (and levels into L), returning the scale of largest magnitude, sign
 * kept (the first such, as ggml's strict comparison picks it).
 */
static float group_scales(float (*search)(int, int, const float *, int8_t *), int nmax, const float *x, int8_t *L,
                          float *scales) {
    float max_scale = 0, amax = 0;
    for (int g = 0; g < 16; g++) {
        scales[g] = search(16, nmax, x + 16 * g, L + 16 * g);
        if (fabsf(scales[g]) > amax) amax = fabsf(scales[g]), max_scale = scales[g];
    }
    return max_scale;
}

/* ---- Q4_K and Q5_K -------------------------------------------------------- */

/*
 * The part Q4_K and Q5_K share: per 32-weight sub-block the searched scale
 * and min, both quantized to 6 bits against fp16 super-scales, then the
 * levels L (0..nmax) re-quantized against what was stored.
 */
static void quantize_k_scales(const float *x, int nmax, float rmin, int nstep, uint8_t *scales_out, uint16_t *d_out,
                              uint16_t *dmin_out, uint8_t *L) {
    float mins[8], scales[8], weights[32], max_scale = 0, max_min = 0;
    uint8_t Laux[32];
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(xs[l]);
        scales[j] = make_qkx2_quants(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales_out, 0, 12);
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)ag_nearest_int(inv_scale * scales[j]), lm = (uint8_t)ag_nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales_out[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = ag_f32_to_f16(max_scale / 63.f);
    *dmin_out = ag_f32_to_f16(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        ag_q4k_scale_min(j, scales_out, &sc, &m);
        const float d = ag_f16_to_f32(*d_out) * sc;
        if (!d) continue;
        const float dm = ag_f16_to_f32(*dmin_out) * m;
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)clampi(ag_nearest_int((x[32 * j + i] + dm) / d), 0, nmax);
    }
}

static void quantize_q4_k(const float *x, ag_block_q4_k *y, size_t nb) {
    uint8_t L[AG_QK_K];
    for (size_t i = 0; i < nb; i++, x += AG_QK_K) {
        quantize_k_scales(x, 15, -1.f, 20, y[i].scales, &y[i].d, &y[i].dmin, L);
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) y[i].qs[32 * g + l] = (uint8_t)(L[64 * g + l] | (L[64 * g + 32 + l] << 4));
    }
}

static void quantize_q5_k(const float *x, ag_block_q5_k *y, size_t nb) {
    uint8_t L[AG_QK_K];
    for (size_t i = 0; i < nb; i++, x += AG_QK_K) {
        quantize_k_scales(x, 31, -0.5f, 15, y[i].scales, &y[i].d, &y[i].dmin, L);
        memset(y[i].qh, 0, sizeof y[i].qh);
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) {
                int l1 = L[64 * g + l], l2 = L[64 * g + 32 + l];
                if (l1 > 15) l1 -= 16, y[i].qh[l] |= (uint8_t)(1 << (2 * g));
                if (l2 > 15) l2 -= 16, y[i].qh[l] |= (uint8_t)(2 << (2 * g));
                y[i].qs[32 * g + l] = (uint8_t)(l1 | (l2 << 4));
            }
    }
}

/* ---- Q6_K ----------------------------------------------------------------- */

static void quantize_q6_k(const float *x, ag_block_q6_k *y, size_t nb) {
    int8_t L[AG_QK_K];
    float scales[16];
    for (size_t i = 0; i < nb; i++, x += AG_QK_K) {
        float max_scale = group_scales(make_qx_quants, 32, x, L, scales);
        memset(&y[i], 0, sizeof y[i]);
        if (fabsf(max_scale) < GROUP_MAX_EPS) continue;
        float iscale = -128.f / max_scale;
        y[i].d = ag_f32_to_f16(1 / iscale);
        for (int ib = 0; ib < 16; ib++) {
            int v = ag_nearest_int(iscale * scales[ib]);
            y[i].scales[ib] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < 16; j++) {
            float d = ag_f16_to_f32(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int k = 0; k < 16; k++) L[16 * j + k] = (int8_t)(clampi(ag_nearest_int(x[16 * j + k] / d), -32, 31) + 32);
        }
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = y[i].ql + 64 * h, *qh = y[i].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 0xF) | (Lh[l + 64] & 0xF) << 4);
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | (Lh[l + 96] & 0xF) << 4);
                qh[l] = (uint8_t)((Lh[l] >> 4) | (Lh[l + 32] >> 4) << 2 | (Lh[l + 64] >> 4) << 4 | (Lh[l + 96] >> 4) << 6);
            }
        }
    }
}

/* ---- Q2_K and Q3_K -------------------------------------------------------- */

/* Q2_K and Q3_K pack their 2-bit levels alike: element 128h + 32k + l in bits 2k of qs[32h + l]. */
static void pack2(const uint8_t *L, uint8_t *qs) {
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++)
            qs[32 * h + l] = (uint8_t)(L[128 * h + l] | L[128 * h + l + 32] << 2 | L[128 * h + l + 64] << 4 |
                                       L[128 * h + l + 96] << 6);
}

static void quantize_q2_k(const float *x, ag_block_q2_k *y, size_t nb) {
    uint8_t L[AG_QK_K], Laux[16];
    float weights[16], mins[16], scales[16];
    for (size_t i = 0; i < nb; i++, x += AG_QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        memset(y[i].scales, 0, sizeof y[i].scales);
        y[i].d = y[i].dmin = ag_f32_to_f16(0.f);
        if (max_scale > 0) {
            float iscale = 15.f / max_scale;
            for (int j = 0; j < 16; j++) y[i].scales[j] = (uint8_t)ag_nearest_int(iscale * scales[j]);
            y[i].d = ag_f32_to_f16(max_scale / 15.f);
        }
        if (max_min > 0) {
            float iscale = 15.f / max_min;
            for (int j = 0; j < 16; j++) y[i].scales[j] |= (uint8_t)(ag_nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = ag_f32_to_f16(max_min / 15.f);
        }
        for (int j = 0; j < 16; j++) {
            const float d = ag_f16_to_f32(y[i].d) * (y[i].scales[j] & 0xF);
            if (!d) continue;
            const float dm = ag_f16_to_f32(y[i].dmin) * (y[i].scales[j] >> 4);
            for (int k = 0; k < 16; k++) L[16 * j + k] = (uint8_t)clampi(ag_nearest_int((x[16 * j + k] + dm) / d), 0, 3);
        }
        pack2(L, y[i].qs);
    }
}

/*
 * Signed levels -nmax..nmax-1 (stored + nmax) starting from the largest
 * magnitude's scale, then up to 5 passes that move single levels while
 * (sum w x l)^2 / sum w l^2 grows, weights x^2.
 */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max, sumlx, suml2;
    if (!signed_levels(n, nmax, x, L, &max, &sumlx, &suml2)) return 0.f;
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i], slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = clampi(ag_nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l, sumlx = slx, suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return sumlx / suml2;
}

static void quantize_q3_k(const float *x, ag_block_q3_k *y, size_t nb) {
    int8_t L[AG_QK_K];
    float scales[16];
    for (size_t i = 0; i < nb; i++, x += AG_QK_K) {
        float max_scale = group_scales(make_q3_quants, 4, x, L, scales);
        memset(y[i].scales, 0, 12);
        y[i].d = ag_f32_to_f16(0.f);
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) {
                int l = clampi((int8_t)ag_nearest_int(iscale * scales[j]), -32, 31) + 32;
                if (j < 8) y[i].scales[j] = (uint8_t)(l & 0xF);
                else y[i].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
                y[i].scales[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            y[i].d = ag_f32_to_f16(1 / iscale);
        }
        for (int j = 0; j < 16; j++) {
            float d = ag_f16_to_f32(y[i].d) * ag_q3k_scale(j, y[i].scales);
            if (!d) continue;
            for (int k = 0; k < 16; k++) L[16 * j + k] = (int8_t)(clampi(ag_nearest_int(x[16 * j + k] / d), -4, 3) + 4);
        }
        memset(y[i].hmask, 0, sizeof y[i].hmask);
        uint8_t U[AG_QK_K];
        for (int e = 0; e < AG_QK_K; e++) {
            int l = L[e];
            if (l > 3) y[i].hmask[e % 32] |= (uint8_t)(1 << (e / 32)), l -= 4;
            U[e] = (uint8_t)l;
        }
        pack2(U, y[i].qs);
    }
}

/* ---- IQ4_NL ------------------------------------------------------------------ */

const int8_t ag_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* The grid index nearest x (ties to the lower one as ggml's best_index_int8). */
static int best_index(float x) {
    const int8_t *v = ag_iq4nl_values;
    if (x <= v[0]) return 0;
    if (x >= v[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (x < v[mid]) hi = mid;
        else lo = mid;
    }
    return x - v[hi - 1] < v[hi] - x ? hi - 1 : hi;
}

/* One 32-weight block: ggml's quantize_row_iq4_nl_impl with no importance matrix, 15 trial scales. */
static void quantize_iq4_nl(const float *x, ag_block_iq4_nl *y, size_t nb) {
    const int8_t *v = ag_iq4nl_values;
    const int ntry = 7;
    for (size_t i = 0; i < nb; i++, x += 32) {
        float amax = 0, max = 0, d = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
        if (amax >= GROUP_MAX_EPS) {
            float id = 1 / (-max / v[0]), sumqx = 0, sumq2 = 0;
            for (int j = 0; j < 32; j++) {
                float q = v[best_index(id * x[j])], w = x[j] * x[j];
                sumqx += w * q * x[j];
                sumq2 += w * q * q;
            }
            d = sumqx / sumq2;
            float best = d * sumqx;
            for (int itry = -ntry; itry <= ntry; itry++) {
                id = (itry + v[0]) / max;
                sumqx = sumq2 = 0;
                for (int j = 0; j < 32; j++) {
                    float q = v[best_index(id * x[j])], w = x[j] * x[j];
                    sumqx += w * q * x[j];
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) d = sumqx / sumq2, best = d * sumqx;
            }
        }
        y[i].d = ag_f32_to_f16(d);
        float id = d ? 1 / d : 0;
        for (int j = 0; j < 16; j++)
            y[i].qs[j] = (uint8_t)(best_index(id * x[j]) | best_index(id * x[j + 16]) << 4);
    }
}

/* ---- Q8_K (activations) --------------------------------------------------- */

static void quantize_q8_k(const float *x, ag_block_q8_k *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += AG_QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < AG_QK_K; j++)
            if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
        memset(&y[i], 0, sizeof y[i]);
        if (!amax) continue;
        const float iscale = -127.f / max;
        for (int j = 0; j < AG_QK_K; j++) {
            int v = ag_nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int k = 0; k < 16; k++) sum += y[i].qs[16 * j + k];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* ---- dequantization ------------------------------------------------------- */

static void dequant_k45(const uint8_t *scales, uint16_t d16, uint16_t dmin16, const uint8_t *qs, const uint8_t *qh,
                        float *y) {
    const float d = ag_f16_to_f32(d16), dmin = ag_f16_to_f32(dmin16);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        ag_q4k_scale_min(j, scales, &sc, &m);
        const float d1 = d * sc, m1 = dmin * m;
        for (int l = 0; l < 32; l++) {
            int q = j & 1 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 15;
            if (qh) q |= ((qh[l] >> j) & 1) << 4;
            y[32 * j + l] = d1 * (float)q - m1;
        }
    }
}

/* Weight e (0..255) of a Q6_K block, 0..63 (subtract 32 for its value). */
static inline int q6_level(const ag_block_q6_k *b, int e) {
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    uint8_t lo = b->ql[64 * h + 32 * (k & 1) + l];
    return (k < 2 ? lo & 15 : lo >> 4) | ((b->qh[32 * h + l] >> (2 * k)) & 3) << 4;
}

void ag_kquant_to_f32(ag_dtype t, const void *src, float *dst, size_t n) {
    int q[32];
    switch (t) {
    case AG_DTYPE_Q4_1:
        for (size_t i = 0; i < n / 32; i++, dst += 32) {
            const ag_block_q4_1 *b = (const ag_block_q4_1 *)src + i;
            float d = ag_f16_to_f32(b->d), m = ag_f16_to_f32(b->m);
            for (int j = 0; j < 16; j++) dst[j] = d * (b->qs[j] & 15) + m, dst[j + 16] = d * (b->qs[j] >> 4) + m;
        }
        break;
    case AG_DTYPE_Q5_0:
        for (size_t i = 0; i < n / 32; i++, dst += 32) {
            const ag_block_q5_0 *b = (const ag_block_q5_0 *)src + i;
            float d = ag_f16_to_f32(b->d);
            ag_q5_levels(b->qs, b->qh, q);
            for (int j = 0; j < 32; j++) dst[j] = d * (float)(q[j] - 16);
        }
        break;
    case AG_DTYPE_Q5_1:
        for (size_t i = 0; i < n / 32; i++, dst += 32) {
            const ag_block_q5_1 *b = (const ag_block_q5_1 *)src + i;
            float d = ag_f16_to_f32(b->d), m = ag_f16_to_f32(b->m);
            ag_q5_levels(b->qs, b->qh, q);
            for (int j = 0; j < 32; j++) dst[j] = d * (float)q[j] + m;
        }
        break;
    case AG_DTYPE_Q4_K:
        for (size_t i = 0; i < n / AG_QK_K; i++, dst += AG_QK_K) {
            const ag_block_q4_k *b = (const ag_block_q4_k *)src + i;
            dequant_k45(b->scales, b->d, b->dmin, b->qs, NULL, dst);
        }
        break;
    case AG_DTYPE_Q5_K:
        for (size_t i = 0; i < n / AG_QK_K; i++, dst += AG_QK_K) {
            const ag_block_q5_k *b = (const ag_block_q5_k *)src + i;
            dequant_k45(b->scales, b->d, b->dmin, b->qs, b->qh, dst);
        }
        break;
    case AG_DTYPE_Q6_K:
        for (size_t i = 0; i < n / AG_QK_K; i++, dst += AG_QK_K) {
            const ag_block_q6_k *b = (const ag_block_q6_k *)src + i;
            float d = ag_f16_to_f32(b->d);
            for (int e = 0; e < AG_QK_K; e++) dst[e] = d * b->scales[e / 16] * (float)(q6_level(b, e) - 32);
        }
        break;
    case AG_DTYPE_IQ4_NL:
        for (size_t i = 0; i < n / 32; i++, dst += 32) {
            const ag_block_iq4_nl *b = (const ag_block_iq4_nl *)src + i;
            float d = ag_f16_to_f32(b->d);
            for (int j = 0; j < 16; j++)
                dst[j] = d * ag_iq4nl_values[b->qs[j] & 15], dst[j + 16] = d * ag_iq4nl_values[b->qs[j] >> 4];
        }
        break;
    case AG_DTYPE_Q2_K:
        for (size_t i = 0; i < n / AG_QK_K; i++, dst += AG_QK_K) {
            const ag_block_q2_k *b = (const ag_block_q2_k *)src + i;
            float d = ag_f16_to_f32(b->d), dmin = ag_f16_to_f32(b->dmin);
            for (int e = 0; e < AG_QK_K; e++) {
                uint8_t sc = b->scales[e / 16];
                dst[e] = d * (sc & 15) * (float)ag_q2k_level(b->qs, e) - dmin * (sc >> 4);
            }
        }
        break;
    case AG_DTYPE_Q3_K:
        for (size_t i = 0; i < n / AG_QK_K; i++, dst += AG_QK_K) {
            const ag_block_q3_k *b = (const ag_block_q3_k *)src + i;
            float d = ag_f16_to_f32(b->d);
            for (int e = 0; e < AG_QK_K; e++) {
                int q = ag_q2k_level(b->qs, e) + ((b->hmask[e % 32] >> (e / 32)) & 1) * 4 - 4;
                dst[e] = d * (float)ag_q3k_scale(e / 16, b->scales) * (float)q;
            }
        }
        break;
    case AG_DTYPE_Q8_K:
        for (size_t i = 0; i < n / AG_QK_K; i++, dst += AG_QK_K) {
            const ag_block_q8_k *b = (const ag_block_q8_k *)src + i;
            for (int e = 0; e < AG_QK_K; e++) dst[e] = b->d * (float)b->qs[e];
        }
        break;
    default: break;
    }
}

void ag_kquant_from_f32(ag_dtype t, const float *src, void *dst, size_t n) {
    switch (t) {
    case AG_DTYPE_Q4_1: quantize_q4_1(src, dst, n / 32); break;
    case AG_DTYPE_Q5_0: quantize_q5_0(src, dst, n / 32); break;
    case AG_DTYPE_Q5_1: quantize_q5_1(src, dst, n / 32); break;
    case AG_DTYPE_IQ4_NL: quantize_iq4_nl(src, dst, n / 32); break;
    case AG_DTYPE_Q2_K: quantize_q2_k(src, dst, n / AG_QK_K); break;
    case AG_DTYPE_Q3_K: quantize_q3_k(src, dst, n / AG_QK_K); break;
    case AG_DTYPE_Q4_K: quantize_q4_k(src, dst, n / AG_QK_K); break;
    case AG_DTYPE_Q5_K: quantize_q5_k(src, dst, n / AG_QK_K); break;
    case AG_DTYPE_Q6_K: quantize_q6_k(src, dst, n / AG_QK_K); break;
    case AG_DTYPE_Q8_K: quantize_q8_k(src, dst, n / AG_QK_K); break;
    default: break;
    }
}
