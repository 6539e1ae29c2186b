/*
 * tokenizer.c - byte-level BPE encoding, decoding and streaming
 * detokenization; see tokenizer.h for what is supported and the contract.
 *
 * Data: every token text is copied into the tokenizer's arena and found by
 * text through a hash map (base/map).  Merges become an integer table from
 * (left id, right id) to (rank, merged id), so BPE's inner loop hashes two
 * integers instead of building and comparing "left right" strings (measured:
 * a third of encode time before).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tokenizer.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/map.h"
#include "base/utf8.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

enum { TOK_TYPE_CONTROL = 3, TOK_TYPE_USER = 4, TOK_TYPE_BYTE = 6 };

typedef enum vocab_kind { VOCAB_BPE, VOCAB_SPM } vocab_kind;

typedef struct special {
    ag_str text;
    int32_t id;
} special;

struct ag_tokenizer {
    vocab_kind kind;
    ag_arena arena;
    size_t n_vocab;
    ag_str *tokens;  /* by id */
    int32_t *types;  /* by id (1 normal when the file has none) */
    float *scores;   /* by id, SentencePiece vocabularies; NULL otherwise */
    int32_t byte_tok[256]; /* SentencePiece byte-fallback tokens <0xNN>; -1 when absent */
    ag_map by_text;  /* token text -> id + 1 */
    /* (left id, right id) -> (rank, merged id): BPE's inner loop probes integers, not strings */
    struct pair_slot {
        uint64_t key; /* (left + 1) << 32 | (right + 1); 0: empty */
        uint32_t rank;
        int32_t merged;
    } *pairs;
    size_t pair_mask;
    int32_t cp_id[512]; /* byte-level: the token of each byte symbol (by its code point) */
    special *specials; /* control and user-defined tokens, longest first */
    size_t n_specials;
    bool special_first[256]; /* bytes that start some special token: most text skips the list */
    int32_t bos, eos;
    int32_t eog[8]; /* end-of-generation tokens: eos, eot, eom and the family's known ones */
    size_t n_eog;
    bool add_bos;
    bool ignore_merges; /* Llama 3: a whole word in the vocabulary is taken as it is */
    bool nfc;           /* Qwen: NFC-normalize before splitting */
    pcre2_code *re[4]; /* applied in turn, each splitting the pieces of the one before */
    size_t n_re;
    uint16_t byte_to_cp[256]; /* GPT-2 byte-to-unicode map */
    int16_t cp_to_byte[512];  /* its inverse; -1 where none */
};

/* Pre-tokenizer regexes as tokenizer.json writes them (Hugging Face semantics). */
static const char RE_LLAMA3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* llama.cpp's "default" (a vocabulary without a known pre-tokenizer): four regexes in sequence */
static const char *const RE_DEFAULT[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|]+",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
    "\\p{N}+",
    "[0-9][0-9][0-9]",
};

/* GPT-2's reversible byte-to-unicode map: printable bytes stand for themselves, the rest for U+0100 + n. */
static void build_byte_map(ag_tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 512; i++) t->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        t->byte_to_cp[b] = (uint16_t)(self ? b : 256 + n++);
        t->cp_to_byte[t->byte_to_cp[b]] = (int16_t)b;
    }
}

static int32_t lookup(const ag_tokenizer *t, const char *p, size_t n) {
    uintptr_t v = (uintptr_t)ag_map_get(&t->by_text, p, n);
    return v ? (int32_t)(v - 1) : -1;
}

static inline uint64_t pair_key(int32_t l, int32_t r) { return (uint64_t)(uint32_t)(l + 1) << 32 | (uint32_t)(r + 1); }

static inline size_t pair_hash(uint64_t k, size_t mask) { return (size_t)((k * 0x9e3779b97f4a7c15ull) >> 20) & mask; }

/* Merges as (left id, right id) -> (rank, merged id); a merge whose parts are not tokens cannot apply. */
static void build_pairs(ag_tokenizer *t, const ag_gguf_kv *merges) {
    if (!merges || merges->arr_len == 0) return;
    size_t cap = 1024;
    while (cap < merges->arr_len * 2) cap *= 2;
    t->pairs = ag_xcalloc(cap, sizeof *t->pairs);
    t->pair_mask = cap - 1;
    ag_buf joined;
    ag_buf_init(&joined);
    for (uint64_t r = 0; r < merges->arr_len; r++) {
        ag_str m = ag_gguf_arr_str(merges, r);
        const char *sp = m.n > 1 ? memchr(m.p + 1, ' ', m.n - 1) : NULL;
        if (!sp) continue;
        size_t ln = (size_t)(sp - m.p);
        int32_t l = lookup(t, m.p, ln), rr = lookup(t, sp + 1, m.n - ln - 1);
        ag_buf_reset(&joined);
        ag_buf_append(&joined, m.p, ln);
        ag_buf_append(&joined, sp + 1, m.n - ln - 1);
        int32_t merged = lookup(t, joined.data, joined.len);
        if (l < 0 || rr < 0 || merged < 0) continue;
        uint64_t k = pair_key(l, rr);
        size_t i = pair_hash(k, t->pair_mask);
        while (t->pairs[i].key && t->pairs[i].key != k) i = (i + 1) & t->pair_mask;
        if (!t->pairs[i].key) t->pairs[i] = (struct pair_slot){k, (uint32_t)r + 1, merged}; /* first merge wins */
    }
    ag_buf_deinit(&joined);
}

static int cmp_special_len(const void *a, const void *b) {
    const special *x = a, *y = b;
    return (x->text.n < y->text.n) - (x->text.n > y->text.n);
}

static ag_str copy_str(ag_arena *a, ag_str s) {
    char *p = ag_arena_alloc(a, s.n + 1);
    memcpy(p, s.p, s.n);
    p[s.n] = '\0';
    return (ag_str){p, s.n};
}

/* Add id (when a token, and not there yet) to the end-of-generation set. */
static void add_eog(ag_tokenizer *t, int32_t id) {
    if (id < 0 || ag_tokenizer_is_eog(t, id) || t->n_eog == sizeof t->eog / sizeof *t->eog) return;
    t->eog[t->n_eog++] = id;
}

ag_status ag_tokenizer_load(const ag_gguf_file *f, ag_tokenizer **out, ag_err *err) {
    ag_str model, pre = {NULL, 0};
    if (!ag_gguf_get_str(f, "tokenizer.ggml.model", &model))
        return ag_err_set(err, AG_EINVAL, "no tokenizer.ggml.model in the file");
    vocab_kind kind;
    if (ag_str_eq_cstr(model, "gpt2")) kind = VOCAB_BPE;
    else if (ag_str_eq_cstr(model, "llama")) kind = VOCAB_SPM;
    else
        return ag_err_set(err, AG_EINVAL, "tokenizer model '%.*s' is not supported (gpt2, llama)", (int)model.n, model.p);
    const char *patterns[4] = {NULL};
    size_t n_patterns = 0;
    bool ignore_merges = false, nfc = false, glm = false;
    if (kind == VOCAB_BPE) {
        ag_gguf_get_str(f, "tokenizer.ggml.pre", &pre);
        n_patterns = 1;
        if (ag_str_eq_cstr(pre, "llama-bpe") || ag_str_eq_cstr(pre, "llama3") || ag_str_eq_cstr(pre, "llama-v3")) {
            patterns[0] = RE_LLAMA3;
            ignore_merges = true;
        } else if ((glm = ag_str_eq_cstr(pre, "glm4") || ag_str_eq_cstr(pre, "chatglm-bpe"))) {
            patterns[0] = RE_LLAMA3; /* the same regex as Llama 3, but merges are never skipped (llama.cpp CHATGLM4) */
        } else if (ag_str_eq_cstr(pre, "qwen2")) {
            patterns[0] = RE_QWEN2;
            nfc = true;
        } else if (ag_str_eq_cstr(pre, "gpt-2") || ag_str_eq_cstr(pre, "gpt2")) {
            patterns[0] = RE_GPT2;
        } else if (!pre.p || ag_str_eq_cstr(pre, "default")) { /* as llama.cpp: missing means default */
            n_patterns = 4;
            for (size_t i = 0; i < 4; i++) patterns[i] = RE_DEFAULT[i];
        } else {
            return ag_err_set(err, AG_EINVAL, "pre-tokenizer '%.*s' is not supported (llama-bpe, glm4, chatglm-bpe, qwen2, gpt-2, default)",
                              (int)pre.n, pre.p);
        }
    }
    const ag_gguf_kv *toks = ag_gguf_find(f, "tokenizer.ggml.tokens");
    if (!toks || toks->type != AG_GGUF_ARRAY || toks->arr_type != AG_GGUF_STRING || toks->arr_len == 0 ||
        toks->arr_len > (1u << 24))
        return ag_err_set(err, AG_EINVAL, "tokenizer.ggml.tokens is missing or not a string array");
    const ag_gguf_kv *types = ag_gguf_find(f, "tokenizer.ggml.token_type");
    if (types && (types->type != AG_GGUF_ARRAY || types->arr_type != AG_GGUF_I32 || types->arr_len != toks->arr_len))
        return ag_err_set(err, AG_EINVAL, "tokenizer.ggml.token_type does not match the tokens");
    const ag_gguf_kv *merges = ag_gguf_find(f, "tokenizer.ggml.merges");
    if (kind == VOCAB_BPE && (!merges || merges->type != AG_GGUF_ARRAY || merges->arr_type != AG_GGUF_STRING))
        return ag_err_set(err, AG_EINVAL, "byte-level BPE needs tokenizer.ggml.merges");

    ag_tokenizer *t = ag_xcalloc(1, sizeof *t);
    t->kind = kind;
    t->ignore_merges = ignore_merges;
    t->nfc = nfc;
    ag_arena_init(&t->arena, 1 << 20);
    ag_map_init(&t->by_text);
    build_byte_map(t);
    t->n_vocab = (size_t)toks->arr_len;
    t->tokens = ag_xcalloc(t->n_vocab, sizeof *t->tokens);
    t->types = ag_xcalloc(t->n_vocab, sizeof *t->types);
    t->specials = ag_xcalloc(t->n_vocab, sizeof *t->specials);
    for (size_t i = 0; i < t->n_vocab; i++) {
        t->tokens[i] = copy_str(&t->arena, ag_gguf_arr_str(toks, i));
        int32_t ty = 1;
        if (types) memcpy(&ty, types->value + i * 4, 4);
        t->types[i] = ty;
        if (!ag_map_get(&t->by_text, t->tokens[i].p, t->tokens[i].n))
            ag_map_put(&t->by_text, t->tokens[i].p, t->tokens[i].n, (void *)(uintptr_t)(i + 1));
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER) && t->tokens[i].n) {
            t->specials[t->n_specials++] = (special){t->tokens[i], (int32_t)i};
            t->special_first[(uint8_t)t->tokens[i].p[0]] = true;
        }
    }
    qsort(t->specials, t->n_specials, sizeof *t->specials, cmp_special_len);
    const ag_gguf_kv *scores = ag_gguf_find(f, "tokenizer.ggml.scores");
    if (kind == VOCAB_SPM && scores && scores->type == AG_GGUF_ARRAY && scores->arr_type == AG_GGUF_F32 &&
        scores->arr_len == toks->arr_len) {
        t->scores = ag_xcalloc(t->n_vocab, sizeof *t->scores);
        memcpy(t->scores, scores->value, t->n_vocab * sizeof *t->scores);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_tok[b] = kind == VOCAB_SPM ? lookup(t, name, 6) : -1;
    }
    if (merges && (merges->type != AG_GGUF_ARRAY || merges->arr_type != AG_GGUF_STRING)) merges = NULL;
    build_pairs(t, merges);
    for (int cp = 0; cp < 512; cp++) {
        uint8_t buf[4];
        t->cp_id[cp] = kind == VOCAB_BPE ? lookup(t, (const char *)buf, ag_utf8_encode((uint32_t)cp, buf)) : -1;
    }
    uint32_t id;
    t->bos = ag_gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &id) && id < t->n_vocab ? (int32_t)id : -1;
    t->eos = ag_gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &id) && id < t->n_vocab ? (int32_t)id : -1;
    add_eog(t, t->eos);
    if (ag_gguf_get_u32(f, "tokenizer.ggml.eot_token_id", &id) && id < t->n_vocab) add_eog(t, (int32_t)id);
    if (ag_gguf_get_u32(f, "tokenizer.ggml.eom_token_id", &id) && id < t->n_vocab) add_eog(t, (int32_t)id);
    if (glm) { /* GLM ends a reply with any of these, whatever its file declares (some set eos to <|user|>) */
        static const char *const glm_eog[] = {"<|endoftext|>", "<|user|>", "<|observation|>"};
        for (size_t i = 0; i < sizeof glm_eog / sizeof *glm_eog; i++)
            add_eog(t, lookup(t, glm_eog[i], strlen(glm_eog[i])));
    }
    /* without the key, llama.cpp's defaults: SentencePiece and Llama 3 add bos, others do not */
    if (!ag_gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos)) t->add_bos = kind == VOCAB_SPM || ignore_merges;
    for (size_t i = 0; i < n_patterns; i++) {
        int ec;
        PCRE2_SIZE eo;
        t->re[i] = pcre2_compile((PCRE2_SPTR)patterns[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &ec, &eo, NULL);
        if (!t->re[i]) {
            ag_tokenizer_free(t);
            return ag_err_set(err, AG_ERR, "internal: pre-tokenizer regex does not compile (%d at %zu)", ec, (size_t)eo);
        }
        t->n_re = i + 1;
        pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE); /* falls back to the interpreter without JIT */
    }
    *out = t;
    return AG_OK;
}

void ag_tokenizer_free(ag_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    ag_map_deinit(&t->by_text);
    free(t->tokens);
    free(t->types);
    free(t->scores);
    free(t->pairs);
    free(t->specials);
    ag_arena_deinit(&t->arena);
    free(t);
}

size_t ag_tokenizer_n_vocab(const ag_tokenizer *t) { return t->n_vocab; }
int32_t ag_tokenizer_bos(const ag_tokenizer *t) { return t->bos; }
int32_t ag_tokenizer_eos(const ag_tokenizer *t) { return t->eos; }

bool ag_tokenizer_is_control(const ag_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_vocab && t->types[id] == TOK_TYPE_CONTROL;
}

bool ag_tokenizer_is_eog(const ag_tokenizer *t, int32_t id) {
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

size_t ag_tokenizer_eog(const ag_tokenizer *t, const int32_t **ids) {
    *ids = t->eog;
    return t->n_eog;
}
bool ag_tokenizer_add_bos_default(const ag_tokenizer *t) { return t->add_bos; }

static void ids_push(ag_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? ids->cap * 2 : 64;
        ids->v = ag_xrealloc(ids->v, ids->cap * sizeof *ids->v);
    }
    ids->v[ids->n++] = id;
}


/* ---- BPE on one pre-tokenized word (already byte-mapped) --------------- */

typedef struct sym {
    uint32_t start, len; /* bytes of the mapped word */
    int32_t prev, next;  /* -1 at the ends */
    int32_t id;          /* its token, or -1 when the text is not one */
} sym;

typedef struct cand {
    float prio; /* lower merges first: the merge rank, or minus the merged piece's score */
    uint32_t left, right, len; /* len: the merged length when pushed, to spot stale entries */
    int32_t merged;            /* the token the pair becomes */
} cand;

static inline bool cand_less(const cand *a, const cand *b) {
    return a->prio < b->prio || (a->prio == b->prio && a->left < b->left);
}

typedef struct bpe_scratch {
    sym *syms;
    cand *heap;
    size_t cap_syms, cap_heap, n_heap;
    ag_buf key;
} bpe_scratch;

static void heap_push(bpe_scratch *s, cand c) {
    if (s->n_heap == s->cap_heap) {
        s->cap_heap = s->cap_heap ? s->cap_heap * 2 : 64;
        s->heap = ag_xrealloc(s->heap, s->cap_heap * sizeof *s->heap);
    }
    size_t i = s->n_heap++;
    while (i && cand_less(&c, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = c;
}

static cand heap_pop(bpe_scratch *s) {
    cand top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->n_heap) break;
        if (c + 1 < s->n_heap && cand_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!cand_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->n_heap) s->heap[i] = last;
    return top;
}

/*
 * Push the pair (l, r) if it merges: by rank when the vocabulary has merges
 * (Hugging Face BPE), else when the joined piece is a token, by its score
 * (SentencePiece, as llama.cpp does for files that carry only scores).
 */
static void try_pair(const ag_tokenizer *t, bpe_scratch *s, const char *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const sym *a = &s->syms[l], *b = &s->syms[r];
    if (t->pairs) {
        if (a->id < 0 || b->id < 0) return;
        uint64_t k = pair_key(a->id, b->id);
        size_t i = pair_hash(k, t->pair_mask);
        while (t->pairs[i].key && t->pairs[i].key != k) i = (i + 1) & t->pair_mask;
        if (!t->pairs[i].key) return;
        heap_push(s, (cand){(float)t->pairs[i].rank, (uint32_t)l, (uint32_t)r, a->len + b->len, t->pairs[i].merged});
        return;
    }
    if (!t->scores) return;
    ag_buf_reset(&s->key);
    ag_buf_append(&s->key, w + a->start, a->len);
    ag_buf_append(&s->key, w + b->start, b->len);
    int32_t id = lookup(t, s->key.data, s->key.len);
    if (id >= 0) heap_push(s, (cand){-t->scores[id], (uint32_t)l, (uint32_t)r, a->len + b->len, id});
}

static void bpe_word(const ag_tokenizer *t, bpe_scratch *s, const char *w, size_t n, ag_ids *out) {
    if (t->ignore_merges) {
        int32_t id = lookup(t, w, n);
        if (id >= 0) {
            ids_push(out, id);
            return;
        }
    }
    /* one symbol per code point of the mapped word */
    size_t n_syms = 0;
    if (s->cap_syms < n) {
        s->cap_syms = n;
        s->syms = ag_xrealloc(s->syms, n * sizeof *s->syms);
    }
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        while (i + len < n && ((uint8_t)w[i + len] & 0xC0) == 0x80) len++;
        int32_t id;
        if (t->kind == VOCAB_BPE) { /* byte symbols are two bytes of UTF-8 at most: code point < 512 */
            uint32_t cp = len == 1 ? (uint8_t)w[i] : ((uint32_t)(w[i] & 0x1F) << 6) | (w[i + 1] & 0x3F);
            id = len <= 2 && cp < 512 ? t->cp_id[cp] : -1;
        } else {
            id = lookup(t, w + i, len);
        }
        s->syms[n_syms] = (sym){(uint32_t)i, (uint32_t)len, (int32_t)n_syms - 1, (int32_t)n_syms + 1, id};
        n_syms++;
        i += len;
    }
    s->syms[n_syms - 1].next = -1;
    s->n_heap = 0;
    for (size_t i = 0; i + 1 < n_syms; i++) try_pair(t, s, w, (int32_t)i, (int32_t)i + 1);
    while (s->n_heap) {
        cand c = heap_pop(s);
        sym *l = &s->syms[c.left], *r = &s->syms[c.right];
        if (l->len == 0 || r->len == 0 || l->next != (int32_t)c.right || l->len + r->len != c.len) continue; /* stale */
        l->len += r->len;
        l->id = c.merged;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = (int32_t)c.left;
        try_pair(t, s, w, l->prev, (int32_t)c.left);
        try_pair(t, s, w, (int32_t)c.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s->syms[i].next) {
        int32_t id = s->syms[i].id;
        if (id >= 0) {
            ids_push(out, id);
            continue;
        }
        if (t->kind == VOCAB_SPM) { /* byte fallback: the symbol's UTF-8 bytes as <0xNN> tokens */
            for (uint32_t k = 0; k < s->syms[i].len; k++) {
                int32_t b = t->byte_tok[(uint8_t)w[s->syms[i].start + k]];
                if (b >= 0) ids_push(out, b);
            }
            continue;
        }
        /* not in the vocabulary: one token per mapped byte (all 256 are tokens in byte-level vocabularies) */
        for (uint32_t k = 0; k < s->syms[i].len;) {
            size_t len = 1;
            while (k + len < s->syms[i].len && ((uint8_t)w[s->syms[i].start + k + len] & 0xC0) == 0x80) len++;
            id = lookup(t, w + s->syms[i].start + k, len);
            if (id >= 0) ids_push(out, id);
            k += (uint32_t)len;
        }
    }
}

typedef struct span {
    size_t start, end;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static void spans_push(spans *s, size_t start, size_t end) {
    if (end <= start) return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->v = ag_xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = (span){start, end};
}

/*
 * Split every piece of in with re into out: matches and the text between
 * them both become pieces (Hugging Face's Split "Isolated", llama.cpp's
 * unicode_regex_split).  Each piece is matched on its own, so a lookahead
 * never sees past it.
 */
static ag_status split_pieces(const pcre2_code *re, const char *text, const spans *in, spans *out, ag_err *err) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    ag_status st = AG_OK;
    for (size_t k = 0; k < in->n && st == AG_OK; k++) {
        const char *sub = text + in->v[k].start;
        size_t len = in->v[k].end - in->v[k].start, pos = 0;
        while (pos < len) {
            int rc = pcre2_match(re, (PCRE2_SPTR)sub, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
                st = ag_err_set(err, AG_ERR, "pre-tokenizer regex failed (%d)", rc);
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t m_start = rc > 0 ? ov[0] : len, m_end = rc > 0 ? ov[1] : len;
            spans_push(out, in->v[k].start + pos, in->v[k].start + m_start);
            spans_push(out, in->v[k].start + m_start, in->v[k].start + m_end);
            if (m_end == m_start) { /* an empty match: step over one character, keeping it */
                size_t next = m_end + 1;
                while (next < len && ((uint8_t)sub[next] & 0xC0) == 0x80) next++;
                if (rc > 0) spans_push(out, in->v[k].start + m_end, in->v[k].start + next);
                m_end = next;
            }
            pos = m_end;
        }
    }
    pcre2_match_data_free(md);
    return st;
}

/* Pre-tokenize a normalized segment with the regexes and BPE each piece. */
static ag_status encode_segment(const ag_tokenizer *t, const char *text, size_t len, bpe_scratch *s, ag_ids *out,
                                ag_err *err) {
    spans a = {0}, b = {0};
    spans_push(&a, 0, len);
    ag_status st = AG_OK;
    for (size_t r = 0; r < t->n_re && st == AG_OK; r++) {
        b.n = 0;
        st = split_pieces(t->re[r], text, &a, &b, err);
        spans tmp = a;
        a = b;
        b = tmp;
    }
    ag_buf word;
    ag_buf_init(&word);
    for (size_t k = 0; k < a.n && st == AG_OK; k++) {
        ag_buf_reset(&word);
        for (size_t i = a.v[k].start; i < a.v[k].end; i++) {
            uint8_t cp_bytes[4];
            ag_buf_append(&word, cp_bytes, ag_utf8_encode(t->byte_to_cp[(uint8_t)text[i]], cp_bytes));
        }
        if (word.err != AG_OK) st = ag_err_set(err, word.err, "out of memory tokenizing");
        else bpe_word(t, s, word.data, word.len, out);
    }
    ag_buf_deinit(&word);
    free(a.v);
    free(b.v);
    return st;
}

/* SentencePiece: the segment is one word, "▁" first and for every space (the Llama 2 normalizer). */
static ag_status encode_spm(const ag_tokenizer *t, const char *text, size_t len, bpe_scratch *s, ag_ids *out,
                            ag_err *err) {
    if (len == 0) return AG_OK;
    ag_buf word;
    ag_buf_init(&word);
    ag_buf_append(&word, "\xe2\x96\x81", 3);
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') ag_buf_append(&word, "\xe2\x96\x81", 3);
        else ag_buf_append_char(&word, text[i]);
    }
    ag_status st = word.err != AG_OK ? ag_err_set(err, word.err, "out of memory tokenizing") : AG_OK;
    if (st == AG_OK) bpe_word(t, s, word.data, word.len, out);
    ag_buf_deinit(&word);
    return st;
}

static ag_status encode_text(const ag_tokenizer *t, const char *text, size_t len, bpe_scratch *s, ag_ids *out,
                             ag_err *err) {
    if (t->kind == VOCAB_SPM) return encode_spm(t, text, len, s, out, err);
    if (!t->nfc || len == 0) return encode_segment(t, text, len, s, out, err);
    utf8proc_uint8_t *norm = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &norm,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) return ag_err_set(err, AG_EINVAL, "text cannot be normalized: %s", utf8proc_errmsg(n));
    ag_status st = encode_segment(t, (const char *)norm, (size_t)n, s, out, err);
    free(norm);
    return st;
}

/* The longest special token starting at p, or NULL. */
static const special *special_at(const ag_tokenizer *t, const char *p, size_t left) {
    for (size_t i = 0; i < t->n_specials; i++) {
        const special *sp = &t->specials[i];
        if (sp->text.n <= left && sp->text.p[0] == p[0] && memcmp(sp->text.p, p, sp->text.n) == 0) return sp;
    }
    return NULL;
}

ag_status ag_tokenize(const ag_tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
                      ag_ids *out, ag_err *err) {
    size_t valid = ag_utf8_valid_prefix((const uint8_t *)text, len);
    if (valid < len) return ag_err_set(err, AG_EINVAL, "text is not valid UTF-8 at byte %zu", valid);
    if (add_bos && t->bos >= 0) ids_push(out, t->bos);
    bpe_scratch s = {0};
    ag_buf_init(&s.key);
    ag_status st = AG_OK;
    size_t seg = 0;
    for (size_t i = 0; i < len && st == AG_OK && parse_special;) {
        const special *sp = t->special_first[(uint8_t)text[i]] ? special_at(t, text + i, len - i) : NULL;
        if (!sp) {
            i++;
            continue;
        }
        if (i > seg) st = encode_text(t, text + seg, i - seg, &s, out, err);
        ids_push(out, sp->id);
        i += sp->text.n;
        seg = i;
    }
    if (st == AG_OK && seg < len) st = encode_text(t, text + seg, len - seg, &s, out, err);
    if (st == AG_OK && s.key.err != AG_OK) st = ag_err_set(err, s.key.err, "out of memory tokenizing"); /* lookups saw a cut key */
    free(s.syms);
    free(s.heap);
    ag_buf_deinit(&s.key);
    return st;
}

/* ---- decoding ------------------------------------------------------------ */

ag_str ag_token_text(const ag_tokenizer *t, int32_t id) {
    if (id < 0 || (size_t)id >= t->n_vocab) return (ag_str){"", 0};
    return t->tokens[id];
}

void ag_token_bytes(const ag_tokenizer *t, int32_t id, ag_buf *out) {
    ag_str s = ag_token_text(t, id);
    int32_t ty = id >= 0 && (size_t)id < t->n_vocab ? t->types[id] : 1;
    if (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER) { /* specials decode to their text */
        ag_buf_append(out, s.p, s.n);
        return;
    }
    if (t->kind == VOCAB_SPM) {
        if (ty == TOK_TYPE_BYTE && s.n == 6) { /* <0xNN> */
            char hex[3] = {s.p[3], s.p[4], 0};
            ag_buf_append_char(out, (char)strtol(hex, NULL, 16));
            return;
        }
        for (size_t i = 0; i < s.n;) { /* U+2581 "▁" stands for a space */
            if (i + 3 <= s.n && memcmp(s.p + i, "\xe2\x96\x81", 3) == 0) {
                ag_buf_append_char(out, ' ');
                i += 3;
            } else {
                ag_buf_append_char(out, s.p[i++]);
            }
        }
        return;
    }
    for (size_t i = 0; i < s.n;) { /* byte-level: each code point is one byte */
        uint32_t cp;
        size_t n = ag_utf8_decode((const uint8_t *)s.p + i, s.n - i, &cp);
        if (n == 0) break;
        if (cp < 512 && t->cp_to_byte[cp] >= 0) ag_buf_append_char(out, (char)t->cp_to_byte[cp]);
        i += n;
    }
}

void ag_detok_init(ag_detok *d) { d->n_pending = 0; }

void ag_detok_push(ag_detok *d, const ag_tokenizer *t, int32_t id, ag_buf *out) {
    ag_buf bytes;
    ag_buf_init(&bytes);
    ag_buf_append(&bytes, d->pending, d->n_pending);
    ag_token_bytes(t, id, &bytes);
    const uint8_t *p = (const uint8_t *)bytes.data;
    size_t n = bytes.len, i = 0;
    d->n_pending = 0;
    while (i < n) {
        size_t ok = ag_utf8_valid_prefix(p + i, n - i);
        ag_buf_append(out, p + i, ok);
        i += ok;
        if (i == n) break;
        /* an invalid spot: a sequence that may still complete (at the very end) waits for more */
        size_t bad = ag_utf8_invalid_len(p + i, n - i);
        if (i + bad == n && bad < 4 && p[i] >= 0xC2 && p[i] <= 0xF4 && bad < (p[i] >= 0xF0 ? 4u : p[i] >= 0xE0 ? 3u : 2u)) {
            memcpy(d->pending, p + i, bad);
            d->n_pending = (uint8_t)bad;
            break;
        }
        ag_buf_append(out, "\xEF\xBF\xBD", 3);
        i += bad;
    }
    ag_buf_deinit(&bytes);
}

void ag_detok_flush(ag_detok *d, ag_buf *out) {
    if (d->n_pending) ag_buf_append(out, "\xEF\xBF\xBD", 3);
    d->n_pending = 0;
}
