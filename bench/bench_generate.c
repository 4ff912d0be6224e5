/*
 * Generation benchmark: tokens per second of greedy generation with the KV cache against the
 * cache-free path (the whole sequence rerun each step), and under an adaptation (W' of every
 * adapted matrix materialised once, from a z' near 1) against the base model. Every run
 * measures the four in turn (every other run in reverse order), on the same prompt and length; the
 * ratios are taken per run and their medians reported, so a slower moment of a shared machine
 * affects both sides of a ratio.
 *
 * Tokens per second counts the generated tokens over the whole generation, prompt included
 * (the cached path's first step runs the prompt). The adapted generator's creation (composing
 * W') is timed apart: it is paid once per adaptation, not per token.
 *
 *   bench_generate --model PATH [--tokens N] [--prompt-len P] [--runs R] [--adapt mlp|attn|all]
 *   bench_generate --model PATH --quick     one short run: checks the four generations agree
 *                                           (cache vs none; z' = 1 vs base)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_median.h"
#include "util/clock.h"
#include "util/pcg.h"
#include "zmix/generate.h"

#define MAX_RUNS 64

typedef struct bench_opts {
    const char *model;
    int tokens, prompt_len, runs, quick;
    zmix_adapt_set adapt;
} bench_opts;

static int usage(const char *msg)
{
    fprintf(stderr,
            "bench_generate: %s\nusage: bench_generate --model PATH [--tokens N] "
            "[--prompt-len P] [--runs R] [--adapt mlp|attn|all] [--quick]\n",
            msg);
    return 2;
}

/* CPU seconds of this process: on a shared machine, what the work itself costs (wall time
 * also counts waiting for a core). */
static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Generates opts->tokens greedy tokens; returns tokens per second of wall time (and in *per_cpu
 * per CPU second), or -1 (printed). */
static double timed_generation(zmix_generator *g, const int32_t *prompt, int n_prompt, int tokens,
                               int no_cache, int32_t *out, double *per_cpu)
{
    zmix_gen_opts o;
    zmix_gen_opts_default(&o);
    o.max_tokens = tokens;
    o.ignore_eos = 1;
    o.no_cache = no_cache;
    zmix_error err = {0, ""};
    int n;
    zmix_gen_finish finish;
    uint64_t t0 = zmix_now_ns();
    double c0 = cpu_seconds();
    if (zmix_generate_tokens(g, prompt, n_prompt, &o, out, &n, &finish, &err)) {
        fprintf(stderr, "bench_generate: %s\n", err.msg);
        return -1;
    }
    double s = (double)(zmix_now_ns() - t0) * 1e-9;
    *per_cpu = n / (cpu_seconds() - c0);
    return n / s;
}

int main(int argc, char **argv)
{
    bench_opts b = {NULL, 256, 8, 5, 0, ZMIX_ADAPT_MLP};
    zmix_error err = {0, ""};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick")) {
            b.quick = 1;
            continue;
        }
        if (!v) return usage("an option is missing its value");
        i++;
        if (!strcmp(a, "--model"))
            b.model = v;
        else if (!strcmp(a, "--tokens"))
            b.tokens = atoi(v);
        else if (!strcmp(a, "--prompt-len"))
            b.prompt_len = atoi(v);
        else if (!strcmp(a, "--runs"))
            b.runs = atoi(v);
        else if (!strcmp(a, "--adapt")) {
            if (zmix_adapt_set_parse(v, &b.adapt, &err)) return usage(err.msg);
        } else
            return usage("unknown option");
    }
    if (b.quick) b.tokens = 24, b.runs = 1;
    if (!b.model) return usage("--model is required");
    if (b.tokens < 1 || b.prompt_len < 1 || b.runs < 1 || b.runs > MAX_RUNS)
        return usage("--tokens, --prompt-len >= 1 and --runs in [1, 64]");

    zmix_model *model;
    zmix_runtime *rt;
    zmix_runtime_opts ro;
    zmix_runtime_opts_default(&ro);
    ro.adapt = b.adapt;
    if (zmix_model_load(b.model, &model, &err) ||
        zmix_runtime_create(model, &ro, NULL, 0, &rt, &err)) {
        fprintf(stderr, "bench_generate: %s\n", err.msg);
        return 1;
    }
    const zmix_model_config *c = zmix_model_get_config(model);
    if (b.prompt_len + b.tokens - 1 > c->max_seq_len) {
        fprintf(stderr, "bench_generate: %d + %d tokens exceed the context %d\n", b.prompt_len,
                b.tokens, c->max_seq_len);
        return 2;
    }
    /* A fixed prompt of ids and a z' within 10% of 1 (what a search finds is of that kind). */
    pcg32 rng;
    pcg32_seed(&rng, 1, 2);
    int32_t *prompt = malloc((size_t)b.prompt_len * sizeof *prompt);
    size_t zt = zmix_runtime_z_total(rt);
    float *z = malloc((zt ? zt : 1) * sizeof *z), *ones = malloc((zt ? zt : 1) * sizeof *ones);
    int32_t *out[4];
    for (int k = 0; k < 4; k++) out[k] = malloc((size_t)b.tokens * sizeof *out[k]);
    if (!prompt || !z || !ones || !out[0] || !out[1] || !out[2] || !out[3]) return 1;
    for (int i = 0; i < b.prompt_len; i++)
        prompt[i] = (int32_t)pcg32_bounded(&rng, (uint32_t)c->vocab_size);
    for (size_t i = 0; i < zt; i++) {
        z[i] = (float)(0.9 + 0.2 * pcg32_uniform(&rng));
        ones[i] = 1.0f;
    }
    zmix_generator *base, *adapted;
    uint64_t t0 = zmix_now_ns();
    /* z' = 1 in --quick (W' = W to float rounding: the same ids as the base model). */
    if (zmix_generator_create(model, rt, 1, b.quick ? ones : z, &adapted, &err) ||
        zmix_generator_create(model, NULL, 0, NULL, &base, &err)) {
        fprintf(stderr, "bench_generate: %s\n", err.msg);
        return 1;
    }
    double create_ms = (double)(zmix_now_ns() - t0) * 1e-6;

    double cache_vs_none[MAX_RUNS], adapted_vs_base[MAX_RUNS], tps[4][MAX_RUNS];
    double cpu_cache_vs_none[MAX_RUNS], cpu_adapted_vs_base[MAX_RUNS], cpu_tps[4][MAX_RUNS];
    static const char *const names[4] = {"base, KV cache", "base, no cache", "adapted, KV cache",
                                         "adapted, no cache"};
    for (int r = 0; r < b.runs; r++) {
        for (int step = 0; step < 4; step++) {
            int k = r % 2 ? 3 - step : step; /* every other run in reverse: no order bias */
            tps[k][r] = timed_generation(k < 2 ? base : adapted, prompt, b.prompt_len, b.tokens,
                                         k % 2, out[k], &cpu_tps[k][r]);
            if (tps[k][r] < 0) return 1;
        }
        cache_vs_none[r] = tps[0][r] / tps[1][r];
        adapted_vs_base[r] = tps[2][r] / tps[0][r];
        cpu_cache_vs_none[r] = cpu_tps[0][r] / cpu_tps[1][r];
        cpu_adapted_vs_base[r] = cpu_tps[2][r] / cpu_tps[0][r];
        if (memcmp(out[0], out[1], (size_t)b.tokens * sizeof *out[0]) ||
            memcmp(out[2], out[3], (size_t)b.tokens * sizeof *out[2])) {
            fprintf(stderr, "bench_generate: the KV cache and the cache-free path disagree\n");
            return 1;
        }
        if (b.quick && memcmp(out[0], out[2], (size_t)b.tokens * sizeof *out[0])) {
            fprintf(stderr, "bench_generate: z' = 1 does not give the base model's ids\n");
            return 1;
        }
    }
    printf("model %s: %d layers, dim %d, vocab %d; prompt %d ids, %d new tokens, greedy, "
           "adapt %s (%zu singular values), %d runs, medians\n",
           b.model, c->n_layers, c->dim, c->vocab_size, b.prompt_len, b.tokens,
           zmix_adapt_set_name(b.adapt), zt, b.runs);
    for (int k = 0; k < 4; k++)
        printf("  %-20s %10.1f tokens/s  %10.1f tokens/CPU-s\n", names[k],
               bench_median(tps[k], b.runs), bench_median(cpu_tps[k], b.runs));
    printf("  KV cache / no cache (base)  %6.2fx wall  %6.2fx CPU\n",
           bench_median(cache_vs_none, b.runs), bench_median(cpu_cache_vs_none, b.runs));
    printf("  adapted / base (KV cache)   %6.3fx wall  %6.3fx CPU\n",
           bench_median(adapted_vs_base, b.runs), bench_median(cpu_adapted_vs_base, b.runs));
    printf("  composing W' once          %8.1f ms\n", create_ms);
    zmix_generator_free(base);
    zmix_generator_free(adapted);
    for (int k = 0; k < 4; k++) free(out[k]);
    free(prompt);
    free(z);
    free(ones);
    zmix_runtime_free(rt);
    zmix_model_free(model);
    return 0;
}
