/*
 * autotune.c - the step-time model and the prompt-budget controller behind
 * serve --slo (see include/autoglm/autotune.h for what and why).
 *
 * The fit is recursive least squares over x = (1, decode rows, prompt rows)
 * with a forgetting factor, so a change of context lengths or of machine
 * load is followed within a hundred steps or so.  Steady traffic gives
 * little variation in x, and plain RLS with forgetting then inflates its
 * matrix without bound (wind-up); the matrix is only divided by the factor
 * while its trace is below a cap.
 */
#include "autoglm/autotune.h"

#include "base/str.h"

#include <math.h>
#include <string.h>

enum { MODEL_WARM = 4 }; /* steps before the model's answer is used */

static const double FORGET = 0.98;   /* about 50 steps of memory */
static const double P_INIT = 1e4;    /* little trust in the zero start */
static const double P_TRACE_CAP = 1e6;
static const double ERR_ALPHA = 0.05;
static const double AVG_ALPHA = 0.1;
static const double BUDGET_GAIN = 0.3; /* the fraction of the way to the target a step moves the budget */
static const double TPOT_AIM = 0.95;   /* aim a little under the target: step times scatter around the prediction */

bool ag_slo_parse(const char *text, ag_slo *out) {
    memset(out, 0, sizeof *out);
    if (!text || !*text) return false;
    ag_str rest = ag_str_from_cstr(text);
    while (rest.n) {
        const char *comma = memchr(rest.p, ',', rest.n);
        ag_str item = {rest.p, comma ? (size_t)(comma - rest.p) : rest.n};
        rest = comma ? (ag_str){comma + 1, rest.n - item.n - 1} : (ag_str){rest.p + rest.n, 0};
        if (comma && !rest.n) return false; /* a trailing comma */
        const char *eq = memchr(item.p, '=', item.n);
        if (!eq) return false;
        ag_str key = {item.p, (size_t)(eq - item.p)}, val = {eq + 1, item.n - key.n - 1};
        uint64_t us;
        if (ag_str_parse_duration_us(val, &us) != AG_OK || us == 0 || us > 3600ull * 1000000) return false;
        double *slot = ag_str_eq_cstr(key, "ttft") ? &out->ttft_s
                       : ag_str_eq_cstr(key, "tpot") ? &out->tpot_s
                       : ag_str_eq_cstr(key, "e2e")  ? &out->e2e_s
                                                     : NULL;
        if (!slot || *slot) return false; /* unknown, or given twice */
        *slot = (double)us / 1e6;
    }
    return true;
}

/* ---- the step-time model -------------------------------------------------------------- */

void ag_step_model_init(ag_step_model *m) {
    memset(m, 0, sizeof *m);
    for (int i = 0; i < 3; i++) m->P[i][i] = P_INIT;
}

/* The fit as it stands, not each coefficient clamped: with few distinct decoding-row counts the split between
 * a and b is loose (a may come out negative) while their sum over the rows seen is sound. */
double ag_step_model_predict(const ag_step_model *m, int decode_rows, int prompt_rows) {
    return fmax(m->w[0] + m->w[1] * decode_rows + m->w[2] * prompt_rows, 1e-6);
}

void ag_step_model_add(ag_step_model *m, int decode_rows, int prompt_rows, double seconds) {
    const double x[3] = {1, decode_rows, prompt_rows};
    if (m->n >= MODEL_WARM) {
        double rel = fabs(ag_step_model_predict(m, decode_rows, prompt_rows) - seconds) / fmax(seconds, 1e-6);
        m->err = m->n == MODEL_WARM ? rel : m->err + ERR_ALPHA * (rel - m->err);
    }
    double Px[3], xPx = 0, e = seconds;
    for (int i = 0; i < 3; i++) {
        Px[i] = 0;
        for (int j = 0; j < 3; j++) Px[i] += m->P[i][j] * x[j];
        xPx += x[i] * Px[i];
        e -= m->w[i] * x[i];
    }
    double denom = FORGET + xPx, trace = 0;
    for (int i = 0; i < 3; i++) m->w[i] += Px[i] / denom * e;
    for (int i = 0; i < 3; i++) /* P - (P x)(P x)' / denom: P is symmetric, so x'P = (P x)' */
        for (int j = 0; j < 3; j++) m->P[i][j] -= Px[i] * Px[j] / denom;
    for (int i = 0; i < 3; i++) trace += m->P[i][i];
    if (trace < P_TRACE_CAP)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) m->P[i][j] /= FORGET;
    m->n++;
}

/* ---- the controller ----------------------------------------------------------------------- */

void ag_autotune_init(ag_autotune *t, const ag_slo *slo, int max_rows, int floor) {
    memset(t, 0, sizeof *t);
    t->slo = *slo;
    t->max_rows = max_rows > 0 ? max_rows : 1;
    t->floor = floor < 1 ? 1 : floor > t->max_rows ? t->max_rows : floor;
    ag_step_model_init(&t->model);
    t->budget = t->counted_budget = t->max_rows;
}

static int clamp_rows(double v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)lround(v); }

/* The prompt rows that bring a step with decode_rows decoding rows to the TPOT aim. */
static double target_rows(const ag_autotune *t, int decode_rows) {
    const ag_step_model *m = &t->model;
    double c = m->w[2];
    /* The fit has not (or no longer) told prompt rows' cost apart, as when every step took the same prompt rows:
     * hold the budget rather than read that as "free" and open it wide. */
    if (c <= 1e-9) return t->budget;
    double room = TPOT_AIM * t->slo.tpot_s - m->w[0] - m->w[1] * decode_rows;
    return room / c;
}

int ag_autotune_prompt_budget(const ag_autotune *t, int decode_rows) {
    int room = t->max_rows - decode_rows;
    if (room <= 0) return 0;
    if (!t->slo.tpot_s || decode_rows == 0) return room; /* no decoding request to protect this step */
    /* the budget is for the average decoding rows; this step's differ by what their extra time buys */
    double rows = t->budget;
    if (t->model.w[2] > 1e-9) rows -= fmax(t->model.w[1], 0) * (decode_rows - t->decode_rows) / t->model.w[2];
    int floor = t->floor < room ? t->floor : room;
    return clamp_rows(rows, floor, room);
}

void ag_autotune_observe(ag_autotune *t, int decode_rows, int prompt_rows, double seconds) {
    ag_step_model_add(&t->model, decode_rows, prompt_rows, seconds);
    bool first = t->model.n == 1;
    t->decode_rows = first ? decode_rows : t->decode_rows + AVG_ALPHA * (decode_rows - t->decode_rows);
    if (decode_rows) t->step_s = t->step_s == 0 ? seconds : t->step_s + AVG_ALPHA * (seconds - t->step_s);
    if (!t->slo.tpot_s || t->model.n < MODEL_WARM) return;
    double target = target_rows(t, (int)lround(t->decode_rows));
    target = fmin(fmax(target, t->floor), t->max_rows);
    t->budget += BUDGET_GAIN * (target - t->budget);
    if (fabs(t->budget - t->counted_budget) >= 0.1 * t->counted_budget) t->adjustments++, t->counted_budget = t->budget;
}

double ag_autotune_prompt_rate(const ag_autotune *t) {
    if (!t->model.n) return 0;
    int d = (int)lround(t->decode_rows);
    int rows = t->slo.tpot_s && d ? clamp_rows(t->budget, t->floor, t->max_rows) : t->max_rows - d;
    if (rows < 1) rows = 1;
    return rows / ag_step_model_predict(&t->model, d, rows);
}

void ag_autotune_slot_waits(double *slots, int n_slots, const double *hold, int n_hold, double hold_default,
                            double step_s, double *out, int n) {
    for (int k = 0; k < n; k++) {
        if (n_slots <= 0) {
            out[k] = INFINITY;
            continue;
        }
        int m = 0;
        for (int i = 1; i < n_slots; i++)
            if (slots[i] < slots[m]) m = i;
        out[k] = slots[m] * step_s;
        slots[m] += k < n_hold ? hold[k] : hold_default;
    }
}

bool ag_autotune_admit(const ag_slo *slo, double rate, double ahead, double own, double slot_wait_s, double *retry_s) {
    if (!slo->ttft_s || rate <= 0 || (ahead <= 0 && slot_wait_s <= 0)) return true;
    double late = fmax(slot_wait_s, ahead / rate) + own / rate - slo->ttft_s;
    if (late <= 0) return true;
    *retry_s = fmin(fmax(ceil(late), 1), 3600);
    return false;
}
