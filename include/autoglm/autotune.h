/*
 * autotune.h - SLO-driven batching: a model of the engine's step time and
 * the controller that sets each step's prompt budget from it (serve --slo).
 *
 * The knob is Sarathi-Serve's: how many prompt rows join the decoding rows
 * of one forward step.  More prompt rows admit prompts sooner (time to first
 * token) but lengthen the step every decoding request waits for (time per
 * output token).  The step time is modelled as linear in both,
 *
 *     t = a + b * decode_rows + c * prompt_rows,
 *
 * fitted online by recursive least squares with forgetting, so it follows
 * the machine, the model and the contexts in use.  Given a TPOT target the
 * controller solves for the prompt rows that keep a step at the target and
 * moves the budget a fraction of the way there each step (no oscillation
 * from a noisy step), never below a floor, so prompts always progress.
 *
 * Admission against a TTFT target: a new request's first token waits for
 * the prompt tokens ahead of it and its own, served at the prompt rate the
 * current budget gives; a request that cannot make the target is refused
 * with a Retry-After computed from that rate.
 *
 * Plain structs and pure functions: the engine thread owns an ag_autotune;
 * the unit tests drive one with a simulated step time.
 */
#ifndef AUTOGLM_AUTOTUNE_H
#define AUTOGLM_AUTOTUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Service-level objectives in seconds; 0 leaves one out. */
typedef struct ag_slo {
    double ttft_s, tpot_s, e2e_s;
} ag_slo;

/* "ttft=500ms,tpot=50ms" (any of ttft, tpot, e2e; durations as 250us, 40ms, 2s); false on anything else. */
bool ag_slo_parse(const char *text, ag_slo *out);

/* t = a + b*decode_rows + c*prompt_rows, fitted by RLS with forgetting. */
typedef struct ag_step_model {
    double w[3];    /* a (s), b (s/row), c (s/row) */
    double P[3][3]; /* the inverse correlation matrix of RLS */
    uint64_t n;     /* steps observed */
    double err;     /* relative error of the prediction made before each step, moving average */
} ag_step_model;

void ag_step_model_init(ag_step_model *m);
void ag_step_model_add(ag_step_model *m, int decode_rows, int prompt_rows, double seconds);
/* The predicted step time (never below a microsecond). */
double ag_step_model_predict(const ag_step_model *m, int decode_rows, int prompt_rows);

typedef struct ag_autotune {
    ag_slo slo;
    int max_rows;       /* the step's row cap (max_batch_tokens) */
    int floor;          /* prompt rows a step may always take: prompts never starve */
    ag_step_model model;
    double budget;      /* prompt rows per step, moved toward the target gradually */
    double decode_rows; /* moving average of decoding rows per step, for the admission rate */
    double step_s;      /* moving average of the time of steps that had decoding rows: the TPOT they gave */
    uint64_t adjustments; /* times the budget moved by a tenth or more since it was last counted */
    double counted_budget;
} ag_autotune;

/* max_rows: the step's row cap; floor: the least prompt rows per step (clamped to 1..max_rows). */
void ag_autotune_init(ag_autotune *t, const ag_slo *slo, int max_rows, int floor);
/* Prompt rows this step may take beside decode_rows decoding rows (a TPOT target set: solved from the model). */
int ag_autotune_prompt_budget(const ag_autotune *t, int decode_rows);
/* What a step took: feeds the model and the averages, and moves the budget toward its target. */
void ag_autotune_observe(ag_autotune *t, int decode_rows, int prompt_rows, double seconds);
/* Prompt tokens per second at the current budget and load (0 before any step). */
double ag_autotune_prompt_rate(const ag_autotune *t);

/*
 * When each of the first n requests in line would get a slot (out[k], in
 * seconds from now).  slots[i] is when slot i is next free, in steps (0: free
 * now; a running request's remaining steps), and is used up.  The k-th
 * request in line, once admitted, holds its slot for hold[k] steps
 * (hold_default past n_hold).  Steps take step_s.  The engine publishes this
 * after every step for admission: a request's first token waits for a slot
 * (max-seqs) as well as for the prompt tokens ahead of it.
 */
void ag_autotune_slot_waits(double *slots, int n_slots, const double *hold, int n_hold, double hold_default,
                            double step_s, double *out, int n);

/*
 * Admission against slo->ttft_s: the request waits slot_wait_s for a slot
 * while the ahead prompt tokens queued before it are computed, then its own
 * prompt of own tokens, all at rate prompt tokens/s.  True: admit.  False:
 * *retry_s is when that wait should have shrunk enough (>= 1 s).  Nothing
 * ahead, no TTFT target or no rate measured yet always admits.
 */
bool ag_autotune_admit(const ag_slo *slo, double rate, double ahead, double own, double slot_wait_s, double *retry_s);

#endif
