/*
 * The CEM engine's state, shared by the engine (cem.c) and its checkpoint format
 * (cem_checkpoint.c). Not installed.
 */
#ifndef ZMIX_CEM_INTERNAL_H
#define ZMIX_CEM_INTERNAL_H

#include "util/pcg.h"
#include "zmix/cem.h"

struct zmix_cem {
    zmix_cem_settings s; /* init_mean is always NULL here: the mean below supersedes it */
    int n_elites;

    double *mean, *std; /* dim each: the current distribution */
    pcg32 rng;

    /* The population last asked for; pop_ready until the matching tell. */
    float *pop; /* pop_size × dim */
    int pop_ready;
    int first_unscored;

    float *best_alpha; /* dim */
    zmix_score best_score;
    int have_best;

    int generation;
    long evaluations, skipped;
    int since_improve; /* generations since the best last improved */
    zmix_cem_stop stop;

    /* History: hist_len entries of stats, mean and std (dim each) after each generation. */
    int hist_len, hist_cap;
    zmix_cem_gen_stats *hist;
    double *hist_mean, *hist_std;

    /* Separable CMA-ES (method SEP_CMA): the sampling std is sigma·sqrt(cov), floored. */
    double sigma;
    double *cov, *path_sigma, *path_cov; /* dim each */

    /* Scratch, not part of the state. */
    double *noise;      /* pop_size × dim normal draws */
    int *order;         /* pop_size member indices, best first */
    zmix_score *scores; /* pop_size */
};

/* Allocates an engine for valid settings s with zeroed state (no rng seeding). */
int cem_alloc(const zmix_cem_settings *s, zmix_cem **out, zmix_error *err);
void cem_free_storage(zmix_cem *c);
int cem_history_reserve(zmix_cem *c, int n, zmix_error *err);
int cem_n_elites(int pop_size, double elite_ratio);
int sep_cma_parents(int pop_size);

#endif
