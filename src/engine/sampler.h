/*
 * sampler.h - choosing the next token from logits, and stop strings.
 *
 * The chain: logit bias, penalties (repetition as llama.cpp/CTRL: divide a
 * positive logit, multiply a negative one; frequency and presence as OpenAI:
 * logit -= count * frequency + (count > 0) * presence) over the last
 * penalty_last_n tokens seen, then greedy when temperature is 0, else
 * temperature, top-k, top-p, min-p (vLLM's order: the cut-offs see the
 * tempered distribution) and a draw from the seeded generator.  The same
 * seed, logits and history always give the same token.
 *
 * A sampler is per request and owns its history; scratch is sized to the
 * vocabulary once, and top-p sorts only as many candidates as it needs.
 */
#ifndef AG_ENGINE_SAMPLER_H
#define AG_ENGINE_SAMPLER_H

#include "autoglm/sampling.h"
#include "autoglm/status.h"
#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


typedef struct ag_sampler_params {
    float temperature;        /* 0: greedy */
    int32_t top_k;            /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off */
    float frequency_penalty;  /* 0: off */
    float presence_penalty;   /* 0: off */
    int32_t penalty_last_n;   /* tokens of history the penalties look at; -1: all */
    uint64_t seed;
    const ag_logit_bias *logit_bias; /* copied at creation */
    size_t n_logit_bias;
} ag_sampler_params;

ag_sampler_params ag_sampler_params_default(void);

typedef struct ag_sampler ag_sampler;

/* Out-of-range parameters are AG_EINVAL naming the parameter.  *out is the caller's: ag_sampler_free. */
ag_status ag_sampler_create(const ag_sampler_params *p, int32_t n_vocab, ag_sampler **out, ag_err *err);
void ag_sampler_free(ag_sampler *s);
/* Record a token (prompt or generated) in the penalty history. */
void ag_sampler_accept(ag_sampler *s, int32_t token);
/* The next token from n_vocab logits (not modified). */
int32_t ag_sampler_sample(ag_sampler *s, const float *logits);

/*
 * Log-probabilities under the model's own distribution (log-softmax of the
 * raw logits): returns token's, and writes the k most likely tokens, most
 * likely first, to top_ids / top_lp (k <= AG_MAX_TOP_LOGPROBS).
 */
float ag_logprobs(const float *logits, int32_t n_vocab, int32_t token, int32_t k, int32_t *top_ids, float *top_lp);

/*
 * Stop strings matched across token boundaries: text goes in piece by piece;
 * what comes out is the text that can no longer be the start of a stop
 * string, so a client never sees part of one.  A match ends the stream: the
 * text before it comes out and ag_stop_push returns true.
 */
typedef struct ag_stop {
    const char *const *stops;
    size_t n_stops;
    ag_buf held;
} ag_stop;

void ag_stop_init(ag_stop *s, const char *const *stops, size_t n_stops); /* stops are borrowed */
void ag_stop_free(ag_stop *s);
bool ag_stop_push(ag_stop *s, const char *text, size_t len, ag_buf *out);
/* End of generation without a match: whatever is held comes out. */
void ag_stop_flush(ag_stop *s, ag_buf *out);

#endif
