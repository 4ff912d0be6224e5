/*
 * The scorer wrappers (see seam.h). Thread: any; the context is the calling thread's own.
 */
#include "fleet/seam.h"

#include <stdlib.h>
#include <string.h>

static _Thread_local seam_ctx *current;

void seam_set(seam_ctx *ctx)
{
    current = ctx;
}

void seam_call_free(seam_call *c)
{
    free(c->rows);
    free(c->scores);
    memset(c, 0, sizeof *c);
}

static seam_call *capture(seam_ctx *ctx, int kind, int n, int dim, const float *rows)
{
    if (ctx->n_calls == ctx->cap_calls) {
        int cap = ctx->cap_calls ? 2 * ctx->cap_calls : 4;
        seam_call *v = realloc(ctx->calls, (size_t)cap * sizeof *v);
        if (!v) return NULL;
        ctx->calls = v;
        ctx->cap_calls = cap;
    }
    seam_call *c = &ctx->calls[ctx->n_calls];
    memset(c, 0, sizeof *c);
    c->rows = malloc((size_t)n * (size_t)dim * sizeof *c->rows + 1);
    if (!c->rows) return NULL;
    memcpy(c->rows, rows, (size_t)n * (size_t)dim * sizeof *c->rows);
    c->kind = kind;
    c->n = n;
    c->dim = dim;
    ctx->n_calls++;
    return c;
}

/* Inject: the next call's scores, after checking that the session asks for what was
 * captured (the same step replayed; anything else is a bug). */
static int inject(seam_ctx *ctx, int kind, int n, zmix_score *out, zmix_error *err)
{
    if (ctx->stop && atomic_load_explicit(ctx->stop, memory_order_relaxed))
        return zmix_error_set(err, ZMIX_ECANCELED, "cancelled");
    if (ctx->cursor >= ctx->n_calls)
        return zmix_error_set(err, ZMIX_EINTERNAL,
                              "fleet: the step asked for more scores than "
                              "it published");
    seam_call *c = &ctx->calls[ctx->cursor++];
    if (c->kind != kind || c->n != n)
        return zmix_error_set(err, ZMIX_EINTERNAL,
                              "fleet: the step's scorer calls changed "
                              "between publishing and collecting");
    if (!c->have_result) return zmix_error_set(err, ZMIX_EINTERNAL, "fleet: a chunk has no result");
    if (c->result_rc != 0) return zmix_error_set(err, c->result_rc, "%s", c->result_error);
    memcpy(out, c->scores, (size_t)n * sizeof *out);
    return 0;
}

int __wrap_zmix_score_alpha(const zmix_runtime *rt, const zmix_compose_opts *opts,
                            const zmix_examples *ex, int n_cand, const float *alpha,
                            const zmix_score_ctl *ctl, zmix_score *out, zmix_example_score *detail,
                            zmix_error *err)
{
    seam_ctx *ctx = current;
    if (!ctx || detail) /* per-example detail is never asked by a session step */
        return __real_zmix_score_alpha(rt, opts, ex, n_cand, alpha, ctl, out, detail, err);
    if (ctx->mode == SEAM_INJECT) return inject(ctx, SEAM_ALPHA, n_cand, out, err);
    int k = zmix_runtime_n_experts(rt);
    int dim = opts->per_layer ? k * zmix_runtime_n_matrices(rt) : k;
    seam_call *c = capture(ctx, SEAM_ALPHA, n_cand, dim, alpha);
    if (!c) {
        ctx->capture_failed = 1;
        return zmix_error_set(err, ZMIX_ENOMEM, "fleet: out of memory for a chunk");
    }
    c->per_layer = opts->per_layer;
    c->normalize = opts->normalize;
    c->rescale = opts->rescale;
    c->choice_norm = ctl ? (int)ctl->choice_norm : ZMIX_CHOICE_PER_TOKEN;
    c->ex = ex;
    return 0;
}

int __wrap_zmix_score_z(const zmix_runtime *rt, int rescale, const zmix_examples *ex, int n_cand,
                        const float *z, const zmix_score_ctl *ctl, zmix_score *out,
                        zmix_example_score *detail, zmix_error *err)
{
    seam_ctx *ctx = current;
    if (!ctx || detail)
        return __real_zmix_score_z(rt, rescale, ex, n_cand, z, ctl, out, detail, err);
    if (ctx->mode == SEAM_INJECT) return inject(ctx, SEAM_Z, n_cand, out, err);
    seam_call *c = capture(ctx, SEAM_Z, n_cand, (int)zmix_runtime_z_total(rt), z);
    if (!c) {
        ctx->capture_failed = 1;
        return zmix_error_set(err, ZMIX_ENOMEM, "fleet: out of memory for a chunk");
    }
    c->rescale = rescale;
    c->choice_norm = ctl ? (int)ctl->choice_norm : ZMIX_CHOICE_PER_TOKEN;
    c->ex = ex;
    return 0;
}

int seam_score_alpha(const zmix_runtime *rt, const zmix_compose_opts *opts, const zmix_examples *ex,
                     int n_cand, const float *alpha, const zmix_score_ctl *ctl, zmix_score *out,
                     zmix_error *err)
{
    return __real_zmix_score_alpha(rt, opts, ex, n_cand, alpha, ctl, out, NULL, err);
}

int seam_score_z(const zmix_runtime *rt, int rescale, const zmix_examples *ex, int n_cand,
                 const float *z, const zmix_score_ctl *ctl, zmix_score *out, zmix_error *err)
{
    return __real_zmix_score_z(rt, rescale, ex, n_cand, z, ctl, out, NULL, err);
}
