/*
 * bench_sampler - microseconds per draw of the sampler (src/engine/sampler.c)
 * over a 32,000-token vocabulary, the Llama 2 size: the whole distribution
 * at temperature 1 (the OpenAI API's default, so every sampled request pays
 * it once per token, on the scheduler's thread between steps), with the
 * usual cut-offs, and greedy.  Two kinds of logits: spread (uniform in
 * [-10, 10], so the draw walks far into the vocabulary) and peaked (a few
 * tokens well above a normal-ish crowd, as a trained model gives).  The
 * figure is the best of 5 runs of 300 draws.
 *
 * usage: bench_sampler
 */
#include "base/clock.h"
#include "engine/sampler.h"

#include <stdio.h>
#include <stdlib.h>

enum { VOCAB = 32000, DRAWS = 300, RUNS = 5 };

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * 0x1p-24);
}

int main(void) {
    static float spread[VOCAB], peaked[VOCAB];
    uint64_t seed = 7;
    for (int i = 0; i < VOCAB; i++) {
        spread[i] = frand(&seed) * 20 - 10;
        peaked[i] = (frand(&seed) + frand(&seed) + frand(&seed)) * 4 - 6; /* about normal, sd 2 */
    }
    for (int i = 0; i < 8; i++) peaked[(i * 7919) % VOCAB] = 12 - i;
    static const struct {
        const char *name;
        float temperature, top_p, min_p;
        int top_k;
    } settings[] = {
        {"temperature 1 (whole distribution)", 1, 1, 0, 0},
        {"top_k 40", 1, 1, 0, 40},
        {"top_p 0.95", 1, 0.95f, 0, 0},
        {"min_p 0.05", 1, 1, 0.05f, 0},
        {"greedy (temperature 0)", 0, 1, 0, 0},
    };
    printf("| setting | spread logits, us/draw | peaked logits, us/draw |\n|---|--:|--:|\n");
    for (size_t s = 0; s < sizeof settings / sizeof *settings; s++) {
        double us[2];
        for (int l = 0; l < 2; l++) {
            ag_sampler_params p = ag_sampler_params_default();
            p.temperature = settings[s].temperature, p.top_p = settings[s].top_p, p.min_p = settings[s].min_p;
            p.top_k = settings[s].top_k;
            ag_sampler *smp;
            ag_err err;
            if (ag_sampler_create(&p, VOCAB, &smp, &err) != AG_OK) {
                fprintf(stderr, "bench_sampler: %s\n", err.msg);
                return 1;
            }
            const float *logits = l ? peaked : spread;
            volatile int32_t sink = 0;
            double best = 1e30;
            for (int r = 0; r < RUNS; r++) {
                uint64_t t0 = ag_clock_mono_ns();
                for (int d = 0; d < DRAWS; d++) sink += ag_sampler_sample(smp, logits);
                double per = (double)(ag_clock_mono_ns() - t0) / DRAWS / 1e3;
                best = per < best ? per : best;
            }
            us[l] = best;
            ag_sampler_free(smp);
        }
        printf("| %s | %.1f | %.1f |\n", settings[s].name, us[0], us[1]);
    }
    return 0;
}
