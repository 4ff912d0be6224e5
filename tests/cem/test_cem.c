/*
 * The CEM engine on plain functions: quadratics mapped to scores (loglik = -f, or accuracy
 * buckets with loglik as the tie-breaker), with no model anywhere.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/crc32c.h"
#include "util/pcg.h"
#include "zmix/cem.h"

/* Debian 12's cmocka predates assert_double_equal. */
#define assert_close(a, b, tol)                                                                    \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (tol)))                                                             \
            fail_msg("%s = %.17g, expected %.17g (tolerance %g)", #a, a_, b_, (double)(tol));      \
    } while (0)

#define MAXD 16
#define MAXP 64

typedef double (*objective_fn)(const float *x, int dim);

static const double centre[MAXD] = {0.15, 0.7, 0.4, 0.85, 0.3, 0.55, 0.2, 0.65};

static double separable(const float *x, int dim)
{
    double f = 0.0;
    for (int d = 0; d < dim; d++) f += (d + 1.0) * (x[d] - centre[d]) * (x[d] - centre[d]);
    return f;
}

/* A rotated, elongated bowl: f = Σ_d (u_d)² / w_d with u = R(x - c) for pairwise 45° rotations;
 * the coordinates interact, so a diagonal search must follow a diagonal valley. */
static double nonseparable(const float *x, int dim)
{
    double f = 0.0;
    for (int d = 0; d + 1 < dim; d += 2) {
        double a = x[d] - centre[d], b = x[d + 1] - centre[d + 1];
        double u = (a + b) / sqrt(2.0), v = (a - b) / sqrt(2.0);
        f += u * u + 10.0 * v * v;
    }
    return f;
}

static zmix_score score_loglik(objective_fn fn, const float *x, int dim)
{
    zmix_score s = {0.0, -fn(x, dim), 0.0};
    return s;
}

/* Accuracy in steps of 1/8, as with 8 examples: example j is "right" when f < 0.02·(j+1), so
 * every α with f < 0.02 ties at accuracy 1 and loglik breaks the ties. */
static zmix_score score_buckets(objective_fn fn, const float *x, int dim)
{
    double f = fn(x, dim);
    int right = 0;
    for (int j = 0; j < 8; j++) right += f < 0.02 * (j + 1);
    double acc = right / 8.0;
    zmix_score s = {acc, -f, 0.0};
    return s;
}

/* The engine's mechanics without the adaptive defaults (std floor, accuracy target), which
 * would otherwise end these searches on their own terms. */
static zmix_cem_settings base_settings(int dim, int k)
{
    zmix_cem_settings s;
    zmix_cem_settings_default(&s);
    s.std_floor = 0.0;
    s.target_accuracy = 2.0;
    s.dim = dim;
    s.n_experts = k;
    s.seed = 1234;
    s.stream = 7;
    return s;
}

/* Runs a search to its stop, scoring every unscored row in order. */
static zmix_cem *run(const zmix_cem_settings *s, objective_fn fn, int buckets)
{
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(s, &c, &err), 0);
    float pop[MAXP * MAXD];
    zmix_score sc[MAXP];
    while (!zmix_cem_done(c)) {
        int first = zmix_cem_ask(c, pop);
        assert_true(first == 0 || first == 1);
        for (int i = first; i < s->pop_size; i++)
            sc[i] = buckets ? score_buckets(fn, pop + i * s->dim, s->dim)
                            : score_loglik(fn, pop + i * s->dim, s->dim);
        assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
    }
    return c;
}

static void assert_near_centre(const zmix_cem *c, int dim, double tol)
{
    float best[MAXD];
    assert_int_equal(zmix_cem_best(c, best, NULL), 0);
    for (int d = 0; d < dim; d++) {
        double e = fabs(best[d] - centre[d]);
        if (e > tol)
            fail_msg("coordinate %d: best %g, optimum %g (|err| %g > %g)", d, best[d], centre[d], e,
                     tol);
    }
}

static void test_separable_quadratic(void **state)
{
    zmix_cem_settings s = base_settings(4, 4);
    s.metric = ZMIX_METRIC_LOGLIK;
    s.max_generations = 60;
    zmix_cem *c = run(&s, separable, 0);
    assert_near_centre(c, 4, 0.01);
    zmix_cem_free(c);
}

static void test_nonseparable_quadratic(void **state)
{
    zmix_cem_settings s = base_settings(6, 3);
    s.metric = ZMIX_METRIC_LOGLIK;
    s.pop_size = 48;
    s.max_generations = 120;
    s.std_floor = 1e-3; /* keeps the search moving along the valley */
    zmix_cem *c = run(&s, nonseparable, 0);
    assert_near_centre(c, 6, 0.03);
    zmix_cem_free(c);
}

static void test_sep_cma_quadratic(void **state)
{
    zmix_cem_settings s = base_settings(8, 4);
    s.method = ZMIX_CEM_METHOD_SEP_CMA;
    s.metric = ZMIX_METRIC_LOGLIK;
    s.pop_size = zmix_cem_sep_cma_pop_size(8);
    assert_int_equal(s.pop_size, 10);
    s.elitism = 0;
    s.init_std = 0.2;
    s.max_generations = 150;
    zmix_cem *c = run(&s, separable, 0);
    assert_near_centre(c, 8, 0.01);
    zmix_cem_free(c);
}

/* Accuracy that says nothing until the answer is hit (as exact match on a few examples far
 * from the answer) and a margin that measures the distance: the margin steers separable
 * CMA-ES to the answer, and the best is chosen by accuracy. The CEM method, which ranks by
 * accuracy and loglik only, sees a flat landscape and stops. */
static zmix_score score_needle(const float *x, int dim)
{
    double f = separable(x, dim);
    zmix_score sc = {f < 1e-3 ? 1.0 : 0.0, -1.0, f < 1e-3 ? 0.0 : -f};
    return sc;
}

static void test_sep_cma_steers_by_margin(void **state)
{
    for (int method = 0; method < 2; method++) {
        zmix_cem_settings s = base_settings(8, 4);
        s.method = method ? ZMIX_CEM_METHOD_SEP_CMA : ZMIX_CEM_METHOD_CEM;
        s.pop_size = method ? zmix_cem_sep_cma_pop_size(8) : 32;
        s.elitism = !method;
        s.init_std = 0.2;
        s.max_generations = 200;
        s.target_accuracy = 1.0;
        zmix_cem *c = NULL;
        zmix_error err;
        assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
        float pop[MAXP * MAXD];
        zmix_score sc[MAXP];
        while (!zmix_cem_done(c)) {
            int first = zmix_cem_ask(c, pop);
            for (int i = first; i < s.pop_size; i++) sc[i] = score_needle(pop + i * s.dim, s.dim);
            assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
        }
        zmix_score best;
        assert_int_equal(zmix_cem_best(c, NULL, &best), 0);
        if (method) {
            assert_true(best.accuracy == 1.0);
            assert_int_equal(zmix_cem_done(c), ZMIX_CEM_STOP_TARGET);
        } else {
            assert_true(best.accuracy == 0.0);
            assert_int_equal(zmix_cem_done(c), ZMIX_CEM_STOP_FLAT);
        }
        zmix_cem_free(c);
    }
}

static void test_accuracy_buckets_with_loglik_ties(void **state)
{
    /* Accuracy saturates at 1 well before the optimum; only the loglik tie-break can lead
     * the search the rest of the way, which is the point of the lexicographic rank. */
    zmix_cem_settings s = base_settings(4, 4);
    s.max_generations = 60;
    zmix_cem *c = run(&s, separable, 1);
    zmix_score best;
    assert_int_equal(zmix_cem_best(c, NULL, &best), 0);
    assert_true(best.accuracy == 1.0);
    assert_near_centre(c, 4, 0.01);
    zmix_cem_free(c);
}

static void test_bounds_respected(void **state)
{
    /* Optimum outside the box: the search must end on the boundary and never sample out. */
    zmix_cem_settings s = base_settings(3, 3);
    s.lo = 0.2;
    s.hi = 0.6;
    s.metric = ZMIX_METRIC_LOGLIK;
    s.init_std = 1.0; /* wide: many raw samples fall outside and must be clamped */
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    float pop[MAXP * MAXD];
    zmix_score sc[MAXP];
    int clamped_lo = 0, clamped_hi = 0;
    while (!zmix_cem_done(c)) {
        int first = zmix_cem_ask(c, pop);
        for (int i = 0; i < s.pop_size * s.dim; i++) {
            assert_true(pop[i] >= (float)s.lo && pop[i] <= (float)s.hi);
            clamped_lo += pop[i] == (float)s.lo;
            clamped_hi += pop[i] == (float)s.hi;
        }
        for (int i = first; i < s.pop_size; i++) {
            const float *x = pop + i * s.dim;
            /* optimum (0, 1, 0.4): below, above, inside */
            double f = x[0] * x[0] + (x[1] - 1.0) * (x[1] - 1.0) + (x[2] - 0.4) * (x[2] - 0.4);
            sc[i].accuracy = 0.0;
            sc[i].loglik = -f;
        }
        assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
    }
    assert_true(clamped_lo > 0 && clamped_hi > 0);
    float best[3];
    zmix_cem_best(c, best, NULL);
    assert_close(best[0], (float)s.lo, 0.0);
    assert_close(best[1], (float)s.hi, 0.0);
    assert_close(best[2], 0.4f, 0.01);
    zmix_cem_free(c);
}

/* The first population and the update, recomputed from the published formulas by hand: the
 * same PCG stream gives the draws, x = clamp(mean + std·ε), elites by score, the refit is the
 * elites' mean and standard deviation (÷ elite count), then EMA, then the floor. */
static void test_hand_computed_generation(void **state)
{
    zmix_cem_settings s = base_settings(2, 2);
    s.pop_size = 5;
    s.elite_ratio = 0.4; /* floor(2.0) = 2 elites */
    s.ema = 0.25;
    s.std_floor = 0.05;
    s.init_std = 0.3;
    s.seed = 42;
    s.stream = 54;
    double init_mean[2] = {0.5, 0.25};
    s.init_mean = init_mean;
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    assert_int_equal(zmix_cem_n_elites(c), 2);

    pcg32 rng;
    pcg32_seed(&rng, 42, 54);
    double eps[10];
    pcg32_normal_fill(&rng, eps, 10);
    float expect[10];
    for (int i = 0; i < 5; i++)
        for (int d = 0; d < 2; d++) {
            float x = (float)(init_mean[d] + 0.3 * eps[i * 2 + d]);
            expect[i * 2 + d] = x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
        }
    float pop[10];
    assert_int_equal(zmix_cem_ask(c, pop), 0);
    assert_memory_equal(pop, expect, sizeof pop);

    /* Member 3 best (accuracy), members 1 and 4 tie on accuracy: loglik picks 4. */
    zmix_score sc[5] = {
        {0.25, -1.0, 0.0}, {0.5, -2.0, 0.0}, {0.0, -0.1, 0.0}, {0.75, -3.0, 0.0}, {0.5, -1.5, 0.0}};
    assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
    const double *mean = zmix_cem_mean(c), *sd = zmix_cem_std(c);
    for (int d = 0; d < 2; d++) {
        double a = pop[3 * 2 + d], b = pop[4 * 2 + d];
        double m = (a + b) / 2.0;
        double v = sqrt(((a - m) * (a - m) + (b - m) * (b - m)) / 2.0);
        double em = 0.25 * init_mean[d] + 0.75 * m;
        double es = fmax(0.25 * 0.3 + 0.75 * v, 0.05);
        assert_close(mean[d], em, 1e-15);
        assert_close(sd[d], es, 1e-15);
    }
    float best[2];
    zmix_score bs;
    assert_int_equal(zmix_cem_best(c, best, &bs), 0);
    assert_memory_equal(best, pop + 3 * 2, sizeof best);
    assert_close(bs.accuracy, 0.75, 0.0);
    const zmix_cem_gen_stats *h = zmix_cem_history(c);
    assert_int_equal(zmix_cem_history_len(c), 1);
    assert_close(h[0].elite_mean.accuracy, 0.625, 1e-15);
    assert_close(h[0].elite_mean.loglik, -2.25, 1e-15);
    assert_close(h[0].pop_mean.accuracy, 0.4, 1e-15);
    assert_close(h[0].pop_mean.loglik, -1.52, 1e-15);
    assert_close(h[0].mean_std, (sd[0] + sd[1]) / 2.0, 1e-15);
    assert_memory_equal(zmix_cem_history_mean(c, 0), mean, 2 * sizeof(double));

    /* Generation 2: member 0 is the best, carried over, not to be scored; the remaining four
     * rows come from the next 8 draws of the stream with the refitted distribution. */
    double eps2[8];
    pcg32_normal_fill(&rng, eps2, 8);
    float pop2[10];
    assert_int_equal(zmix_cem_ask(c, pop2), 1);
    assert_memory_equal(pop2, best, sizeof best);
    for (int i = 1; i < 5; i++)
        for (int d = 0; d < 2; d++) {
            float x = (float)(mean[d] + sd[d] * eps2[(i - 1) * 2 + d]);
            x = x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
            assert_true(pop2[i * 2 + d] == x);
        }
    assert_int_equal(zmix_cem_evaluations(c), 5);
    zmix_cem_free(c);
}

static void test_elitism_never_loses_best(void **state)
{
    /* Noisy scores unrelated to α: without elitism the best-so-far would be resampled away;
     * with it, member 0 is always the best and the best score never decreases. */
    zmix_cem_settings s = base_settings(4, 4);
    s.max_generations = 30;
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    pcg32 noise;
    pcg32_seed(&noise, 99, 1);
    float pop[MAXP * MAXD];
    zmix_score sc[MAXP];
    zmix_score prev = {-1.0, -INFINITY, 0.0};
    float prev_alpha[MAXD];
    int gen = 0;
    while (!zmix_cem_done(c)) {
        int first = zmix_cem_ask(c, pop);
        assert_int_equal(first, gen > 0 ? 1 : 0);
        if (gen > 0) assert_memory_equal(pop, prev_alpha, s.dim * sizeof(float));
        for (int i = 0; i < s.pop_size; i++) {
            /* row 0 gets a terrible score: it must be ignored (the known score is used) */
            sc[i].accuracy = i < first ? 0.0 : pcg32_bounded(&noise, 5) / 4.0;
            sc[i].loglik = i < first ? -1e9 : -pcg32_uniform(&noise);
        }
        assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
        zmix_score best;
        zmix_cem_best(c, prev_alpha, &best);
        assert_true(zmix_score_cmp(&best, &prev, ZMIX_METRIC_ACCURACY) >= 0);
        prev = best;
        gen++;
    }
    assert_int_equal(zmix_cem_skipped(c), gen - 1);
    assert_int_equal(zmix_cem_evaluations(c), (long)gen * s.pop_size - (gen - 1));
    zmix_cem_free(c);
}

static void test_no_elitism_scores_everyone(void **state)
{
    zmix_cem_settings s = base_settings(2, 2);
    s.elitism = 0;
    s.max_generations = 3;
    zmix_cem *c = run(&s, separable, 0);
    assert_int_equal(zmix_cem_skipped(c), 0);
    assert_int_equal(zmix_cem_evaluations(c), 3 * s.pop_size);
    zmix_cem_free(c);
}

static zmix_cem *run_constant(const zmix_cem_settings *s, zmix_score value)
{
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(s, &c, &err), 0);
    float pop[MAXP * MAXD];
    zmix_score sc[MAXP];
    /* Member i a little below member 0, so that the generation is not flat (which stops a
     * search at once, test_stop_flat) and nothing after the first generation improves. */
    for (int i = 0; i < MAXP; i++) sc[i] = value, sc[i].loglik -= 1e-3 * i;
    while (!zmix_cem_done(c)) {
        zmix_cem_ask(c, pop);
        assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
    }
    return c;
}

static void test_stop_max_generations(void **state)
{
    zmix_cem_settings s = base_settings(3, 3);
    s.max_generations = 7;
    s.std_tol = 0.0;
    zmix_cem *c = run(&s, separable, 0);
    assert_int_equal(zmix_cem_done(c), ZMIX_CEM_STOP_MAX_GENERATIONS);
    assert_int_equal(zmix_cem_generation(c), 7);
    assert_int_equal(zmix_cem_history_len(c), 7);
    assert_string_equal(zmix_cem_stop_name(zmix_cem_done(c)), "max_generations");
    /* a stopped engine refuses to go on */
    zmix_error err;
    zmix_score sc[MAXP] = {{0}};
    assert_int_equal(zmix_cem_ask(c, NULL), ZMIX_ESTATE);
    assert_int_equal(zmix_cem_tell(c, sc, &err), ZMIX_ESTATE);
    zmix_cem_free(c);
}

static void test_stop_std_tolerance(void **state)
{
    zmix_cem_settings s = base_settings(3, 3);
    s.metric = ZMIX_METRIC_LOGLIK;
    s.max_generations = 500;
    s.std_tol = 1e-3;
    zmix_cem *c = run(&s, separable, 0);
    assert_int_equal(zmix_cem_done(c), ZMIX_CEM_STOP_STD_TOLERANCE);
    assert_true(zmix_cem_generation(c) < 500);
    int g = zmix_cem_generation(c);
    for (int d = 0; d < 3; d++) assert_true(zmix_cem_std(c)[d] < 1e-3);
    /* the generation before did not qualify */
    const double *prev = zmix_cem_history_std(c, g - 2);
    int below = 1;
    for (int d = 0; d < 3; d++) below &= prev[d] < 1e-3;
    assert_false(below);
    zmix_cem_free(c);
}

static void test_stop_flat(void **state)
{
    /* Every candidate scores the same (one expert whose scale the rescale undoes, identical
     * experts): the first generation shows it and the search stops there, "flat". Scores
     * that differ only by float noise count as the same. */
    zmix_cem_settings s = base_settings(3, 3);
    zmix_error err;
    zmix_cem *c = NULL;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    float pop[MAXP * MAXD];
    zmix_score sc[MAXP];
    for (int i = 0; i < MAXP; i++) sc[i] = (zmix_score){0.25, -2.0 + 1e-9 * (i % 3), 0.0};
    zmix_cem_ask(c, pop);
    assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
    assert_int_equal(zmix_cem_done(c), ZMIX_CEM_STOP_FLAT);
    assert_string_equal(zmix_cem_stop_name(ZMIX_CEM_STOP_FLAT), "flat");
    assert_int_equal(zmix_cem_generation(c), 1);
    zmix_cem_free(c);
    /* One member apart in accuracy is not flat. */
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    zmix_cem_ask(c, pop);
    sc[5].accuracy = 0.5;
    assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
    assert_int_equal(zmix_cem_done(c), ZMIX_CEM_RUNNING);
    zmix_cem_free(c);
}

static void test_stop_patience(void **state)
{
    /* Constant scores: generation 1 sets the best, then nothing improves. With patience 4
     * the search stops after generation 1 + 4. */
    zmix_cem_settings s = base_settings(3, 3);
    s.patience = 4;
    s.std_tol = 0.0;
    zmix_score v = {0.5, -1.0, 0.0};
    zmix_cem *c = run_constant(&s, v);
    assert_int_equal(zmix_cem_done(c), ZMIX_CEM_STOP_PATIENCE);
    assert_int_equal(zmix_cem_generation(c), 5);
    zmix_cem_free(c);
}

static void test_stop_target(void **state)
{
    /* Accuracy target 1.0 met from generation 1 with a flat loglik: stops at generation 2,
     * the first with a previous generation to compare the loglik with. */
    zmix_cem_settings s = base_settings(3, 3);
    s.target_accuracy = 1.0;
    s.target_loglik_tol = 1e-3;
    s.std_tol = 0.0;
    zmix_score v = {1.0, -0.5, 0.0};
    zmix_cem *c = run_constant(&s, v);
    assert_int_equal(zmix_cem_done(c), ZMIX_CEM_STOP_TARGET);
    assert_int_equal(zmix_cem_generation(c), 2);
    zmix_cem_free(c);

    /* Target met but the loglik still climbing fast: must not stop on the target. */
    s.max_generations = 6;
    zmix_cem *c2 = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c2, &err), 0);
    float pop[MAXP * MAXD];
    zmix_score sc[MAXP];
    int g = 0;
    while (!zmix_cem_done(c2)) {
        int first = zmix_cem_ask(c2, pop);
        for (int i = first; i < s.pop_size; i++) {
            sc[i].accuracy = 1.0;
            sc[i].loglik = -10.0 + g + i * 1e-3;
        }
        assert_int_equal(zmix_cem_tell(c2, sc, &err), 0);
        g++;
    }
    assert_int_equal(zmix_cem_done(c2), ZMIX_CEM_STOP_MAX_GENERATIONS);
    zmix_cem_free(c2);

    /* Accuracy below the target: never stops on the target. */
    s.max_generations = 4;
    zmix_score low = {0.9, -0.5, 0.0};
    zmix_cem *c3 = run_constant(&s, low);
    assert_int_equal(zmix_cem_done(c3), ZMIX_CEM_STOP_MAX_GENERATIONS);
    zmix_cem_free(c3);
}

/* Scores the population as a pool of `workers` would: rows dealt round-robin, each worker
 * going through its rows from the end, in chunks. Only the scores matter to the engine, so
 * the final α must be bit-identical to the in-order run. */
static zmix_cem *run_split(const zmix_cem_settings *s, int workers, int chunk)
{
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(s, &c, &err), 0);
    float pop[MAXP * MAXD];
    zmix_score sc[MAXP];
    while (!zmix_cem_done(c)) {
        int first = zmix_cem_ask(c, pop);
        for (int i = 0; i < MAXP; i++) sc[i].accuracy = sc[i].loglik = NAN;
        for (int w = workers - 1; w >= 0; w--) {
            int mine[MAXP], n = 0;
            for (int i = first + w; i < s->pop_size; i += workers) mine[n++] = i;
            for (int start = n; start > 0; start -= chunk)
                for (int j = start - 1; j >= 0 && j >= start - chunk; j--)
                    sc[mine[j]] = score_buckets(nonseparable, pop + mine[j] * s->dim, s->dim);
        }
        assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
    }
    return c;
}

static void test_reproducible_across_splits(void **state)
{
    zmix_cem_settings s = base_settings(4, 2);
    s.max_generations = 25;
    s.ema = 0.1;
    s.std_floor = 0.01;
    zmix_cem *ref = run_split(&s, 1, 1000);
    float a_ref[MAXD];
    zmix_cem_best(ref, a_ref, NULL);
    int configs[][2] = {{2, 1}, {3, 5}, {8, 2}, {31, 1}};
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        zmix_cem *c = run_split(&s, configs[k][0], configs[k][1]);
        float a[MAXD];
        zmix_cem_best(c, a, NULL);
        assert_memory_equal(a, a_ref, s.dim * sizeof(float));
        assert_memory_equal(zmix_cem_mean(c), zmix_cem_mean(ref), s.dim * sizeof(double));
        assert_memory_equal(zmix_cem_std(c), zmix_cem_std(ref), s.dim * sizeof(double));
        zmix_cem_free(c);
    }
    /* and another seed or stream gives another search */
    s.stream = 8;
    zmix_cem *other = run_split(&s, 1, 1000);
    assert_memory_not_equal(zmix_cem_mean(other), zmix_cem_mean(ref), s.dim * sizeof(double));
    zmix_cem_free(other);
    zmix_cem_free(ref);
}

static void step(zmix_cem *c, const zmix_cem_settings *s)
{
    float pop[MAXP * MAXD];
    zmix_score sc[MAXP];
    zmix_error err;
    int first = zmix_cem_ask(c, pop);
    for (int i = first; i < s->pop_size; i++)
        sc[i] = score_buckets(separable, pop + i * s->dim, s->dim);
    assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
}

static void assert_same_engine(const zmix_cem *a, const zmix_cem *b)
{
    uint8_t *ba, *bb;
    size_t la, lb;
    zmix_error err;
    assert_int_equal(zmix_cem_save(a, &ba, &la, &err), 0);
    assert_int_equal(zmix_cem_save(b, &bb, &lb, &err), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(ba, bb, la);
    free(ba);
    free(bb);
}

static void test_sep_cma_save_restore_continues_identically(void **state)
{
    zmix_cem_settings s = base_settings(8, 4);
    s.method = ZMIX_CEM_METHOD_SEP_CMA;
    s.pop_size = zmix_cem_sep_cma_pop_size(8);
    s.elitism = 0;
    s.max_generations = 30;
    zmix_cem *straight = run(&s, separable, 1);
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    for (int g = 0; g < 30; g++) {
        step(c, &s);
        if (g % 4 != 1) continue;
        uint8_t *buf;
        size_t len;
        assert_int_equal(zmix_cem_save(c, &buf, &len, &err), 0);
        zmix_cem_free(c);
        assert_int_equal(zmix_cem_restore(buf, len, &c, &err), 0);
        free(buf);
    }
    assert_same_engine(c, straight);
    zmix_cem_settings back;
    zmix_cem_get_settings(c, &back);
    assert_int_equal(back.method, ZMIX_CEM_METHOD_SEP_CMA);
    /* the step size moved: the state saved is not just the CEM's */
    const double *sd = zmix_cem_std(c);
    assert_true(sd[0] != 0.5);
    zmix_cem_free(c);
    zmix_cem_free(straight);
}

static void test_save_restore_continues_identically(void **state)
{
    zmix_cem_settings s = base_settings(6, 3);
    s.max_generations = 20;
    s.ema = 0.2;
    zmix_cem *straight = run(&s, separable, 1);

    /* interrupted after 7 generations, and once more between an ask and its tell */
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    for (int g = 0; g < 7; g++) step(c, &s);
    uint8_t *buf;
    size_t len;
    assert_int_equal(zmix_cem_save(c, &buf, &len, &err), 0);
    zmix_cem_free(c);
    assert_int_equal(zmix_cem_restore(buf, len, &c, &err), 0);
    free(buf);
    for (int g = 0; g < 5; g++) step(c, &s);
    float pop_before[MAXP * MAXD], pop_after[MAXP * MAXD];
    int first = zmix_cem_ask(c, pop_before);
    assert_int_equal(zmix_cem_save(c, &buf, &len, &err), 0);
    zmix_cem_free(c);
    assert_int_equal(zmix_cem_restore(buf, len, &c, &err), 0);
    assert_int_equal(zmix_cem_ask(c, pop_after), first);
    assert_memory_equal(pop_before, pop_after, s.pop_size * s.dim * sizeof(float));
    while (!zmix_cem_done(c)) step(c, &s);

    assert_same_engine(c, straight);
    float a[MAXD], b[MAXD];
    zmix_cem_best(c, a, NULL);
    zmix_cem_best(straight, b, NULL);
    assert_memory_equal(a, b, s.dim * sizeof(float));
    assert_int_equal(zmix_cem_history_len(c), 20);

    /* every single flipped byte and every truncation is refused */
    for (size_t i = 0; i < len; i += 7) {
        buf[i] ^= 0x10;
        zmix_cem *bad = NULL;
        assert_int_equal(zmix_cem_restore(buf, len, &bad, &err), ZMIX_EFORMAT);
        assert_null(bad);
        buf[i] ^= 0x10;
    }
    zmix_cem *bad = NULL;
    assert_int_equal(zmix_cem_restore(buf, len - 1, &bad, &err), ZMIX_EFORMAT);
    assert_int_equal(zmix_cem_restore(buf, 10, &bad, &err), ZMIX_EFORMAT);
    assert_int_equal(zmix_cem_restore(buf, len, &bad, &err), 0);
    zmix_cem_free(bad);
    free(buf);
    zmix_cem_free(c);
    zmix_cem_free(straight);
}

/* Rewrites the record frame's trailing CRC-32C so an edited checkpoint reaches the field checks. */
static void fix_crc(uint8_t *buf, size_t len)
{
    uint32_t c = crc32c_update(0, buf, len - 4);
    for (int i = 0; i < 4; i++) buf[len - 4 + (size_t)i] = (uint8_t)(c >> (8 * i));
}

static void assert_restore_refused(const uint8_t *buf, size_t len, const char *needle)
{
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_restore(buf, len, &c, &err), ZMIX_EFORMAT);
    assert_null(c);
    if (!strstr(err.msg, needle)) fail_msg("\"%s\" does not mention \"%s\"", err.msg, needle);
}

static void test_checkpoint_is_a_record(void **state)
{
    (void)state;
    zmix_cem_settings s = base_settings(4, 2);
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    step(c, &s);
    uint8_t *buf;
    size_t len;
    assert_int_equal(zmix_cem_save(c, &buf, &len, &err), 0);
    zmix_cem_free(c);
    /* The util record frame: magic, version 2, reserved 0, payload length, CRC-32C. */
    assert_memory_equal(buf, "ZMIXCEMS", 8);
    assert_int_equal(buf[8], 2);
    uint64_t payload = 0;
    for (int i = 0; i < 8; i++) payload |= (uint64_t)buf[16 + i] << (8 * i);
    assert_true(payload == len - 28);

    /* A field behind a valid CRC is still checked, and named: dim (the first field) = 0. */
    uint8_t *edited = malloc(len);
    assert_non_null(edited);
    memcpy(edited, buf, len);
    memset(edited + 24, 0, 4);
    fix_crc(edited, len);
    assert_restore_refused(edited, len, "cem checkpoint: cem settings: dim = 0");
    /* The frame's own checks come first, under the checkpoint's name. */
    memcpy(edited, buf, len);
    edited[len - 1] ^= 1;
    assert_restore_refused(edited, len, "cem checkpoint: checksum mismatch");
    assert_restore_refused(buf, 27, "cem checkpoint: truncated");
    /* The format before the record frame is recognised and refused as such. */
    memcpy(edited, "ZMIXCEM", 8);
    assert_restore_refused(edited, len, "earlier FNV-1a format");
    free(edited);
    free(buf);
}

static void test_normalize_groups_sum_to_one(void **state)
{
    zmix_cem_settings s = base_settings(6, 3); /* two groups of three (per-layer shape) */
    s.normalize = 1;
    s.max_generations = 5;
    zmix_cem *c = NULL;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    float pop[MAXP * MAXD];
    zmix_score sc[MAXP];
    while (!zmix_cem_done(c)) {
        int first = zmix_cem_ask(c, pop);
        for (int i = 0; i < s.pop_size; i++)
            for (int g = 0; g < 2; g++) {
                const float *x = pop + i * 6 + g * 3;
                assert_close(x[0] + x[1] + x[2], 1.0f, 1e-6);
            }
        for (int i = first; i < s.pop_size; i++) sc[i] = score_loglik(separable, pop + i * 6, 6);
        assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
    }
    /* the distribution is fitted to the normalised samples, so its mean stays on the simplex */
    const double *m = zmix_cem_mean(c);
    assert_close(m[0] + m[1] + m[2], 1.0, 1e-6);
    assert_close(m[3] + m[4] + m[5], 1.0, 1e-6);
    zmix_cem_free(c);
}

static void test_single_expert(void **state)
{
    zmix_cem_settings s = base_settings(1, 1);
    s.metric = ZMIX_METRIC_LOGLIK;
    zmix_cem *c = run(&s, separable, 0);
    assert_near_centre(c, 1, 0.01);
    zmix_cem_free(c);
    s.normalize = 1; /* degenerate: α is always 1 */
    c = run(&s, separable, 0);
    float a;
    zmix_cem_best(c, &a, NULL);
    assert_true(a == 1.0f);
    zmix_cem_free(c);
}

static void expect_invalid(const zmix_cem_settings *s, const char *needle)
{
    zmix_error err;
    zmix_error_clear(&err);
    zmix_cem *c = NULL;
    assert_int_equal(zmix_cem_create(s, &c, &err), ZMIX_EINVAL);
    assert_null(c);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' does not name '%s'", err.msg, needle);
}

static void test_nan_scores_rank_last(void **state)
{
    /* A broken candidate (NaN) is never an elite nor the best, and does not blank the means. */
    zmix_cem_settings s = base_settings(2, 2);
    s.pop_size = 4;
    s.elite_ratio = 0.5;
    zmix_cem *c;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    float pop[8];
    zmix_cem_ask(c, pop);
    zmix_score sc[4] = {{NAN, NAN, NAN}, {0.5, -1.0, 0.0}, {0.25, NAN, 0.0}, {0.5, -2.0, 0.0}};
    assert_int_equal(zmix_cem_tell(c, sc, &err), 0);
    float best[2];
    zmix_score bs;
    zmix_cem_best(c, best, &bs);
    assert_memory_equal(best, pop + 2, sizeof best);
    const double *m = zmix_cem_mean(c);
    assert_close(m[0], ((double)pop[2] + pop[6]) / 2.0, 1e-12);
    const zmix_cem_gen_stats *h = zmix_cem_history(c);
    assert_close(h[0].pop_mean.accuracy, 1.25 / 3.0, 1e-12);
    assert_close(h[0].pop_mean.loglik, -1.5, 1e-12);
    assert_close(h[0].elite_mean.loglik, -1.5, 1e-12);
    zmix_cem_free(c);
}

static void test_settings_validation(void **state)
{
    zmix_cem_settings s = base_settings(4, 2), t;
    zmix_error err;
    assert_int_equal(zmix_cem_settings_check(&s, &err), 0);
    t = s, t.dim = 0, expect_invalid(&t, "dim = 0");
    t = s, t.dim = -3, expect_invalid(&t, "dim = -3");
    t = s, t.n_experts = 0, expect_invalid(&t, "n_experts = 0");
    t = s, t.dim = 5, expect_invalid(&t, "not a multiple");
    t = s, t.pop_size = 1, expect_invalid(&t, "pop_size = 1");
    t = s, t.elite_ratio = 0.0, expect_invalid(&t, "elite_ratio = 0");
    t = s, t.elite_ratio = 1.5, expect_invalid(&t, "elite_ratio = 1.5");
    t = s, t.elite_ratio = NAN, expect_invalid(&t, "elite_ratio = nan");
    t = s, t.lo = 1.0, t.hi = 1.0, expect_invalid(&t, "min must be below max");
    t = s, t.lo = 2.0, t.hi = 1.0, expect_invalid(&t, "bounds [2, 1]");
    t = s, t.hi = INFINITY, expect_invalid(&t, "not finite");
    t = s, t.init_std = NAN, expect_invalid(&t, "init_std");
    t = s, t.ema = 1.0, expect_invalid(&t, "ema = 1");
    t = s, t.std_floor = -1.0, expect_invalid(&t, "std_floor");
    t = s, t.max_generations = 0, expect_invalid(&t, "max_generations = 0");
    t = s, t.metric = (zmix_metric)5, expect_invalid(&t, "metric = 5");
    t = s, t.normalize = 1, t.lo = -1.0, expect_invalid(&t, "normalize");
    t = s, t.std_tol = NAN, expect_invalid(&t, "std_tol");
    t = s, t.patience = -1, expect_invalid(&t, "patience = -1");
    t = s, t.target_accuracy = NAN, expect_invalid(&t, "target_accuracy");
    double bad_mean[4] = {0.5, 0.5, 1.5, 0.5};
    t = s, t.init_mean = bad_mean, expect_invalid(&t, "init_mean[2] = 1.5");
    /* elite count: floor with a guard against 0.29 × 100 = 28.999... */
    t = s, t.pop_size = 100, t.elite_ratio = 0.29;
    zmix_cem *c;
    assert_int_equal(zmix_cem_create(&t, &c, &err), 0);
    assert_int_equal(zmix_cem_n_elites(c), 29);
    zmix_cem_free(c);
    /* at least two elites (one has no spread), never more than the population */
    t = s, t.pop_size = 3, t.elite_ratio = 0.1;
    assert_int_equal(zmix_cem_create(&t, &c, &err), 0);
    assert_int_equal(zmix_cem_n_elites(c), 2);
    zmix_cem_free(c);
    t = s, t.pop_size = 2, t.elite_ratio = 0.1;
    assert_int_equal(zmix_cem_create(&t, &c, &err), 0);
    assert_int_equal(zmix_cem_n_elites(c), 2);
    zmix_cem_free(c);
}

static void test_protocol_errors(void **state)
{
    zmix_cem_settings s = base_settings(2, 2);
    zmix_cem *c;
    zmix_error err;
    assert_int_equal(zmix_cem_create(&s, &c, &err), 0);
    zmix_score sc[MAXP];
    for (int i = 0; i < MAXP; i++) sc[i] = (zmix_score){0.5, -1.0, 0.0};
    assert_int_equal(zmix_cem_best(c, NULL, NULL), ZMIX_ESTATE);
    assert_int_equal(zmix_cem_tell(c, sc, &err), ZMIX_ESTATE);
    float a[MAXP * 2], b[MAXP * 2];
    zmix_cem_ask(c, a);
    zmix_cem_ask(c, b);
    assert_memory_equal(a, b, sizeof(float) * 2 * s.pop_size); /* ask is idempotent */
    sc[3].loglik = INFINITY;
    assert_int_equal(zmix_cem_tell(c, sc, &err), ZMIX_ENUMERIC);
    assert_non_null(strstr(err.msg, "member 3"));
    sc[3].loglik = -1.0;
    sc[5].accuracy = 1.5;
    assert_int_equal(zmix_cem_tell(c, sc, &err), ZMIX_ENUMERIC);
    assert_non_null(strstr(err.msg, "member 5"));
    sc[5].accuracy = 0.5;
    assert_int_equal(zmix_cem_tell(c, sc, &err), 0); /* a refused tell changed nothing */
    assert_int_equal(zmix_cem_generation(c), 1);
    zmix_cem_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_separable_quadratic),
        cmocka_unit_test(test_nonseparable_quadratic),
        cmocka_unit_test(test_accuracy_buckets_with_loglik_ties),
        cmocka_unit_test(test_bounds_respected),
        cmocka_unit_test(test_hand_computed_generation),
        cmocka_unit_test(test_elitism_never_loses_best),
        cmocka_unit_test(test_no_elitism_scores_everyone),
        cmocka_unit_test(test_stop_max_generations),
        cmocka_unit_test(test_stop_std_tolerance),
        cmocka_unit_test(test_stop_flat),
        cmocka_unit_test(test_stop_patience),
        cmocka_unit_test(test_stop_target),
        cmocka_unit_test(test_reproducible_across_splits),
        cmocka_unit_test(test_save_restore_continues_identically),
        cmocka_unit_test(test_sep_cma_quadratic),
        cmocka_unit_test(test_sep_cma_steers_by_margin),
        cmocka_unit_test(test_sep_cma_save_restore_continues_identically),
        cmocka_unit_test(test_checkpoint_is_a_record),
        cmocka_unit_test(test_normalize_groups_sum_to_one),
        cmocka_unit_test(test_single_expert),
        cmocka_unit_test(test_nan_scores_rank_last),
        cmocka_unit_test(test_settings_validation),
        cmocka_unit_test(test_protocol_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
