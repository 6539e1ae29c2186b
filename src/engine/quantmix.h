/*
 * quantmix.h - which type each tensor of a model gets when it is quantized
 * to a llama.cpp preset (Q4_K_M, Q5_K_S, Q8_0, ...).
 *
 * A preset is a whole-file type (llama_ftype, written as general.file_type)
 * plus llama-quantize's per-tensor rules (src/llama-quant.cpp): the output
 * matrix (or the tied embedding) gets Q6_K, the attn_v and ffn_down matrices
 * of about half the layers (use_more_bits) get more bits in the _M presets,
 * the first few get Q5_K in Q4_K_S, Q2_K and Q3_K give attn_v, ffn_down and
 * attn_output a type or two more, and a row length that is not a multiple
 * of the type's block falls back (Q2_K, Q3_K -> IQ4_NL, Q4_K -> Q5_0,
 * Q5_K -> Q5_1, Q6_K -> Q8_0, then F16).  Following them makes our files interchangeable with
 * llama-quantize's: the same tensors in the same types.
 */
#ifndef AG_ENGINE_QUANTMIX_H
#define AG_ENGINE_QUANTMIX_H

#include "engine/dtype.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ag_quant_preset {
    const char *name;  /* "q4_k_m" */
    uint32_t ftype;    /* llama_ftype, for general.file_type */
    ag_dtype base;     /* the type of most matrices */
} ag_quant_preset;

/* A preset by name (ag_quant_preset_names), or NULL. */
const ag_quant_preset *ag_quant_preset_find(const char *name);
/* The names, space-separated, for usage messages. */
const char *ag_quant_preset_names(void);

/* The counters llama-quantize keeps while it walks a model's tensors in file order. */
typedef struct ag_quant_plan {
    const ag_quant_preset *p;
    bool pure;          /* every matrix in p->base (where its rows allow), no per-tensor rules */
    bool has_output;    /* an output.weight exists (else token_embd is the output and gets its rules) */
    int n_attention_wv; /* attn_v / attn_qkv / attn_kv_b matrices in the file */
    int i_attention_wv;
    int n_layer; /* block_count: ffn_down's layer count */
    int n_gqa;   /* query heads per KV head (Q2_K's attn_v rule) */
    int i_ffn_down;
    int n_fallback; /* matrices whose rows forced a fallback type */
} ag_quant_plan;

void ag_quant_plan_init(ag_quant_plan *plan, const ag_quant_preset *p, bool pure, int n_layer, int n_gqa);
/* Count one tensor of the file (call for every tensor before the first ag_quant_plan_type). */
void ag_quant_plan_count(ag_quant_plan *plan, const char *name);
/*
 * The type tensor `name` (n_dims dimensions, rows of ne0 elements, now of
 * type `current`) gets; call once per tensor, in file order.  Tensors that
 * llama-quantize never quantizes (1-D, norms, ...) keep `current`.
 */
ag_dtype ag_quant_plan_type(ag_quant_plan *plan, const char *name, uint32_t n_dims, uint64_t ne0, ag_dtype current);

#endif
