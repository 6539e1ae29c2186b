/*
 * convert.h - Hugging Face checkpoint directory -> GGUF, as llama.cpp's
 * convert_hf_to_gguf.py writes it (key names, tensor names, the Q/K row
 * permutation of Llama-family attention weights), so the files load there.
 *
 * Reads config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
 * Qwen3ForCausalLM), *.safetensors (single or sharded; F32/F16/BF16) and the
 * tokenizer (tokenizer.json + tokenizer_config.json).  With random_weights,
 * a directory that has the configs but no weights gets deterministic
 * pseudo-random tensors instead: that is how tests and benchmarks make models
 * here, where nothing can be downloaded.
 */
#ifndef AG_ENGINE_CONVERT_H
#define AG_ENGINE_CONVERT_H

#include "autoglm/status.h"
#include "engine/dtype.h"
#include "engine/quantmix.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ag_convert_opts {
    const char *hf_dir;
    const char *out_path;
    const ag_quant_preset *preset; /* the weights' types, llama-quantize's mix for the quantized presets
                                      (NULL: f16); 1-D tensors (norms, biases) stay f32 */
    bool random_weights; /* ignore/need no safetensors: deterministic values from seed */
    uint64_t seed;
    /* Called after each tensor (may be NULL): for a progress bar. */
    void (*progress)(void *ctx, size_t done, size_t total, const char *tensor);
    void *progress_ctx;
} ag_convert_opts;

/* Write opts->out_path; on failure err says why (file, key or tensor named). */
ag_status ag_convert_hf(const ag_convert_opts *opts, ag_err *err);

#endif
