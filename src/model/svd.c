/*
 * SVD of the adapted matrices, W = U·diag(S)·Vt, with LAPACK's divide-and-conquer sgesdd
 * (the fastest of the LAPACK drivers for full thin factors). Done once per model and adapt
 * set; the runtime caches the result on disk.
 */
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"

void zmix_factors_free(zmix_factors *factors, int n)
{
    if (!factors) return;
    for (int i = 0; i < n; i++) {
        free(factors[i].U);
        free(factors[i].S);
        free(factors[i].Vt);
        factors[i].U = factors[i].S = factors[i].Vt = NULL;
    }
}

static int factor_one(const zmix_model *model, const zmix_adapted *a, zmix_factors *f,
                      zmix_error *err)
{
    int rows, cols;
    const float *w = zmix_model_matrix(model, a->layer, a->kind, &rows, &cols);
    if (!w || rows != a->rows || cols != a->cols)
        return zmix_error_set(err, ZMIX_EINTERNAL, "%s: shape %dx%d does not match the model",
                              a->name, a->rows, a->cols);
    int r = rows < cols ? rows : cols;
    f->rows = rows;
    f->cols = cols;
    f->rank = r;
    f->U = malloc((size_t)rows * r * sizeof(float));
    f->S = malloc((size_t)r * sizeof(float));
    f->Vt = malloc((size_t)r * cols * sizeof(float));
    float *copy = malloc((size_t)rows * cols * sizeof(float)); /* sgesdd destroys its input */
    int rc = 0;
    if (!f->U || !f->S || !f->Vt || !copy) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: SVD of %dx%d: out of memory", a->name, rows,
                            cols);
        goto done;
    }
    memcpy(copy, w, (size_t)rows * cols * sizeof(float));
    lapack_int info =
        LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', rows, cols, copy, cols, f->S, f->U, r, f->Vt, cols);
    if (info > 0)
        rc = zmix_error_set(err, ZMIX_ENUMERIC, "%s: SVD did not converge (sgesdd info %d)",
                            a->name, (int)info);
    else if (info < 0)
        rc = zmix_error_set(err, ZMIX_EINTERNAL, "%s: sgesdd rejected argument %d", a->name,
                            (int)-info);
    for (int i = 0; !rc && i < r; i++)
        if (!isfinite(f->S[i]))
            rc = zmix_error_set(err, ZMIX_ENUMERIC, "%s: singular value %d is not finite", a->name,
                                i);
done:
    free(copy);
    if (rc) zmix_factors_free(f, 1);
    return rc;
}

int zmix_factors_compute(const zmix_model *model, const zmix_adapted *list, int n,
                         zmix_factors *factors, zmix_error *err)
{
    memset(factors, 0, (size_t)n * sizeof *factors);
    for (int i = 0; i < n; i++) {
        int rc = factor_one(model, &list[i], &factors[i], err);
        if (rc) {
            zmix_factors_free(factors, i);
            return rc;
        }
    }
    return 0;
}
