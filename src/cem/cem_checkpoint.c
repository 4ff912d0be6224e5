/*
 * Checkpoint format of a CEM engine: the complete state as a self-checking byte string, so a
 * daemon can persist a running job and resume it to the bit-identical result.
 *
 * The container is the record frame every zmix file uses (util/record.h): magic "ZMIXCEMS",
 * version 2, payload length, payload, CRC-32C. The payload is settings, distribution, rng,
 * pending population, best, counters and history, in the order of put_state, integers
 * little-endian. Doubles and floats are stored as their IEEE-754 bit patterns, so nothing is
 * rounded. The pending population (asked but not yet told) is saved too: a checkpoint taken
 * between ask and tell resumes with the very population the workers were scoring.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cem_internal.h"
#include "util/record.h"

#define CEM_MAGIC "ZMIXCEMS"
/* v2 adds the scores' margin and appends the update method and the separable CMA-ES state
 * after the history; a v1 checkpoint restores as the CEM method it was. */
#define CEM_VERSION 2u
/* The magic of the format before the record frame (its own FNV-1a-64 trailer), recognised
 * only to say why such a checkpoint is refused. */
#define CEM_FNV_MAGIC "ZMIXCEM"

static void put_score(rec_writer *w, const zmix_score *s)
{
    recw_f64(w, s->accuracy);
    recw_f64(w, s->loglik);
    recw_f64(w, s->margin);
}

/* v1 scores have no margin. */
static void get_score(rec_reader *r, uint32_t version, zmix_score *s)
{
    s->accuracy = recr_f64(r);
    s->loglik = recr_f64(r);
    s->margin = version >= 2 ? recr_f64(r) : 0.0;
}

static void put_f64s(rec_writer *w, const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) recw_f64(w, v[i]);
}

static void get_f64s(rec_reader *r, double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) v[i] = recr_f64(r);
}

static void put_settings(rec_writer *w, const zmix_cem_settings *s)
{
    recw_i32(w, s->dim);
    recw_i32(w, s->n_experts);
    recw_i32(w, s->pop_size);
    recw_f64(w, s->elite_ratio);
    recw_f64(w, s->lo);
    recw_f64(w, s->hi);
    recw_f64(w, s->init_std);
    recw_f64(w, s->ema);
    recw_f64(w, s->std_floor);
    recw_i32(w, s->max_generations);
    recw_i32(w, s->elitism);
    recw_i32(w, (int32_t)s->metric);
    recw_i32(w, s->normalize);
    recw_f64(w, s->std_tol);
    recw_i32(w, s->patience);
    recw_f64(w, s->target_accuracy);
    recw_f64(w, s->target_loglik_tol);
    recw_u64(w, s->seed);
    recw_u64(w, s->stream);
}

static void get_settings(rec_reader *r, zmix_cem_settings *s)
{
    zmix_cem_settings_default(s);
    s->dim = recr_i32(r);
    s->n_experts = recr_i32(r);
    s->pop_size = recr_i32(r);
    s->elite_ratio = recr_f64(r);
    s->lo = recr_f64(r);
    s->hi = recr_f64(r);
    s->init_std = recr_f64(r);
    s->ema = recr_f64(r);
    s->std_floor = recr_f64(r);
    s->max_generations = recr_i32(r);
    s->elitism = recr_i32(r);
    s->metric = (zmix_metric)recr_i32(r);
    s->normalize = recr_i32(r);
    s->std_tol = recr_f64(r);
    s->patience = recr_i32(r);
    s->target_accuracy = recr_f64(r);
    s->target_loglik_tol = recr_f64(r);
    s->seed = recr_u64(r);
    s->stream = recr_u64(r);
}

static void put_state(rec_writer *w, const zmix_cem *c)
{
    size_t dim = (size_t)c->s.dim, pop = (size_t)c->s.pop_size;
    put_settings(w, &c->s);
    put_f64s(w, c->mean, dim);
    put_f64s(w, c->std, dim);
    recw_u64(w, c->rng.state);
    recw_u64(w, c->rng.inc);
    recw_i32(w, c->pop_ready);
    recw_i32(w, c->first_unscored);
    if (c->pop_ready) recw_f32s(w, c->pop, pop * dim);
    recw_i32(w, c->have_best);
    recw_f32s(w, c->best_alpha, dim);
    put_score(w, &c->best_score);
    recw_i32(w, c->generation);
    recw_u64(w, (uint64_t)c->evaluations);
    recw_u64(w, (uint64_t)c->skipped);
    recw_i32(w, c->since_improve);
    recw_i32(w, (int32_t)c->stop);
    recw_i32(w, c->hist_len);
    for (int g = 0; g < c->hist_len; g++) {
        put_score(w, &c->hist[g].best);
        put_score(w, &c->hist[g].elite_mean);
        put_score(w, &c->hist[g].pop_mean);
        recw_f64(w, c->hist[g].mean_std);
        put_f64s(w, c->hist_mean + (size_t)g * dim, dim);
        put_f64s(w, c->hist_std + (size_t)g * dim, dim);
    }
    recw_i32(w, (int32_t)c->s.method);
    recw_f64(w, c->sigma);
    put_f64s(w, c->cov, dim);
    put_f64s(w, c->path_sigma, dim);
    put_f64s(w, c->path_cov, dim);
}

int zmix_cem_save(const zmix_cem *c, uint8_t **buf, size_t *len, zmix_error *err)
{
    rec_writer w;
    recw_begin(&w, CEM_MAGIC, CEM_VERSION);
    put_state(&w, c);
    int rc = recw_finish(&w, NULL, err);
    if (rc) {
        recw_free(&w);
        return zmix_error_prefix(err, "cem checkpoint");
    }
    *buf = w.buf;
    *len = w.len;
    return 0;
}

static int bad(zmix_error *err, const char *what)
{
    return zmix_error_set(err, ZMIX_EFORMAT, "cem checkpoint: %s", what);
}

/* The counters and flags after the distribution: NULL when they are consistent with each
 * other and the settings, else what is wrong. */
static const char *state_problem(const zmix_cem *c, int stop, int hist_len)
{
    if ((c->pop_ready != 0 && c->pop_ready != 1) || (c->have_best != 0 && c->have_best != 1))
        return "bad flags";
    if (c->first_unscored < 0 || c->first_unscored > 1) return "bad first unscored index";
    if (stop < ZMIX_CEM_RUNNING || stop > ZMIX_CEM_STOP_FLAT) return "bad stop reason";
    if (c->generation < 0 || c->generation > c->s.max_generations || hist_len != c->generation)
        return "history length does not match the generation count";
    if (c->evaluations < 0 || c->skipped < 0 || c->since_improve < 0) return "negative counter";
    if ((c->rng.inc & 1u) == 0) return "bad random stream";
    return NULL;
}

int zmix_cem_restore(const uint8_t *buf, size_t len, zmix_cem **out, zmix_error *err)
{
    if (!buf) return bad(err, "no bytes");
    if (len >= 8 && memcmp(buf, CEM_FNV_MAGIC, 8) == 0)
        return bad(err, "written in the earlier FNV-1a format (magic \"ZMIXCEM\\0\"), which this "
                        "version does not read");
    rec_reader r;
    uint32_t version = 0;
    int rc = rec_open(buf, len, CEM_MAGIC, CEM_VERSION, &version, &r, err);
    if (rc) return zmix_error_prefix(err, "cem checkpoint");

    zmix_cem_settings s;
    get_settings(&r, &s);
    if (r.failed) return bad(err, "truncated settings");
    zmix_error inner;
    if (zmix_cem_settings_check(&s, &inner))
        return zmix_error_set(err, ZMIX_EFORMAT, "cem checkpoint: %s", inner.msg);
    zmix_cem *c;
    rc = cem_alloc(&s, &c, err);
    if (rc) return rc;
    size_t dim = (size_t)s.dim, pop = (size_t)s.pop_size;
    get_f64s(&r, c->mean, dim);
    get_f64s(&r, c->std, dim);
    c->rng.state = recr_u64(&r);
    c->rng.inc = recr_u64(&r);
    c->pop_ready = recr_i32(&r);
    c->first_unscored = recr_i32(&r);
    if (c->pop_ready) recr_f32s(&r, c->pop, pop * dim);
    c->have_best = recr_i32(&r);
    recr_f32s(&r, c->best_alpha, dim);
    get_score(&r, version, &c->best_score);
    c->generation = recr_i32(&r);
    c->evaluations = (long)recr_u64(&r);
    c->skipped = (long)recr_u64(&r);
    c->since_improve = recr_i32(&r);
    int stop = recr_i32(&r);
    int hist_len = recr_i32(&r);
    const char *why = r.failed ? "truncated state" : state_problem(c, stop, hist_len);
    if (why) {
        zmix_cem_free(c);
        return bad(err, why);
    }
    c->stop = (zmix_cem_stop)stop;
    rc = cem_history_reserve(c, hist_len, err);
    if (rc) {
        zmix_cem_free(c);
        return rc;
    }
    for (int g = 0; g < hist_len; g++) {
        get_score(&r, version, &c->hist[g].best);
        get_score(&r, version, &c->hist[g].elite_mean);
        get_score(&r, version, &c->hist[g].pop_mean);
        c->hist[g].mean_std = recr_f64(&r);
        get_f64s(&r, c->hist_mean + (size_t)g * dim, dim);
        get_f64s(&r, c->hist_std + (size_t)g * dim, dim);
    }
    c->hist_len = hist_len;
    c->sigma = c->std[0];
    for (size_t d = 0; d < dim; d++) c->cov[d] = 1.0;
    if (version >= 2) {
        int method = recr_i32(&r);
        c->sigma = recr_f64(&r);
        get_f64s(&r, c->cov, dim);
        get_f64s(&r, c->path_sigma, dim);
        get_f64s(&r, c->path_cov, dim);
        if (!r.failed && method != ZMIX_CEM_METHOD_CEM && method != ZMIX_CEM_METHOD_SEP_CMA) {
            zmix_cem_free(c);
            return bad(err, "bad update method");
        }
        c->s.method = (zmix_cem_method)method;
        int sane = isfinite(c->sigma) && c->sigma > 0.0;
        for (size_t d = 0; d < dim; d++)
            sane &= isfinite(c->cov[d]) && c->cov[d] > 0.0 && isfinite(c->path_sigma[d]) &&
                    isfinite(c->path_cov[d]);
        if (!r.failed && !sane) {
            zmix_cem_free(c);
            return bad(err, "bad step size or covariance");
        }
    }
    if (r.failed || r.pos != r.len) {
        zmix_cem_free(c);
        return bad(err, r.failed ? "truncated history" : "trailing bytes after the state");
    }
    *out = c;
    return 0;
}
