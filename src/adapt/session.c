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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/record.h"
#include "adapt_internal.h"

#define SESSION_MAGIC   "ZMSESS01"
#define SESSION_VERSION 1u

struct zmix_session {
    const zmix_runtime *rt;
    const zmix_examples *ex;
    zmix_adapt_opts opts; /* cem.init_mean is not kept: the engine copied it */
    zmix_compose_opts compose;
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
    double elapsed_s;
};

const char *zmix_session_phase_name(zmix_session_phase p)
{
    switch (p) {
    case ZMIX_SESSION_BASELINES: return "baselines";
    case ZMIX_SESSION_SEARCH: return "search";
    case ZMIX_SESSION_DONE: return "done";
    case ZMIX_SESSION_FAILED: return "failed";
    }
    return "?";
}

static int rows_max(const zmix_session *s)
{
    return s->pop_size > s->n_experts + 1 ? s->pop_size : s->n_experts + 1;
}

/* Everything but the engine: checks, sizes, buffers. */
static int session_alloc(const zmix_runtime *rt, const zmix_examples *ex,
                         const zmix_adapt_opts *opts, zmix_session **out, zmix_error *err)
{
    int rc = zmix_examples_check(zmix_runtime_model(rt), ex, err);
    if (rc) return rc;
    zmix_cem_settings probe = opts->cem;
    probe.n_experts = zmix_runtime_n_experts(rt);
    probe.dim = zmix_adapt_alpha_dim(rt, opts);
    if ((rc = zmix_cem_settings_check(&probe, err))) return rc;
    zmix_session *s = calloc(1, sizeof *s);
    if (!s) return zmix_error_set(err, ZMIX_ENOMEM, "session: out of memory");
    s->rt = rt;
    s->ex = ex;
    s->opts = *opts;
    s->opts.cem.init_mean = NULL;
    s->compose = zmix_adapt_compose_opts(opts);
    s->n_experts = zmix_runtime_n_experts(rt);
    s->dim = zmix_adapt_alpha_dim(rt, opts);
    s->pop_size = opts->cem.pop_size;
    zmix_adapt_key(rt, ex, opts, s->key);
    size_t rows = (size_t)rows_max(s);
    s->cand = malloc(rows * (size_t)s->dim * sizeof *s->cand);
    s->scores = calloc(rows, sizeof *s->scores);
    s->experts = calloc((size_t)s->n_experts, sizeof *s->experts);
    if (!s->cand || !s->scores || !s->experts) {
        zmix_session_free(s);
        return zmix_error_set(err, ZMIX_ENOMEM, "session: out of memory for pop %d × dim %d",
                              s->pop_size, s->dim);
    }
    *out = s;
    return 0;
}

int zmix_session_create(const zmix_runtime *rt, const zmix_examples *ex,
                        const zmix_adapt_opts *opts, zmix_session **out, zmix_error *err)
{
    zmix_session *s = NULL;
    int rc = session_alloc(rt, ex, opts, &s, err);
    if (rc) return rc;
    zmix_cem_settings c = opts->cem;
    c.n_experts = s->n_experts;
    c.dim = s->dim;
    if (c.stream == 0) c.stream = zmix_adapt_key_stream(s->key);
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
    free(s->cand);
    free(s->scores);
    free(s->experts);
    free(s);
}

/* ---- Steps ---------------------------------------------------------------------------- */

static void fill_baseline_rows(zmix_session *s)
{
    /* Row 0 is the base model and is scored from z' = 1, not from an α. Row 1 + k is expert
     * k alone: α_k = 1 on every matrix when per-layer, every other α 0. */
    int k_n = s->n_experts, dim = s->dim;
    memset(s->cand, 0, (size_t)(k_n + 1) * (size_t)dim * sizeof *s->cand);
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
    } else {
        int first = zmix_cem_ask(s->cem, s->cand);
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

int zmix_session_score(zmix_session *s, zmix_work *w, const zmix_score_ctl *ctl)
{
    zmix_error_clear(&w->err);
    if (!s->step_open || w->begin < s->first || w->end > s->n_rows || w->begin >= w->end)
        return w->rc = zmix_error_set(&w->err, ZMIX_EINVAL,
                                      "session: piece [%d, %d) is not part of the open step",
                                      w->begin, w->end);
    int begin = w->begin;
    if (s->phase == ZMIX_SESSION_BASELINES && begin == 0) {
        size_t zt = zmix_runtime_z_total(s->rt);
        float *ones = malloc((zt ? zt : 1) * sizeof *ones);
        if (!ones) return w->rc = zmix_error_set(&w->err, ZMIX_ENOMEM, "baselines: out of memory");
        for (size_t i = 0; i < zt; i++) ones[i] = 1.0f;
        w->rc =
            zmix_score_z(s->rt, s->opts.rescale, s->ex, 1, ones, ctl, &s->scores[0], NULL, &w->err);
        free(ones);
        if (w->rc) {
            if (w->rc != ZMIX_ECANCELED) zmix_error_prefix(&w->err, "scoring the base model");
            return w->rc;
        }
        begin = 1;
    }
    if (begin >= w->end) return w->rc = 0;
    w->rc =
        zmix_score_alpha(s->rt, &s->compose, s->ex, w->end - begin,
                         s->cand + (size_t)begin * s->dim, ctl, s->scores + begin, NULL, &w->err);
    if (w->rc && w->rc != ZMIX_ECANCELED) {
        if (s->phase == ZMIX_SESSION_BASELINES)
            zmix_error_prefix(&w->err, "scoring the single experts");
        else
            zmix_error_prefix(&w->err, "generation %d", zmix_cem_generation(s->cem) + 1);
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

static void update_phase(zmix_session *s)
{
    if (s->phase == ZMIX_SESSION_SEARCH && zmix_cem_done(s->cem) != ZMIX_CEM_RUNNING)
        s->phase = ZMIX_SESSION_DONE;
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
        update_phase(s);
        return 0;
    }
    /* A single NaN is a degenerate candidate (e.g. every α clamped to 0, so z′ has no mass
     * to rescale): the engine ranks it below everything and the search goes on. A generation
     * with nothing but NaN means the model or the experts are broken. */
    int n_nan = 0;
    for (int i = s->first; i < s->n_rows; i++)
        n_nan += isnan(s->scores[i].accuracy) || isnan(s->scores[i].loglik);
    if (n_nan > 0 && n_nan == s->n_rows - s->first) {
        zmix_error_set(err, ZMIX_ENUMERIC, "every candidate of generation %d scored NaN",
                       zmix_cem_generation(s->cem) + 1);
        fail_with(s, err->msg);
        return ZMIX_ENUMERIC;
    }
    int rc = zmix_cem_tell(s->cem, s->scores, err);
    if (rc) {
        fail_with(s, err->msg);
        return rc;
    }
    update_phase(s);
    return 0;
}

/* ---- Accessors ------------------------------------------------------------------------ */

zmix_session_phase zmix_session_phase_get(const zmix_session *s)
{
    return s->phase;
}

zmix_cem_stop zmix_session_stop(const zmix_session *s)
{
    return zmix_cem_done(s->cem);
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
 * base (f64 accuracy, f64 loglik), u32 K, K × (f64, f64), f64 elapsed_s, u32 error length +
 * bytes, blob32 the engine's zmix_cem_save bytes. */
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
    size_t elen = 0, clen = 0;
    const uint8_t *e = recr_blob32(&r, &elen);
    const uint8_t *c = recr_blob32(&r, &clen);
    rc = recr_end(&r, "session checkpoint", err);
    if (!rc && (phase > ZMIX_SESSION_FAILED || elen >= sizeof s->error))
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "session checkpoint: phase %u or error length %zu "
                            "out of range",
                            (unsigned)phase, elen);
    if (!rc) rc = zmix_cem_restore(c, clen, &s->cem, err);
    if (!rc && (zmix_cem_dim(s->cem) != s->dim || zmix_cem_pop_size(s->cem) != s->pop_size))
        rc = zmix_error_set(err, ZMIX_ESTATE,
                            "session checkpoint: searches dim %d with pop %d, the settings ask "
                            "for dim %d with pop %d",
                            zmix_cem_dim(s->cem), zmix_cem_pop_size(s->cem), s->dim, s->pop_size);
    if (rc) {
        zmix_session_free(s);
        return rc;
    }
    memcpy(s->error, e, elen);
    s->error[elen] = '\0';
    s->phase = (zmix_session_phase)phase;
    update_phase(s);
    *out = s;
    return 0;
}

/* ---- Result --------------------------------------------------------------------------- */

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
    return 0;
}
