/*
 * Warm start (docs/cem.md, "Warm start"): the α a new search begins from, taken from an
 * earlier result, checked to apply to this runtime (same base model and experts) and shaped
 * to the search's dimension. Thread: any.
 */
#include <math.h>
#include <stdlib.h>

#include "adapt_internal.h"
#include "zmix/adapt.h"

int zmix_adapt_warm_mean(const zmix_runtime *rt, const char *experts_now,
                         const zmix_adapt_opts *opts, const float *alpha, int n_alpha,
                         const char *model_fingerprint, const char *experts_digest, double **out,
                         zmix_error *err)
{
    *out = NULL;
    char why[200];
    if (zmix_adapt_provenance_mismatch(zmix_model_fingerprint(zmix_runtime_model(rt)), experts_now,
                                       model_fingerprint, experts_digest, why, sizeof why))
        return zmix_error_set(err, ZMIX_EINVAL, "warm start: %s", why);
    int K = zmix_runtime_n_experts(rt), dim = zmix_adapt_alpha_dim(rt, opts);
    /* A shared α starts a per-layer search on every matrix; the reverse would have to
     * average what the per-layer search found, which is not a result of its own. */
    if (n_alpha != dim && !(n_alpha == K && dim % K == 0))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "warm start: its α has %d values, this search %d (%s α over %d "
                              "experts); a per-layer α cannot start a shared search",
                              n_alpha, dim, opts->per_layer ? "per-layer" : "shared", K);
    double *m = malloc((size_t)dim * sizeof *m);
    if (!m) return zmix_error_set(err, ZMIX_ENOMEM, "warm start: out of memory");
    for (int i = 0; i < dim; i++) {
        double v = alpha[n_alpha == dim ? i : i % K];
        if (!isfinite(v)) {
            free(m);
            return zmix_error_set(err, ZMIX_EINVAL, "warm start: alpha[%d] is not finite",
                                  n_alpha == dim ? i : i % K);
        }
        /* A result may lie on the bounds, or outside new ones: start inside them. */
        m[i] = v < opts->cem.lo ? opts->cem.lo : v > opts->cem.hi ? opts->cem.hi : v;
    }
    *out = m;
    return 0;
}
