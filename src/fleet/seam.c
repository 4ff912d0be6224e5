/*
 * The fleet's route for a session's scorer calls (see seam.h). Thread: any; a context is used
 * by one thread at a time.
 */
#include "fleet/seam.h"

#include <stdlib.h>
#include <string.h>

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

int seam_route(void *user, const zmix_score_request *q, zmix_score *out, zmix_error *err)
{
    seam_ctx *ctx = user;
    int kind = q->kind == ZMIX_SCORE_Z ? SEAM_Z : SEAM_ALPHA;
    if (ctx->mode == SEAM_INJECT) return inject(ctx, kind, q->n, out, err);
    seam_call *c = capture(ctx, kind, q->n, q->dim, q->rows);
    if (!c) {
        ctx->capture_failed = 1;
        return zmix_error_set(err, ZMIX_ENOMEM, "fleet: out of memory for a chunk");
    }
    if (kind == SEAM_ALPHA) {
        c->per_layer = q->compose->per_layer;
        c->normalize = q->compose->normalize;
    }
    c->rescale = q->rescale;
    c->choice_norm = q->ctl ? (int)q->ctl->choice_norm : ZMIX_CHOICE_PER_TOKEN;
    c->ex = q->ex;
    return 0;
}
