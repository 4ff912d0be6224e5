/*
 * The adaptation driver: checks the examples, sizes the CEM engine for a runtime, scores the
 * baselines, runs the search, and gathers the outcome into a zmix_adapt_result.
 */
#include "zmix/adapt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"

void zmix_adapt_opts_default(zmix_adapt_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    zmix_cem_settings_default(&opts->cem);
    opts->per_layer = 0;
    opts->rescale = 1;
    opts->n_threads = 1;
}

zmix_compose_opts zmix_adapt_compose_opts(const zmix_adapt_opts *opts)
{
    zmix_compose_opts c;
    zmix_compose_opts_default(&c);
    c.per_layer = opts->per_layer;
    c.normalize = 0; /* the engine already normalised the α it hands out */
    c.rescale = opts->rescale;
    return c;
}

static int alpha_dim(const zmix_runtime *rt, const zmix_adapt_opts *opts)
{
    zmix_compose_opts c = zmix_adapt_compose_opts(opts);
    return (int)zmix_alpha_dim(rt, &c);
}

int zmix_adapt_cem_create(const zmix_runtime *rt, const zmix_adapt_opts *opts, zmix_cem **out,
                          zmix_error *err)
{
    zmix_cem_settings s = opts->cem;
    s.n_experts = zmix_runtime_n_experts(rt);
    s.dim = alpha_dim(rt, opts);
    return zmix_cem_create(&s, out, err);
}

int zmix_adapt_score_baselines(const zmix_runtime *rt, const zmix_adapt_opts *opts,
                               const zmix_examples *ex, const zmix_score_ctl *ctl, zmix_score *base,
                               zmix_score *experts, zmix_error *err)
{
    int k_n = zmix_runtime_n_experts(rt);
    int dim = alpha_dim(rt, opts);
    size_t z_total = zmix_runtime_z_total(rt);
    float *ones = malloc((z_total ? z_total : 1) * sizeof *ones);
    float *onehot = calloc((size_t)k_n * (size_t)dim, sizeof *onehot);
    if (!ones || !onehot) {
        free(ones);
        free(onehot);
        return zmix_error_set(err, ZMIX_ENOMEM, "baselines: out of memory");
    }
    for (size_t i = 0; i < z_total; i++) ones[i] = 1.0f;
    /* Expert k alone: α_k = 1 (on every matrix when per-layer), every other α 0. */
    for (int k = 0; k < k_n; k++)
        for (int g = 0; g < dim; g += k_n) onehot[(size_t)k * dim + g + k] = 1.0f;
    int rc = zmix_score_z(rt, opts->rescale, ex, 1, ones, ctl, base, NULL, err);
    if (rc) {
        zmix_error_prefix(err, "scoring the base model");
    } else {
        zmix_compose_opts c = zmix_adapt_compose_opts(opts);
        rc = zmix_score_alpha(rt, &c, ex, k_n, onehot, ctl, experts, NULL, err);
        if (rc) zmix_error_prefix(err, "scoring the single experts");
    }
    free(ones);
    free(onehot);
    return rc;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s ? s : "") + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s ? s : "", n);
    return d;
}

void zmix_adapt_result_free(zmix_adapt_result *r)
{
    if (!r) return;
    for (int k = 0; r->expert_names && k < r->n_experts; k++) free(r->expert_names[k]);
    for (int m = 0; r->matrix_names && m < r->n_matrices; m++) free(r->matrix_names[m]);
    free(r->expert_names);
    free(r->matrix_names);
    free(r->matrix_ranks);
    free(r->alpha);
    free(r->z);
    free(r->experts);
    free(r->history);
    free(r->history_mean);
    free(r->history_std);
    memset(r, 0, sizeof *r);
}

int zmix_adapt_result_build(const zmix_runtime *rt, const zmix_adapt_opts *opts,
                            const zmix_cem *cem, const zmix_score *base, const zmix_score *experts,
                            int n_examples, double elapsed_s, zmix_adapt_result *out,
                            zmix_error *err)
{
    zmix_adapt_result r;
    memset(&r, 0, sizeof r);
    int k_n = zmix_runtime_n_experts(rt), m_n = zmix_runtime_n_matrices(rt);
    int dim = zmix_cem_dim(cem);
    if (dim != alpha_dim(rt, opts))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "result: the engine searches %d coefficients, the runtime and "
                              "options need %d",
                              dim, alpha_dim(rt, opts));
    r.n_experts = k_n;
    r.n_matrices = m_n;
    r.per_layer = opts->per_layer;
    r.rescale = opts->rescale;
    zmix_cem_get_settings(cem, &r.settings);
    r.normalize = r.settings.normalize;
    r.n_elites = zmix_cem_n_elites(cem);
    if (r.settings.init_std < 0.0) r.settings.init_std = (r.settings.hi - r.settings.lo) / 2.0;
    r.n_examples = n_examples;
    r.dim = dim;
    r.z_total = zmix_runtime_z_total(rt);
    r.base = *base;
    r.generations = zmix_cem_generation(cem);
    r.evaluations = zmix_cem_evaluations(cem);
    r.skipped = zmix_cem_skipped(cem);
    r.stop = zmix_cem_done(cem);
    r.elapsed_s = elapsed_s;
    r.n_history = zmix_cem_history_len(cem);

    size_t nh = (size_t)r.n_history, d = (size_t)dim;
    r.expert_names = calloc((size_t)k_n, sizeof *r.expert_names);
    r.matrix_names = calloc((size_t)m_n ? (size_t)m_n : 1, sizeof *r.matrix_names);
    r.matrix_ranks = calloc((size_t)m_n ? (size_t)m_n : 1, sizeof *r.matrix_ranks);
    r.alpha = malloc(d * sizeof *r.alpha);
    r.experts = malloc((size_t)k_n * sizeof *r.experts);
    r.history = malloc((nh ? nh : 1) * sizeof *r.history);
    r.history_mean = malloc((nh ? nh * d : 1) * sizeof *r.history_mean);
    r.history_std = malloc((nh ? nh * d : 1) * sizeof *r.history_std);
    int oom = !r.expert_names || !r.matrix_names || !r.matrix_ranks || !r.alpha || !r.experts ||
              !r.history || !r.history_mean || !r.history_std;
    for (int k = 0; !oom && k < k_n; k++)
        oom = !(r.expert_names[k] = dup_str(zmix_runtime_expert_name(rt, k)));
    for (int m = 0; !oom && m < m_n; m++) {
        oom = !(r.matrix_names[m] = dup_str(zmix_runtime_matrix_name(rt, m)));
        r.matrix_ranks[m] = zmix_runtime_matrix_rank(rt, m);
    }
    if (oom) {
        zmix_adapt_result_free(&r);
        return zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory");
    }
    memcpy(r.experts, experts, (size_t)k_n * sizeof *r.experts);
    if (nh) {
        memcpy(r.history, zmix_cem_history(cem), nh * sizeof *r.history);
        for (size_t g = 0; g < nh; g++) {
            memcpy(r.history_mean + g * d, zmix_cem_history_mean(cem, (int)g), d * sizeof(double));
            memcpy(r.history_std + g * d, zmix_cem_history_std(cem, (int)g), d * sizeof(double));
        }
    }
    if (zmix_cem_best(cem, r.alpha, &r.best) != 0) {
        for (size_t i = 0; i < d; i++) r.alpha[i] = NAN;
        r.best.accuracy = r.best.loglik = NAN;
    } else {
        r.z = malloc((r.z_total ? r.z_total : 1) * sizeof *r.z);
        if (!r.z) {
            zmix_adapt_result_free(&r);
            return zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory for z'");
        }
        zmix_compose_opts c = zmix_adapt_compose_opts(opts);
        int rc = zmix_compose_z(rt, &c, r.alpha, r.z, err);
        if (rc) {
            zmix_adapt_result_free(&r);
            return zmix_error_prefix(err, "result: composing z' from the best α");
        }
    }
    *out = r;
    return 0;
}

int zmix_adapt_run(const zmix_runtime *rt, const zmix_examples *ex, const zmix_adapt_opts *opts,
                   zmix_adapt_progress_fn progress, void *user, zmix_adapt_result *out,
                   zmix_error *err)
{
    int rc = zmix_examples_check(zmix_runtime_model(rt), ex, err);
    if (rc) return rc;
    zmix_cem *cem = NULL;
    rc = zmix_adapt_cem_create(rt, opts, &cem, err);
    if (rc) return rc;
    uint64_t t0 = zmix_now_ns();
    int k_n = zmix_runtime_n_experts(rt);
    int dim = zmix_cem_dim(cem), pop_n = zmix_cem_pop_size(cem);
    float *pop = malloc((size_t)pop_n * (size_t)dim * sizeof *pop);
    zmix_score *scores = calloc((size_t)pop_n, sizeof *scores);
    zmix_score *experts = calloc((size_t)k_n, sizeof *experts);
    zmix_score base;
    if (!pop || !scores || !experts) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "adapt: out of memory for pop %d × dim %d", pop_n,
                            dim);
        goto done;
    }
    zmix_score_ctl ctl = {opts->n_threads, NULL};
    rc = zmix_adapt_score_baselines(rt, opts, ex, &ctl, &base, experts, err);
    if (rc) goto done;
    zmix_compose_opts copts = zmix_adapt_compose_opts(opts);
    while (!zmix_cem_done(cem)) {
        int first = zmix_cem_ask(cem, pop);
        if (first < 0) {
            rc = zmix_error_set(err, first, "adapt: ask failed");
            goto done;
        }
        rc = zmix_score_alpha(rt, &copts, ex, pop_n - first, pop + (size_t)first * dim, &ctl,
                              scores + first, NULL, err);
        if (rc) {
            zmix_error_prefix(err, "adapt: generation %d", zmix_cem_generation(cem) + 1);
            goto done;
        }
        rc = zmix_cem_tell(cem, scores, err);
        if (rc) goto done;
        if (progress && progress(user, cem)) {
            rc = zmix_error_set(err, ZMIX_ECANCELED, "adapt: cancelled after generation %d",
                                zmix_cem_generation(cem));
            goto done;
        }
    }
    rc = zmix_adapt_result_build(rt, opts, cem, &base, experts, ex->n,
                                 (double)(zmix_now_ns() - t0) * 1e-9, out, err);
done:
    free(pop);
    free(scores);
    free(experts);
    zmix_cem_free(cem);
    return rc;
}
