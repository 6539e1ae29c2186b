/*
 * tokenizer.h - text <-> token ids for the vocabularies GGUF files carry.
 *
 * Supported: byte-level BPE (tokenizer.ggml.model = "gpt2") with the
 * pre-tokenizers "llama-bpe" (Llama 3), "qwen2" (Qwen 2/3) and "gpt-2"; and
 * SentencePiece-style BPE ("llama": Llama 2, Mistral) with byte fallback,
 * merging by rank when the file carries merges (ours do: Hugging Face
 * semantics) and by piece score otherwise (llama.cpp's files).
 *
 * Encoding follows Hugging Face tokenizers, which the tests compare against id
 * for id: optional special-token splitting, NFC normalization where the
 * vocabulary family applies it (qwen2), pre-tokenization with the same regex
 * (PCRE2 with JIT, UTF-8, Unicode properties), the GPT-2 byte-to-unicode map,
 * then BPE merges by rank (a heap, so very long words stay O(n log n)); Llama
 * 3 takes a whole word from the vocabulary before merging (ignore_merges).
 *
 * Special tokens (control and user-defined) are matched in the text only when
 * the caller passes parse_special: user content must never be able to inject
 * "<|im_start|>".  The tokenizer copies what it needs from the file, so the
 * file may be closed after loading.  A loaded tokenizer is read-only and may
 * be shared by threads.
 */
#ifndef AG_ENGINE_TOKENIZER_H
#define AG_ENGINE_TOKENIZER_H

#include "autoglm/engine.h"
#include "autoglm/status.h"
#include "base/buf.h"
#include "engine/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ag_tokenizer ag_tokenizer;

/* A growable array of token ids; the caller owns ->v (free()).  The engine API's ag_tokens. */
typedef ag_tokens ag_ids;

ag_status ag_tokenizer_load(const ag_gguf_file *f, ag_tokenizer **out, ag_err *err);
void ag_tokenizer_free(ag_tokenizer *t);

size_t ag_tokenizer_n_vocab(const ag_tokenizer *t);
int32_t ag_tokenizer_bos(const ag_tokenizer *t); /* -1 when none */
int32_t ag_tokenizer_eos(const ag_tokenizer *t);
/*
 * End of generation: eos, and the eot/eom tokens the file names
 * (tokenizer.ggml.eot_token_id, eom_token_id), and for GLM vocabularies
 * <|endoftext|>, <|user|> and <|observation|> whatever the file says.
 */
bool ag_tokenizer_is_eog(const ag_tokenizer *t, int32_t id);
size_t ag_tokenizer_eog(const ag_tokenizer *t, const int32_t **ids); /* the set; *ids lives as long as t */
bool ag_tokenizer_add_bos_default(const ag_tokenizer *t);
/* A control token (<|im_end|>, <s>): never text a grammar may produce (constrained decoding). */
bool ag_tokenizer_is_control(const ag_tokenizer *t, int32_t id);

/*
 * Append the ids of text[0..len) to out.  add_bos puts the bos token first
 * (when there is one); parse_special lets special-token texts in the input
 * become their ids.  Invalid UTF-8 is an AG_EINVAL with err saying where.
 */
ag_status ag_tokenize(const ag_tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
                      ag_ids *out, ag_err *err);

/* The raw bytes a token stands for (its piece decoded), appended to out. */
void ag_token_bytes(const ag_tokenizer *t, int32_t id, ag_buf *out);
/* The token's text as stored in the vocabulary (for --pieces). */
ag_str ag_token_text(const ag_tokenizer *t, int32_t id);

/*
 * Streaming detokenizer: token bytes go in, only complete UTF-8 comes out, so
 * a multi-byte character split over tokens is never emitted half.  Bytes that
 * can never become valid UTF-8 come out as U+FFFD.
 */
typedef struct ag_detok {
    uint8_t pending[4];
    uint8_t n_pending;
} ag_detok;

void ag_detok_init(ag_detok *d);
void ag_detok_push(ag_detok *d, const ag_tokenizer *t, int32_t id, ag_buf *out);
/* End of stream: whatever is pending comes out as U+FFFD. */
void ag_detok_flush(ag_detok *d, ag_buf *out);

#endif
