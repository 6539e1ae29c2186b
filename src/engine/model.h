/*
 * model.h - a Llama-family transformer on the CPU: the llama2.c structs
 * (Config, Weights, RunState) over a mapped GGUF file, and the batched
 * forward pass.
 *
 * Architectures: "llama" (Llama 2/3, TinyLlama, Mistral; RoPE on adjacent
 * pairs, as llama.cpp's converter permutes Q/K), "qwen2" (Q/K/V biases, NeoX
 * RoPE on half-split pairs) and "qwen3" (per-head RMSNorm on Q and K, NeoX
 * RoPE).  GQA, SwiGLU, RMSNorm, a tied or separate output head, and Llama 3
 * rope scaling through the file's rope_freqs tensor.  Weight matrices are
 * used in place from the mapping, except that F16, Q8_0, Q4_0, Q4_K, Q5_K and
 * Q6_K product matrices are repacked at load into 16-row groups
 * (kernels/repack.c) unless no_repack; the small 1-D tensors (norms, biases)
 * are copied, as f32.
 *
 * A batch is T token rows, each with its sequence id and position, and a
 * flag for the rows whose logits the caller wants.  Decode of one stream is a
 * batch of one; prefill is one batch of the prompt; the scheduler mixes both.
 * A sequence's positions must be written in order 0, 1, 2, ...; a row
 * attends to positions 0..pos of its own sequence, including rows earlier in
 * the same batch.
 *
 * A model is used by one thread at a time (the engine thread); its own pool
 * threads do the parallel work.
 */
#ifndef AG_ENGINE_MODEL_H
#define AG_ENGINE_MODEL_H

#include "autoglm/status.h"
#include "base/pool.h"
#include "engine/gguf.h"
#include "engine/kernels/kernels.h"
#include "engine/kv_cache.h"
#include "engine/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ag_arch { AG_ARCH_LLAMA, AG_ARCH_QWEN2, AG_ARCH_QWEN3, AG_ARCH_GLM4, AG_ARCH_CHATGLM } ag_arch;

typedef struct ag_config {
    ag_arch arch;
    int n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx_train;
    int n_rot;      /* rotary dimensions per head (rope.dimension_count) */
    bool rope_neox; /* pairs (i, i + n_rot/2) instead of (2i, 2i + 1) */
    float rope_base, eps;
    bool qkv_bias, qk_norm, tied_output;
    bool post_norms; /* glm4: RMSNorm on the attention and FFN outputs before each residual ("sandwich") */
    bool fused_up;   /* GLM: gate and up projections in one ffn_up tensor, gate rows first */
} ag_config;

/*
 * A weight matrix: rows of `cols` elements of the file's type, row_bytes
 * each.  In place, wtype is the type's own and row r is at data + r *
 * stride (stride = row_bytes); repacked at load (kernels.h), wtype is the
 * repacked type, data the copy and stride the bytes of a 16-row group.
 */
typedef struct ag_matrix {
    ag_dtype type;
    ag_wtype wtype;
    const void *data;
    int64_t rows, cols;
    size_t row_bytes;
    size_t stride; /* what the product steps by: a row, or a repacked group */
} ag_matrix;

typedef struct ag_layer_weights {
    float *attn_norm, *ffn_norm;       /* n_embd */
    float *bq, *bk, *bv;               /* biases (qwen2, some GLM), else NULL */
    float *q_norm, *k_norm;            /* head_dim (qwen3), else NULL */
    float *post_attn_norm, *post_ffn_norm; /* n_embd (glm4), else NULL */
    ag_matrix wq, wk, wv, wo;          /* attention projections (row views of a fused attn_qkv in chatglm files) */
    ag_matrix w_gate, w_up, w_down;    /* SwiGLU feed-forward (GLM: row views of the fused ffn_up, gate rows first) */
} ag_layer_weights;

typedef struct ag_weights {
    ag_matrix tok_embd; /* n_vocab rows of n_embd */
    ag_matrix output;   /* the head: tok_embd itself when tied */
    float *output_norm;
    ag_layer_weights *layers;
} ag_weights;

/* Activations for up to n_batch rows, and the logits of the last forward. */
typedef struct ag_run_state {
    float *x, *xb, *xb2;  /* [n_batch][n_embd]; xb2 is [n_batch][max(n_embd, q_dim)] */
    float *q, *k, *v;     /* [n_batch][q_dim], [n_batch][kv_dim] x 2 */
    float *hb, *hb2;      /* [n_batch][n_ff] */
    void *act;            /* a matmul input in its activation dtype */
    float *att;           /* per thread: attention's scratch, att_per_thread floats (forward.c) */
    size_t att_per_thread;
    int *runs;            /* [n_batch + 1] first row of each attention run */
    float *inv_freq;      /* [n_rot / 2] RoPE frequencies, scaling applied */
    float *rope_cs;       /* [n_batch][n_rot / 2][cos, sin] of the current chunk's positions */
    int32_t *seq_zero;    /* [n_batch] zeros: the sequence ids of a batch that gives none */
    float *logits;        /* [n_logits][n_vocab] */
    size_t logits_cap;    /* rows logits can hold */
} ag_run_state;

typedef struct ag_model_params {
    int n_threads;    /* 0: physical cores */
    int32_t n_ctx;    /* positions per sequence; 0: min(training context, 4096) */
    int32_t n_seq;    /* sequences the built-in cache holds; 0: 1 */
    int n_batch;      /* rows per internal step; 0: 512 */
    ag_dtype kv_type; /* the built-in cache's storage, F16 or F32 (ag_model_params_default: F16) */
    const char *kernels; /* NULL: best for this CPU */
    bool no_repack;      /* use every matrix in place from the mapping (--no-repack) */
} ag_model_params;

ag_model_params ag_model_params_default(void);

typedef struct ag_model {
    ag_config cfg;
    ag_weights w;
    ag_run_state s;
    ag_gguf_file *file;
    ag_tokenizer *tok;
    const ag_kernels *kern;
    ag_pool *pool;
    ag_kv_cache *kv;
    int32_t n_ctx;
    int n_batch;
    size_t n_logits; /* rows of logits the last forward produced */
    void *repacked;        /* the repacked matrices' copies, one allocation; NULL when none */
    uint64_t repacked_bytes; /* its size: the memory repacking adds beside the mapping */
    int n_repacked;        /* matrices that use it */
} ag_model;

/* Open, validate and prepare path.  *out is the caller's: ag_model_free. */
ag_status ag_model_load(const char *path, const ag_model_params *params, ag_model **out, ag_err *err);
void ag_model_free(ag_model *m);
/* Replace the built-in cache (the model takes ownership of kv; shapes must match). */
ag_status ag_model_set_kv(ag_model *m, ag_kv_cache *kv, ag_err *err);

typedef struct ag_batch {
    int n;                    /* rows */
    const int32_t *token;     /* [n] */
    const int32_t *pos;       /* [n] */
    const int32_t *seq;       /* [n]; NULL: all sequence 0 */
    const bool *logits;       /* [n] rows that need logits; NULL: only the last row */
} ag_batch;

/*
 * Run the batch: write its keys and values into the cache and compute the
 * logits of the flagged rows, readable with ag_model_logits(m, i) for the
 * i-th flagged row, until the next call.  Bad tokens, positions or sequence
 * ids are AG_EINVAL / AG_ELIMIT with err saying which row.
 */
ag_status ag_forward(ag_model *m, const ag_batch *b, ag_err *err);
/* Floats of one thread's attention scratch for heads of head_dim: bounded by forward.c's tiles, not the context. */
size_t ag_forward_attn_scratch_floats(int head_dim);
static inline const float *ag_model_logits(const ag_model *m, size_t i) {
    return m->s.logits + i * (size_t)m->cfg.n_vocab;
}

/* Bytes of weights a single-token forward reads (every matrix once, the embedding row aside). */
uint64_t ag_model_weight_bytes(const ag_model *m);
/*
 * Bytes a matrix of rows x cols in type t takes when repacked at load, or 0
 * when it is used in place (a type without a repacked form, rows not a
 * multiple of 16, or a row length not whole 32-element blocks): what `inspect`
 * reports and the loader allocates.
 */
uint64_t ag_matrix_repack_bytes(ag_dtype t, int64_t rows, int64_t cols);

#endif
