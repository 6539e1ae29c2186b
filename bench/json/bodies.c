/*
 * bodies.c - the generators behind bodies.h.  Text is drawn from word lists
 * with a fixed-seed xorshift, so every run parses the same bytes.
 */
#include "bodies.h"

#include <stdint.h>
#include <string.h>

static uint64_t rng_state;

static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 33) % n;
}

static const char *const words[] = {
    "the",       "model",    "token",     "cache",     "request",    "latency", "server",   "batch",
    "prompt",    "stream",   "and",       "of",        "to",         "in",      "is",       "for",
    "with",      "that",     "on",        "as",        "inference",  "memory",  "kernel",   "attention",
    "layer",     "weights",  "quantized", "context",   "response",   "please",  "explain",  "why",
    "function",  "return",   "value",     "error",     "throughput", "a",       "it",       "we",
    "scheduler", "decode",   "prefill",   "bandwidth", "user",       "answer",  "question", "example"};
static const char *const intl[] = {"你好", "世界", "模型", "推理", "缓存", "请求", "延迟", "服务器",
                                   "批处理", "提示词", "注意力", "こんにちは", "トークン", "café", "naïve",
                                   "Größe", "😀", "🚀", "👍", "👨‍👩‍👧", "Привет", "مرحبا"};

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Append s as \uXXXX escapes (surrogate pairs above the BMP), as ensure_ascii JSON encoders do. */
static void append_u_escaped(ag_buf *b, const char *s) {
    const uint8_t *p = (const uint8_t *)s;
    while (*p) {
        uint32_t cp;
        if (*p < 0x80) cp = *p++;
        else if (*p < 0xE0) cp = (uint32_t)(*p & 0x1F) << 6 | (p[1] & 0x3F), p += 2;
        else if (*p < 0xF0) cp = (uint32_t)(*p & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F), p += 3;
        else cp = (uint32_t)(*p & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 | (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F), p += 4;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            ag_buf_appendf(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
        } else {
            ag_buf_appendf(b, "\\u%04x", cp);
        }
    }
}

/* Body text of about n bytes, already JSON-escaped.  intl_pct: share of non-English words. */
static void text(ag_buf *b, size_t n, unsigned intl_pct) {
    size_t start = b->len, line = 0;
    while (b->len - start < n) {
        if (rnd(100) < intl_pct) {
            const char *w = intl[rnd(N(intl))];
            if (rnd(10) == 0) append_u_escaped(b, w);
            else ag_buf_append_str(b, w);
        } else {
            ag_buf_append_str(b, words[rnd(N(words))]);
        }
        uint32_t r = rnd(100);
        if (r < 6) ag_buf_append_str(b, ". ");
        else if (r < 8) ag_buf_append_str(b, ", ");
        else if (r < 9) ag_buf_append_str(b, " \\\"quoted\\\" ");
        else ag_buf_append_char(b, ' ');
        if (b->len - start - line > 80 && rnd(4) == 0) {
            ag_buf_append_str(b, "\\n");
            line = b->len - start;
        }
    }
}

static void message(ag_buf *b, const char *role, size_t n, unsigned intl_pct, int comma) {
    ag_buf_appendf(b, "%s{\"role\":\"%s\",\"content\":\"", comma ? "," : "", role);
    text(b, n, intl_pct);
    ag_buf_append_str(b, "\"}");
}

static void request_tail(ag_buf *b) {
    ag_buf_append_str(b, "],\"temperature\":0.7,\"top_p\":0.95,\"max_tokens\":512,\"stream\":true,"
                         "\"stream_options\":{\"include_usage\":true},\"stop\":[\"\\n\\n\",\"</s>\"],"
                         "\"presence_penalty\":0.1,\"frequency_penalty\":0.2,\"seed\":1234,\"user\":\"u-42\"}");
}

void bench_body_chat_1k(ag_buf *b) {
    rng_state = 1;
    ag_buf_append_str(b, "{\"model\":\"llama-3.1-8b-instruct\",\"messages\":[");
    message(b, "system", 160, 0, 0);
    message(b, "user", 300, 0, 1);
    message(b, "assistant", 200, 0, 1);
    message(b, "user", 80, 0, 1);
    request_tail(b);
}

void bench_body_chat_64k(ag_buf *b) {
    rng_state = 2;
    ag_buf_append_str(b, "{\"model\":\"qwen2.5-7b-instruct\",\"messages\":[");
    message(b, "system", 200, 0, 0);
    message(b, "user", 64000, 0, 1);
    message(b, "user", 120, 0, 1);
    request_tail(b);
}

void bench_body_chat_1m(ag_buf *b) {
    rng_state = 3;
    ag_buf_append_str(b, "{\"model\":\"glm-4-9b-chat\",\"messages\":[");
    message(b, "system", 300, 5, 0);
    for (int i = 0; b->len < 1000000; i++) message(b, i % 2 ? "assistant" : "user", 200 + rnd(900), 35, 1);
    request_tail(b);
}

void bench_body_generic_1m(ag_buf *b) {
    rng_state = 4;
    ag_buf_append_char(b, '[');
    for (int i = 0; b->len < 1000000; i++) {
        ag_buf_appendf(b,
                       "%s{\"id\":%d,\"name\":\"%s %s\",\"score\":%d.%03u,\"ratio\":%.17g,\"active\":%s,"
                       "\"tags\":[\"%s\",\"%s\"],\"loc\":{\"lat\":%.6f,\"lon\":%.6f},\"parent\":null,"
                       "\"counts\":[%u,%u,%u,%u],\"ts\":%llu}",
                       i ? "," : "", i, words[rnd(N(words))], words[rnd(N(words))], (int)rnd(1000), rnd(1000),
                       rnd(1000000) / 7.0, rnd(2) ? "true" : "false", words[rnd(N(words))], words[rnd(N(words))],
                       rnd(180000000) / 1e6 - 90.0, rnd(360000000) / 1e6 - 180.0, rnd(100), rnd(10000), rnd(7),
                       rnd(1000000), 1700000000000ull + rnd(100000000));
    }
    ag_buf_append_char(b, ']');
}
