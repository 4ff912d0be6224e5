/*
 * How many singular components of each ΔW to keep, and what the model scores with them.
 *
 * A plan keeps, for matrix m, the r_m components with the largest |d_i|. The adapted matrix
 * it stands for is W + ΔW_r = U·diag(σ ⊙ z'')·Vᵀ with z''_i = s·z'_i for a kept component
 * and 1 for a dropped one, so the model's own scorer (zmix_score_z without rescale) scores an
 * adapter of any rank without building it.
 *
 * --rank auto goes through the matrices in order and, for each, binary-searches the smallest
 * rank whose whole plan (the matrices before it at their chosen ranks, those after it at
 * full rank) still scores the exact W''s accuracy and a log-likelihood within the
 * tolerance. Every rank it keeps was scored with everything else as finally chosen or
 * larger, and the last accepted plan is the final plan, so the final plan itself was scored
 * and passed. The search assumes a rank that passes is not followed by one that fails as the
 * rank grows; where that does not hold it keeps a larger rank than needed, never a failing one.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"

typedef struct ranked {
    float mag; /* |d_i| */
    int i;
} ranked;

static int cmp_ranked(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->mag != b->mag) return a->mag > b->mag ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

void export_plan_free(export_plan *p)
{
    for (int m = 0; p->m && m < p->n; m++) {
        free(p->m[m].d);
        free(p->m[m].order);
        free(p->m[m].kept);
    }
    free(p->m);
    memset(p, 0, sizeof *p);
}

int export_plan_init(export_plan *p, const zmix_runtime *rt, const zmix_adapt_result *res,
                     const float *z, zmix_error *err)
{
    memset(p, 0, sizeof *p);
    p->rt = rt;
    p->res = res;
    p->z = z;
    p->n = rt->n_mat;
    p->m = calloc((size_t)(p->n ? p->n : 1), sizeof *p->m);
    if (!p->m) return zmix_error_set(err, ZMIX_ENOMEM, "export: out of memory");
    for (int m = 0; m < p->n; m++) {
        export_delta *e = &p->m[m];
        e->a = &rt->list[m];
        e->f = &rt->factors[m];
        e->z = z + e->a->z_offset;
        int r = e->a->rank;
        e->s = zmix_rescale_factor(rt, m, e->z, res->rescale);
        if (e->s == 0.0f) {
            export_plan_free(p);
            return zmix_error_set(err, ZMIX_ENUMERIC,
                                  "export: %s: Σ(σ⊙z') is zero or not finite, so the rescale "
                                  "is undefined",
                                  e->a->name);
        }
        e->d = malloc((size_t)r * sizeof *e->d);
        e->order = malloc((size_t)r * sizeof *e->order);
        e->kept = malloc(((size_t)r + 1) * sizeof *e->kept);
        ranked *tmp = malloc((size_t)r * sizeof *tmp);
        if (!e->d || !e->order || !e->kept || !tmp) {
            free(tmp);
            export_plan_free(p);
            return zmix_error_set(err, ZMIX_ENOMEM, "export: out of memory for %s", e->a->name);
        }
        for (int i = 0; i < r; i++) {
            e->d[i] = e->f->S[i] * (e->s * e->z[i] - 1.0f);
            tmp[i] = (ranked){fabsf(e->d[i]), i};
        }
        qsort(tmp, (size_t)r, sizeof *tmp, cmp_ranked);
        e->kept[0] = 0.0;
        for (int j = 0; j < r; j++) {
            e->order[j] = tmp[j].i;
            e->kept[j + 1] = e->kept[j] + (double)tmp[j].mag * tmp[j].mag;
        }
        free(tmp);
        e->rank = r;
    }
    return 0;
}

double export_delta_rel_error(const export_delta *e)
{
    double total = e->kept[e->a->rank];
    if (total <= 0.0) return 0.0;
    double rest = total - e->kept[e->rank];
    return rest > 0.0 ? sqrt(rest / total) : 0.0;
}

/* z'' of the plan at its current ranks (see the top of the file). */
static void plan_z(const export_plan *p, float *z2)
{
    for (int m = 0; m < p->n; m++) {
        const export_delta *e = &p->m[m];
        float *out = z2 + e->a->z_offset;
        for (int i = 0; i < e->a->rank; i++) out[i] = 1.0f;
        for (int j = 0; j < e->rank; j++) {
            int i = e->order[j];
            out[i] = e->s * e->z[i];
        }
    }
}

static int score_plan(const export_plan *p, const zmix_export_opts *opts, float *z2,
                      zmix_score *out, zmix_error *err)
{
    plan_z(p, z2);
    zmix_score_ctl ctl = {opts->n_threads, NULL, ZMIX_CHOICE_PER_TOKEN};
    return zmix_score_z(p->rt, 0, opts->examples, 1, z2, &ctl, out, NULL, err);
}

/* The adapter stands in for W': the same accuracy (not a better one found by accident) and
 * a log-likelihood within the tolerance. */
static int within(const zmix_score *s, const zmix_score *exact, double tol)
{
    return s->accuracy == exact->accuracy && fabs(s->loglik - exact->loglik) <= tol;
}

static int choose_auto(export_plan *p, const zmix_export_opts *opts, zmix_export_report *report,
                       float *z2, zmix_error *err)
{
    zmix_score s;
    int rc = score_plan(p, opts, z2, &s, err);
    report->auto_evaluations = 1;
    if (rc) return rc;
    if (!within(&s, &report->exact, opts->loglik_tol))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "export: --rank auto: even the full-rank adapter scores accuracy "
                              "%.4f loglik %.6f against the exact W' %.4f %.6f; the tolerance "
                              "%g is tighter than float rounding",
                              s.accuracy, s.loglik, report->exact.accuracy, report->exact.loglik,
                              opts->loglik_tol);
    for (int m = 0; m < p->n; m++) {
        export_delta *e = &p->m[m];
        int lo = 1, hi = e->rank; /* hi: the smallest rank known to pass */
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            e->rank = mid;
            rc = score_plan(p, opts, z2, &s, err);
            report->auto_evaluations++;
            if (rc) return rc;
            if (within(&s, &report->exact, opts->loglik_tol))
                hi = mid;
            else
                lo = mid + 1;
        }
        e->rank = hi;
    }
    return 0;
}

static void choose_static(export_plan *p, const zmix_export_opts *opts)
{
    for (int m = 0; m < p->n; m++) {
        export_delta *e = &p->m[m];
        int full = e->a->rank, r = full;
        if (opts->format == ZMIX_EXPORT_PEFT && opts->rank_mode == ZMIX_RANK_FIXED)
            r = opts->rank < full ? opts->rank : full;
        if (opts->format == ZMIX_EXPORT_PEFT && opts->rank_mode == ZMIX_RANK_ENERGY) {
            double want = opts->energy * e->kept[full];
            r = 1;
            while (r < full && e->kept[r] < want) r++;
        }
        e->rank = r;
    }
}

int export_choose_ranks(export_plan *p, const zmix_export_opts *opts, zmix_export_report *report,
                        zmix_error *err)
{
    int rc = 0;
    float *z2 = malloc((p->rt->z_total ? p->rt->z_total : 1) * sizeof *z2);
    if (!z2) return zmix_error_set(err, ZMIX_ENOMEM, "export: out of memory");
    report->loglik_tol = NAN;
    if (opts->examples) {
        /* The exact W' and the base model, through the scorer the search used. */
        zmix_score_ctl ctl = {opts->n_threads, NULL, ZMIX_CHOICE_PER_TOKEN};
        for (size_t i = 0; i < p->rt->z_total; i++) z2[i] = 1.0f;
        rc = zmix_score_z(p->rt, 0, opts->examples, 1, z2, &ctl, &report->base, NULL, err);
        if (!rc)
            rc = zmix_score_z(p->rt, p->res->rescale, opts->examples, 1, p->z, &ctl, &report->exact,
                              NULL, err);
        report->scored = !rc;
    }
    int is_auto = opts->format == ZMIX_EXPORT_PEFT && opts->rank_mode == ZMIX_RANK_AUTO;
    if (!rc && is_auto) {
        report->loglik_tol = opts->loglik_tol;
        rc = opts->examples ? choose_auto(p, opts, report, z2, err)
                            : zmix_error_set(err, ZMIX_EINVAL,
                                             "export: --rank auto needs the task's examples");
    } else if (!rc) {
        choose_static(p, opts);
    }
    if (!rc && opts->format == ZMIX_EXPORT_PEFT && opts->uniform_rank) {
        int top = 0;
        for (int m = 0; m < p->n; m++) top = p->m[m].rank > top ? p->m[m].rank : top;
        for (int m = 0; m < p->n; m++) p->m[m].rank = top < p->m[m].a->rank ? top : p->m[m].a->rank;
    }
    /* The adapter as chosen; a merged model is scored from its files after writing. */
    if (!rc && opts->examples && opts->format == ZMIX_EXPORT_PEFT)
        rc = score_plan(p, opts, z2, &report->export, err);
    free(z2);
    return rc;
}

int export_score_model(const zmix_model *model, const zmix_examples *ex, zmix_score *out,
                       zmix_error *err)
{
    int vocab = model->cfg.vocab_size, n_exact = 0;
    double sum = 0.0;
    for (int e = 0; e < ex->n; e++) {
        const zmix_example *x = &ex->items[e];
        int n = x->n_prompt + x->n_target - 1; /* the last target token is never fed */
        int32_t *tokens = malloc((size_t)n * sizeof *tokens);
        float *logits = malloc((size_t)n * vocab * sizeof *logits);
        int rc = tokens && logits ? 0 : zmix_error_set(err, ZMIX_ENOMEM, "export: out of memory");
        if (!rc) {
            memcpy(tokens, x->prompt, (size_t)x->n_prompt * sizeof *tokens);
            memcpy(tokens + x->n_prompt, x->target, (size_t)(x->n_target - 1) * sizeof *tokens);
            rc = zmix_model_forward_logits(model, tokens, n, logits, err);
        }
        if (!rc) {
            zmix_example_score es;
            zmix_example_score_logits(logits + (size_t)(x->n_prompt - 1) * vocab, x->target,
                                      x->n_target, vocab, &es);
            n_exact += es.exact;
            sum += es.loglik;
        }
        free(tokens);
        free(logits);
        if (rc) return rc;
    }
    out->accuracy = (double)n_exact / ex->n;
    out->loglik = sum / ex->n;
    return 0;
}
