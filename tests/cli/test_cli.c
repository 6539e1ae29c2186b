/*
 * The autoglm binary as a user meets it: exit codes, one-line usage errors,
 * --help and --version, and `json check` / `json fmt` on real files.
 */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "tmpdir.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[160]; /* short, so paths built under it fit their buffers */

typedef struct result {
    int code;
    char *out, *err;
    size_t out_len, err_len;
} result;

static void result_free(result *r) {
    free(r->out);
    free(r->err);
}

/* Run `autoglm ARGS` through the shell (ARGS is trusted test text). */
static result run(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s >out.txt 2>err.txt", dir, AG_BIN, args);
    int st = system(cmd);
    result r = {.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128};
    char path[256];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    r.out = ag_test_read_file(path, &r.out_len);
    snprintf(path, sizeof path, "%s/err.txt", dir);
    r.err = ag_test_read_file(path, &r.err_len);
    return r;
}

/* Run ARGS and check the exit code and, when not NULL, a piece of stdout and of stderr. */
static void expect(const char *args, int code, const char *out_has, const char *err_has) {
    result r = run(args);
    if (r.code != code) fail_msg("'%s': exit %d, want %d; stderr: %s", args, r.code, code, r.err);
    if (out_has && !strstr(r.out, out_has)) fail_msg("'%s': stdout lacks '%s': %s", args, out_has, r.out);
    if (err_has && !strstr(r.err, err_has)) fail_msg("'%s': stderr lacks '%s': %s", args, err_has, r.err);
    result_free(&r);
}

static void write_file(const char *name, const char *content, size_t n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(content, 1, n, f);
    fclose(f);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static int setup(void **state) {
    (void)state;
    return ag_test_tmpdir_make(dir, sizeof dir, "cli");
}

static int teardown(void **state) {
    (void)state;
    return ag_test_tmpdir_remove(dir);
}

static void test_version_and_help(void **state) {
    (void)state;
    expect("--version", 0, "autoglm ", NULL);
    expect("--help", 0, "json", NULL);
    expect("json --help", 0, "usage: autoglm json check", NULL);
    expect("json check --help", 0, "usage: autoglm json check", NULL);
    expect("json fmt --help", 0, "usage: autoglm json check", NULL);
}

static void test_usage_errors_are_one_line_exit_2(void **state) {
    (void)state;
    const char *cases[] = {"frobnicate", "--frobnicate", "json frob", "json check --bogus x.json",
                           "json check", "json fmt a b", "json check --max-depth", "json fmt --indent 99 -"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        result r = run(cases[i]);
        if (r.code != 2 || count_lines(r.err) != 1) fail_msg("'%s': exit %d, stderr: %s", cases[i], r.code, r.err);
        assert_int_equal(r.out_len, 0);
        result_free(&r);
    }
    result r = run("");
    assert_int_equal(r.code, 2);
    result_free(&r);
}

static void test_json_check(void **state) {
    (void)state;
    write_file("good.json", "{\"a\": [1, 2]}", 13);
    write_file("bad.json", "{\n  \"a\": [1, 2,]\n}", 18);
    write_file("utf8.json", "[\"\xff\"]", 5);
    result r = run("json check good.json");
    assert_int_equal(r.code, 0);
    assert_int_equal(r.out_len, 0);
    result_free(&r);
    r = run("json check good.json bad.json utf8.json missing.json");
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.out, "bad.json:2:14: unexpected character, expected a value\n"));
    assert_non_null(strstr(r.out, "utf8.json:1:3: invalid UTF-8\n"));
    assert_null(strstr(r.out, "good.json"));
    assert_non_null(strstr(r.err, "missing.json: cannot read: No such file or directory"));
    result_free(&r);
    /* the depth limit is a flag */
    write_file("deep.json", "[[[[1]]]]", 9);
    expect("json check --max-depth 3 deep.json", 1, "deep.json:1:4: nesting deeper than the depth limit", NULL);
    expect("json check --max-depth 4 deep.json", 0, NULL, NULL);
}

static void test_json_fmt(void **state) {
    (void)state;
    const char *in = " { \"b\" : [ 1 , 2.50 , \"\\u00e9\" ] , \"a\":{ } , \"b2\": 1e2 } ";
    write_file("in.json", in, strlen(in));
    result r = run("json fmt --compact in.json");
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "{\"b\":[1,2.5,\"\xc3\xa9\"],\"a\":{},\"b2\":100.0}\n");
    result_free(&r);
    r = run("json fmt in.json");
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "{\n  \"b\": [\n    1,\n    2.5,\n    \"\xc3\xa9\"\n  ],\n  \"a\": {},\n  \"b2\": 100.0\n}\n");
    result_free(&r);
    r = run("json fmt --compact - < in.json");
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "{\"b\":[1,2.5,\"\xc3\xa9\"],\"a\":{},\"b2\":100.0}\n");
    result_free(&r);
    expect("json fmt bad.json", 1, "bad.json:2:14:", NULL);
}

static void test_inspect_and_quantize(void **state) {
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "inspect %s/fuzz/corpus/gguf/model.gguf", AG_SOURCE_DIR);
    expect(cmd, 0, "token_embd.weight                q8_0  32 x 2", NULL);
    expect(cmd, 0, "tokenizer.ggml.tokens                    str    [4] \"<unk>\"", NULL);
    write_file("notgguf.bin", "GGML and more bytes here", 24);
    expect("inspect notgguf.bin", 1, NULL, "autoglm inspect: notgguf.bin: offset 0: not a GGUF file (magic bytes are not \"GGUF\")\n");
    expect("inspect missing.gguf", 1, NULL, "No such file");
    expect("inspect", 2, NULL, "no MODEL.gguf");
    snprintf(cmd, sizeof cmd, "quantize %s/fuzz/corpus/gguf/model.gguf q4.gguf q4_0 --pure", AG_SOURCE_DIR);
    expect(cmd, 0, NULL, NULL);
    expect("inspect q4.gguf", 0, "token_embd.weight                q4_0", NULL);
    expect("inspect q4.gguf", 0, "blk.0.attn_q.weight              f16", NULL); /* rows of 16: not whole blocks */
    expect("inspect q4.gguf", 0, "output_norm.weight               f32", NULL); /* 1-D stays */
    expect("inspect q4.gguf", 0, "general.file_type                        u32    2", NULL);
    expect("quantize q4.gguf f16.gguf f16", 0, NULL, NULL);
    expect("inspect f16.gguf", 0, "token_embd.weight                f16", NULL);
    /* llama-quantize's rules: no output.weight, so token_embd is the output: Q6_K, whose 256-element
     * blocks do not fit rows of 32, so Q8_0; rows of 16 fit no block: F16 */
    snprintf(cmd, sizeof cmd, "quantize %s/fuzz/corpus/gguf/model.gguf mix.gguf --type q4_0", AG_SOURCE_DIR);
    expect(cmd, 0, NULL, "2 tensor(s) took a fallback type");
    expect("inspect mix.gguf", 0, "token_embd.weight                q8_0", NULL);
    expect("inspect mix.gguf", 0, "blk.0.ffn_up.weight              q4_0", NULL);
    expect("inspect mix.gguf", 0, "blk.0.attn_q.weight              f16", NULL);
    snprintf(cmd, sizeof cmd, "quantize %s/fuzz/corpus/gguf/model.gguf km.gguf --type q4_k_m", AG_SOURCE_DIR);
    expect(cmd, 0, NULL, NULL);
    expect("inspect km.gguf", 0, "blk.0.ffn_up.weight              q5_0", NULL); /* Q4_K's fallback */
    expect("inspect km.gguf", 0, "general.file_type                        u32    15", NULL);
    expect("quantize q4.gguf x.gguf q4_k", 2, NULL, "unknown type 'q4_k' (f32 f16 bf16 q8_0");
    expect("quantize q4.gguf x.gguf --type", 2, NULL, "--type needs a value");
    expect("quantize q4.gguf x.gguf q8_0 --threads 0", 2, NULL, "--threads takes 1..1024");
    expect("quantize q4.gguf x.gguf q8_0 --bogus", 2, NULL, "unknown option '--bogus'");
    expect("quantize q4.gguf", 2, NULL, "takes IN.gguf OUT.gguf TYPE");
    expect("quantize notgguf.bin x.gguf q8_0", 1, NULL, "not a GGUF file");
}

static void test_tokenize(void **state) {
    (void)state;
    char cmd[1024];
    write_file("text.txt", "Hello, world\n\xe4\xb8\xad\xe6\x96\x87 ok\n", 23);
    snprintf(cmd, sizeof cmd, "tokenize --model %s/build/fixtures/llama3.gguf --lines text.txt", AG_SOURCE_DIR);
    expect(cmd, 0, "128000 9906 11 1917\n128000 108891 5509\n", NULL);
    snprintf(cmd, sizeof cmd, "tokenize --model %s/build/fixtures/llama3.gguf --no-bos --pieces text.txt", AG_SOURCE_DIR);
    expect(cmd, 0, "Hello , \xc4\xa0world", NULL);
    write_file("special.txt", "<|begin_of_text|>hi", 19);
    snprintf(cmd, sizeof cmd, "tokenize --model %s/build/fixtures/llama3.gguf --no-bos --special special.txt", AG_SOURCE_DIR);
    expect(cmd, 0, "128000 6151\n", NULL);
    write_file("bad.txt", "ok\xff", 3);
    snprintf(cmd, sizeof cmd, "tokenize --model %s/build/fixtures/llama3.gguf bad.txt", AG_SOURCE_DIR);
    expect(cmd, 1, NULL, "not valid UTF-8 at byte 2");
    expect("tokenize text.txt", 2, NULL, "needs --model");
    expect("tokenize --model missing.gguf text.txt", 1, NULL, "No such file");
}

static void test_run_and_perplexity(void **state) {
    (void)state;
    static const char *const fixtures[] = {"llama2", "llama3", "qwen2", "qwen3", "glm4", "chatglm"};
    char cmd[1024];
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        snprintf(cmd, sizeof cmd, "run -m %s/build/fixtures/%s.gguf -p 'Once upon a time' -n 6 --temp 0 --threads 2",
                 AG_SOURCE_DIR, fixtures[i]);
        expect(cmd, 0, NULL, "tok/s | generated: ");
        /* the same seed gives the same text */
        snprintf(cmd, sizeof cmd, "run -m %s/build/fixtures/%s.gguf -p 'Hello' -n 10 --temp 1 --seed 77", AG_SOURCE_DIR,
                 fixtures[i]);
        result a = run(cmd), b = run(cmd);
        assert_int_equal(a.code, 0);
        assert_int_equal(a.out_len, b.out_len);
        assert_memory_equal(a.out, b.out, a.out_len);
        result_free(&a), result_free(&b);
    }
    /* GLM's end-of-generation set: <|endoftext|> (eos), <|user|> (eot), <|observation|> (eom), which the glm4
     * fixture has at Llama 3's ids 128001, 128005 and 128010 (tests/fixtures/glm4/tokenizer-edit.json) */
    static const int eog[] = {128001, 128005, 128010};
    for (size_t i = 0; i < sizeof eog / sizeof *eog; i++) {
        snprintf(cmd, sizeof cmd, "run -m %s/build/fixtures/glm4.gguf -p Hello -n 5 --temp 0 -l %d+100", AG_SOURCE_DIR, eog[i]);
        expect(cmd, 0, NULL, "generated: 1 tokens");
        expect(cmd, 0, NULL, "stop: end of generation");
        snprintf(cmd, sizeof cmd, "run -m %s/build/fixtures/glm4.gguf -p Hello -n 5 --temp 0 -l %d+100 --ignore-eos",
                 AG_SOURCE_DIR, eog[i]);
        expect(cmd, 0, NULL, "generated: 5 tokens");
    }
    /* a special token that does not end generation (<|system|>); each token's text comes out once */
    snprintf(cmd, sizeof cmd, "run -m %s/build/fixtures/glm4.gguf -p Hello -n 5 --temp 0 -l 128004+100", AG_SOURCE_DIR);
    result r = run(cmd);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "<|system|><|system|><|system|><|system|><|system|>\n");
    assert_non_null(strstr(r.err, "stop: length"));
    result_free(&r);
    expect("run -m x.gguf -p hi -l 12x", 2, NULL, "-l needs TOKEN_ID+BIAS");
    snprintf(cmd, sizeof cmd, "run -m %s/build/fixtures/llama2.gguf", AG_SOURCE_DIR);
    expect(cmd, 2, NULL, "needs exactly one of -p TEXT and -f FILE");
    expect("run -m x.gguf -p hi --temp warm", 2, NULL, "--temp needs a number");
    expect("run -m x.gguf -p hi -n -3", 2, NULL, "-n needs a whole number");
    expect("run -m missing.gguf -p hi", 1, NULL, "missing.gguf");
    snprintf(cmd, sizeof cmd, "run -m %s/build/fixtures/llama2.gguf -p hi --top-p 2", AG_SOURCE_DIR);
    expect(cmd, 1, NULL, "top_p");
    snprintf(cmd, sizeof cmd, "run -m %s/build/fixtures/llama2.gguf -p hi --kernels sse9", AG_SOURCE_DIR);
    expect(cmd, 1, NULL, "kernels 'sse9' are not available");

    char text[4096] = "";
    for (int i = 0; i < 40; i++) strcat(text, "The quick brown fox jumps over the lazy dog. ");
    write_file("ppl.txt", text, strlen(text));
    snprintf(cmd, sizeof cmd, "perplexity -m %s/build/fixtures/llama2.gguf ppl.txt --ctx 32 --chunks 3", AG_SOURCE_DIR);
    expect(cmd, 0, "[1]", "3 windows of 32");
    expect(cmd, 0, "Final estimate: PPL = ", NULL);
    snprintf(cmd, sizeof cmd, "perplexity -m %s/build/fixtures/qwen3.gguf ppl.txt --ctx 4096", AG_SOURCE_DIR);
    expect(cmd, 1, NULL, "need at least --ctx (4096)");
    expect("perplexity ppl.txt", 2, NULL, "needs --model");
}

/*
 * The shipped default model (models/autoglm-tiny.gguf, see models/README.md):
 * its held-out perplexity stays under the bound derived from the model card,
 * quantizing costs at most 1 % (Q8_0) and 5 % (Q4_0) of it, and greedy text
 * is deterministic and made of words from its training text.
 */
#define TINY AG_SOURCE_DIR "/models/autoglm-tiny.gguf"
#define TINY_PPL_MAX 18.65 /* models/README.md: F16 17.76 on these 40 windows, plus 5 % */
/* Under a sanitizer the forward pass is ~8x slower (3 x 40 windows took 230 s, a quarter of make test): there
 * the same files go through the same code on 2 windows, for memory errors, and the Release build checks the
 * bounds on all 40. */
#ifdef AG_TEST_SANITIZED
#define TINY_WINDOWS 2
#else
#define TINY_WINDOWS 40
#endif

static double perplexity(const char *model, const char *text) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "perplexity -m %s %s --ctx 256 --chunks %d", model, text, TINY_WINDOWS);
    result r = run(cmd);
    if (r.code != 0) fail_msg("'%s': exit %d: %s", cmd, r.code, r.err);
    const char *p = strstr(r.out, "Final estimate: PPL = ");
    assert_non_null(p);
    double v = strtod(p + 22, NULL);
    result_free(&r);
    return v;
}

static void test_default_model(void **state) {
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/tools/train/kjv-text %s/kjv", AG_SOURCE_DIR, dir);
    assert_int_equal(system(cmd), 0);
    char held[512], train[512];
    snprintf(held, sizeof held, "%s/kjv/heldout.txt", dir);
    snprintf(train, sizeof train, "%s/kjv/train.txt", dir);
    double f16 = perplexity(TINY, held);
    const bool bounds = TINY_WINDOWS == 40;
    AG_TEST_NOTE("autoglm-tiny held-out perplexity (ctx 256, %d windows%s): f16 %.3f", TINY_WINDOWS,
                 bounds ? "" : "; bounds checked by the Release run", f16);
    if (!(f16 > 1 && (!bounds || f16 <= TINY_PPL_MAX))) fail_msg("held-out perplexity %.3f, the bound is %g", f16, (double)TINY_PPL_MAX);
    static const struct {
        const char *type;
        double max_rise;
    } q[] = {/* the bounds: each type's rise over F16 on these windows, named here (measured: +0.0 to +0.3 %,
              * q3_k_m +0.3 %, q2_k +0.9 %) */
             /* under a sanitizer (slow K-quant searches) only the first three: Q8_0, Q4_K, Q6_K, Q2_K and Q3_K
              * through quantize, load and forward; Q5_K's code runs there in test_dtype and test_kernels */
             {"q8_0", 0.01}, {"q4_k_m", 0.03}, {"q2_k", 0.08},
#ifndef AG_TEST_SANITIZED
             {"q6_k", 0.01}, {"q5_k_m", 0.02}, {"q5_k_s", 0.02}, {"q4_k_s", 0.03}, {"q4_0", 0.05}, {"q3_k_m", 0.04},
#endif
    };
    for (size_t i = 0; i < sizeof q / sizeof *q; i++) {
        snprintf(cmd, sizeof cmd, "quantize %s tiny-%s.gguf %s", TINY, q[i].type, q[i].type);
        expect(cmd, 0, NULL, NULL);
        snprintf(cmd, sizeof cmd, "%s/tiny-%s.gguf", dir, q[i].type);
        double v = perplexity(cmd, held);
        AG_TEST_NOTE("%s: %.3f (%+.2f%% of f16)", q[i].type, v, 100 * (v / f16 - 1));
        if (bounds && !(v <= f16 * (1 + q[i].max_rise))) fail_msg("%s perplexity %.3f is over f16's %.3f by more than %.0f%%", q[i].type, v, f16, 100 * q[i].max_rise);
    }
    /* greedy text: the same twice, and at least 90 % of its words are words of the training text */
    snprintf(cmd, sizeof cmd, "run -m %s -p 'And God said' -n 48 --temp 0", TINY);
    result a = run(cmd), b = run(cmd);
    assert_int_equal(a.code, 0);
    assert_string_equal(a.out, b.out);
    size_t train_len;
    char *corpus = ag_test_read_file(train, &train_len);
    int words = 0, known = 0;
    for (char *w = strtok(a.out, " \n\t.,;:!?()'\""); w; w = strtok(NULL, " \n\t.,;:!?()'\"")) {
        char pat[128];
        snprintf(pat, sizeof pat, " %s", w);
        words++;
        known += strstr(corpus, pat) != NULL || strncmp(corpus, w, strlen(w)) == 0;
    }
    AG_TEST_NOTE("greedy continuation: %d words, %d in the training text", words, known);
    assert_true(words >= 20);
    if (known * 10 < words * 9) fail_msg("only %d of %d words occur in the training text: %s", known, words, b.out);
    free(corpus);
    result_free(&a), result_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_and_help),
        cmocka_unit_test(test_usage_errors_are_one_line_exit_2),
        cmocka_unit_test(test_json_check),
        cmocka_unit_test(test_json_fmt),
        cmocka_unit_test(test_inspect_and_quantize),
        cmocka_unit_test(test_tokenize),
        cmocka_unit_test(test_run_and_perplexity),
        cmocka_unit_test(test_default_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
