/*
 * quantmix.c - llama-quantize's per-tensor type rules for the presets we
 * make (see quantmix.h), as llama.cpp's llama_tensor_get_type has them for
 * dense (non-MoE, non-Falcon) models.
 */
#include "engine/quantmix.h"

#include <stddef.h>
#include <string.h>

/* llama_ftype ids (llama.h) */
static const ag_quant_preset presets[] = {
    {"f32", 0, AG_DTYPE_F32},     {"f16", 1, AG_DTYPE_F16},     {"bf16", 32, AG_DTYPE_BF16},
    {"q8_0", 7, AG_DTYPE_Q8_0},   {"q4_0", 2, AG_DTYPE_Q4_0},   {"q4_1", 3, AG_DTYPE_Q4_1},
    {"q5_0", 8, AG_DTYPE_Q5_0},   {"q5_1", 9, AG_DTYPE_Q5_1},   {"q2_k", 10, AG_DTYPE_Q2_K},
    {"q3_k_s", 11, AG_DTYPE_Q3_K}, {"q3_k_m", 12, AG_DTYPE_Q3_K}, {"q3_k_l", 13, AG_DTYPE_Q3_K},
    {"q4_k_s", 14, AG_DTYPE_Q4_K},
    {"q4_k_m", 15, AG_DTYPE_Q4_K}, {"q5_k_s", 16, AG_DTYPE_Q5_K}, {"q5_k_m", 17, AG_DTYPE_Q5_K},
    {"q6_k", 18, AG_DTYPE_Q6_K},
};
enum { FT_Q2_K = 10, FT_Q3_K_M = 12, FT_Q3_K_L = 13, FT_Q4_K_S = 14, FT_Q4_K_M = 15, FT_Q5_K_M = 17 };

const ag_quant_preset *ag_quant_preset_find(const char *name) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].name, name) == 0) return &presets[i];
    return NULL;
}

const char *ag_quant_preset_names(void) {
    return "f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k";
}

void ag_quant_plan_init(ag_quant_plan *plan, const ag_quant_preset *p, bool pure, int n_layer, int n_gqa) {
    *plan = (ag_quant_plan){.p = p, .pure = pure, .n_layer = n_layer, .n_gqa = n_gqa};
}

static bool has(const char *name, const char *part) { return strstr(name, part) != NULL; }

void ag_quant_plan_count(ag_quant_plan *plan, const char *name) {
    if (has(name, "attn_v.weight") || has(name, "attn_qkv.weight") || has(name, "attn_kv_b.weight"))
        plan->n_attention_wv++;
    else if (strcmp(name, "output.weight") == 0)
        plan->has_output = true;
}

/* About half the layers, denser at both ends: llama.cpp's use_more_bits. */
static bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* What llama-quantize quantizes: 2-D+ tensors named *weight, but norms and a few small special ones. */
static bool quantizable(const char *name, uint32_t n_dims) {
    size_t n = strlen(name);
    return n_dims >= 2 && n >= 6 && strcmp(name + n - 6, "weight") == 0 && !has(name, "_norm.weight") &&
           !has(name, "ffn_gate_inp.weight") && strcmp(name, "position_embd.weight") != 0 &&
           strcmp(name, "token_types.weight") != 0 && !has(name, "attn_rel_b.weight");
}

static ag_dtype mixed_type(ag_quant_plan *q, const char *name, uint64_t ne0, ag_dtype t) {
    const uint32_t ft = q->p->ftype;
    if (strcmp(name, "output.weight") == 0 || (!q->has_output && strcmp(name, "token_embd.weight") == 0)) {
        if (ne0 % ag_dtype_block_elems(t)) t = AG_DTYPE_Q8_0;
        else if (t != AG_DTYPE_Q8_0) t = AG_DTYPE_Q6_K;
    } else if (has(name, "attn_v.weight")) {
        int i = q->i_attention_wv;
        if (ft == FT_Q2_K) t = q->n_gqa >= 4 ? AG_DTYPE_Q4_K : AG_DTYPE_Q3_K;
        else if (ft == FT_Q3_K_M) t = i < 2 ? AG_DTYPE_Q5_K : AG_DTYPE_Q4_K;
        else if (ft == FT_Q3_K_L) t = AG_DTYPE_Q5_K;
        else if ((ft == FT_Q4_K_M || ft == FT_Q5_K_M) && use_more_bits(i, q->n_attention_wv)) t = AG_DTYPE_Q6_K;
        else if (ft == FT_Q4_K_S && i < 4) t = AG_DTYPE_Q5_K;
        /* llama.cpp's 70B rule (8 heads share each attn_v row) */
        if (q->n_layer == 80 && (t == AG_DTYPE_Q3_K || t == AG_DTYPE_Q4_K)) t = AG_DTYPE_Q5_K;
        q->i_attention_wv++;
    } else if (has(name, "ffn_down")) {
        int i = q->i_ffn_down, n = q->n_layer;
        if (ft == FT_Q2_K) t = AG_DTYPE_Q3_K;
        else if (ft == FT_Q3_K_M) t = i < n / 16 ? AG_DTYPE_Q5_K : AG_DTYPE_Q4_K;
        else if (ft == FT_Q3_K_L) t = AG_DTYPE_Q5_K;
        else if ((ft == FT_Q4_K_M || ft == FT_Q5_K_M) && use_more_bits(i, n)) t = AG_DTYPE_Q6_K;
        else if (ft == FT_Q4_K_S && i < n / 8) t = AG_DTYPE_Q5_K;
        q->i_ffn_down++;
    } else if (has(name, "attn_output.weight")) {
        if (ft == FT_Q2_K) t = AG_DTYPE_Q3_K;
        else if (ft == FT_Q3_K_M) t = AG_DTYPE_Q4_K;
        else if (ft == FT_Q3_K_L) t = AG_DTYPE_Q5_K;
    } else if (has(name, "attn_qkv.weight")) {
        if (ft == FT_Q3_K_M || ft == FT_Q3_K_L) t = AG_DTYPE_Q4_K;
        else if (ft == FT_Q4_K_M) t = AG_DTYPE_Q5_K;
        else if (ft == FT_Q5_K_M) t = AG_DTYPE_Q6_K;
    }
    if (ne0 % ag_dtype_block_elems(t)) {
        switch (t) {
        case AG_DTYPE_Q2_K:
        case AG_DTYPE_Q3_K: t = AG_DTYPE_IQ4_NL; break;
        case AG_DTYPE_Q4_K: t = AG_DTYPE_Q5_0; break;
        case AG_DTYPE_Q5_K: t = AG_DTYPE_Q5_1; break;
        case AG_DTYPE_Q6_K: t = AG_DTYPE_Q8_0; break;
        default: break;
        }
        if (ne0 % ag_dtype_block_elems(t)) t = AG_DTYPE_F16;
        q->n_fallback++;
    }
    return t;
}

ag_dtype ag_quant_plan_type(ag_quant_plan *q, const char *name, uint32_t n_dims, uint64_t ne0, ag_dtype current) {
    if (!quantizable(name, n_dims)) return current;
    ag_dtype t = q->p->base;
    if (!q->pure && ag_dtype_is_quant(t)) return mixed_type(q, name, ne0, t);
    return ne0 % ag_dtype_block_elems(t) ? current : t;
}
