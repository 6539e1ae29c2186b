/*
 * convert.c - Hugging Face directory -> GGUF; see convert.h.
 *
 * The conversion is driven by a plan: one entry per GGUF tensor with its HF
 * source name, its GGUF shape (ne[0] = input features, contiguous) and how to
 * make it (copy, permute Q/K rows, or generate).  The plan comes from
 * config.json alone, so real and random weights take the same path and a
 * checkpoint's tensors are checked against it (missing, unexpected, or of
 * the wrong shape are errors naming the tensor).  Tensor bytes are produced
 * at write time, one tensor at a time (ag_gguf_writer_add_tensor_fill).
 *
 * Tokenizer metadata follows llama.cpp's choices: tokenizer.json BPE with
 * byte_fallback is SentencePiece-style ("llama"), otherwise byte-level BPE
 * ("gpt2") with the pre-tokenizer named by its split regex.  One deliberate
 * difference: for SentencePiece-style vocabularies without a tokenizer.model,
 * llama.cpp writes a placeholder score (-1000) for every token; we write
 * score = -(rank of the merge that makes the token), which carries the merge
 * order a SentencePiece tokenizer needs.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine/convert.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/hash.h"
#include "base/map.h"
#include "engine/gguf.h"
#include "engine/safetensors.h"
#include "json/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hparams {
    const char *arch; /* GGUF general.architecture */
    bool permute_qk;  /* Llama-family checkpoints: rotate-half (HF) -> interleaved pairs (GGUF) */
    bool qkv_bias, qk_norm, tied;
    bool glm, post_norms; /* GLM: fused gate+up, partial adjacent-pair rotary; glm4: sandwich norms */
    uint32_t n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, n_ctx, n_vocab;
    uint32_t n_rot; /* rotary dimensions per head */
    float eps, rope_theta;
    /* Llama 3 rope scaling (rope_scaling.rope_type "llama3"); factor 0 when absent */
    float rope_factor, rope_low_freq, rope_high_freq;
    uint32_t rope_orig_ctx;
} hparams;

/* MAKE_ROPE_FREQS is computed from config.json, never read from the checkpoint. */
typedef enum make_kind { MAKE_WEIGHT, MAKE_OUTPUT, MAKE_EMBED, MAKE_NORM, MAKE_BIAS, MAKE_ROPE_FREQS } make_kind;

typedef struct plan_entry {
    char gguf[64];
    char hf[128];
    uint32_t n_dims;
    uint64_t ne[2]; /* ne[0] = in features (row length), ne[1] = rows */
    make_kind kind;
    uint32_t permute_heads; /* 0: no Q/K permutation; else the head count to permute by */
    ag_dtype type;          /* what the GGUF stores */
    const ag_st_tensor *src; /* NULL with random weights */
} plan_entry;

typedef struct converter {
    const ag_convert_opts *o;
    hparams hp;
    plan_entry *plan;
    size_t n_plan, cap_plan, done;
    ag_err *err;
} converter;

/* ---- reading the configs ---------------------------------------------- */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && n < (256L << 20) && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            *len = fread(buf, 1, (size_t)n, f);
            buf[*len] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* Parse dir/name into the arena; *text must be freed by the caller (the DOM points into it). */
static ag_status load_json(const char *dir, const char *name, bool required, ag_arena *a, char **text,
                           ag_json_val **root, ag_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len = 0;
    *text = slurp(path, &len);
    *root = NULL;
    if (!*text) return required ? ag_err_set(err, AG_ENOTFOUND, "%s: cannot read", path) : AG_OK;
    ag_json_err jerr;
    ag_status st = ag_json_parse(*text, len, NULL, a, root, &jerr);
    if (st != AG_OK) return ag_err_set(err, st, "%s:%zu:%zu: %s", path, jerr.line, jerr.col, jerr.reason);
    if (!ag_json_is(*root, AG_JSON_OBJECT)) return ag_err_set(err, AG_EINVAL, "%s: not a JSON object", path);
    return AG_OK;
}

static bool get_u32(const ag_json_val *cfg, const char *key, uint32_t *out) {
    int64_t v;
    if (!ag_json_get_int(ag_json_obj_getc(cfg, key), &v) || v < 0 || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

static ag_status read_hparams(const ag_json_val *cfg, hparams *hp, ag_err *err) {
    static const struct {
        const char *hf, *arch;
        bool permute, bias, qk_norm;
    } archs[] = {
        {"LlamaForCausalLM", "llama", true, false, false},
        {"MistralForCausalLM", "llama", true, false, false},
        {"Qwen2ForCausalLM", "qwen2", false, true, false},
        {"Qwen3ForCausalLM", "qwen3", false, false, true},
        {"Glm4ForCausalLM", "glm4", false, false, false}, /* GLM-4-0414; biases per attention_bias */
        {"GlmForCausalLM", "chatglm", false, false, false}, /* GLM-4-9B-chat-hf, GLM-Edge */
    };
    ag_str name = ag_json_str(ag_json_arr_at(ag_json_obj_getc(cfg, "architectures"), 0));
    size_t k = 0, n = sizeof archs / sizeof archs[0];
    while (k < n && !ag_str_eq_cstr(name, archs[k].hf)) k++;
    if (k == n)
        return ag_err_set(err, AG_EINVAL,
                          "config.json: architecture '%.*s' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                          "Qwen2ForCausalLM, Qwen3ForCausalLM, Glm4ForCausalLM, GlmForCausalLM)",
                          (int)(name.n > 60 ? 60 : name.n), name.p ? name.p : "");
    memset(hp, 0, sizeof *hp);
    hp->arch = archs[k].arch;
    hp->permute_qk = archs[k].permute;
    hp->qkv_bias = archs[k].bias;
    hp->qk_norm = archs[k].qk_norm;
    hp->glm = strcmp(hp->arch, "glm4") == 0 || strcmp(hp->arch, "chatglm") == 0;
    hp->post_norms = strcmp(hp->arch, "glm4") == 0;
    if (hp->glm) ag_json_get_bool(ag_json_obj_getc(cfg, "attention_bias"), &hp->qkv_bias);
    const char *missing = !get_u32(cfg, "hidden_size", &hp->n_embd)                 ? "hidden_size"
                          : !get_u32(cfg, "num_hidden_layers", &hp->n_layer)        ? "num_hidden_layers"
                          : !get_u32(cfg, "intermediate_size", &hp->n_ff)           ? "intermediate_size"
                          : !get_u32(cfg, "num_attention_heads", &hp->n_head)       ? "num_attention_heads"
                          : !get_u32(cfg, "vocab_size", &hp->n_vocab)               ? "vocab_size"
                          : !get_u32(cfg, "max_position_embeddings", &hp->n_ctx)    ? "max_position_embeddings"
                                                                                    : NULL;
    if (missing) return ag_err_set(err, AG_EINVAL, "config.json: '%s' is missing or not a whole number", missing);
    if (!get_u32(cfg, "num_key_value_heads", &hp->n_head_kv)) hp->n_head_kv = hp->n_head;
    if (hp->n_head == 0 || hp->n_embd % hp->n_head || hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv)
        return ag_err_set(err, AG_EINVAL, "config.json: %u heads and %u key/value heads do not divide %u", hp->n_head,
                          hp->n_head_kv, hp->n_embd);
    if (!get_u32(cfg, "head_dim", &hp->head_dim)) hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->head_dim % 2 || hp->n_layer == 0 || hp->n_ff == 0 || hp->n_vocab == 0)
        return ag_err_set(err, AG_EINVAL, "config.json: a zero size or an odd head_dim (%u)", hp->head_dim);
    double d;
    /* GLM rotates the first head_dim * partial_rotary_factor dimensions (0.5 unless the config says) */
    double prf = hp->glm ? 0.5 : 1.0;
    ag_json_get_double(ag_json_obj_getc(cfg, "partial_rotary_factor"), &prf);
    hp->n_rot = (uint32_t)(hp->head_dim * prf);
    if (!(prf > 0 && prf <= 1) || hp->n_rot % 2 || hp->n_rot == 0)
        return ag_err_set(err, AG_EINVAL, "config.json: partial_rotary_factor %g does not give an even rotary size", prf);
    hp->eps = ag_json_get_double(ag_json_obj_getc(cfg, "rms_norm_eps"), &d) ? (float)d : 1e-6f;
    hp->rope_theta = ag_json_get_double(ag_json_obj_getc(cfg, "rope_theta"), &d) ? (float)d : 10000.0f;
    ag_json_get_bool(ag_json_obj_getc(cfg, "tie_word_embeddings"), &hp->tied);
    const ag_json_val *rs = ag_json_obj_getc(cfg, "rope_scaling");
    if (ag_json_type_of(rs) == AG_JSON_OBJECT) {
        ag_str type = ag_json_str(ag_json_obj_getc(rs, "rope_type"));
        if (!type.p) type = ag_json_str(ag_json_obj_getc(rs, "type"));
        if (!ag_str_eq_cstr(type, "llama3"))
            return ag_err_set(err, AG_EINVAL, "config.json: rope_scaling type '%.*s' is not supported (llama3)",
                              (int)(type.n > 40 ? 40 : type.n), type.p ? type.p : "");
        double f = 8, lo = 1, hi = 4;
        uint32_t orig = 8192;
        ag_json_get_double(ag_json_obj_getc(rs, "factor"), &f);
        ag_json_get_double(ag_json_obj_getc(rs, "low_freq_factor"), &lo);
        ag_json_get_double(ag_json_obj_getc(rs, "high_freq_factor"), &hi);
        get_u32(rs, "original_max_position_embeddings", &orig);
        if (!(f >= 1) || !(lo > 0) || !(hi > lo) || orig == 0)
            return ag_err_set(err, AG_EINVAL, "config.json: rope_scaling values are out of range");
        hp->rope_factor = (float)f, hp->rope_low_freq = (float)lo, hp->rope_high_freq = (float)hi;
        hp->rope_orig_ctx = orig;
    }
    return AG_OK;
}

/* ---- the tensor plan ---------------------------------------------------- */

static void plan_add(converter *c, const char *gguf, const char *hf, uint64_t in, uint64_t out, make_kind kind,
                     uint32_t permute_heads) {
    if (c->n_plan == c->cap_plan) {
        c->cap_plan = c->cap_plan ? c->cap_plan * 2 : 64;
        c->plan = ag_xrealloc(c->plan, c->cap_plan * sizeof *c->plan);
    }
    plan_entry *e = &c->plan[c->n_plan++];
    memset(e, 0, sizeof *e);
    snprintf(e->gguf, sizeof e->gguf, "%s", gguf);
    snprintf(e->hf, sizeof e->hf, "%s", hf);
    e->n_dims = out ? 2 : 1;
    e->ne[0] = in;
    e->ne[1] = out ? out : 1;
    e->kind = kind;
    e->permute_heads = permute_heads;
    e->type = e->n_dims == 1 ? AG_DTYPE_F32 : AG_DTYPE_F16; /* until assign_types applies the preset */
}

/*
 * Each tensor's type as llama-quantize would choose it from an F16 file: the
 * preset's mix and fallbacks (quantmix.h), over the whole plan in file order.
 * 1-D tensors stay f32 as llama.cpp keeps them.
 */
static void assign_types(converter *c) {
    ag_quant_plan q;
    ag_quant_plan_init(&q, c->o->preset ? c->o->preset : ag_quant_preset_find("f16"), false, (int)c->hp.n_layer,
                       c->hp.n_head_kv ? (int)(c->hp.n_head / c->hp.n_head_kv) : 1);
    for (size_t i = 0; i < c->n_plan; i++) ag_quant_plan_count(&q, c->plan[i].gguf);
    for (size_t i = 0; i < c->n_plan; i++) {
        plan_entry *e = &c->plan[i];
        e->type = ag_quant_plan_type(&q, e->gguf, e->n_dims, e->ne[0], e->type);
    }
}

static void build_plan(converter *c) {
    const hparams *h = &c->hp;
    const uint64_t q_out = (uint64_t)h->n_head * h->head_dim, kv_out = (uint64_t)h->n_head_kv * h->head_dim;
    plan_add(c, "token_embd.weight", "model.embed_tokens.weight", h->n_embd, h->n_vocab, MAKE_EMBED, 0);
    if (h->rope_factor > 0) plan_add(c, "rope_freqs.weight", "", h->head_dim / 2, 0, MAKE_ROPE_FREQS, 0);
    for (uint32_t l = 0; l < h->n_layer; l++) {
        char g[64], s[128];
#define LAYER(gname, hname, in, out, kind, perm)                                                                      \
    do {                                                                                                               \
        snprintf(g, sizeof g, "blk.%u." gname, l);                                                                     \
        snprintf(s, sizeof s, "model.layers.%u." hname, l);                                                            \
        plan_add(c, g, s, in, out, kind, perm);                                                                        \
    } while (0)
        LAYER("attn_norm.weight", "input_layernorm.weight", h->n_embd, 0, MAKE_NORM, 0);
        LAYER("attn_q.weight", "self_attn.q_proj.weight", h->n_embd, q_out, MAKE_WEIGHT, h->permute_qk ? h->n_head : 0);
        LAYER("attn_k.weight", "self_attn.k_proj.weight", h->n_embd, kv_out, MAKE_WEIGHT,
              h->permute_qk ? h->n_head_kv : 0);
        LAYER("attn_v.weight", "self_attn.v_proj.weight", h->n_embd, kv_out, MAKE_WEIGHT, 0);
        if (h->qkv_bias) {
            LAYER("attn_q.bias", "self_attn.q_proj.bias", q_out, 0, MAKE_BIAS, 0);
            LAYER("attn_k.bias", "self_attn.k_proj.bias", kv_out, 0, MAKE_BIAS, 0);
            LAYER("attn_v.bias", "self_attn.v_proj.bias", kv_out, 0, MAKE_BIAS, 0);
        }
        if (h->qk_norm) {
            LAYER("attn_q_norm.weight", "self_attn.q_norm.weight", h->head_dim, 0, MAKE_NORM, 0);
            LAYER("attn_k_norm.weight", "self_attn.k_norm.weight", h->head_dim, 0, MAKE_NORM, 0);
        }
        LAYER("attn_output.weight", "self_attn.o_proj.weight", q_out, h->n_embd, MAKE_WEIGHT, 0);
        /* glm4's names: HF post_self_attn_layernorm is GGUF post_attention_norm; HF
         * post_attention_layernorm is the pre-FFN norm (ffn_norm) as in every other family */
        if (h->post_norms) LAYER("post_attention_norm.weight", "post_self_attn_layernorm.weight", h->n_embd, 0, MAKE_NORM, 0);
        LAYER("ffn_norm.weight", "post_attention_layernorm.weight", h->n_embd, 0, MAKE_NORM, 0);
        if (h->glm) { /* one fused matrix: gate rows, then up rows */
            LAYER("ffn_up.weight", "mlp.gate_up_proj.weight", h->n_embd, 2 * (uint64_t)h->n_ff, MAKE_WEIGHT, 0);
        } else {
            LAYER("ffn_gate.weight", "mlp.gate_proj.weight", h->n_embd, h->n_ff, MAKE_WEIGHT, 0);
            LAYER("ffn_up.weight", "mlp.up_proj.weight", h->n_embd, h->n_ff, MAKE_WEIGHT, 0);
        }
        LAYER("ffn_down.weight", "mlp.down_proj.weight", h->n_ff, h->n_embd, MAKE_WEIGHT, 0);
        if (h->post_norms) LAYER("post_ffw_norm.weight", "post_mlp_layernorm.weight", h->n_embd, 0, MAKE_NORM, 0);
#undef LAYER
    }
    plan_add(c, "output_norm.weight", "model.norm.weight", h->n_embd, 0, MAKE_NORM, 0);
    if (!h->tied) plan_add(c, "output.weight", "lm_head.weight", h->n_embd, h->n_vocab, MAKE_OUTPUT, 0);
}

/* Match every plan entry to a checkpoint tensor of the right shape; refuse leftovers we cannot place. */
static ag_status bind_checkpoint(converter *c, const ag_st_set *st) {
    ag_map used;
    ag_map_init(&used);
    ag_status rc = AG_OK;
    for (size_t i = 0; i < c->n_plan && rc == AG_OK; i++) {
        plan_entry *e = &c->plan[i];
        if (e->kind == MAKE_ROPE_FREQS) continue;
        const ag_st_tensor *t = ag_st_find(st, e->hf);
        if (!t) {
            rc = ag_err_set(c->err, AG_EINVAL, "checkpoint has no tensor '%s' (for %s)", e->hf, e->gguf);
        } else if (t->dtype < 0) {
            rc = ag_err_set(c->err, AG_EINVAL, "tensor '%s' has dtype %s (F32, F16 or BF16 expected)", e->hf,
                            t->dtype_name);
        } else if (t->n_dims != e->n_dims || t->shape[t->n_dims - 1] != e->ne[0] ||
                   (e->n_dims == 2 && t->shape[0] != e->ne[1])) {
            rc = ag_err_set(c->err, AG_EINVAL, "tensor '%s' has the wrong shape for config.json (expected [%llu%s%llu])",
                            e->hf, (unsigned long long)(e->n_dims == 2 ? e->ne[1] : e->ne[0]), e->n_dims == 2 ? ", " : "",
                            (unsigned long long)(e->n_dims == 2 ? e->ne[0] : 0));
        } else {
            e->src = t;
            ag_map_put(&used, t->name, strlen(t->name), (void *)1);
        }
    }
    for (size_t i = 0; i < ag_st_count(st) && rc == AG_OK; i++) {
        const ag_st_tensor *t = ag_st_at(st, i);
        size_t n = strlen(t->name);
        bool ignorable = (c->hp.tied && strcmp(t->name, "lm_head.weight") == 0) ||
                         (n >= 20 && strcmp(t->name + n - 20, "rotary_emb.inv_freq") == 0);
        if (!ag_map_get(&used, t->name, n) && !ignorable)
            rc = ag_err_set(c->err, AG_EINVAL, "cannot map checkpoint tensor '%s' to a GGUF tensor", t->name);
    }
    ag_map_deinit(&used);
    return rc;
}

/* ---- producing tensor bytes ------------------------------------------- */

/* Deterministic uniform values in [-1, 1): splitmix64 seeds an xorshift64* stream per tensor. */
static void fill_random(float *x, uint64_t n, uint64_t seed, const char *name) {
    uint64_t s = seed ^ ag_hash_bytes(name, strlen(name), 0x5eed);
    s += 0x9e3779b97f4a7c15ull;
    s = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9ull;
    s = (s ^ (s >> 27)) * 0x94d049bb133111ebull;
    s ^= s >> 31;
    if (!s) s = 1;
    for (uint64_t i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        x[i] = (float)((s * 0x2545F4914F6CDD1Dull) >> 40) * 0x1p-23f - 1.0f;
    }
}

/*
 * Random tensors are scaled so a forward pass neither explodes nor goes flat,
 * and so next-token distributions are peaked: weights ~ 1/sqrt(fan_in) keep
 * activations O(1); the output projection (or the tied embedding) gives
 * logits a standard deviation of about 4, so the top token stands out.
 * Norm weights are 1 +- 0.1 (not exactly 1, so a test notices if they are ignored).
 */
static void make_random(const converter *c, const plan_entry *e, float *x, uint64_t n) {
    fill_random(x, n, c->o->seed, e->gguf);
    const float sqrt3 = 1.7320508f; /* U(-1, 1) has standard deviation 1/sqrt(3) */
    float scale;
    switch (e->kind) {
    case MAKE_NORM:
        for (uint64_t i = 0; i < n; i++) x[i] = 1.0f + 0.1f * x[i];
        return;
    case MAKE_BIAS: scale = 0.05f; break;
    case MAKE_EMBED:
    case MAKE_OUTPUT: scale = sqrt3 * 4.0f / sqrtf((float)c->hp.n_embd); break;
    default: scale = sqrt3 / sqrtf((float)e->ne[0]); break;
    }
    for (uint64_t i = 0; i < n; i++) x[i] *= scale;
}

/*
 * HF Llama checkpoints order each head's rows as [first halves | second halves]
 * (rotate-half RoPE); GGUF "llama" expects interleaved pairs.  llama.cpp's
 * permute(): view rows as (heads, 2, head_dim/2) and swap the last two axes,
 * so GGUF row (h, i, j) = HF row (h, j, i) for i < head_dim/2, j in {0, 1}.
 */
static void permute_rows(const float *src, float *dst, uint64_t rows, uint64_t cols, uint32_t heads) {
    uint64_t hd = rows / heads, half = hd / 2;
    for (uint64_t h = 0; h < heads; h++)
        for (uint64_t i = 0; i < half; i++)
            for (uint64_t j = 0; j < 2; j++)
                memcpy(dst + (h * hd + i * 2 + j) * cols, src + (h * hd + j * half + i) * cols, cols * sizeof(float));
}

/*
 * Llama 3 rope scaling as llama.cpp's converter writes it: per rotary pair, the
 * divisor of its frequency.  Short wavelengths keep theirs (1), wavelengths
 * longer than the original context are slowed by `factor`, and the band
 * between is interpolated smoothly.
 */
static void rope_freqs_llama3(const hparams *h, float *out) {
    const double pi = 3.14159265358979323846;
    double low_wavelen = h->rope_orig_ctx / h->rope_low_freq, high_wavelen = h->rope_orig_ctx / h->rope_high_freq;
    for (uint32_t i = 0; i < h->head_dim / 2; i++) {
        double freq = 1.0 / pow(h->rope_theta, 2.0 * i / h->head_dim), wavelen = 2 * pi / freq;
        if (wavelen < high_wavelen) out[i] = 1.0f;
        else if (wavelen > low_wavelen) out[i] = h->rope_factor;
        else {
            double smooth = (h->rope_orig_ctx / wavelen - h->rope_low_freq) / (h->rope_high_freq - h->rope_low_freq);
            out[i] = (float)(1.0 / ((1 - smooth) / h->rope_factor + smooth));
        }
    }
}

typedef struct fill_ctx {
    converter *c;
    plan_entry *e;
} fill_ctx;

static ag_status fill_tensor(void *vctx, void *dst, uint64_t n_bytes) {
    fill_ctx *f = vctx;
    converter *c = f->c;
    plan_entry *e = f->e;
    uint64_t n = e->ne[0] * e->ne[1];
    float *x = ag_try_malloc((size_t)n * sizeof(float));
    float *tmp = e->permute_heads ? ag_try_malloc((size_t)n * sizeof(float)) : NULL;
    if (!x || (e->permute_heads && !tmp)) {
        free(x);
        free(tmp);
        return ag_err_set(c->err, AG_NOMEM, "out of memory converting %s", e->gguf);
    }
    if (e->kind == MAKE_ROPE_FREQS) rope_freqs_llama3(&c->hp, x);
    else if (e->src) ag_dtype_to_f32((ag_dtype)e->src->dtype, e->src->data, x, (size_t)n);
    else make_random(c, e, x, n);
    if (e->permute_heads) {
        permute_rows(x, tmp, e->ne[1], e->ne[0], e->permute_heads);
        float *swap = x;
        x = tmp;
        tmp = swap;
    }
    uint64_t want;
    ag_dtype_bytes(e->type, n, &want);
    if (want == n_bytes) ag_dtype_from_f32(e->type, x, dst, (size_t)n);
    free(x);
    free(tmp);
    if (want != n_bytes) return ag_err_set(c->err, AG_ERR, "internal: size mismatch for %s", e->gguf);
    c->done++;
    if (c->o->progress) c->o->progress(c->o->progress_ctx, c->done, c->n_plan, e->gguf);
    return AG_OK;
}

/* ---- tokenizer metadata ----------------------------------------------- */

enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER = 4, TOK_UNUSED = 5, TOK_BYTE = 6 };

/* The text of a special-token entry of tokenizer_config.json: a string or {"content": ...}. */
static ag_str special_text(const ag_json_val *v) {
    if (ag_json_is(v, AG_JSON_OBJECT)) v = ag_json_obj_getc(v, "content");
    return ag_json_str(v);
}

static bool is_byte_token(ag_str s) {
    static const char hex[] = "0123456789ABCDEF";
    return s.n == 6 && memcmp(s.p, "<0x", 3) == 0 && strchr(hex, s.p[3]) && strchr(hex, s.p[4]) && s.p[5] == '>';
}

static const char *pre_tokenizer_name(const ag_json_val *tok) {
    static const char llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    static const char qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const ag_json_val *pre = ag_json_obj_getc(tok, "pre_tokenizer");
    const ag_json_val *list = ag_json_obj_getc(pre, "pretokenizers");
    for (size_t i = 0; i < (list ? ag_json_len(list) : 1); i++) {
        const ag_json_val *p = list ? ag_json_arr_at(list, i) : pre;
        ag_str type = ag_json_str(ag_json_obj_getc(p, "type"));
        ag_str rx = ag_json_str(ag_json_obj_getc(ag_json_obj_getc(p, "pattern"), "Regex"));
        if (ag_str_eq_cstr(type, "Split") && ag_str_eq_cstr(rx, llama3)) return "llama-bpe";
        if (ag_str_eq_cstr(type, "Split") && ag_str_eq_cstr(rx, qwen2)) return "qwen2";
        bool use_regex = true;
        if (ag_str_eq_cstr(type, "ByteLevel") && !list &&
            (!ag_json_get_bool(ag_json_obj_getc(p, "use_regex"), &use_regex) || use_regex))
            return "gpt-2";
    }
    return "default";
}

static ag_status write_tokenizer(converter *c, ag_gguf_writer *w, ag_arena *a) {
    char *tok_text = NULL, *cfg_text = NULL;
    ag_json_val *tok, *cfg;
    ag_status rc = load_json(c->o->hf_dir, "tokenizer.json", true, a, &tok_text, &tok, c->err);
    if (rc == AG_OK) rc = load_json(c->o->hf_dir, "tokenizer_config.json", false, a, &cfg_text, &cfg, c->err);
    const ag_json_val *model = rc == AG_OK ? ag_json_obj_getc(tok, "model") : NULL;
    const ag_json_val *vocab = ag_json_obj_getc(model, "vocab"), *merges = ag_json_obj_getc(model, "merges");
    const ag_json_val *added = rc == AG_OK ? ag_json_obj_getc(tok, "added_tokens") : NULL;
    if (rc == AG_OK && (!ag_str_eq_cstr(ag_json_str(ag_json_obj_getc(model, "type")), "BPE") ||
                        !ag_json_is(vocab, AG_JSON_OBJECT) || !ag_json_is(merges, AG_JSON_ARRAY)))
        rc = ag_err_set(c->err, AG_EINVAL, "tokenizer.json: only BPE models with vocab and merges are supported");
    bool spm = false;
    ag_json_get_bool(ag_json_obj_getc(model, "byte_fallback"), &spm);
    /* ids: the vocab, added tokens at their own ids, holes padded as llama.cpp does */
    size_t n_tok = 0;
    for (size_t i = 0; rc == AG_OK && i < ag_json_len(vocab); i++) {
        int64_t id;
        if (!ag_json_get_int(&vocab->u.members[i].val, &id) || id < 0 || id > (1 << 24))
            rc = ag_err_set(c->err, AG_EINVAL, "tokenizer.json: a vocab id is not a small whole number");
        else if ((size_t)id + 1 > n_tok) n_tok = (size_t)id + 1;
    }
    for (size_t i = 0; rc == AG_OK && i < ag_json_len(added); i++) {
        int64_t id;
        if (!ag_json_get_int(ag_json_obj_getc(ag_json_arr_at(added, i), "id"), &id) || id < 0 || id > (1 << 24))
            rc = ag_err_set(c->err, AG_EINVAL, "tokenizer.json: an added token id is not a small whole number");
        else if ((size_t)id + 1 > n_tok) n_tok = (size_t)id + 1;
    }
    if (rc == AG_OK && n_tok > c->hp.n_vocab)
        rc = ag_err_set(c->err, AG_EINVAL, "tokenizer has %zu ids but config.json vocab_size is %u", n_tok, c->hp.n_vocab);
    if (rc != AG_OK) {
        free(tok_text);
        free(cfg_text);
        return rc;
    }
    n_tok = c->hp.n_vocab; /* the embedding has vocab_size rows: name every one */
    ag_str *toks = ag_xcalloc(n_tok, sizeof *toks);
    int32_t *types = ag_xcalloc(n_tok, sizeof *types);
    float *scores = ag_xcalloc(n_tok, sizeof *scores);
    char (*pads)[32] = ag_xcalloc(n_tok, sizeof *pads);
    ag_map ids;
    ag_map_init(&ids);
    for (size_t i = 0; i < ag_json_len(vocab); i++) {
        int64_t id;
        ag_json_get_int(&vocab->u.members[i].val, &id);
        toks[id] = ag_json_str(&vocab->u.members[i].key);
        types[id] = spm && is_byte_token(toks[id]) ? TOK_BYTE : TOK_NORMAL;
    }
    for (size_t i = 0; i < ag_json_len(added); i++) {
        const ag_json_val *t = ag_json_arr_at(added, i);
        int64_t id;
        bool special = false;
        ag_json_get_int(ag_json_obj_getc(t, "id"), &id);
        ag_json_get_bool(ag_json_obj_getc(t, "special"), &special);
        toks[id] = ag_json_str(ag_json_obj_getc(t, "content"));
        types[id] = special ? TOK_CONTROL : TOK_USER;
    }
    for (size_t id = 0; id < n_tok; id++) {
        if (!toks[id].p) {
            snprintf(pads[id], sizeof pads[id], "[PAD%zu]", id);
            toks[id] = ag_str_from_cstr(pads[id]);
            types[id] = TOK_UNUSED;
        }
        ag_map_put(&ids, toks[id].p, toks[id].n, (void *)(uintptr_t)(id + 1));
    }
    ag_str unk = ag_json_str(ag_json_obj_getc(model, "unk_token"));
    uintptr_t unk_id = unk.p ? (uintptr_t)ag_map_get(&ids, unk.p, unk.n) : 0;
    if (unk_id) types[unk_id - 1] = TOK_UNKNOWN;

    ag_gguf_writer_set_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", spm ? 5 : 4);
    if (!spm) {
        const char *pre = pre_tokenizer_name(tok);
        /* GLM's regex is Llama 3's, but llama.cpp knows GLM files by their own names (and merges differently) */
        if (c->hp.glm && strcmp(pre, "llama-bpe") == 0) pre = strcmp(c->hp.arch, "glm4") == 0 ? "glm4" : "chatglm-bpe";
        ag_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, strlen(pre));
    }
    ag_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, n_tok);
    /* merges: "a b" strings or ["a", "b"] pairs (newer tokenizers); ranks are their order */
    size_t n_merges = ag_json_len(merges);
    ag_str *mstr = ag_xcalloc(n_merges + 1, sizeof *mstr);
    for (size_t r = 0; r < n_merges && rc == AG_OK; r++) {
        const ag_json_val *m = ag_json_arr_at(merges, r);
        ag_str left, right;
        if (ag_json_is(m, AG_JSON_STRING)) {
            mstr[r] = ag_json_str(m);
            const char *sp = mstr[r].n > 1 ? memchr(mstr[r].p + 1, ' ', mstr[r].n - 1) : NULL;
            if (!sp) {
                rc = ag_err_set(c->err, AG_EINVAL, "tokenizer.json: merge %zu has no space", r);
                break;
            }
            left = (ag_str){mstr[r].p, (size_t)(sp - mstr[r].p)};
            right = (ag_str){sp + 1, mstr[r].n - left.n - 1};
        } else {
            left = ag_json_str(ag_json_arr_at(m, 0));
            right = ag_json_str(ag_json_arr_at(m, 1));
            char *joined = ag_arena_try_alloc(a, left.n + right.n + 2);
            if (!left.p || !right.p || !joined) {
                rc = ag_err_set(c->err, AG_EINVAL, "tokenizer.json: merge %zu is not a pair of strings", r);
                break;
            }
            memcpy(joined, left.p, left.n);
            joined[left.n] = ' ';
            memcpy(joined + left.n + 1, right.p, right.n);
            mstr[r] = (ag_str){joined, left.n + right.n + 1};
        }
        if (spm) { /* score of the merged piece = -(rank of its merge): merge order for SentencePiece */
            char buf[512];
            if (left.n + right.n < sizeof buf) {
                memcpy(buf, left.p, left.n);
                memcpy(buf + left.n, right.p, right.n);
                uintptr_t id = (uintptr_t)ag_map_get(&ids, buf, left.n + right.n);
                if (id && scores[id - 1] == 0) scores[id - 1] = -(float)(r + 1);
            }
        }
    }
    if (rc == AG_OK) {
        if (spm) ag_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, n_tok);
        ag_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, n_tok);
        /* merges for SentencePiece too: llama.cpp ignores them there, our tokenizer merges by them
         * exactly as Hugging Face does (scores alone can merge pairs the merge list does not have) */
        ag_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", mstr, n_merges);
        static const struct {
            const char *cfg_key, *gguf_key;
        } specials[] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
                        {"eos_token", "tokenizer.ggml.eos_token_id"},
                        {"unk_token", "tokenizer.ggml.unknown_token_id"},
                        {"pad_token", "tokenizer.ggml.padding_token_id"}};
        for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
            ag_str s = special_text(ag_json_obj_getc(cfg, specials[i].cfg_key));
            uintptr_t id = s.p ? (uintptr_t)ag_map_get(&ids, s.p, s.n) : 0;
            if (id) ag_gguf_writer_set_u32(w, specials[i].gguf_key, (uint32_t)(id - 1));
        }
        if (c->hp.glm) { /* as llama.cpp's converter: a turn ends at the next <|user|>, a tool call at <|observation|> */
            uintptr_t eot = (uintptr_t)ag_map_get(&ids, "<|user|>", 8), eom = (uintptr_t)ag_map_get(&ids, "<|observation|>", 15);
            if (eot) ag_gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)(eot - 1));
            if (eom) ag_gguf_writer_set_u32(w, "tokenizer.ggml.eom_token_id", (uint32_t)(eom - 1));
        }
        /* add_bos: the config's flag, else whether a template post-processor puts the bos token
         * first; when neither says, no key, so llama.cpp applies its pre-tokenizer's default */
        bool add_bos = false, known = ag_json_get_bool(ag_json_obj_getc(cfg, "add_bos_token"), &add_bos);
        if (!known) {
            const ag_json_val *pp = ag_json_obj_getc(tok, "post_processor");
            const ag_json_val *procs = ag_json_obj_getc(pp, "processors");
            for (size_t i = 0; i < (procs ? ag_json_len(procs) : 1); i++) {
                const ag_json_val *p = procs ? ag_json_arr_at(procs, i) : pp;
                const ag_json_val *single = ag_json_obj_getc(p, "single");
                if (!single) continue;
                known = true;
                ag_str id = ag_json_str(ag_json_obj_getc(ag_json_obj_getc(ag_json_arr_at(single, 0), "SpecialToken"), "id"));
                ag_str bos = special_text(ag_json_obj_getc(cfg, "bos_token"));
                add_bos = add_bos || (id.p && bos.p && ag_str_eq(id, bos));
            }
        }
        if (c->hp.glm) known = true, add_bos = false; /* GLM prompts start with the template's [gMASK]<sop> */
        if (known) ag_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
        ag_str tmpl = ag_json_str(ag_json_obj_getc(cfg, "chat_template"));
        if (tmpl.p) ag_gguf_writer_set_str(w, "tokenizer.chat_template", tmpl.p, tmpl.n);
    }
    /* the writer copied every string it was given: the tokenizer's DOM can go */
    ag_map_deinit(&ids);
    free(mstr);
    free(pads);
    free(scores);
    free(types);
    free(toks);
    free(tok_text);
    free(cfg_text);
    return rc;
}

/* ---- the conversion ----------------------------------------------------- */

ag_status ag_convert_hf(const ag_convert_opts *o, ag_err *err) {
    converter c = {.o = o, .err = err};
    ag_arena a;
    ag_arena_init(&a, 0);
    char *cfg_text = NULL;
    ag_json_val *cfg;
    ag_st_set *st = NULL;
    ag_gguf_writer *w = NULL;
    fill_ctx *fills = NULL;
    ag_status rc = load_json(o->hf_dir, "config.json", true, &a, &cfg_text, &cfg, err);
    if (rc == AG_OK) rc = read_hparams(cfg, &c.hp, err);
    if (rc != AG_OK) goto done;
    build_plan(&c);
    assign_types(&c);
    if (!o->random_weights) {
        if ((rc = ag_st_open_dir(o->hf_dir, &st, err)) != AG_OK || (rc = bind_checkpoint(&c, st)) != AG_OK) goto done;
    }
    w = ag_gguf_writer_create(0);
    const hparams *h = &c.hp;
    const char *arch = h->arch;
    char key[128];
    ag_gguf_writer_set_str(w, "general.architecture", arch, strlen(arch));
    const char *base = strrchr(o->hf_dir, '/');
    base = base && base[1] ? base + 1 : o->hf_dir;
    ag_gguf_writer_set_str(w, "general.name", base, strlen(base));
    const ag_quant_preset *preset = o->preset ? o->preset : ag_quant_preset_find("f16");
    ag_gguf_writer_set_u32(w, "general.file_type", preset->ftype);
    if (ag_dtype_is_quant(preset->base)) ag_gguf_writer_set_u32(w, "general.quantization_version", 2);
#define ARCH_U32(name, v) (snprintf(key, sizeof key, "%s." name, arch), ag_gguf_writer_set_u32(w, key, v))
#define ARCH_F32(name, v) (snprintf(key, sizeof key, "%s." name, arch), ag_gguf_writer_set_f32(w, key, v))
    ARCH_U32("context_length", h->n_ctx);
    ARCH_U32("embedding_length", h->n_embd);
    ARCH_U32("block_count", h->n_layer);
    ARCH_U32("feed_forward_length", h->n_ff);
    ARCH_U32("attention.head_count", h->n_head);
    ARCH_U32("attention.head_count_kv", h->n_head_kv);
    ARCH_F32("attention.layer_norm_rms_epsilon", h->eps);
    ARCH_F32("rope.freq_base", h->rope_theta);
    ARCH_U32("rope.dimension_count", h->n_rot);
    ARCH_U32("attention.key_length", h->head_dim);
    ARCH_U32("attention.value_length", h->head_dim);
    ARCH_U32("vocab_size", h->n_vocab);
#undef ARCH_U32
#undef ARCH_F32
    if ((rc = write_tokenizer(&c, w, &a)) != AG_OK) goto done;
    fills = ag_xcalloc(c.n_plan + 1, sizeof *fills);
    for (size_t i = 0; i < c.n_plan && rc == AG_OK; i++) {
        plan_entry *e = &c.plan[i];
        fills[i] = (fill_ctx){&c, e};
        rc = ag_gguf_writer_add_tensor_fill(w, e->gguf, e->type, e->n_dims, e->ne, fill_tensor, &fills[i]);
        if (rc != AG_OK) ag_err_set(err, rc, "cannot add tensor %s", e->gguf);
    }
    if (rc == AG_OK) {
        ag_err werr = {{0}}; /* a fill may explain a failure better than the writer's status */
        c.err = &werr;
        rc = ag_gguf_writer_to_file(w, o->out_path);
        if (rc != AG_OK)
            ag_err_set(err, rc, "%s: %s", o->out_path, werr.msg[0] ? werr.msg : ag_strerror(rc));
    }
done:
    free(fills);
    ag_gguf_writer_destroy(w);
    ag_st_close(st);
    free(c.plan);
    free(cfg_text);
    ag_arena_deinit(&a);
    return rc;
}
