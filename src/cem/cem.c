/*
 * The CEM engine: a diagonal Gaussian over α, sampled, clamped (and optionally normalised),
 * ranked by zmix_score_cmp, refitted to the elites. See include/zmix/cem.h for the contract
 * and docs/cem.md for the choices made where the reference is silent.
 *
 * Determinism is the main design constraint. Every random draw happens in ask, from one PCG
 * stream, in a fixed order (member by member, coordinate by coordinate), and the number of
 * draws depends only on the settings and on whether a best member is carried over. Ranking
 * breaks ties by member index. So the populations depend only on the settings and on the
 * scores told back, never on how the caller split the scoring.
 */
#include "zmix/cem.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cem_internal.h"

/* Large enough for any real search (an 8B model with per-layer α over every matrix and 64
 * experts is ~15 000 coordinates), small enough that pop × dim never overflows an int. */
#define CEM_MAX_DIM         (1 << 20)
#define CEM_MAX_POP         (1 << 16)
#define CEM_MAX_POP_DIM     (1L << 24) /* pop × dim: the population and its noise, 192 MB */
#define CEM_MAX_GENERATIONS ZMIX_CEM_MAX_GENERATIONS

const char *zmix_cem_stop_name(zmix_cem_stop reason)
{
    switch (reason) {
    case ZMIX_CEM_RUNNING: return "running";
    case ZMIX_CEM_STOP_MAX_GENERATIONS: return "max_generations";
    case ZMIX_CEM_STOP_STD_TOLERANCE: return "std_tolerance";
    case ZMIX_CEM_STOP_PATIENCE: return "patience";
    case ZMIX_CEM_STOP_TARGET: return "target";
    case ZMIX_CEM_STOP_FLAT: return "flat";
    }
    return "unknown";
}

const char *zmix_cem_method_name(zmix_cem_method method)
{
    switch (method) {
    case ZMIX_CEM_METHOD_CEM: return "cem";
    case ZMIX_CEM_METHOD_SEP_CMA: return "sep-cma";
    }
    return "unknown";
}

int zmix_cem_sep_cma_pop_size(int dim)
{
    return 4 + (int)floor(3.0 * log(dim > 1 ? (double)dim : 1.0));
}

void zmix_cem_settings_default(zmix_cem_settings *s)
{
    memset(s, 0, sizeof *s);
    s->dim = 0;
    s->n_experts = 0;
    s->pop_size = 32;
    s->elite_ratio = 0.2;
    s->lo = 0.0;
    s->hi = 1.0;
    s->init_mean = NULL;
    s->init_std = -1.0;
    s->ema = 0.0;
    s->std_floor = 0.02; /* docs/cem.md, "Defaults": measured with bench/bench_search */
    s->max_generations = 50;
    s->elitism = 1;
    s->metric = ZMIX_METRIC_ACCURACY;
    s->normalize = 0;
    s->std_tol = 1e-4;
    s->patience = 0;
    s->target_accuracy = 1.0;
    s->target_loglik_tol = 1e-3;
    s->seed = 0;
    s->stream = 0;
    s->method = ZMIX_CEM_METHOD_CEM;
}

int zmix_cem_settings_check(const zmix_cem_settings *s, zmix_error *err)
{
    if (!s) return zmix_error_set(err, ZMIX_EINVAL, "cem settings: NULL");
    if (s->dim <= 0 || s->dim > CEM_MAX_DIM)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: dim = %d, must be in [1, %d]",
                              s->dim, CEM_MAX_DIM);
    if (s->n_experts <= 0)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: n_experts = %d, must be >= 1",
                              s->n_experts);
    if (s->dim % s->n_experts != 0)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "cem settings: dim = %d is not a multiple of n_experts = %d", s->dim,
                              s->n_experts);
    if (s->pop_size < 2 || s->pop_size > CEM_MAX_POP)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: pop_size = %d, must be in [2, %d]",
                              s->pop_size, CEM_MAX_POP);
    if ((long)s->pop_size * s->dim > CEM_MAX_POP_DIM)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "cem settings: pop_size × dim = %d × %d exceeds %ld", s->pop_size,
                              s->dim, CEM_MAX_POP_DIM);
    if (!isfinite(s->elite_ratio) || s->elite_ratio <= 0.0 || s->elite_ratio > 1.0)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: elite_ratio = %g, must be in (0, 1]",
                              s->elite_ratio);
    if (!isfinite(s->lo) || !isfinite(s->hi))
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: bounds [%g, %g] are not finite",
                              s->lo, s->hi);
    if (s->lo >= s->hi)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "cem settings: bounds [%g, %g]: min must be below max", s->lo, s->hi);
    if (s->init_mean) {
        for (int d = 0; d < s->dim; d++) {
            double m = s->init_mean[d];
            if (!isfinite(m) || m < s->lo || m > s->hi)
                return zmix_error_set(err, ZMIX_EINVAL,
                                      "cem settings: init_mean[%d] = %g, must lie in the bounds "
                                      "[%g, %g]",
                                      d, m, s->lo, s->hi);
        }
    }
    if (isnan(s->init_std) || isinf(s->init_std))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "cem settings: init_std = %g, must be finite (< 0 for the default)",
                              s->init_std);
    if (!isfinite(s->ema) || s->ema < 0.0 || s->ema >= 1.0)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: ema = %g, must be in [0, 1)",
                              s->ema);
    if (!isfinite(s->std_floor) || s->std_floor < 0.0)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: std_floor = %g, must be >= 0",
                              s->std_floor);
    if (s->max_generations < 1 || s->max_generations > CEM_MAX_GENERATIONS)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "cem settings: max_generations = %d, must be in [1, %d]",
                              s->max_generations, CEM_MAX_GENERATIONS);
    if (s->elitism != 0 && s->elitism != 1)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: elitism = %d, must be 0 or 1",
                              s->elitism);
    if (s->metric != ZMIX_METRIC_ACCURACY && s->metric != ZMIX_METRIC_LOGLIK &&
        s->metric != ZMIX_METRIC_CHOICE && s->metric != ZMIX_METRIC_CHOICE_SUM)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: metric = %d is not a zmix_metric",
                              (int)s->metric);
    if (s->normalize != 0 && s->normalize != 1)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: normalize = %d, must be 0 or 1",
                              s->normalize);
    if (s->normalize && s->lo < 0.0)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "cem settings: normalize needs bounds min >= 0 (got %g): a group "
                              "with a negative sum cannot be scaled to sum 1",
                              s->lo);
    if (!isfinite(s->std_tol) || s->std_tol < 0.0)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: std_tol = %g, must be >= 0",
                              s->std_tol);
    if (s->patience < 0)
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: patience = %d, must be >= 0",
                              s->patience);
    if (isnan(s->target_accuracy))
        return zmix_error_set(err, ZMIX_EINVAL, "cem settings: target_accuracy is NaN");
    if (s->method != ZMIX_CEM_METHOD_CEM && s->method != ZMIX_CEM_METHOD_SEP_CMA)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "cem settings: method = %d is not a zmix_cem_method", (int)s->method);
    if (!isfinite(s->target_loglik_tol) || s->target_loglik_tol < 0.0)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "cem settings: target_loglik_tol = %g, must be >= 0",
                              s->target_loglik_tol);
    return 0;
}

/* Every member scored in this generation has the same accuracy and a log-likelihood within
 * float noise of the others: the candidates cannot be told apart (one expert whose scale the
 * rescale undoes, identical experts), so further generations would only sample noise. */
static int generation_is_flat(const zmix_score *sc, int first, int n, int by_margin)
{
    if (n - first < 2) return 0;
    double lo = INFINITY, hi = -INFINITY, mlo = INFINITY, mhi = -INFINITY;
    for (int i = first; i < n; i++) {
        if (isnan(sc[i].accuracy) || isnan(sc[i].loglik)) return 0;
        if (sc[i].accuracy != sc[first].accuracy) return 0;
        if (sc[i].loglik < lo) lo = sc[i].loglik;
        if (sc[i].loglik > hi) hi = sc[i].loglik;
        if (by_margin && isnan(sc[i].margin)) return 0;
        if (sc[i].margin < mlo) mlo = sc[i].margin;
        if (sc[i].margin > mhi) mhi = sc[i].margin;
    }
    int margin_flat = !by_margin || mhi - mlo <= 1e-6 * fmax(1.0, fabs(mhi));
    return margin_flat && hi - lo <= 1e-6 * fmax(1.0, fabs(hi));
}

int cem_n_elites(int pop_size, double elite_ratio)
{
    /* The epsilon keeps ratios like 0.29 × 100 = 28.999999999999996 at the intended 29. */
    double e = floor(elite_ratio * (double)pop_size + 1e-9);
    int n = (int)e;
    /* At least two elites: one alone has no spread, so its std is 0 and a search without a
     * floor stops after one generation however little it has seen. */
    if (n < 2) n = 2;
    if (n > pop_size) n = pop_size;
    return n;
}

static void *xcalloc(size_t n, size_t size)
{
    return calloc(n ? n : 1, size);
}

void cem_free_storage(zmix_cem *c)
{
    free(c->mean);
    free(c->std);
    free(c->pop);
    free(c->noise);
    free(c->best_alpha);
    free(c->order);
    free(c->scores);
    free(c->hist);
    free(c->hist_mean);
    free(c->hist_std);
    free(c->cov);
    free(c->path_sigma);
    free(c->path_cov);
}

int cem_alloc(const zmix_cem_settings *s, zmix_cem **out, zmix_error *err)
{
    zmix_cem *c = calloc(1, sizeof *c);
    if (!c) return zmix_error_set(err, ZMIX_ENOMEM, "cem: out of memory");
    c->s = *s;
    c->s.init_mean = NULL;
    c->n_elites = cem_n_elites(s->pop_size, s->elite_ratio);
    size_t dim = (size_t)s->dim, pop = (size_t)s->pop_size;
    c->mean = xcalloc(dim, sizeof *c->mean);
    c->std = xcalloc(dim, sizeof *c->std);
    c->pop = xcalloc(pop * dim, sizeof *c->pop);
    c->noise = xcalloc(pop * dim, sizeof *c->noise);
    c->best_alpha = xcalloc(dim, sizeof *c->best_alpha);
    c->order = xcalloc(pop, sizeof *c->order);
    c->scores = xcalloc(pop, sizeof *c->scores);
    c->cov = xcalloc(dim, sizeof *c->cov);
    c->path_sigma = xcalloc(dim, sizeof *c->path_sigma);
    c->path_cov = xcalloc(dim, sizeof *c->path_cov);
    if (!c->mean || !c->std || !c->pop || !c->noise || !c->best_alpha || !c->order || !c->scores ||
        !c->cov || !c->path_sigma || !c->path_cov) {
        cem_free_storage(c);
        free(c);
        return zmix_error_set(err, ZMIX_ENOMEM, "cem: out of memory for pop %d × dim %d",
                              s->pop_size, s->dim);
    }
    *out = c;
    return 0;
}

int cem_history_reserve(zmix_cem *c, int n, zmix_error *err)
{
    if (n <= c->hist_cap) return 0;
    int cap = c->hist_cap ? c->hist_cap : 16;
    while (cap < n) cap *= 2;
    if (cap > c->s.max_generations) cap = c->s.max_generations;
    if (cap < n) cap = n;
    size_t dim = (size_t)c->s.dim;
    zmix_cem_gen_stats *h = realloc(c->hist, (size_t)cap * sizeof *h);
    if (!h) return zmix_error_set(err, ZMIX_ENOMEM, "cem: out of memory for history");
    c->hist = h;
    double *m = realloc(c->hist_mean, (size_t)cap * dim * sizeof *m);
    if (!m) return zmix_error_set(err, ZMIX_ENOMEM, "cem: out of memory for history");
    c->hist_mean = m;
    double *sd = realloc(c->hist_std, (size_t)cap * dim * sizeof *sd);
    if (!sd) return zmix_error_set(err, ZMIX_ENOMEM, "cem: out of memory for history");
    c->hist_std = sd;
    c->hist_cap = cap;
    return 0;
}

int zmix_cem_create(const zmix_cem_settings *s, zmix_cem **out, zmix_error *err)
{
    int rc = zmix_cem_settings_check(s, err);
    if (rc) return rc;
    zmix_cem *c;
    rc = cem_alloc(s, &c, err);
    if (rc) return rc;
    double std0 = s->init_std < 0.0 ? (s->hi - s->lo) / 2.0 : s->init_std;
    if (std0 < s->std_floor) std0 = s->std_floor;
    c->sigma = std0;
    for (int d = 0; d < s->dim; d++) {
        c->mean[d] = s->init_mean ? s->init_mean[d] : 1.0 / (double)s->n_experts;
        c->std[d] = std0;
        c->cov[d] = 1.0;
    }
    pcg32_seed(&c->rng, s->seed, s->stream);
    *out = c;
    return 0;
}

void zmix_cem_free(zmix_cem *cem)
{
    if (!cem) return;
    cem_free_storage(cem);
    free(cem);
}

/* Scales each group of K coefficients to sum 1. Bounds have min >= 0 here (checked), so a
 * group sums to 0 only when every member was clamped to 0; it then becomes the uniform mix,
 * which is the only point of the simplex with no preferred expert. */
static void normalize_groups(float *row, int dim, int k)
{
    for (int g = 0; g < dim; g += k) {
        double sum = 0.0;
        for (int j = 0; j < k; j++) sum += row[g + j];
        for (int j = 0; j < k; j++)
            row[g + j] = sum > 0.0 ? (float)(row[g + j] / sum) : (float)(1.0 / k);
    }
}

int zmix_cem_ask(zmix_cem *c, float *pop)
{
    if (c->stop != ZMIX_CEM_RUNNING) return ZMIX_ESTATE;
    int dim = c->s.dim, n = c->s.pop_size;
    if (!c->pop_ready) {
        int first = (c->s.elitism && c->have_best) ? 1 : 0;
        if (first) memcpy(c->pop, c->best_alpha, (size_t)dim * sizeof *c->pop);
        pcg32_normal_fill(&c->rng, c->noise, (size_t)(n - first) * (size_t)dim);
        /* Clamped in float, the precision the scorer sees, so a stored sample never lies
         * outside [(float)lo, (float)hi]. */
        float lo = (float)c->s.lo, hi = (float)c->s.hi;
        for (int i = first; i < n; i++) {
            float *row = c->pop + (size_t)i * dim;
            const double *eps = c->noise + (size_t)(i - first) * dim;
            for (int d = 0; d < dim; d++) {
                float x = (float)(c->mean[d] + c->std[d] * eps[d]);
                row[d] = x < lo ? lo : (x > hi ? hi : x);
            }
            if (c->s.normalize) normalize_groups(row, dim, c->s.n_experts);
        }
        c->first_unscored = first;
        c->pop_ready = 1;
    }
    if (pop) memcpy(pop, c->pop, (size_t)n * dim * sizeof *pop);
    return c->first_unscored;
}

/* Indices sorted best first; ties keep index order so the carried-over best (member 0) wins
 * a tie against a new member and the order never depends on the sort algorithm. A stable
 * merge sort: O(n log n) for the largest populations the engine accepts (an insertion sort
 * took seconds at 65,536 members, found by the checkpoint fuzzer). tmp holds n ints. */
/* The order a method ranks members in: the metric's, or for separable CMA-ES the margin
 * first (a smooth stand-in for the accuracy, which takes few values on a few examples and
 * leaves a many-coordinate search blind), then the metric's. */
static int steer_cmp(const zmix_score *a, const zmix_score *b, const zmix_cem_settings *s)
{
    if (s->method == ZMIX_CEM_METHOD_SEP_CMA && s->metric != ZMIX_METRIC_LOGLIK) {
        int an = isnan(a->margin), bn = isnan(b->margin);
        if (an || bn) {
            if (an != bn) return bn - an;
        } else if (a->margin != b->margin) {
            return a->margin > b->margin ? 1 : -1;
        }
    }
    return zmix_score_cmp(a, b, s->metric);
}

static void rank_members(const zmix_score *sc, int n, const zmix_cem_settings *s, int *order,
                         int *tmp)
{
    for (int i = 0; i < n; i++) order[i] = i;
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n;
            int hi = lo + 2 * width < n ? lo + 2 * width : n;
            int a = lo, b = mid, k = lo;
            /* Take from the right only when strictly better: equal members keep their order. */
            while (a < mid && b < hi)
                tmp[k++] = steer_cmp(&sc[order[b]], &sc[order[a]], s) > 0 ? order[b++] : order[a++];
            while (a < mid) tmp[k++] = order[a++];
            while (b < hi) tmp[k++] = order[b++];
        }
        memcpy(order, tmp, (size_t)n * sizeof *order);
    }
}

/* Mean accuracy and loglik of n members (idx[0..n) or 0..n), over the members whose score
 * is not NaN: one broken candidate should not blank the statistics of a generation. */
static zmix_score mean_score(const zmix_score *sc, const int *idx, int n)
{
    zmix_score m = {0.0, 0.0, 0.0};
    int na = 0, nl = 0;
    for (int j = 0; j < n; j++) {
        const zmix_score *s = &sc[idx ? idx[j] : j];
        if (!isnan(s->accuracy)) m.accuracy += s->accuracy, na++;
        if (!isnan(s->loglik)) m.loglik += s->loglik, nl++;
    }
    m.accuracy = na ? m.accuracy / na : NAN;
    m.loglik = nl ? m.loglik / nl : NAN;
    return m;
}

/* Separable CMA-ES (Ros & Hansen 2008; the constants of Hansen's tutorial, with the
 * separable variant's learning rates scaled by (n + 2) / 3). Parents: the better half. */
int sep_cma_parents(int pop_size)
{
    int mu = pop_size / 2;
    return mu < 1 ? 1 : mu;
}

static void sep_cma_update(zmix_cem *c, int mu)
{
    int dim = c->s.dim;
    double n = dim, wsum = 0.0, w2 = 0.0;
    for (int i = 0; i < mu; i++) wsum += log(mu + 0.5) - log(i + 1.0);
#define SEP_CMA_WEIGHT(i) ((log(mu + 0.5) - log((i) + 1.0)) / wsum)
    for (int i = 0; i < mu; i++) w2 += SEP_CMA_WEIGHT(i) * SEP_CMA_WEIGHT(i);
    double mueff = 1.0 / w2;
    double cs = (mueff + 2.0) / (n + mueff + 5.0);
    double ds = 1.0 + 2.0 * fmax(0.0, sqrt((mueff - 1.0) / (n + 1.0)) - 1.0) + cs;
    double cc = (4.0 + mueff / n) / (n + 4.0 + 2.0 * mueff / n);
    double c1 = 2.0 / ((n + 1.3) * (n + 1.3) + mueff);
    double cmu =
        fmin(1.0 - c1, 2.0 * (mueff - 2.0 + 1.0 / mueff) / ((n + 2.0) * (n + 2.0) + mueff));
    c1 *= (n + 2.0) / 3.0;
    cmu *= (n + 2.0) / 3.0;
    if (c1 + cmu > 1.0) cmu = 1.0 - c1;
    double chi_n = sqrt(n) * (1.0 - 1.0 / (4.0 * n) + 1.0 / (21.0 * n * n));
    double sigma = c->sigma, ps_norm2 = 0.0;
    /* The steps of the members as scored (clamped, normalised), so the mean stays inside the
     * bounds, as with the CEM refit. */
    for (int d = 0; d < dim; d++) {
        double old = c->mean[d], m = 0.0;
        for (int i = 0; i < mu; i++) m += SEP_CMA_WEIGHT(i) * c->pop[(size_t)c->order[i] * dim + d];
        c->mean[d] = m;
        double y = (m - old) / sigma;
        c->path_sigma[d] =
            (1.0 - cs) * c->path_sigma[d] + sqrt(cs * (2.0 - cs) * mueff) * y / sqrt(c->cov[d]);
        ps_norm2 += c->path_sigma[d] * c->path_sigma[d];
        c->noise[d] = old; /* the old mean, for the covariance update below */
    }
    double ps_norm = sqrt(ps_norm2);
    double decay = 1.0 - pow(1.0 - cs, 2.0 * (c->generation + 1));
    int h_sigma = ps_norm / sqrt(decay > 0.0 ? decay : 1.0) / chi_n < 1.4 + 2.0 / (n + 1.0);
    for (int d = 0; d < dim; d++) {
        double old = c->noise[d];
        double y = (c->mean[d] - old) / sigma;
        c->path_cov[d] =
            (1.0 - cc) * c->path_cov[d] + (h_sigma ? sqrt(cc * (2.0 - cc) * mueff) * y : 0.0);
        double rank_mu = 0.0;
        for (int i = 0; i < mu; i++) {
            double yi = (c->pop[(size_t)c->order[i] * dim + d] - old) / sigma;
            rank_mu += SEP_CMA_WEIGHT(i) * yi * yi;
        }
        c->cov[d] =
            (1.0 - c1 - cmu) * c->cov[d] + c1 * c->path_cov[d] * c->path_cov[d] + cmu * rank_mu;
    }
#undef SEP_CMA_WEIGHT
    c->sigma = sigma * exp((cs / ds) * (ps_norm / chi_n - 1.0));
    /* A spread wider than the bounds only clamps more samples onto them. */
    double width = c->s.hi - c->s.lo;
    for (int d = 0; d < dim; d++) {
        double sd = c->sigma * sqrt(c->cov[d]);
        if (!(sd <= width)) sd = width;
        if (sd < c->s.std_floor) sd = c->s.std_floor;
        c->std[d] = sd;
    }
}

int zmix_cem_tell(zmix_cem *c, const zmix_score *scores, zmix_error *err)
{
    if (c->stop != ZMIX_CEM_RUNNING)
        return zmix_error_set(err, ZMIX_ESTATE, "cem: the search has stopped (%s)",
                              zmix_cem_stop_name(c->stop));
    if (!c->pop_ready)
        return zmix_error_set(err, ZMIX_ESTATE, "cem: tell without a population (call ask)");
    int dim = c->s.dim, n = c->s.pop_size, first = c->first_unscored;
    /* NaN is accepted and ranks below every number (zmix_score_cmp): a candidate whose
     * model is numerically broken (e.g. every α clamped to 0, so z' = 0 and the rescale
     * divides by zero) is a legitimate worst sample, not a reason to abort the search. */
    for (int i = first; i < n; i++) {
        double a = scores[i].accuracy;
        if (!isnan(a) && (a < 0.0 || a > 1.0))
            return zmix_error_set(err, ZMIX_ENUMERIC,
                                  "cem: member %d: accuracy = %g, must be in [0, 1]", i, a);
        if (scores[i].loglik > 0.0 && isinf(scores[i].loglik))
            return zmix_error_set(err, ZMIX_ENUMERIC, "cem: member %d: loglik is +inf", i);
    }
    int rc = cem_history_reserve(c, c->hist_len + 1, err);
    if (rc) return rc;
    int *rank_tmp = malloc((size_t)n * sizeof *rank_tmp);
    if (!rank_tmp) return zmix_error_set(err, ZMIX_ENOMEM, "cem: out of memory ranking %d", n);

    zmix_score *sc = c->scores;
    if (first) sc[0] = c->best_score;
    for (int i = first; i < n; i++) sc[i] = scores[i];
    c->evaluations += n - first;
    c->skipped += first;

    rank_members(sc, n, &c->s, c->order, rank_tmp);
    free(rank_tmp);
    int sep_cma = c->s.method == ZMIX_CEM_METHOD_SEP_CMA;
    int ne = sep_cma ? sep_cma_parents(n) : c->n_elites;

    zmix_cem_gen_stats st;
    memset(&st, 0, sizeof st);
    st.elite_mean = mean_score(sc, c->order, ne);
    st.pop_mean = mean_score(sc, NULL, n);

    /* Refit to the elites as scored (clamped, normalised): maximum-likelihood mean and
     * standard deviation (divided by the elite count), then EMA, then the floor. */
    double ema = c->s.ema;
    double std_sum = 0.0;
    int all_below_tol = 1;
    if (sep_cma) sep_cma_update(c, ne);
    for (int d = 0; d < dim && sep_cma; d++) {
        std_sum += c->std[d];
        if (!(c->std[d] < c->s.std_tol)) all_below_tol = 0;
    }
    for (int d = 0; d < dim && !sep_cma; d++) {
        double m = 0.0;
        for (int e = 0; e < ne; e++) m += c->pop[(size_t)c->order[e] * dim + d];
        m /= ne;
        double v = 0.0;
        for (int e = 0; e < ne; e++) {
            double x = c->pop[(size_t)c->order[e] * dim + d] - m;
            v += x * x;
        }
        double sd = sqrt(v / ne);
        c->mean[d] = ema * c->mean[d] + (1.0 - ema) * m;
        sd = ema * c->std[d] + (1.0 - ema) * sd;
        if (sd < c->s.std_floor) sd = c->s.std_floor;
        c->std[d] = sd;
        std_sum += sd;
        if (!(sd < c->s.std_tol)) all_below_tol = 0;
    }
    st.mean_std = std_sum / dim;

    int had_best = c->have_best;
    zmix_score prev = c->best_score;
    /* The best is by the metric, whatever order steered the update: the first member that
     * no other beats (with the metric's own ranking, the first in rank order). */
    int top_i = c->order[0];
    for (int i = 0; sep_cma && i < n; i++)
        if (zmix_score_cmp(&sc[i], &sc[top_i], c->s.metric) > 0 ||
            (i < top_i && zmix_score_cmp(&sc[i], &sc[top_i], c->s.metric) == 0))
            top_i = i;
    const zmix_score *top = &sc[top_i];
    int improved = 0;
    if (!had_best || zmix_score_cmp(top, &c->best_score, c->s.metric) > 0) {
        c->best_score = *top;
        memcpy(c->best_alpha, c->pop + (size_t)top_i * dim, (size_t)dim * sizeof(float));
        c->have_best = 1;
        improved = 1;
    }
    c->since_improve = improved ? 0 : c->since_improve + 1;
    st.best = c->best_score;
    int flat = generation_is_flat(sc, first, n, sep_cma && c->s.metric != ZMIX_METRIC_LOGLIK);

    int g = c->hist_len;
    c->hist[g] = st;
    memcpy(c->hist_mean + (size_t)g * dim, c->mean, (size_t)dim * sizeof(double));
    memcpy(c->hist_std + (size_t)g * dim, c->std, (size_t)dim * sizeof(double));
    c->hist_len++;
    c->generation++;
    c->pop_ready = 0;

    /* Target: the best already met the accuracy target before this generation and still
     * does, and its log-likelihood rose by less than the tolerance. Requiring two
     * generations avoids stopping on the generation where accuracy first reaches the
     * target (its log-likelihood may be lower than the previous best's). */
    if (had_best && prev.accuracy >= c->s.target_accuracy &&
        c->best_score.accuracy >= c->s.target_accuracy &&
        c->best_score.loglik - prev.loglik < c->s.target_loglik_tol)
        c->stop = ZMIX_CEM_STOP_TARGET;
    else if (c->s.std_tol > 0.0 && all_below_tol)
        c->stop = ZMIX_CEM_STOP_STD_TOLERANCE;
    else if (flat)
        c->stop = ZMIX_CEM_STOP_FLAT;
    else if (c->s.patience > 0 && c->since_improve >= c->s.patience)
        c->stop = ZMIX_CEM_STOP_PATIENCE;
    else if (c->generation >= c->s.max_generations)
        c->stop = ZMIX_CEM_STOP_MAX_GENERATIONS;
    return 0;
}

zmix_cem_stop zmix_cem_done(const zmix_cem *c)
{
    return c->stop;
}

int zmix_cem_generation(const zmix_cem *c)
{
    return c->generation;
}

int zmix_cem_dim(const zmix_cem *c)
{
    return c->s.dim;
}

int zmix_cem_pop_size(const zmix_cem *c)
{
    return c->s.pop_size;
}

int zmix_cem_n_elites(const zmix_cem *c)
{
    return c->n_elites;
}

void zmix_cem_get_settings(const zmix_cem *c, zmix_cem_settings *s)
{
    *s = c->s;
}

int zmix_cem_best(const zmix_cem *c, float *alpha, zmix_score *score)
{
    if (!c->have_best) return ZMIX_ESTATE;
    if (alpha) memcpy(alpha, c->best_alpha, (size_t)c->s.dim * sizeof *alpha);
    if (score) *score = c->best_score;
    return 0;
}

const double *zmix_cem_mean(const zmix_cem *c)
{
    return c->mean;
}

const double *zmix_cem_std(const zmix_cem *c)
{
    return c->std;
}

long zmix_cem_evaluations(const zmix_cem *c)
{
    return c->evaluations;
}

long zmix_cem_skipped(const zmix_cem *c)
{
    return c->skipped;
}

int zmix_cem_history_len(const zmix_cem *c)
{
    return c->hist_len;
}

const zmix_cem_gen_stats *zmix_cem_history(const zmix_cem *c)
{
    return c->hist;
}

const double *zmix_cem_history_mean(const zmix_cem *c, int g)
{
    if (g < 0 || g >= c->hist_len) return NULL;
    return c->hist_mean + (size_t)g * c->s.dim;
}

const double *zmix_cem_history_std(const zmix_cem *c, int g)
{
    if (g < 0 || g >= c->hist_len) return NULL;
    return c->hist_std + (size_t)g * c->s.dim;
}
