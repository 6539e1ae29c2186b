/*
 * sampling.h - how a request wants its next tokens chosen: the settings the
 * engine API takes per request and the sampler implements.  Apart from
 * engine.h so that the sampler (src/engine/sampler.h) needs nothing of the
 * scheduler's API.
 */
#ifndef AUTOGLM_SAMPLING_H
#define AUTOGLM_SAMPLING_H

#include <stdint.h>

/* The most log-probability alternatives a request may ask for per token. */
#define AG_MAX_TOP_LOGPROBS 20

/* A bias added to one token's logit before sampling; -INFINITY bans the token. */
typedef struct ag_logit_bias {
    int32_t token;
    float bias;
} ag_logit_bias;

/* Zero means off for every field (top_p and repetition_penalty 0 read as 1); temperature 0 is greedy. */
typedef struct ag_sampling {
    float temperature, top_p, min_p, repetition_penalty, frequency_penalty, presence_penalty;
    int32_t top_k;
    uint64_t seed;
} ag_sampling;

#endif
