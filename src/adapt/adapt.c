/*
 * The in-process driver of an adaptation session (zmix_adapt_run: the session stepped on the
 * caller's threads) and the result it gathers (zmix_adapt_result).
 */
#include "zmix/adapt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapt_internal.h"
#include "util/clock.h"

void zmix_adapt_opts_default(zmix_adapt_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    zmix_cem_settings_default(&opts->cem);
    /* Separable CMA-ES steered by the margin solves more planted tasks with fewer
     * evaluations than the CEM refit, shared α and per-layer alike (docs/cem.md). */
    opts->cem.method = ZMIX_CEM_METHOD_SEP_CMA;
    opts->per_layer = 0;
    opts->rescale = 1;
    opts->n_threads = 1;
    opts->validation = -1.0;
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

int zmix_adapt_alpha_dim(const zmix_runtime *rt, const zmix_adapt_opts *opts)
{
    zmix_compose_opts c = zmix_adapt_compose_opts(opts);
    return (int)zmix_alpha_dim(rt, &c);
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
    free(r->val_experts);
    free(r->expert_fingerprints);
    free(r->warm_alpha);
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
    if (dim != zmix_adapt_alpha_dim(rt, opts))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "result: the engine searches %d coefficients, the runtime and "
                              "options need %d",
                              dim, zmix_adapt_alpha_dim(rt, opts));
    snprintf(r.model_fingerprint, sizeof r.model_fingerprint, "%s",
             zmix_model_fingerprint(zmix_runtime_model(rt)));
    zmix_adapt_experts_digest(rt, r.experts_digest);
    r.adapt = zmix_runtime_adapt_set(rt);
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
    r.expert_fingerprints = calloc((size_t)k_n ? (size_t)k_n : 1, sizeof *r.expert_fingerprints);
    int oom = !r.expert_names || !r.matrix_names || !r.matrix_ranks || !r.alpha || !r.experts ||
              !r.history || !r.history_mean || !r.history_std || !r.expert_fingerprints;
    r.model = *zmix_model_get_config(zmix_runtime_model(rt));
    for (int k = 0; !oom && k < k_n; k++) {
        oom = !(r.expert_names[k] = dup_str(zmix_runtime_expert_name(rt, k)));
        zmix_adapt_expert_fingerprint(rt, k, r.expert_fingerprints[k]);
    }
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
    zmix_session *s = NULL;
    int rc = zmix_session_create(rt, ex, opts, &s, err);
    if (rc) return rc;
    zmix_score_ctl ctl = {opts->n_threads, NULL, ZMIX_CHOICE_PER_TOKEN};
    int n;
    /* One piece per step: the scorer spreads a call over ctl.n_threads itself. */
    while ((n = zmix_session_begin_step(s, err)) > 0) {
        int in_search = zmix_session_phase_get(s) == ZMIX_SESSION_SEARCH;
        zmix_work w;
        zmix_session_split(s, 1, &w, 1);
        uint64_t t0 = zmix_now_ns();
        if ((rc = zmix_session_score(s, &w, &ctl))) {
            *err = w.err;
            break;
        }
        if ((rc = zmix_session_end_step(s, (double)(zmix_now_ns() - t0) * 1e-9, err))) break;
        if (in_search && progress && progress(user, s)) {
            rc = zmix_error_set(err, ZMIX_ECANCELED, "adapt: cancelled after generation %d",
                                zmix_session_generation(s));
            break;
        }
    }
    if (n < 0) rc = n;
    if (!rc) rc = zmix_session_result(s, out, err);
    zmix_session_free(s);
    return rc;
}
