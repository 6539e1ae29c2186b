/*
 * Tests for src/engine/convert.c and src/engine/safetensors.c: tiny Hugging
 * Face directories written here (config, a small byte-fallback BPE tokenizer,
 * safetensors single and sharded) converted to GGUF and read back: keys,
 * tensor names, values, the Q/K row permutation against its formula, random
 * weights that are deterministic per seed, and refusals that name the problem.
 */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "tmpdir.h"

#include "engine/convert.h"
#include "engine/gguf.h"
#include "engine/safetensors.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { EMBD = 64, HEADS = 4, KV_HEADS = 2, HD = EMBD / HEADS, FF = 96, VOCAB = 300 };

static char root[160]; /* short, so paths built under it fit their buffers */

static void write_text(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void make_dir(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", root, name);
    mkdir(out, 0755);
}

static void write_config(const char *dir, const char *arch, int tied) {
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"%s\"], \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"num_hidden_layers\": 1, "
             "\"vocab_size\": %d, \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-6, \"rope_theta\": 500000.0, "
             "\"tie_word_embeddings\": %s}",
             arch, EMBD, FF, HEADS, KV_HEADS, VOCAB, tied ? "true" : "false");
    write_text(dir, "config.json", cfg);
}

/* A byte-fallback BPE: <unk> <s> </s>, 256 byte tokens, then merged pieces. */
static void write_tokenizer(const char *dir) {
    char *buf = malloc(1 << 16);
    int n = sprintf(buf, "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"vocab\": {"
                         "\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2");
    for (int b = 0; b < 256; b++) n += sprintf(buf + n, ", \"<0x%02X>\": %d", b, 3 + b);
    n += sprintf(buf + n, ", \"\xe2\x96\x81\": 259, \"t\": 260, \"h\": 261, \"e\": 262, \"\xe2\x96\x81t\": 263, "
                          "\"\xe2\x96\x81th\": 264, \"\xe2\x96\x81the\": 265}, "
                          "\"merges\": [\"\xe2\x96\x81 t\", \"\xe2\x96\x81t h\", \"\xe2\x96\x81th e\"]}, "
                          "\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true}, "
                          "{\"id\": 2, \"content\": \"</s>\", \"special\": true}]}");
    write_text(dir, "tokenizer.json", buf);
    write_text(dir, "tokenizer_config.json",
               "{\"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\"}, \"add_bos_token\": true, "
               "\"chat_template\": \"{{ messages }}\"}");
    free(buf);
}

/* ---- a tiny safetensors writer ---- */
typedef struct st_tensor {
    char name[96];
    uint64_t rows, cols; /* cols == 0: 1-D */
    float *data;
} st_tensor;

static st_tensor tensors[32];
static int n_tensors;

static void add_tensor(const char *name, uint64_t rows, uint64_t cols) {
    st_tensor *t = &tensors[n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rows = rows;
    t->cols = cols;
    uint64_t n = rows * (cols ? cols : 1);
    t->data = malloc(n * sizeof(float));
    for (uint64_t i = 0; i < n; i++) t->data[i] = (float)((i * 7 + (uint64_t)n_tensors * 13) % 101) / 50.0f - 1.0f;
}

static void llama_tensors(int with_bias, int with_qk_norm, int with_lm_head) {
    n_tensors = 0;
    add_tensor("model.embed_tokens.weight", VOCAB, EMBD);
    add_tensor("model.layers.0.input_layernorm.weight", EMBD, 0);
    add_tensor("model.layers.0.self_attn.q_proj.weight", HEADS * HD, EMBD);
    add_tensor("model.layers.0.self_attn.k_proj.weight", KV_HEADS * HD, EMBD);
    add_tensor("model.layers.0.self_attn.v_proj.weight", KV_HEADS * HD, EMBD);
    if (with_bias) {
        add_tensor("model.layers.0.self_attn.q_proj.bias", HEADS * HD, 0);
        add_tensor("model.layers.0.self_attn.k_proj.bias", KV_HEADS * HD, 0);
        add_tensor("model.layers.0.self_attn.v_proj.bias", KV_HEADS * HD, 0);
    }
    if (with_qk_norm) {
        add_tensor("model.layers.0.self_attn.q_norm.weight", HD, 0);
        add_tensor("model.layers.0.self_attn.k_norm.weight", HD, 0);
    }
    add_tensor("model.layers.0.self_attn.o_proj.weight", EMBD, HEADS * HD);
    add_tensor("model.layers.0.post_attention_layernorm.weight", EMBD, 0);
    add_tensor("model.layers.0.mlp.gate_proj.weight", FF, EMBD);
    add_tensor("model.layers.0.mlp.up_proj.weight", FF, EMBD);
    add_tensor("model.layers.0.mlp.down_proj.weight", EMBD, FF);
    add_tensor("model.norm.weight", EMBD, 0);
    if (with_lm_head) add_tensor("lm_head.weight", VOCAB, EMBD);
}

static void free_tensors(void) {
    for (int i = 0; i < n_tensors; i++) free(tensors[i].data);
    n_tensors = 0;
}

/* Tensors [from, to) as one safetensors file (F32). */
static void write_safetensors(const char *dir, const char *name, int from, int to) {
    char header[8192];
    int n = sprintf(header, "{\"__metadata__\": {\"format\": \"pt\"}");
    uint64_t off = 0;
    for (int i = from; i < to; i++) {
        st_tensor *t = &tensors[i];
        uint64_t bytes = t->rows * (t->cols ? t->cols : 1) * 4;
        if (t->cols)
            n += sprintf(header + n, ", \"%s\": {\"dtype\": \"F32\", \"shape\": [%llu, %llu], \"data_offsets\": [%llu, %llu]}",
                         t->name, (unsigned long long)t->rows, (unsigned long long)t->cols, (unsigned long long)off,
                         (unsigned long long)(off + bytes));
        else
            n += sprintf(header + n, ", \"%s\": {\"dtype\": \"F32\", \"shape\": [%llu], \"data_offsets\": [%llu, %llu]}",
                         t->name, (unsigned long long)t->rows, (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    n += sprintf(header + n, "}");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    uint64_t hlen = (uint64_t)n;
    fwrite(&hlen, 8, 1, f);
    fwrite(header, 1, (size_t)n, f);
    for (int i = from; i < to; i++) fwrite(tensors[i].data, 4, tensors[i].rows * (tensors[i].cols ? tensors[i].cols : 1), f);
    fclose(f);
}

static st_tensor *find_src(const char *name) {
    for (int i = 0; i < n_tensors; i++)
        if (strcmp(tensors[i].name, name) == 0) return &tensors[i];
    return NULL;
}

static ag_status convert(const char *dir, const char *out, const char *type, int random, uint64_t seed, ag_err *err) {
    ag_convert_opts o = {.hf_dir = dir, .out_path = out, .preset = ag_quant_preset_find(type), .random_weights = random, .seed = seed};
    memset(err, 0, sizeof *err);
    return ag_convert_hf(&o, err);
}

static int setup(void **state) {
    (void)state;
    return ag_test_tmpdir_make(root, sizeof root, "convert");
}

static int teardown(void **state) {
    (void)state;
    return ag_test_tmpdir_remove(root);
}

static void test_llama_real_weights(void **state) {
    (void)state;
    char dir[256], out[300];
    make_dir(dir, sizeof dir, "llama");
    write_config(dir, "LlamaForCausalLM", 0);
    write_tokenizer(dir);
    llama_tensors(0, 0, 1);
    write_safetensors(dir, "model.safetensors", 0, n_tensors);
    snprintf(out, sizeof out, "%s/llama.gguf", root);
    ag_err err;
    if (convert(dir, out, "f32", 0, 0, &err) != AG_OK) fail_msg("%s", err.msg);
    ag_gguf_file *f;
    assert_int_equal(ag_gguf_open(out, &f, &err), AG_OK);
    uint32_t u;
    float x;
    ag_str s;
    assert_true(ag_gguf_get_str(f, "general.architecture", &s) && ag_str_eq_cstr(s, "llama"));
    assert_true(ag_gguf_get_u32(f, "llama.embedding_length", &u) && u == EMBD);
    assert_true(ag_gguf_get_u32(f, "llama.attention.head_count_kv", &u) && u == KV_HEADS);
    assert_true(ag_gguf_get_u32(f, "llama.rope.dimension_count", &u) && u == HD);
    assert_true(ag_gguf_get_f32(f, "llama.rope.freq_base", &x) && x == 500000.0f);
    assert_true(ag_gguf_get_str(f, "tokenizer.ggml.model", &s) && ag_str_eq_cstr(s, "llama"));
    assert_true(ag_gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &u) && u == 1);
    assert_true(ag_gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &u) && u == 2);
    assert_true(ag_gguf_get_str(f, "tokenizer.chat_template", &s) && ag_str_eq_cstr(s, "{{ messages }}"));
    const ag_gguf_kv *toks = ag_gguf_find(f, "tokenizer.ggml.tokens");
    assert_int_equal(toks->arr_len, VOCAB);
    assert_true(ag_str_eq_cstr(ag_gguf_arr_str(toks, 265), "\xe2\x96\x81the"));
    assert_true(ag_str_eq_cstr(ag_gguf_arr_str(toks, 299), "[PAD299]")); /* config vocab > tokenizer: padded */
    const ag_gguf_kv *scores = ag_gguf_find(f, "tokenizer.ggml.scores"), *types = ag_gguf_find(f, "tokenizer.ggml.token_type");
    float s263, s265;
    int32_t t0, t1, t3, t299;
    memcpy(&s263, scores->value + 263 * 4, 4);
    memcpy(&s265, scores->value + 265 * 4, 4);
    assert_true(s263 == -1.0f && s265 == -3.0f); /* -(merge rank + 1) */
    memcpy(&t0, types->value, 4);
    memcpy(&t1, types->value + 4, 4);
    memcpy(&t3, types->value + 12, 4);
    memcpy(&t299, types->value + 299 * 4, 4);
    assert_true(t0 == 2 && t1 == 3 && t3 == 6 && t299 == 5); /* unknown, control, byte, unused */

    /* values: copied, with Q and K rows permuted as llama.cpp does */
    const ag_gguf_tensor *q = ag_gguf_find_tensor(f, "blk.0.attn_q.weight"), *k = ag_gguf_find_tensor(f, "blk.0.attn_k.weight");
    const ag_gguf_tensor *v = ag_gguf_find_tensor(f, "blk.0.attn_v.weight"), *e = ag_gguf_find_tensor(f, "token_embd.weight");
    assert_true(q->ne[0] == EMBD && q->ne[1] == HEADS * HD && k->ne[1] == KV_HEADS * HD);
    const st_tensor *sq = find_src("model.layers.0.self_attn.q_proj.weight"), *sk = find_src("model.layers.0.self_attn.k_proj.weight");
    for (int h = 0; h < HEADS; h++)
        for (int i = 0; i < HD / 2; i++)
            for (int j = 0; j < 2; j++) {
                const float *dst = (const float *)q->data + (h * HD + i * 2 + j) * EMBD;
                assert_memory_equal(dst, sq->data + (h * HD + j * (HD / 2) + i) * EMBD, EMBD * 4);
            }
    for (int h = 0; h < KV_HEADS; h++) /* K permutes by its own (key/value) head count */
        for (int i = 0; i < HD / 2; i++)
            assert_memory_equal((const float *)k->data + (h * HD + i * 2 + 1) * EMBD,
                                sk->data + (h * HD + HD / 2 + i) * EMBD, EMBD * 4);
    assert_memory_equal(v->data, find_src("model.layers.0.self_attn.v_proj.weight")->data, v->n_bytes);
    assert_memory_equal(e->data, find_src("model.embed_tokens.weight")->data, e->n_bytes);
    assert_memory_equal(ag_gguf_find_tensor(f, "output.weight")->data, find_src("lm_head.weight")->data, e->n_bytes);
    assert_memory_equal(ag_gguf_find_tensor(f, "blk.0.ffn_down.weight")->data,
                        find_src("model.layers.0.mlp.down_proj.weight")->data, EMBD * FF * 4);
    ag_gguf_close(f);

    /* the same checkpoint split into two shards with an index converts to the same bytes */
    char sdir[256], out2[300], idx[4096];
    make_dir(sdir, sizeof sdir, "llama_sharded");
    write_config(sdir, "LlamaForCausalLM", 0);
    write_tokenizer(sdir);
    write_safetensors(sdir, "model-00001-of-00002.safetensors", 0, 5);
    write_safetensors(sdir, "model-00002-of-00002.safetensors", 5, n_tensors);
    int n = sprintf(idx, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < n_tensors; i++)
        n += sprintf(idx + n, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", tensors[i].name, i < 5 ? 1 : 2);
    sprintf(idx + n, "}}");
    write_text(sdir, "model.safetensors.index.json", idx);
    /* the directory name lands in general.name: give both outputs the same by renaming afterwards */
    snprintf(out2, sizeof out2, "%s/sharded.gguf", root);
    if (convert(sdir, out2, "f32", 0, 0, &err) != AG_OK) fail_msg("%s", err.msg);
    ag_gguf_file *f1, *f2;
    assert_int_equal(ag_gguf_open(out, &f1, &err), AG_OK);
    assert_int_equal(ag_gguf_open(out2, &f2, &err), AG_OK);
    assert_int_equal(ag_gguf_n_tensors(f1), ag_gguf_n_tensors(f2));
    for (size_t i = 0; i < ag_gguf_n_tensors(f1); i++) {
        const ag_gguf_tensor *a = ag_gguf_tensor_at(f1, i), *b = ag_gguf_tensor_at(f2, i);
        assert_true(ag_str_eq(a->name, b->name) && a->n_bytes == b->n_bytes);
        assert_memory_equal(a->data, b->data, a->n_bytes);
    }
    ag_gguf_close(f1);
    ag_gguf_close(f2);
    free_tensors();
}

static void test_random_weights_are_deterministic(void **state) {
    (void)state;
    char dir[256], a[300], b[300], c[300];
    make_dir(dir, sizeof dir, "random");
    write_config(dir, "Qwen2ForCausalLM", 1);
    write_tokenizer(dir);
    snprintf(a, sizeof a, "%s/a.gguf", root);
    snprintf(b, sizeof b, "%s/b.gguf", root);
    snprintf(c, sizeof c, "%s/c.gguf", root);
    ag_err err;
    for (int i = 0; i < 3; i++)
        if (convert(dir, i == 0 ? a : i == 1 ? b : c, "q8_0", 1, i == 2 ? 8 : 7, &err) != AG_OK) fail_msg("%s", err.msg);
    size_t na, nb, nc;
    char *da = ag_test_read_file(a, &na), *db = ag_test_read_file(b, &nb), *dc = ag_test_read_file(c, &nc);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na); /* same seed, same bytes */
    assert_int_equal(na, nc);
    assert_true(memcmp(da, dc, na) != 0); /* another seed, other weights */
    free(da);
    free(db);
    free(dc);
    ag_gguf_file *f;
    assert_int_equal(ag_gguf_open(a, &f, &err), AG_OK);
    assert_non_null(ag_gguf_find_tensor(f, "blk.0.attn_q.bias")); /* qwen2 has QKV biases */
    assert_null(ag_gguf_find_tensor(f, "output.weight"));        /* tied */
    const ag_gguf_tensor *norm = ag_gguf_find_tensor(f, "output_norm.weight");
    assert_int_equal(norm->type, AG_DTYPE_F32);
    for (int i = 0; i < EMBD; i++) { /* norm weights 1 +- 0.1 */
        float w = ((const float *)norm->data)[i];
        assert_true(w >= 0.9f && w <= 1.1f);
    }
    ag_str s;
    assert_true(ag_gguf_get_str(f, "general.architecture", &s) && ag_str_eq_cstr(s, "qwen2"));
    assert_int_equal(ag_gguf_find_tensor(f, "blk.0.attn_q.weight")->type, AG_DTYPE_Q8_0);
    /* tied: token_embd is the output and gets its rule, Q6_K, whose blocks the short rows do not fit: Q8_0 */
    assert_int_equal(ag_gguf_find_tensor(f, "token_embd.weight")->type, AG_DTYPE_Q8_0);
    ag_gguf_close(f);
    /* a K-quant preset: llama-quantize's fallback for rows that are not whole super-blocks */
    if (convert(dir, b, "q4_k_m", 1, 7, &err) != AG_OK) fail_msg("%s", err.msg);
    assert_int_equal(ag_gguf_open(b, &f, &err), AG_OK);
    uint32_t ft = 0;
    assert_true(ag_gguf_get_u32(f, "general.file_type", &ft) && ft == 15);
    assert_int_equal(ag_gguf_find_tensor(f, "blk.0.attn_q.weight")->type, AG_DTYPE_Q5_0);
    assert_int_equal(ag_gguf_find_tensor(f, "output_norm.weight")->type, AG_DTYPE_F32);
    ag_gguf_close(f);

    write_config(dir, "Qwen3ForCausalLM", 0);
    if (convert(dir, a, "f16", 1, 1, &err) != AG_OK) fail_msg("%s", err.msg);
    assert_int_equal(ag_gguf_open(a, &f, &err), AG_OK);
    assert_non_null(ag_gguf_find_tensor(f, "blk.0.attn_q_norm.weight"));
    assert_non_null(ag_gguf_find_tensor(f, "blk.0.attn_k_norm.weight"));
    assert_null(ag_gguf_find_tensor(f, "blk.0.attn_q.bias"));
    assert_non_null(ag_gguf_find_tensor(f, "output.weight"));
    ag_gguf_close(f);
}

static void expect_refusal(const char *dir, const char *msg_part) {
    char out[300];
    snprintf(out, sizeof out, "%s/refused.gguf", root);
    ag_err err;
    if (convert(dir, out, "f16", 0, 0, &err) == AG_OK) fail_msg("converted, expected a refusal (%s)", msg_part);
    if (!strstr(err.msg, msg_part)) fail_msg("message '%s' lacks '%s'", err.msg, msg_part);
    assert_int_equal(access(out, F_OK), -1); /* nothing half-written left behind */
}

static void test_refusals_name_the_problem(void **state) {
    (void)state;
    char dir[256];
    make_dir(dir, sizeof dir, "bad");
    write_tokenizer(dir);
    write_config(dir, "GPTNeoXForCausalLM", 0);
    expect_refusal(dir, "architecture 'GPTNeoXForCausalLM' is not supported");
    write_text(dir, "config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64}");
    expect_refusal(dir, "'num_hidden_layers' is missing");
    write_text(dir, "config.json", "{\"architectures\": [\"LlamaForCausalLM\"], ");
    expect_refusal(dir, "config.json:1:");
    write_config(dir, "LlamaForCausalLM", 0);
    expect_refusal(dir, "no model.safetensors or model.safetensors.index.json");
    llama_tensors(0, 0, 0); /* no lm_head, but the config is untied */
    write_safetensors(dir, "model.safetensors", 0, n_tensors);
    expect_refusal(dir, "checkpoint has no tensor 'lm_head.weight' (for output.weight)");
    free_tensors();
    llama_tensors(0, 0, 1);
    add_tensor("model.layers.0.mlp.extra.weight", 4, 4);
    write_safetensors(dir, "model.safetensors", 0, n_tensors);
    expect_refusal(dir, "cannot map checkpoint tensor 'model.layers.0.mlp.extra.weight'");
    free_tensors();
    llama_tensors(0, 0, 1);
    tensors[2].rows = HEADS * HD / 2; /* q_proj written half as tall as the config says */
    write_safetensors(dir, "model.safetensors", 0, n_tensors);
    expect_refusal(dir, "tensor 'model.layers.0.self_attn.q_proj.weight' has the wrong shape");
    free_tensors();
}

static void test_safetensors_header_checks(void **state) {
    (void)state;
    static const struct {
        const char *header;
        size_t data_bytes;
        const char *msg;
    } cases[] = {
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, NULL},
        /* a zero dimension makes an empty tensor (regression: the overflow check divided by zero) */
        {"{\"e\": {\"dtype\": \"F16\", \"shape\": [0, 3], \"data_offsets\": [0, 0]}, \"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, NULL},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 7, "outside the file"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, "need 12"},
        {"{\"w\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "unknown dtype 'Q4'"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, "invalid shape"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8, "needs dtype, shape and data_offsets"},
        {"{\"a\\u0000b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "contains a NUL byte"},
        {"[1, 2]", 0, "not a JSON object"},
        {"{\"w\": ", 0, "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t hlen = strlen(cases[i].header), size = 8 + hlen + cases[i].data_bytes;
        uint8_t *img = calloc(1, size);
        uint64_t h = hlen;
        memcpy(img, &h, 8);
        memcpy(img + 8, cases[i].header, hlen);
        ag_st_set *s = NULL;
        ag_err err = {{0}};
        ag_status st = ag_st_parse(img, size, &s, &err);
        if (!cases[i].msg) {
            assert_int_equal(st, AG_OK);
            assert_int_equal(ag_st_find(s, "w")->n_bytes, 8);
            ag_st_close(s);
        } else if (st == AG_OK || !strstr(err.msg, cases[i].msg)) {
            fail_msg("case %zu: status %d, message '%s', wanted '%s'", i, st, err.msg, cases[i].msg);
        }
        free(img);
    }
    uint8_t huge[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    ag_st_set *s;
    ag_err err;
    assert_int_equal(ag_st_parse(huge, sizeof huge, &s, &err), AG_EINVAL);
    assert_non_null(strstr(err.msg, "does not fit the file"));
}

static int parses_as_safetensors(const char *data, size_t len, void *ctx) {
    (void)ctx;
    ag_st_set *s;
    ag_err err;
    if (ag_st_parse(data, len, &s, &err) != AG_OK) return 0;
    ag_st_close(s);
    return 1;
}

/* Every file of fuzz/corpus/safetensors (seeds, and crashes once found) goes through the reader. */
static void test_safetensors_corpus_replays(void **state) {
    (void)state;
    int valid, files = ag_test_for_each_file(AG_SOURCE_DIR "/fuzz/corpus/safetensors", parses_as_safetensors, NULL, &valid);
    AG_TEST_NOTE("safetensors corpus: %d files, %d valid", files, valid);
    assert_true(valid >= 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_real_weights),
        cmocka_unit_test(test_random_weights_are_deterministic),
        cmocka_unit_test(test_refusals_name_the_problem),
        cmocka_unit_test(test_safetensors_header_checks),
        cmocka_unit_test(test_safetensors_corpus_replays),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
