/*
 * zmix adapt: the CEM search (zmix/cem.h) wired to the scorer (zmix/model.h).
 *
 * Two ways to use it:
 *
 *  - One shot, in-process (the `zmix adapt` command): zmix_adapt_run scores the baselines,
 *    runs the search to its stop and fills a zmix_adapt_result.
 *
 *  - Piece by piece (the daemon, which owns one zmix_cem per job and spreads each
 *    population over its worker pool):
 *
 *        zmix_examples_check(model, ex, &err);
 *        zmix_adapt_cem_create(rt, &opts, &cem, &err);
 *        zmix_adapt_score_baselines(rt, &opts, ex, &ctl, &base, experts, &err);
 *        while (!zmix_cem_done(cem)) {
 *            int first = zmix_cem_ask(cem, pop);
 *            ... workers: zmix_score_alpha(rt, &copts, ex, n, rows, &ctl1, scores, ...)
 *                with copts = zmix_adapt_compose_opts(&opts) ...
 *            zmix_cem_tell(cem, scores, &err);
 *        }
 *        zmix_adapt_result_build(rt, &opts, cem, &base, experts, n_examples, elapsed, &res, &err);
 *        cJSON *j = zmix_adapt_result_to_json(&res, 1);
 *
 * The result JSON is the one result format of `zmix adapt` and of the daemon; docs/cem.md
 * describes every field.
 *
 * Normalisation happens in exactly one place: the CEM engine (settings.normalize) scales each
 * group of K coefficients to sum 1 before the population is handed out, so the α that is
 * scored, ranked and reported is the same vector. The scorer is therefore always called with
 * compose.normalize = 0 (zmix_adapt_compose_opts does that).
 */
#ifndef ZMIX_ADAPT_H
#define ZMIX_ADAPT_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/cem.h"
#include "zmix/common.h"
#include "zmix/model.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cJSON;

typedef struct zmix_adapt_opts {
    /* CEM settings; dim and n_experts are filled from the runtime (any value given is
     * ignored), everything else is used as is. cem.normalize is the normalise option.
     * cem.init_mean, when set, must hold zmix_alpha_dim entries (K, or M·K per-layer). */
    zmix_cem_settings cem;
    int per_layer; /* one α per expert per adapted matrix (M·K) instead of K; default 0 */
    int rescale;   /* keep each matrix's singular-value mass (the reference's rescale); 1 */
    int n_threads; /* scoring threads in zmix_adapt_run (<= 1: caller's thread); default 1 */
} zmix_adapt_opts;

void zmix_adapt_opts_default(zmix_adapt_opts *opts);

/* The compose options the scorer must be called with for these adapt options. */
zmix_compose_opts zmix_adapt_compose_opts(const zmix_adapt_opts *opts);

/* Creates the engine for a runtime: dim = K or M·K, n_experts = K, the rest from opts->cem.
 * Settings errors come back with the engine's message (naming the field and the value). */
int zmix_adapt_cem_create(const zmix_runtime *rt, const zmix_adapt_opts *opts, zmix_cem **out,
                          zmix_error *err);

/* Scores the reference points of a search: the unadapted base model (z' = 1 everywhere,
 * which no α reaches in general) into *base, and each single expert (one-hot α) into
 * experts[0..K). */
int zmix_adapt_score_baselines(const zmix_runtime *rt, const zmix_adapt_opts *opts,
                               const zmix_examples *ex, const zmix_score_ctl *ctl, zmix_score *base,
                               zmix_score *experts, zmix_error *err);

/* The outcome of a search (finished or in progress). Owns every array. */
typedef struct zmix_adapt_result {
    int n_experts;       /* K */
    char **expert_names; /* K */
    int n_matrices;      /* M */
    char **matrix_names; /* M, in z' order */
    int *matrix_ranks;   /* M */
    int per_layer, normalize, rescale;
    zmix_cem_settings settings; /* as run; init_std is the effective value, init_mean NULL */
    int n_elites;
    int n_examples;

    int dim;      /* K or M·K */
    float *alpha; /* dim: the best α (all NaN when no generation has finished) */
    size_t z_total;
    float *z;        /* z_total: z' composed from alpha (NULL when no generation finished) */
    zmix_score best; /* alpha's score (NaN before the first generation) */
    zmix_score base;
    zmix_score *experts; /* K: each single expert's score */

    int generations;
    long evaluations, skipped;
    zmix_cem_stop stop; /* ZMIX_CEM_RUNNING for an unfinished search */
    double elapsed_s;

    int n_history;               /* = generations */
    zmix_cem_gen_stats *history; /* n_history */
    double *history_mean;        /* n_history × dim: distribution mean after each generation */
    double *history_std;         /* n_history × dim */
} zmix_adapt_result;

/* Fills *out from the engine's current state: best α and its composed z', scores,
 * counters, history. base and experts (K entries) are the baseline scores, copied. */
int zmix_adapt_result_build(const zmix_runtime *rt, const zmix_adapt_opts *opts,
                            const zmix_cem *cem, const zmix_score *base, const zmix_score *experts,
                            int n_examples, double elapsed_s, zmix_adapt_result *out,
                            zmix_error *err);
void zmix_adapt_result_free(zmix_adapt_result *res);

/* The result as JSON (see docs/cem.md). include_z adds the composed z' per matrix (large for
 * big models). Returns NULL only when out of memory; free with cJSON_Delete. */
struct cJSON *zmix_adapt_result_to_json(const zmix_adapt_result *res, int include_z);

/* Called after every generation of zmix_adapt_run; return nonzero to cancel the search
 * (zmix_adapt_run then returns ZMIX_ECANCELED). */
typedef int (*zmix_adapt_progress_fn)(void *user, const zmix_cem *cem);

/* The whole search in-process: checks the examples, scores the baselines, runs CEM to its
 * stop with opts->n_threads scoring threads, builds the result. */
int zmix_adapt_run(const zmix_runtime *rt, const zmix_examples *ex, const zmix_adapt_opts *opts,
                   zmix_adapt_progress_fn progress, void *user, zmix_adapt_result *out,
                   zmix_error *err);

/* ---- Planted tasks: a search problem with a known answer ----------------------------- */

/* K random experts, a hidden mix α*, and examples whose targets are the model's greedy
 * continuations under z'(α*). The recovery test and the demo data are built with it. */
typedef struct zmix_planted_opts {
    int n_experts;                /* K, default 4 */
    int n_examples;               /* default 16 */
    int prompt_len;               /* random token ids after BOS, default 4 */
    int target_len;               /* greedy tokens per target, default 4 */
    double z_log_std;             /* z = exp(N(0, s²)) per singular value, default 0.5 */
    zmix_adapt_set adapt;         /* default ZMIX_ADAPT_MLP */
    int rescale;                  /* default 1, as the search's scorer */
    const float *alpha_star;      /* K values, or NULL to draw them uniformly in [0.1, 0.9] */
    int distinct_from_base;       /* keep only prompts whose target differs from the base
                                     model's greedy continuation; default 0 */
    const char *factor_cache_dir; /* for the runtime used to generate; NULL: none */
    uint64_t seed;
} zmix_planted_opts;

void zmix_planted_opts_default(zmix_planted_opts *opts);

typedef struct zmix_planted {
    int n_experts;
    char **expert_paths; /* K files written into the directory given */
    float *alpha_star;   /* K */
    zmix_examples examples;
    int n_tried; /* prompts drawn to find n_examples that qualified */
} zmix_planted;

/* Writes dir/expert_<k>.st for k < K (the directory must exist) and builds the examples. */
int zmix_planted_create(const zmix_model *model, const char *dir, const zmix_planted_opts *opts,
                        zmix_planted *out, zmix_error *err);
void zmix_planted_free(zmix_planted *p);

/* Writes an example set as {"examples":[{"prompt":[..],"target":[..]}, ...]}. */
int zmix_adapt_examples_save_json(const char *path, const zmix_examples *ex, zmix_error *err);

#ifdef __cplusplus
}
#endif

#endif
