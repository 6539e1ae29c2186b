/*
 * engine.h - the engine API the server (and tests, and benchmarks) use:
 * submit requests, read their events, cancel them.
 *
 * An ag_engine owns a model, its paged KV cache with the prefix cache, and
 * one engine thread that runs the scheduler: every step it packs the running
 * decodes and chunks of pending prefills into one batch (continuous
 * batching), runs the forward pass, samples, and posts events.  Any thread
 * may submit and cancel; events are read from one queue whose file
 * descriptor becomes readable when events are waiting, so an event loop can
 * poll it beside its sockets.
 *
 * Every accepted request ends with exactly one event whose `finish` is set.
 * Scheduling rules (see src/sched/sched.c for the details):
 *   - lower priority values are served first, FIFO within a priority; a
 *     waiting request gains one priority level per `aging_ms` of waiting, so
 *     nothing starves;
 *   - at most max_queue requests wait; beyond that submit fails with AG_BUSY;
 *   - prompt + max_tokens beyond the context is refused at submit (AG_ELIMIT);
 *   - when the KV pool runs out, the running request with the highest
 *     priority value (latest arrival among equals) is preempted: its cache is
 *     freed and it is recomputed later, with identical output;
 *   - a background request (priority AG_PRIORITY_BACKGROUND or above) holds
 *     a sequence slot only while no other request wants one: when every slot
 *     is taken and another waits, the background one is preempted.
 */
#ifndef AUTOGLM_ENGINE_H
#define AUTOGLM_ENGINE_H

#include "autoglm/autotune.h"
#include "autoglm/sampling.h"
#include "autoglm/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ag_engine ag_engine;

typedef struct ag_engine_params {
    const char *model_path;
    int n_threads;          /* 0: physical cores */
    int32_t ctx;            /* per-request context (prompt + generated); 0: min(model's, 4096) */
    int max_seqs;           /* sequences in a batch; 0: 16 */
    int max_batch_tokens;   /* rows in a forward step; 0: 512 */
    int max_queue;          /* waiting requests; 0: 256 */
    int block_tokens;       /* KV block size; 0: 16 */
    size_t kv_blocks;       /* pool size in blocks; 0: from ctx_total, else kv_cache_mb */
    size_t ctx_total;       /* pool size in tokens over all sequences (--ctx-total) */
    size_t kv_cache_mb;     /* pool size in MiB (--kv-cache-mb); all three 0: max_seqs full contexts */
    bool kv_f32;            /* store keys and values as F32 instead of F16 */
    uint32_t aging_ms;      /* waiting time that gains one priority level; 0: 1000 */
    const char *kernels;    /* NULL: the best for this CPU */
    bool no_repack;         /* use Q8_0/Q4_0 matrices in place, not repacked at load (--no-repack) */
    ag_slo slo;             /* serve --slo: TPOT sets each step's prompt budget, TTFT admission (autotune.h) */
} ag_engine_params;

/* Requests at this priority or above run in capacity others leave (the server's batch jobs). */
#define AG_PRIORITY_BACKGROUND (1 << 30)

typedef struct ag_request {
    const int32_t *prompt; /* copied at submit */
    int32_t n_prompt;
    int32_t max_tokens;
    ag_sampling sampling;
    int priority;          /* lower first; default 0 */
    uint64_t deadline_ns;  /* monotonic clock (ag_clock_mono_ns); 0: none */
    uint64_t cache_salt;   /* prefix-cache namespace (tenant isolation); 0 is a namespace too */
    const char *const *stop; /* stop strings, copied */
    size_t n_stop;
    const int32_t *end_tokens; /* tokens that end generation besides the model's EOS (a chat turn's end), copied */
    size_t n_end_tokens;
    const ag_logit_bias *logit_bias; /* added to logits before sampling, copied */
    size_t n_logit_bias;
    bool logprobs;         /* events carry the sampled token's log-probability */
    int32_t top_logprobs;  /* and this many most likely alternatives (0..AG_MAX_TOP_LOGPROBS) */
    bool ignore_eos;
    int32_t min_tokens;    /* end tokens are banned until this many tokens were generated (vLLM's min_tokens) */
    struct ag_grammar *grammar; /* constrained decoding (src/grammar/grammar.h): only text it accepts is sampled, and
                                   end tokens only where it may end; retained by the engine; NULL: free text */
} ag_request;

typedef enum ag_finish {
    AG_FINISH_NONE = 0,  /* a token event; more follow */
    AG_FINISH_STOP,      /* end-of-text token, a stop string, or the grammar's end */
    AG_FINISH_LENGTH,    /* max_tokens or the context */
    AG_FINISH_CANCELLED,
    AG_FINISH_TIMEOUT,   /* the deadline passed */
    AG_FINISH_ERROR,
} ag_finish;

typedef struct ag_event {
    uint64_t id;
    int32_t token;        /* the sampled token; -1 on an event without one */
    char *text;           /* new text (whole UTF-8, stop strings held back); owned: ag_event_clear */
    size_t text_len;
    ag_finish finish;
    /* usage and timings, on every event */
    int32_t prompt_tokens, completion_tokens, cached_tokens;
    uint64_t t_submit_ns, t_admit_ns, t_first_token_ns, t_event_ns; /* admit: first scheduled (0: never) */
    int32_t preemptions;
    /* when the request asked for log-probabilities: the model's (raw logits, before any sampling setting) */
    float logprob;
    int32_t n_top;
    int32_t top_token[AG_MAX_TOP_LOGPROBS];
    float top_logprob[AG_MAX_TOP_LOGPROBS];
} ag_event;

void ag_event_clear(ag_event *e);
const char *ag_finish_name(ag_finish f); /* "stop", "length", "cancelled", "timeout", "error" */

/* Load the model and start the engine thread.  *out is the caller's: ag_engine_destroy. */
ag_status ag_engine_create(const ag_engine_params *p, ag_engine **out, ag_err *err);
/* Stop the thread; requests still open end with AG_FINISH_CANCELLED events (left unread). */
void ag_engine_destroy(ag_engine *e);

/* Queue a request; *id names it in events.  AG_BUSY when the queue is full, AG_ELIMIT / AG_EINVAL with err. */
ag_status ag_engine_submit(ag_engine *e, const ag_request *r, uint64_t *id, ag_err *err);
/* Queue n requests at once, all or none (AG_BUSY when the queue has no room for all; AG_ELIMIT when n is more
 * than max_queue): the choices of one API request (prompts x n) enter the batch together, and a refusal leaves
 * nothing half-started.  ids[i] names request i. */
ag_status ag_engine_submit_many(ag_engine *e, const ag_request *r, size_t n, uint64_t *ids, ag_err *err);
/* Ask for a request to end (AG_FINISH_CANCELLED) at the next step; unknown or finished ids are ignored. */
void ag_engine_cancel(ag_engine *e, uint64_t id);

/* Readable while events wait (level-triggered). */
int ag_engine_event_fd(const ag_engine *e);
/* Move up to max waiting events into out (each then owned by the caller); waits up to timeout_ms (0: not at all, -1: forever) for the first. */
size_t ag_engine_poll(ag_engine *e, ag_event *out, size_t max, int timeout_ms);

#define AG_STEP_ROWS_BUCKETS 15 /* rows per step <= 1, 2, 4, ..., 8192, more */
#define AG_SLOT_WAITS 32        /* places in line whose wait for a slot is estimated (autotune.h) */

typedef struct ag_engine_stats {
    int running, waiting;
    size_t kv_blocks, kv_used, kv_cached, kv_free;
    uint64_t prefix_query_tokens, prefix_hit_tokens, preemptions, steps, batch_rows;
    uint64_t step_rows_hist[AG_STEP_ROWS_BUCKETS]; /* steps by rows: [i] counts 2^(i-1) < rows <= 2^i (not cumulative) */
    uint64_t queued_prompt_tokens; /* prompt positions still to compute, waiting and running, as of the last step */
    /* the step-time model and the controller (autotune.h), kept with or without --slo */
    double step_a, step_b, step_c, step_fit_error;
    double prompt_budget, step_seconds, prompt_rate; /* rows, decoding steps' average time, tokens/s */
    uint64_t budget_adjustments, slo_refusals;
    ag_slo slo; /* the targets the engine was given */
    double slot_wait_s[AG_SLOT_WAITS]; /* when the k-th in line gets a slot, as of the last step */
} ag_engine_stats;
void ag_engine_stats_get(ag_engine *e, ag_engine_stats *out);
/* Seconds a request refused as busy should wait: until one at the back of the line would get a slot and the
 * queued prompt tokens would be computed at the measured prompt rate, less the TTFT target (1..60). */
uint32_t ag_engine_retry_after(ag_engine *e);

/* The per-request context length and the vocabulary size. */
int32_t ag_engine_ctx(const ag_engine *e);
int32_t ag_engine_n_vocab(const ag_engine *e);
/* The memory repacked weights take beside the file's mapping, and how many matrices use it. */
uint64_t ag_engine_repacked_bytes(const ag_engine *e, int *n_matrices);
/* A string from the model file's metadata ("tokenizer.chat_template"); false when absent.  Borrowed for the engine's life. */
bool ag_engine_meta_str(const ag_engine *e, const char *key, const char **s, size_t *len);

/*
 * Text and tokens with the model's tokenizer, for callers that turn text into
 * prompts and tokens into text (read-only, any thread).
 */
typedef struct ag_tokens { /* a growable array of token ids; the caller owns ->v (free()) */
    int32_t *v;
    size_t n, cap;
} ag_tokens;
struct ag_buf;
/* Append text's ids to out; add_bos puts the BOS first, parse_special maps special-token texts to their ids.
 * AG_EINVAL with err on invalid UTF-8, AG_NOMEM when out cannot grow. */
ag_status ag_engine_tokenize(const ag_engine *e, const char *text, size_t len, bool add_bos, bool parse_special,
                             ag_tokens *out, ag_err *err);
/* Whether the model's prompts start with BOS unless told otherwise. */
bool ag_engine_add_bos_default(const ag_engine *e);
/* The raw bytes one token stands for, appended to out (nothing for an id outside the vocabulary). */
void ag_engine_token_bytes(const ag_engine *e, int32_t id, struct ag_buf *out);
/* The bytes of ids[0..n) appended to out; AG_EINVAL with err naming the first id outside the vocabulary. */
ag_status ag_engine_detokenize(const ag_engine *e, const int32_t *ids, size_t n, struct ag_buf *out, ag_err *err);

#endif
