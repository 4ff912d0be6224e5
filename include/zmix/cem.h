/*
 * zmix CEM: the cross-entropy-method search over mixing coefficients α, as a pure state
 * machine. No model, no I/O, no threads: the caller asks for a population, scores it however
 * it likes (in any order, split across any number of workers) and tells the scores back.
 *
 *   zmix_cem *cem;
 *   zmix_cem_create(&settings, &cem, &err);
 *   while (!zmix_cem_done(cem)) {
 *       zmix_cem_ask(cem, pop);          // pop_size × dim floats; rows < first_unscored are known
 *       ... score rows first_unscored .. pop_size-1 ...
 *       zmix_cem_tell(cem, scores, &err);
 *   }
 *
 * Ranking is lexicographic (accuracy, then mean log-likelihood) for elites and best alike
 * (zmix_score_cmp), or log-likelihood alone.
 *
 * Reproducible: the same settings (seed and stream included) and the same scores give the
 * same populations bit for bit. The whole state serialises to a small byte string
 * (zmix_cem_save / zmix_cem_restore) for checkpoints.
 */
#ifndef ZMIX_CEM_H
#define ZMIX_CEM_H

#include <stddef.h>
#include <stdint.h>

#include "zmix/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zmix_cem_stop {
    ZMIX_CEM_RUNNING = 0,
    ZMIX_CEM_STOP_MAX_GENERATIONS,
    ZMIX_CEM_STOP_STD_TOLERANCE, /* every std below std_tol */
    ZMIX_CEM_STOP_PATIENCE,      /* best score not improved for `patience` generations */
    ZMIX_CEM_STOP_TARGET,        /* target score reached */
    ZMIX_CEM_STOP_FLAT           /* every candidate of a generation scored the same */
} zmix_cem_stop;

const char *zmix_cem_stop_name(zmix_cem_stop reason); /* "max_generations", ... */

/* How the distribution is updated after each generation (docs/cem.md, "Methods"). */
typedef enum zmix_cem_method {
    ZMIX_CEM_METHOD_CEM = 0, /* refit mean and std to the elites (the reference's method) */
    /* Separable CMA-ES: weighted recombination of the better half, a diagonal covariance
     * and a global step size adapted along the evolution path; ranked by the candidates'
     * margin (zmix_score.margin) with the metric's order breaking ties. elite_ratio and ema
     * do not apply. Made for many coordinates (per-layer α). */
    ZMIX_CEM_METHOD_SEP_CMA = 1
} zmix_cem_method;

const char *zmix_cem_method_name(zmix_cem_method method); /* "cem", "sep-cma" */
/* The population separable CMA-ES uses by default for dim coordinates: 4 + ⌊3 ln dim⌋. */
int zmix_cem_sep_cma_pop_size(int dim);

#define ZMIX_CEM_MAX_GENERATIONS 1000000

typedef struct zmix_cem_settings {
    int dim;                  /* search dimension: K, or M·K with per-layer α */
    int n_experts;            /* K: sets the default initial mean 1/K and the normalise groups */
    int pop_size;             /* default 32, >= 2 */
    double elite_ratio;       /* default 0.2, in (0, 1]; elites = max(2, floor(ratio·pop)) */
    double lo, hi;            /* bounds, default [0, 1]; samples are clamped into them */
    const double *init_mean;  /* dim values, or NULL for 1/K everywhere (copied on create) */
    double init_std;          /* < 0: (hi - lo) / 2 */
    double ema;               /* mean/std ← ema·old + (1-ema)·new; default 0 */
    double std_floor;         /* std never below this; default 0.02 */
    int max_generations;      /* default 50 */
    int elitism;              /* best-so-far is member 0 of every later population; default 1 */
    zmix_metric metric;       /* default ZMIX_METRIC_ACCURACY */
    int normalize;            /* scale each group of K coefficients to sum 1; default 0 */
    double std_tol;           /* stop when every std < std_tol; default 1e-4; 0 disables */
    int patience;             /* stop after this many generations without improvement; 0 off */
    double target_accuracy;   /* stop when best accuracy >= this in this and the previous
                                 generation ...; > 1 disables (default 1) */
    double target_loglik_tol; /* ... and best loglik rose by < this in this generation (1e-3) */
    uint64_t seed;
    uint64_t stream;        /* PCG stream id: one per job */
    zmix_cem_method method; /* default ZMIX_CEM_METHOD_CEM */
} zmix_cem_settings;

void zmix_cem_settings_default(zmix_cem_settings *s);
/* Validates every field; the message names the field and the value. */
int zmix_cem_settings_check(const zmix_cem_settings *s, zmix_error *err);

typedef struct zmix_cem zmix_cem;

int zmix_cem_create(const zmix_cem_settings *s, zmix_cem **out, zmix_error *err);
void zmix_cem_free(zmix_cem *cem);

/* Writes the next population (pop_size × dim, row-major) into pop and returns the index of
 * the first member that needs scoring: 1 when member 0 is the carried-over best whose score
 * is known, else 0. Calling ask twice without tell returns the same population (pop may be
 * NULL to learn only the index). Returns ZMIX_ESTATE once the search has stopped. */
int zmix_cem_ask(zmix_cem *cem, float *pop);

/* Takes the scores of the population last asked for (pop_size entries; entries below the
 * first unscored index are ignored) and updates the distribution. ZMIX_ESTATE without a
 * pending ask or after the stop; ZMIX_ENUMERIC (naming the member) for an accuracy outside
 * [0, 1] or a loglik of +inf. NaN scores are accepted and rank below everything (a candidate
 * whose model is numerically broken is the worst, not an error); history means skip them. */
int zmix_cem_tell(zmix_cem *cem, const zmix_score *scores, zmix_error *err);

zmix_cem_stop zmix_cem_done(const zmix_cem *cem);
int zmix_cem_generation(const zmix_cem *cem); /* completed generations */
int zmix_cem_dim(const zmix_cem *cem);
int zmix_cem_pop_size(const zmix_cem *cem);
int zmix_cem_n_elites(const zmix_cem *cem); /* max(2, floor(ratio·pop)), at most pop */
/* The settings the engine runs with (init_mean is NULL: the distribution supersedes it). */
void zmix_cem_get_settings(const zmix_cem *cem, zmix_cem_settings *s);
/* Best α so far (dim floats) and its score; returns 0, or ZMIX_ESTATE before the first tell. */
int zmix_cem_best(const zmix_cem *cem, float *alpha, zmix_score *score);
const double *zmix_cem_mean(const zmix_cem *cem);
const double *zmix_cem_std(const zmix_cem *cem);
long zmix_cem_evaluations(const zmix_cem *cem); /* members actually scored */
long zmix_cem_skipped(const zmix_cem *cem);     /* members whose score was known */

/* One generation's record, appended on every tell. */
typedef struct zmix_cem_gen_stats {
    zmix_score best;       /* best so far after this generation */
    zmix_score elite_mean; /* mean accuracy / loglik over the elites */
    zmix_score pop_mean;   /* mean over the whole population */
    double mean_std;       /* mean of the distribution's std over all coordinates */
} zmix_cem_gen_stats;

int zmix_cem_history_len(const zmix_cem *cem);
const zmix_cem_gen_stats *zmix_cem_history(const zmix_cem *cem); /* history_len entries */
/* Distribution mean and std after generation g (dim doubles each). */
const double *zmix_cem_history_mean(const zmix_cem *cem, int g);
const double *zmix_cem_history_std(const zmix_cem *cem, int g);

/* Checkpoint: the complete state (settings, distribution, best, history, random stream).
 * save allocates *buf (free with free()). restore verifies length and checksum. */
int zmix_cem_save(const zmix_cem *cem, uint8_t **buf, size_t *len, zmix_error *err);
int zmix_cem_restore(const uint8_t *buf, size_t len, zmix_cem **out, zmix_error *err);

#ifdef __cplusplus
}
#endif

#endif
