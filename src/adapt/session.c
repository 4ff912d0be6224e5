/*
 * The adaptation session: one search as a steppable object (see zmix/adapt.h).
 *
 * Steps: first the baselines (candidate 0 is the base model, z' = 1 everywhere, which no α
 * reaches in general; candidates 1..K are the single experts, α = e_k on every matrix), then
 * one step per CEM generation (the candidates the engine asks for, less the carried-over
 * best whose score is known). A step is split into pieces that any thread may score; the
 * session holds the candidates and a score slot per candidate, so pieces write disjoint
 * memory and need no lock. Only begin/end/abort/fail change the session's state, and the
 * caller makes those calls from one thread while no piece is being scored.
 *
 * Threads: none of its own. zmix_session_score runs on the caller's workers; everything else
 * on the thread that owns the session.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/pcg.h"
#include "util/record.h"
#include "adapt/cem_options.h"
#include "adapt_internal.h"

#define SESSION_MAGIC "ZMSESS01"
/* v2: the held-out scores; v3: the per-layer stage; v4: per-layer α by separable CMA-ES,
 * one engine again (a per-layer checkpoint before v4 is refused, and its job restarts). */
#define SESSION_VERSION 4u

struct zmix_session {
    const zmix_runtime *rt;
    const zmix_examples *ex; /* every example, as given */
    /* The search examples and the held-out ones: views of ex (their items point into its
     * tokens), split by a fixed function of the examples (validation_split). */
    zmix_examples train, val;
    zmix_adapt_opts opts;      /* cem.init_mean points at warm below, or is NULL */
    double *warm;              /* the warm start's α (dim), owned; NULL: a cold start */
    zmix_compose_opts compose; /* for α of dim (per-layer when the options ask for it) */
    int n_experts, dim, pop_size;
    char key[65];
    zmix_cem *cem;
    zmix_session_phase phase;
    char error[ZMIX_ERROR_MSG_MAX];

    /* The open step: rows [first, n_rows) of cand are scored into scores. */
    int step_open;
    int first, n_rows;
    float *cand;        /* max(pop, K+1) × dim */
    zmix_score *scores; /* max(pop, K+1) */

    int have_baselines;
    zmix_score base;
    zmix_score *experts; /* K */
    int have_validation;
    zmix_score val_best, val_base;
    zmix_score *val_experts; /* K */
    double elapsed_s;
};

const char *zmix_session_phase_name(zmix_session_phase p)
{
    switch (p) {
    case ZMIX_SESSION_BASELINES: return "baselines";
    case ZMIX_SESSION_SEARCH: return "search";
    case ZMIX_SESSION_VALIDATION: return "validation";
    case ZMIX_SESSION_DONE: return "done";
    case ZMIX_SESSION_FAILED: return "failed";
    }
    return "?";
}

static int rows_max(const zmix_session *s)
{
    return s->pop_size > s->n_experts + 2 ? s->pop_size : s->n_experts + 2;
}

/* How many of n examples are held out: the option's fraction, or by default a quarter when
 * there are 4 or more (fewer leave too little to search with and to judge by). Always at
 * least one example left to search with. */
static int validation_count(double fraction, int n)
{
    int k;
    if (fraction < 0.0)
        k = n >= 4 ? n / 4 : 0;
    else
        k = (int)floor(fraction * n + 0.5);
    if (fraction > 0.0 && k < 1 && n >= 2) k = 1;
    if (k > n - 1) k = n - 1;
    return k < 0 ? 0 : k;
}

/* Splits the examples into train and val views: which ones are held out is a permutation
 * drawn from the examples' own digest, so the same examples always split the same way
 * whatever the search's seed, and a held-out example is never seen by any search of them. */
static int validation_split(zmix_session *s, zmix_error *err)
{
    int n = s->ex->n, k = validation_count(s->opts.validation, n);
    s->train.items = malloc((size_t)n * sizeof *s->train.items);
    s->val.items = malloc((size_t)(k ? k : 1) * sizeof *s->val.items);
    int *held = calloc((size_t)n, sizeof *held);
    int *order = malloc((size_t)n * sizeof *order);
    if (!s->train.items || !s->val.items || !held || !order) {
        free(held);
        free(order);
        return zmix_error_set(err, ZMIX_ENOMEM, "session: out of memory for %d examples", n);
    }
    char digest[65];
    zmix_adapt_examples_digest(s->ex, digest);
    pcg32 rng;
    pcg32_seed(&rng, zmix_adapt_key_stream(digest), 0x76616cull /* "val" */);
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) { /* Fisher–Yates, the first k positions are held out */
        int j = (int)pcg32_bounded(&rng, (uint32_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < k; i++) held[order[i]] = 1;
    for (int i = 0; i < n; i++) {
        if (held[i])
            s->val.items[s->val.n++] = s->ex->items[i];
        else
            s->train.items[s->train.n++] = s->ex->items[i];
    }
    free(held);
    free(order);
    return 0;
}

int zmix_adapt_metric_check(zmix_metric metric, const zmix_examples *ex, zmix_error *err)
{
    int choice_metric = metric == ZMIX_METRIC_CHOICE || metric == ZMIX_METRIC_CHOICE_SUM;
    if (choice_metric && !zmix_examples_are_choice(ex))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "metric '%s' scores multiple-choice examples (choices, answer), and "
                              "examples[0] has a target",
                              cem_metric_name(metric));
    return 0;
}

/* Everything but the engine: checks, sizes, buffers. */
static int session_alloc(const zmix_runtime *rt, const zmix_examples *ex,
                         const zmix_adapt_opts *opts, zmix_session **out, zmix_error *err)
{
    int rc = zmix_examples_check(zmix_runtime_model(rt), ex, err);
    if (rc) return rc;
    if ((rc = zmix_adapt_metric_check(opts->cem.metric, ex, err))) return rc;
    zmix_cem_settings probe = opts->cem;
    probe.n_experts = zmix_runtime_n_experts(rt);
    probe.dim = zmix_adapt_alpha_dim(rt, opts);
    if ((rc = zmix_cem_settings_check(&probe, err))) return rc;
    if (!(opts->validation < 0.0 || opts->validation <= 0.5))
        return zmix_error_set(err, ZMIX_ERANGE,
                              "validation = %g: the held-out fraction must be in [0, 0.5] "
                              "(negative: automatic)",
                              opts->validation);
    zmix_session *s = calloc(1, sizeof *s);
    if (!s) return zmix_error_set(err, ZMIX_ENOMEM, "session: out of memory");
    s->rt = rt;
    s->ex = ex;
    s->opts = *opts;
    s->opts.cem.init_mean = NULL;
    /* A multiple-choice set ranks by choice accuracy under the default metric: the same
     * ranking (accuracy, then the second number), named for what it measures. */
    if (zmix_examples_are_choice(ex) && opts->cem.metric == ZMIX_METRIC_ACCURACY)
        s->opts.cem.metric = ZMIX_METRIC_CHOICE;
    s->compose = zmix_adapt_compose_opts(opts);
    /* A warm start already knows roughly where the answer is: per layer at once. */

    s->n_experts = zmix_runtime_n_experts(rt);
    s->dim = zmix_adapt_alpha_dim(rt, opts);
    zmix_cem_method method;
    int max_generations;
    zmix_adapt_search_shape(opts, s->dim, &method, &s->pop_size, &max_generations);
    if (opts->cem.init_mean) {
        for (int i = 0; i < s->dim; i++)
            if (!isfinite(opts->cem.init_mean[i]) || opts->cem.init_mean[i] < opts->cem.lo ||
                opts->cem.init_mean[i] > opts->cem.hi) {
                free(s);
                return zmix_error_set(err, ZMIX_ERANGE,
                                      "warm start: alpha[%d] = %g is outside the bounds [%g, %g]",
                                      i, opts->cem.init_mean[i], opts->cem.lo, opts->cem.hi);
            }
        s->warm = malloc((size_t)s->dim * sizeof *s->warm);
        if (!s->warm) {
            free(s);
            return zmix_error_set(err, ZMIX_ENOMEM, "session: out of memory");
        }
        memcpy(s->warm, opts->cem.init_mean, (size_t)s->dim * sizeof *s->warm);
        s->opts.cem.init_mean = s->warm;
        if (s->opts.cem.init_std < 0) s->opts.cem.init_std = 0.25 * (opts->cem.hi - opts->cem.lo);
    }
    zmix_adapt_key(rt, ex, opts, s->key);
    size_t rows = (size_t)rows_max(s);
    s->cand = malloc(rows * (size_t)s->dim * sizeof *s->cand);
    s->scores = calloc(rows, sizeof *s->scores);
    s->experts = calloc((size_t)s->n_experts, sizeof *s->experts);
    s->val_experts = calloc((size_t)s->n_experts, sizeof *s->val_experts);
    if (!s->cand || !s->scores || !s->experts || !s->val_experts) {
        zmix_session_free(s);
        return zmix_error_set(err, ZMIX_ENOMEM, "session: out of memory for pop %d × dim %d",
                              s->pop_size, s->dim);
    }
    if ((rc = validation_split(s, err))) {
        zmix_session_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* The engine's settings: the options, with the shape zmix_adapt_search_shape gives; with the
 * sep-cma method (its own population, spending the budget pop_size × max_generations) also
 * without elitism (the best is kept by
 * the engine all the same; a carried member would bias the recombination), from a spread of
 * a fifth of the bounds' width (measured: docs/cem.md). */
void zmix_adapt_search_shape(const zmix_adapt_opts *opts, int dim, zmix_cem_method *method,
                             int *pop_size, int *max_generations)
{
    *method = ZMIX_CEM_METHOD_CEM;
    *pop_size = opts->cem.pop_size;
    *max_generations = opts->cem.max_generations;
    if (opts->cem.method != ZMIX_CEM_METHOD_SEP_CMA) return;
    long budget = (long)opts->cem.pop_size * opts->cem.max_generations;
    *method = ZMIX_CEM_METHOD_SEP_CMA;
    *pop_size = zmix_cem_sep_cma_pop_size(dim);
    long gens = (budget + *pop_size - 1) / *pop_size;
    /* At most 8 × the generations asked for: the history keeps a mean and a spread per
     * coordinate per generation, which a large pop with a small population would multiply. */
    long cap = 8L * opts->cem.max_generations;
    if (gens > cap) gens = cap;
    *max_generations = gens > ZMIX_CEM_MAX_GENERATIONS ? ZMIX_CEM_MAX_GENERATIONS : (int)gens;
}

static zmix_cem_settings engine_settings(const zmix_session *s)
{
    zmix_cem_settings c = s->opts.cem;
    c.n_experts = s->n_experts;
    c.dim = s->dim;
    if (c.stream == 0) c.stream = zmix_adapt_key_stream(s->key);
    zmix_adapt_search_shape(&s->opts, s->dim, &c.method, &c.pop_size, &c.max_generations);
    if (c.method != ZMIX_CEM_METHOD_SEP_CMA) return c;
    c.elitism = 0;
    if (c.init_std < 0) c.init_std = 0.2 * (c.hi - c.lo);
    return c;
}

int zmix_session_create(const zmix_runtime *rt, const zmix_examples *ex,
                        const zmix_adapt_opts *opts, zmix_session **out, zmix_error *err)
{
    zmix_session *s = NULL;
    int rc = session_alloc(rt, ex, opts, &s, err);
    if (rc) return rc;
    zmix_cem_settings c = engine_settings(s);
    rc = zmix_cem_create(&c, &s->cem, err);
    if (rc) {
        zmix_session_free(s);
        return rc;
    }
    s->phase = ZMIX_SESSION_BASELINES;
    *out = s;
    return 0;
}

void zmix_session_free(zmix_session *s)
{
    if (!s) return;
    zmix_cem_free(s->cem);
    free(s->warm);
    free(s->cand);
    free(s->scores);
    free(s->experts);
    free(s->val_experts);
    free(s->train.items);
    free(s->val.items);
    free(s);
}

/* ---- Steps ---------------------------------------------------------------------------- */

static void fill_baseline_rows(zmix_session *s)
{
    /* Row 0 is the base model and is scored from z' = 1, not from an α. Row 1 + k is expert
     * k alone: α_k = 1 on every matrix when per-layer, every other α 0. */
    int k_n = s->n_experts, dim = s->dim;
    memset(s->cand, 0, (size_t)(k_n + 2) * (size_t)dim * sizeof *s->cand);
    for (int k = 0; k < k_n; k++)
        for (int g = 0; g < dim; g += k_n) s->cand[(size_t)(1 + k) * dim + g + k] = 1.0f;
}

int zmix_session_begin_step(zmix_session *s, zmix_error *err)
{
    if (s->phase == ZMIX_SESSION_DONE || s->phase == ZMIX_SESSION_FAILED) return 0;
    if (s->step_open) return s->n_rows - s->first;
    if (s->phase == ZMIX_SESSION_BASELINES) {
        fill_baseline_rows(s);
        s->first = 0;
        s->n_rows = s->n_experts + 1;
    } else if (s->phase == ZMIX_SESSION_VALIDATION) {
        /* The base, each expert and, last, the search's best α, on the held-out examples. */
        fill_baseline_rows(s);
        zmix_score ignored;
        if (zmix_session_best(s, s->cand + (size_t)(s->n_experts + 1) * s->dim, &ignored))
            memset(s->cand + (size_t)(s->n_experts + 1) * s->dim, 0,
                   (size_t)s->dim * sizeof(float));
        s->first = 0;
        s->n_rows = s->n_experts + 2;
    } else {
        int first = zmix_cem_ask(s->cem, s->cand); /* rows of stage_dim */
        if (first < 0) return zmix_error_set(err, first, "session: the engine has stopped");
        s->first = first;
        s->n_rows = s->pop_size;
    }
    s->step_open = 1;
    return s->n_rows - s->first;
}

int zmix_session_split(const zmix_session *s, int n_workers, zmix_work *work, int max_work)
{
    if (!s->step_open || max_work < 1) return 0;
    int n = s->n_rows - s->first;
    if (n_workers < 1) n_workers = 1;
    /* Pieces small enough that every worker gets some and other searches can interleave,
     * large enough that per-call overhead stays small. */
    int chunk = (n + 2 * n_workers - 1) / (2 * n_workers);
    if (chunk < 1) chunk = 1;
    if ((n + chunk - 1) / chunk > max_work) chunk = (n + max_work - 1) / max_work;
    int count = 0;
    for (int b = s->first; b < s->n_rows; b += chunk) {
        zmix_work *w = &work[count++];
        memset(w, 0, sizeof *w);
        w->begin = b;
        w->end = b + chunk < s->n_rows ? b + chunk : s->n_rows;
    }
    return count;
}

/* The model's scorer in this process: the route when none is given. */
static int score_here(void *user, const zmix_score_request *q, zmix_score *out, zmix_error *err)
{
    (void)user;
    if (q->kind == ZMIX_SCORE_Z)
        return zmix_score_z(q->rt, q->rescale, q->ex, q->n, q->rows, q->ctl, out, NULL, err);
    return zmix_score_alpha(q->rt, q->compose, q->ex, q->n, q->rows, q->ctl, out, NULL, err);
}

int zmix_session_score(zmix_session *s, zmix_work *w, const zmix_score_ctl *caller_ctl)
{
    return zmix_session_score_routed(s, w, caller_ctl, NULL, NULL);
}

int zmix_session_score_routed(zmix_session *s, zmix_work *w, const zmix_score_ctl *caller_ctl,
                              zmix_score_route route, void *user)
{
    if (!route) route = score_here;
    zmix_error_clear(&w->err);
    zmix_score_ctl c = {1, NULL, ZMIX_CHOICE_PER_TOKEN}, *ctl = &c;
    if (caller_ctl) c = *caller_ctl;
    c.choice_norm =
        s->opts.cem.metric == ZMIX_METRIC_CHOICE_SUM ? ZMIX_CHOICE_SUM : ZMIX_CHOICE_PER_TOKEN;
    if (!s->step_open || w->begin < s->first || w->end > s->n_rows || w->begin >= w->end)
        return w->rc = zmix_error_set(&w->err, ZMIX_EINVAL,
                                      "session: piece [%d, %d) is not part of the open step",
                                      w->begin, w->end);
    int begin = w->begin;
    const zmix_examples *ex = s->phase == ZMIX_SESSION_VALIDATION ? &s->val : &s->train;
    int baseline_rows = s->phase == ZMIX_SESSION_BASELINES || s->phase == ZMIX_SESSION_VALIDATION;
    if (baseline_rows && begin == 0) {
        size_t zt = zmix_runtime_z_total(s->rt);
        float *ones = malloc((zt ? zt : 1) * sizeof *ones);
        if (!ones) return w->rc = zmix_error_set(&w->err, ZMIX_ENOMEM, "baselines: out of memory");
        for (size_t i = 0; i < zt; i++) ones[i] = 1.0f;
        zmix_score_request q = {ZMIX_SCORE_Z, s->rt, NULL, s->opts.rescale, ex, 1,
                                (int)zt,      ones,  ctl};
        w->rc = route(user, &q, &s->scores[0], &w->err);
        free(ones);
        if (w->rc) {
            if (w->rc != ZMIX_ECANCELED) zmix_error_prefix(&w->err, "scoring the base model");
            return w->rc;
        }
        begin = 1;
    }
    if (begin >= w->end) return w->rc = 0;
    zmix_score_request q = {ZMIX_SCORE_ALPHA,
                            s->rt,
                            &s->compose,
                            s->compose.rescale,
                            ex,
                            w->end - begin,
                            s->dim,
                            s->cand + (size_t)begin * s->dim,
                            ctl};
    w->rc = route(user, &q, s->scores + begin, &w->err);
    if (w->rc && w->rc != ZMIX_ECANCELED) {
        if (s->phase == ZMIX_SESSION_BASELINES)
            zmix_error_prefix(&w->err, "scoring the single experts");
        else if (s->phase == ZMIX_SESSION_VALIDATION)
            zmix_error_prefix(&w->err, "scoring the held-out examples");
        else
            zmix_error_prefix(&w->err, "generation %d", zmix_session_generation(s) + 1);
    }
    return w->rc;
}

static void fail_with(zmix_session *s, const char *msg)
{
    snprintf(s->error, sizeof s->error, "%s", msg);
    s->phase = ZMIX_SESSION_FAILED;
    s->step_open = 0;
}

void zmix_session_fail(zmix_session *s, const char *message)
{
    fail_with(s, message && *message ? message : "failed");
}

void zmix_session_abort_step(zmix_session *s)
{
    s->step_open = 0;
}

/* The base model already reaches the target accuracy on the search examples: no mixture
 * can rank above it (accuracy first, and the result falls back to the base model when it
 * scores better), so the search is not run at all. */
static int base_reaches_target(const zmix_session *s)
{
    zmix_metric m = s->opts.cem.metric;
    return s->have_baselines && m != ZMIX_METRIC_LOGLIK && s->opts.cem.target_accuracy <= 1.0 &&
           s->base.accuracy >= s->opts.cem.target_accuracy;
}

/* A session past its search with no generation run: only base_reaches_target ends one so
 * (derived, not stored, so that a restored checkpoint says the same). */
static int base_solved(const zmix_session *s)
{
    return s->have_baselines && zmix_session_generation(s) == 0 &&
           (s->phase == ZMIX_SESSION_VALIDATION || s->phase == ZMIX_SESSION_DONE);
}

static int update_phase(zmix_session *s, zmix_error *err)
{
    if (s->phase == ZMIX_SESSION_SEARCH && zmix_session_generation(s) == 0 &&
        base_reaches_target(s)) {
        s->phase = s->val.n > 0 ? ZMIX_SESSION_VALIDATION : ZMIX_SESSION_DONE;
        return 0;
    }
    if (s->phase != ZMIX_SESSION_SEARCH || zmix_cem_done(s->cem) == ZMIX_CEM_RUNNING) return 0;
    s->phase = s->val.n > 0 ? ZMIX_SESSION_VALIDATION : ZMIX_SESSION_DONE;
    return 0;
}

int zmix_session_end_step(zmix_session *s, double seconds, zmix_error *err)
{
    if (!s->step_open) return zmix_error_set(err, ZMIX_ESTATE, "session: no step is open");
    s->step_open = 0;
    s->elapsed_s += seconds;
    if (s->phase == ZMIX_SESSION_BASELINES) {
        s->base = s->scores[0];
        memcpy(s->experts, s->scores + 1, (size_t)s->n_experts * sizeof *s->experts);
        s->have_baselines = 1;
        s->phase = ZMIX_SESSION_SEARCH;
        return update_phase(s, err);
    }
    if (s->phase == ZMIX_SESSION_VALIDATION) {
        s->val_base = s->scores[0];
        memcpy(s->val_experts, s->scores + 1, (size_t)s->n_experts * sizeof *s->val_experts);
        s->val_best = s->scores[s->n_experts + 1];
        s->have_validation = 1;
        s->phase = ZMIX_SESSION_DONE;
        return 0;
    }
    /* A single NaN is a degenerate candidate (e.g. every α clamped to 0, so z′ has no mass
     * to rescale): the engine ranks it below everything and the search goes on. A generation
     * with nothing but NaN means the model or the experts are broken. */
    int n_nan = 0;
    for (int i = s->first; i < s->n_rows; i++)
        n_nan += isnan(s->scores[i].accuracy) || isnan(s->scores[i].loglik);
    if (n_nan > 0 && n_nan == s->n_rows - s->first) {
        zmix_error_set(err, ZMIX_ENUMERIC,
                       "degenerate: no finite score: every candidate of generation %d scored NaN",
                       zmix_session_generation(s) + 1);
        fail_with(s, err->msg);
        return ZMIX_ENUMERIC;
    }
    int rc = zmix_cem_tell(s->cem, s->scores, err);
    if (rc) {
        fail_with(s, err->msg);
        return rc;
    }
    return update_phase(s, err);
}

/* ---- Accessors ------------------------------------------------------------------------ */

int zmix_session_generation(const zmix_session *s)
{
    return zmix_cem_generation(s->cem);
}

void zmix_session_counts(const zmix_session *s, long *evaluations, long *skipped)
{
    *evaluations = zmix_cem_evaluations(s->cem);
    *skipped = zmix_cem_skipped(s->cem);
}

int zmix_session_best(const zmix_session *s, float *alpha, zmix_score *score)
{
    return zmix_cem_best(s->cem, alpha, score);
}

double zmix_session_mean_std(const zmix_session *s)
{
    const double *sd = zmix_cem_std(s->cem);
    int d = zmix_cem_dim(s->cem);
    double m = 0;
    for (int i = 0; i < d; i++) m += sd[i];
    return d > 0 ? m / d : 0;
}

zmix_session_phase zmix_session_phase_get(const zmix_session *s)
{
    return s->phase;
}

zmix_cem_stop zmix_session_stop(const zmix_session *s)
{
    return base_solved(s) ? ZMIX_CEM_STOP_TARGET : zmix_cem_done(s->cem);
}

const char *zmix_session_error(const zmix_session *s)
{
    return s->error;
}

const zmix_cem *zmix_session_cem(const zmix_session *s)
{
    return s->cem;
}

int zmix_session_dim(const zmix_session *s)
{
    return s->dim;
}

double zmix_session_elapsed(const zmix_session *s)
{
    return s->elapsed_s;
}

const char *zmix_session_key(const zmix_session *s)
{
    return s->key;
}

int zmix_session_baselines(const zmix_session *s, zmix_score *base, zmix_score *experts)
{
    if (!s->have_baselines) return ZMIX_ESTATE;
    if (base) *base = s->base;
    if (experts) memcpy(experts, s->experts, (size_t)s->n_experts * sizeof *experts);
    return 0;
}

/* ---- Checkpoint ----------------------------------------------------------------------- */

/* Layout (inside the record framing of every zmix file): u32 phase, u32 have_baselines,
 * base (f64 accuracy, f64 loglik), u32 K, K × (f64, f64), f64 elapsed_s, then (version 2)
 * u32 have_validation, the held-out scores of the best, the base and the K experts (f64, f64
 * each), then blob32 the failure message, blob32 the engine's zmix_cem_save bytes. */
int zmix_session_save(const zmix_session *s, uint8_t **buf, size_t *len, zmix_error *err)
{
    uint8_t *cem_bytes = NULL;
    size_t cem_len = 0;
    int rc = zmix_cem_save(s->cem, &cem_bytes, &cem_len, err);
    if (rc) return rc;
    rec_writer w;
    recw_begin(&w, SESSION_MAGIC, SESSION_VERSION);
    recw_u32(&w, (uint32_t)s->phase);
    recw_u32(&w, (uint32_t)s->have_baselines);
    recw_f64(&w, s->base.accuracy);
    recw_f64(&w, s->base.loglik);
    recw_u32(&w, (uint32_t)s->n_experts);
    for (int k = 0; k < s->n_experts; k++) {
        recw_f64(&w, s->experts[k].accuracy);
        recw_f64(&w, s->experts[k].loglik);
    }
    recw_f64(&w, s->elapsed_s);
    recw_u32(&w, (uint32_t)s->have_validation);
    recw_f64(&w, s->val_best.accuracy);
    recw_f64(&w, s->val_best.loglik);
    recw_f64(&w, s->val_base.accuracy);
    recw_f64(&w, s->val_base.loglik);
    for (int k = 0; k < s->n_experts; k++) {
        recw_f64(&w, s->val_experts[k].accuracy);
        recw_f64(&w, s->val_experts[k].loglik);
    }
    recw_blob32(&w, s->error, strlen(s->error));
    recw_blob32(&w, cem_bytes, cem_len);
    free(cem_bytes);
    rc = recw_finish(&w, NULL, err);
    if (rc) {
        recw_free(&w);
        return rc;
    }
    *buf = w.buf;
    *len = w.len;
    return 0;
}

int zmix_session_restore(const zmix_runtime *rt, const zmix_examples *ex,
                         const zmix_adapt_opts *opts, const uint8_t *buf, size_t len,
                         zmix_session **out, zmix_error *err)
{
    rec_reader r;
    uint32_t version;
    int rc = rec_open(buf, len, SESSION_MAGIC, SESSION_VERSION, &version, &r, err);
    if (rc) return zmix_error_prefix(err, "session checkpoint");
    zmix_session *s = NULL;
    rc = session_alloc(rt, ex, opts, &s, err);
    if (rc) return rc;
    uint32_t phase = recr_u32(&r);
    s->have_baselines = recr_u32(&r) != 0;
    s->base.accuracy = recr_f64(&r);
    s->base.loglik = recr_f64(&r);
    uint32_t k_n = recr_u32(&r);
    if (!r.failed && k_n != (uint32_t)s->n_experts) {
        zmix_session_free(s);
        return zmix_error_set(err, ZMIX_ESTATE,
                              "session checkpoint: made with %u experts, the runtime has %d",
                              (unsigned)k_n, s->n_experts);
    }
    for (int k = 0; k < s->n_experts && !r.failed; k++) {
        s->experts[k].accuracy = recr_f64(&r);
        s->experts[k].loglik = recr_f64(&r);
    }
    s->elapsed_s = recr_f64(&r);
    if (version >= 2) {
        s->have_validation = recr_u32(&r) != 0;
        s->val_best.accuracy = recr_f64(&r);
        s->val_best.loglik = recr_f64(&r);
        s->val_base.accuracy = recr_f64(&r);
        s->val_base.loglik = recr_f64(&r);
        for (int k = 0; k < s->n_experts && !r.failed; k++) {
            s->val_experts[k].accuracy = recr_f64(&r);
            s->val_experts[k].loglik = recr_f64(&r);
        }
    }
    size_t elen = 0, clen = 0;
    const uint8_t *e = recr_blob32(&r, &elen);
    const uint8_t *c = recr_blob32(&r, &clen);
    uint32_t stage = 0;
    size_t slen = 0;
    if (version == 3) { /* the two-stage per-layer search's stage and shared engine */
        stage = recr_u32(&r);
        recr_blob32(&r, &slen);
    }
    rc = recr_end(&r, "session checkpoint", err);
    if (!rc && (phase > ZMIX_SESSION_FAILED || elen >= sizeof s->error))
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "session checkpoint: phase %u or error length %zu "
                            "out of range",
                            (unsigned)phase, elen);
    if (!rc && (stage != 0 || slen != 0 || (version < 4 && s->opts.per_layer)))
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "session checkpoint: version %u of a per-layer search, whose method "
                            "has changed since (it restarts)",
                            (unsigned)version);
    if (!rc) rc = zmix_cem_restore(c, clen, &s->cem, err);
    int want = s->dim;
    if (!rc && (zmix_cem_dim(s->cem) != want || zmix_cem_pop_size(s->cem) != s->pop_size))
        rc = zmix_error_set(err, ZMIX_ESTATE,
                            "session checkpoint: searches dim %d with pop %d, the settings ask "
                            "for dim %d with pop %d",
                            zmix_cem_dim(s->cem), zmix_cem_pop_size(s->cem), want, s->pop_size);
    if (rc) {
        zmix_session_free(s);
        return rc;
    }
    memcpy(s->error, e, elen);
    s->error[elen] = '\0';
    s->phase = (zmix_session_phase)phase;
    if ((rc = update_phase(s, err))) {
        zmix_session_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- Result --------------------------------------------------------------------------- */

/* The 95% Wilson score interval of a proportion p measured on n trials. */
static void wilson(double p, int n, double *lo, double *hi)
{
    if (n <= 0 || isnan(p)) {
        *lo = *hi = NAN;
        return;
    }
    const double z = 1.959963984540054, z2 = z * z;
    double denom = 1.0 + z2 / n, centre = (p + z2 / (2.0 * n)) / denom;
    double half = z * sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * (double)n)) / denom;
    *lo = fmax(0.0, centre - half);
    *hi = fmin(1.0, centre + half);
}

static void warn(zmix_adapt_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(zmix_adapt_result *r, const char *fmt, ...)
{
    if (r->n_warnings >= ZMIX_ADAPT_MAX_WARNINGS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->warnings[r->n_warnings++], sizeof r->warnings[0], fmt, ap);
    va_end(ap);
}

/* The base model in reach: a mixture of experts cannot express z' = 1, so when the unchanged
 * model beats every candidate on the search examples the result is the unchanged model, said
 * out loud, rather than something worse served in silence. */
static void select_base_if_better(const zmix_session *s, zmix_adapt_result *r)
{
    if (!s->have_baselines || isnan(r->best.accuracy)) return;
    if (zmix_score_cmp(&s->base, &r->best, s->opts.cem.metric) <= 0) return;
    warn(r,
         "the base model scores better on the search examples (accuracy %.3f, loglik %.4f) "
         "than any mixture found (%.3f, %.4f): the result is the unchanged model (z' = 1)",
         s->base.accuracy, s->base.loglik, r->best.accuracy, r->best.loglik);
    r->base_weight = 1.0f;
    r->best = s->base;
    for (int i = 0; i < r->dim; i++) r->alpha[i] = 0.0f;
    for (size_t i = 0; r->z && i < r->z_total; i++) r->z[i] = 1.0f;
}

static void judge(const zmix_session *s, zmix_adapt_result *r)
{
    if (r->stop == ZMIX_CEM_STOP_FLAT)
        warn(r, "flat: every candidate of a generation scored the same, so the experts cannot "
                "change the outcome on these examples (one expert with the rescale on, or "
                "experts that do not differ)");
    else if (r->stop != ZMIX_CEM_RUNNING && s->opts.cem.target_accuracy <= 1.0 &&
             r->best.accuracy < s->opts.cem.target_accuracy)
        warn(r, "stalled below target: best accuracy %.3f after %d generations (target %.3f)",
             r->best.accuracy, r->generations, s->opts.cem.target_accuracy);
    if (!r->have_validation && r->stop != ZMIX_CEM_RUNNING && s->val.n == 0)
        warn(r,
             "no held-out estimate: with %d examples none were held out, so the accuracy "
             "reported is measured on the examples the search used",
             s->ex->n);
    if (!r->have_validation) return;
    double gap = r->best.accuracy - r->val_best.accuracy;
    if (gap > 0.25)
        warn(r,
             "held-out accuracy %.3f is %.3f below the accuracy on the search examples (%.3f): "
             "the mix may fit its examples more than the task",
             r->val_best.accuracy, gap, r->best.accuracy);
    if (zmix_score_cmp(&r->val_best, &r->val_base, s->opts.cem.metric) < 0 && r->base_weight == 0)
        warn(r,
             "on the held-out examples the result (accuracy %.3f) does worse than the base "
             "model (%.3f)",
             r->val_best.accuracy, r->val_base.accuracy);
}

/* A result holds what its document says: the margin only steers a search (it is not
 * reported, nor kept by the session's checkpoint for the baselines), so it is cleared. */
static void public_scores(zmix_adapt_result *r)
{
    r->best.margin = r->base.margin = r->val_best.margin = r->val_base.margin = 0.0;
    for (int k = 0; k < r->n_experts; k++) {
        if (r->experts) r->experts[k].margin = 0.0;
        if (r->val_experts) r->val_experts[k].margin = 0.0;
    }
    for (int g = 0; g < r->n_history; g++)
        r->history[g].best.margin = r->history[g].elite_mean.margin =
            r->history[g].pop_mean.margin = 0.0;
}

int zmix_session_result(const zmix_session *s, zmix_adapt_result *out, zmix_error *err)
{
    zmix_score base = s->base;
    if (!s->have_baselines) base.accuracy = base.loglik = NAN;
    zmix_score *experts = malloc((size_t)s->n_experts * sizeof *experts);
    if (!experts) return zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory");
    for (int k = 0; k < s->n_experts; k++) {
        experts[k] = s->experts[k];
        if (!s->have_baselines) experts[k].accuracy = experts[k].loglik = NAN;
    }
    int rc = zmix_adapt_result_build(s->rt, &s->opts, s->cem, &base, experts, s->ex->n,
                                     s->elapsed_s, out, err);
    free(experts);
    if (rc) return rc;
    snprintf(out->key, sizeof out->key, "%s", s->key);
    zmix_adapt_examples_digest(s->ex, out->examples_digest);
    if (s->warm) {
        out->warm_alpha = malloc((size_t)s->dim * sizeof *out->warm_alpha);
        if (!out->warm_alpha) {
            zmix_adapt_result_free(out);
            return zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory");
        }
        for (int i = 0; i < s->dim; i++) out->warm_alpha[i] = (float)s->warm[i];
        snprintf(out->warm_from, sizeof out->warm_from, "%s", s->opts.warm_from);
    }
    out->n_train = s->train.n;
    out->n_validation = s->val.n;
    if (base_solved(s)) {
        /* The unchanged model, as select_base_if_better makes it, without a search. */
        if (!out->z) out->z = malloc((out->z_total ? out->z_total : 1) * sizeof *out->z);
        if (!out->z) {
            zmix_adapt_result_free(out);
            return zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory");
        }
        for (size_t i = 0; i < out->z_total; i++) out->z[i] = 1.0f;
        for (int i = 0; i < out->dim; i++) out->alpha[i] = 0.0f;
        out->best = s->base;
        out->base_weight = 1.0f;
        out->stop = ZMIX_CEM_STOP_TARGET;
        warn(out,
             "the base model already reaches the target accuracy on the search examples "
             "(accuracy %.3f, target %.3f): no search was run; the result is the unchanged "
             "model (z' = 1)",
             s->base.accuracy, s->opts.cem.target_accuracy);
    }
    select_base_if_better(s, out);
    if (s->have_validation) {
        out->val_experts = malloc((size_t)s->n_experts * sizeof *out->val_experts);
        if (!out->val_experts) {
            zmix_adapt_result_free(out);
            return zmix_error_set(err, ZMIX_ENOMEM, "result: out of memory");
        }
        memcpy(out->val_experts, s->val_experts, (size_t)s->n_experts * sizeof *s->val_experts);
        out->have_validation = 1;
        out->val_best = out->base_weight > 0 ? s->val_base : s->val_best;
        out->val_base = s->val_base;
        wilson(out->val_best.accuracy, s->val.n, &out->val_acc_lo, &out->val_acc_hi);
    }
    judge(s, out);
    public_scores(out);
    return 0;
}
