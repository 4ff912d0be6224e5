/*
 * Composition: from α to z' = Σ_k α_k z_k, and from z' to W' = U·diag(c·σ⊙z')·Vt with
 * c = Σσ / Σ(σ⊙z') (the reference's rescale, which keeps the total singular-value mass).
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"

void zmix_compose_opts_default(zmix_compose_opts *opts)
{
    opts->per_layer = 0;
    opts->normalize = 0;
    opts->rescale = 1;
}

size_t zmix_alpha_dim(const zmix_runtime *rt, const zmix_compose_opts *opts)
{
    size_t k = (size_t)rt->n_experts;
    return opts && opts->per_layer ? (size_t)rt->n_mat * k : k;
}

const char *zmix_wprime_mode_name(zmix_wprime_mode mode)
{
    switch (mode) {
    case ZMIX_WPRIME_AUTO: return "auto";
    case ZMIX_WPRIME_LINEAR: return "linear";
    case ZMIX_WPRIME_COMPOSE: return "compose";
    case ZMIX_WPRIME_FACTORED: return "factored";
    default: return "?";
    }
}

int zmix_alpha_for_matrix(const zmix_runtime *rt, const zmix_compose_opts *opts, const float *alpha,
                          int m, float *alpha_m)
{
    int K = rt->n_experts;
    const float *a = opts->per_layer ? alpha + (size_t)m * K : alpha;
    memcpy(alpha_m, a, (size_t)K * sizeof(float));
    for (int k = 0; k < K; k++)
        if (!isfinite(a[k])) return -1;
    if (!opts->normalize) return 0;
    float sum = 0.0f;
    for (int k = 0; k < K; k++) sum += a[k];
    if (sum == 0.0f || !isfinite(sum)) return -1;
    for (int k = 0; k < K; k++) alpha_m[k] = a[k] / sum;
    return 0;
}

int zmix_compose_z(const zmix_runtime *rt, const zmix_compose_opts *opts, const float *alpha,
                   float *z_out, zmix_error *err)
{
    int K = rt->n_experts;
    if (K == 0) return zmix_error_set(err, ZMIX_EINVAL, "compose: the runtime has no experts");
    float *alpha_m = malloc((size_t)K * sizeof(float));
    if (!alpha_m) return zmix_error_set(err, ZMIX_ENOMEM, "compose: out of memory");
    for (int m = 0; m < rt->n_mat; m++) {
        if (zmix_alpha_for_matrix(rt, opts, alpha, m, alpha_m)) {
            free(alpha_m);
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "compose: α of %s is not finite, or sums to zero and cannot "
                                  "be normalised to sum 1",
                                  rt->list[m].name);
        }
        const zmix_adapted *a = &rt->list[m];
        float *z = z_out + a->z_offset;
        for (int i = 0; i < a->rank; i++) z[i] = 0.0f;
        for (int k = 0; k < K; k++) {
            const float *zk = rt->experts[k].z + a->z_offset;
            for (int i = 0; i < a->rank; i++) z[i] += alpha_m[k] * zk[i];
        }
    }
    free(alpha_m);
    return 0;
}

float zmix_rescale_factor(const zmix_runtime *rt, int m, const float *z_m, int rescale)
{
    if (!rescale) return 1.0f;
    const zmix_factors *f = &rt->factors[m];
    double denom = 0.0;
    for (int i = 0; i < f->rank; i++) denom += (double)f->S[i] * z_m[i];
    double c = (double)rt->sigma_sum[m] / denom;
    return denom == 0.0 || !isfinite(c) ? 0.0f : (float)c;
}

void zmix_wprime_compose(const zmix_runtime *rt, int m, const float *z_m, float c, float *w,
                         float *tmp, float *tile)
{
    const zmix_factors *f = &rt->factors[m];
    int r = f->rank;
    for (int i = 0; i < f->rows; i++) {
        float *t = tmp + (size_t)i * r;
        const float *u = f->U ? f->U + (size_t)i * r : t;
        if (!f->U) zmix_half_to_float(t, f->U16 + (size_t)i * r, (size_t)r, f->dtype);
        for (int j = 0; j < r; j++) t[j] = u[j] * (c * f->S[j] * z_m[j]);
    }
    zmix_gemm_xw(tmp, r, f->rows, zmix_factors_Vt(f), r, f->cols, w, f->cols, tile);
}

int zmix_model_with_wprime(const zmix_runtime *rt, int rescale, const float *z, zmix_model **out,
                           zmix_error *err)
{
    *out = NULL;
    const zmix_model *base = rt->model;
    zmix_model *m = calloc(1, sizeof *m);
    if (!m) return zmix_error_set(err, ZMIX_ENOMEM, "W' model: out of memory");
    m->cfg = base->cfg;
    m->embed = base->embed;
    m->final_norm = base->final_norm;
    m->lm_head = base->lm_head;
    m->embed_half = base->embed_half;
    m->lm_head_half = base->lm_head_half;
    m->embed_dtype = base->embed_dtype;
    m->lm_head_dtype = base->lm_head_dtype;
    memcpy(m->fingerprint, base->fingerprint, sizeof m->fingerprint);
    m->layers = malloc((size_t)base->cfg.n_layers * sizeof *m->layers);
    if (!m->layers) {
        zmix_model_free(m);
        return zmix_error_set(err, ZMIX_ENOMEM, "W' model: out of memory");
    }
    memcpy(m->layers, base->layers, (size_t)base->cfg.n_layers * sizeof *m->layers);
    size_t n_tile = zmix_runtime_tile_floats(rt);
    float *tile = n_tile ? malloc(n_tile * sizeof *tile) : NULL;
    if (n_tile && !tile) {
        zmix_model_free(m);
        return zmix_error_set(err, ZMIX_ENOMEM, "W' model: out of memory");
    }
    for (int i = 0; i < rt->n_mat; i++) {
        const zmix_adapted *a = &rt->list[i];
        const float *zm = z + a->z_offset;
        float c = zmix_rescale_factor(rt, i, zm, rescale);
        if (c == 0.0f) {
            zmix_model_free(m);
            free(tile);
            return zmix_error_set(err, ZMIX_ENUMERIC,
                                  "%s: Σ(σ⊙z') is zero or not finite; cannot rescale", a->name);
        }
        float *w = malloc((size_t)a->rows * a->cols * sizeof(float));
        float *tmp = malloc((size_t)a->rows * a->rank * sizeof(float));
        if (!w || !tmp || zmix_model_own(m, w)) {
            if (!tmp) free(w);
            free(tmp);
            free(tile);
            zmix_model_free(m);
            return zmix_error_set(err, ZMIX_ENOMEM, "W' model: out of memory for %s", a->name);
        }
        zmix_wprime_compose(rt, i, zm, c, w, tmp, tile);
        /* A one-off (a generator's W'): with expert matrices, nothing else reads U and Vt, so
         * they do not stay resident after it (runtime.c). */
        if (rt->expert_w_block) zmix_factors_release(&rt->factors[i]);
        free(tmp);
        zmix_layer_set_matrix(&m->layers[a->layer], a->kind, (zmix_wref){w, ZMIX_DT_F32});
    }
    free(tile);
    *out = m;
    return 0;
}
