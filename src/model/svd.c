/*
 * SVD of the adapted matrices, W = U·diag(S)·Vt, with LAPACK's divide-and-conquer sgesdd
 * (the fastest of the LAPACK drivers for full thin factors). Done once per model and adapt
 * set; the runtime caches the result on disk. Always in float32 (a 16-bit matrix is widened
 * into the copy sgesdd needs anyway); 16-bit U and Vt are rounded from the float32 ones, one
 * matrix at a time, so the float32 factors of only one matrix exist at once.
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
        if (!factors[i].mapped) { /* else the mapping's owner unmaps them */
            free(factors[i].U);
            free(factors[i].Vt);
            free(factors[i].U16);
            free(factors[i].Vt16);
        }
        free(factors[i].S);
        factors[i].U = factors[i].S = factors[i].Vt = NULL;
        factors[i].U16 = factors[i].Vt16 = NULL;
        factors[i].mapped = 0;
    }
}

int zmix_factors_narrow(zmix_factors *f, zmix_dtype dtype)
{
    if (dtype == ZMIX_DT_F32 || !f->U) return 0;
    size_t nu = (size_t)f->rows * f->rank, nv = (size_t)f->rank * f->cols;
    f->U16 = malloc((nu ? nu : 1) * sizeof *f->U16);
    f->Vt16 = malloc((nv ? nv : 1) * sizeof *f->Vt16);
    if (!f->U16 || !f->Vt16) {
        free(f->U16);
        free(f->Vt16);
        f->U16 = f->Vt16 = NULL;
        return ZMIX_ENOMEM;
    }
    zmix_float_to_half(f->U16, f->U, nu, dtype);
    zmix_float_to_half(f->Vt16, f->Vt, nv, dtype);
    free(f->U);
    free(f->Vt);
    f->U = f->Vt = NULL;
    f->dtype = dtype;
    return 0;
}

static int factor_one(const zmix_model *model, const zmix_adapted *a, zmix_dtype dtype,
                      zmix_factors *f, zmix_error *err)
{
    int rows, cols;
    zmix_wref w = zmix_model_matrix_ref(model, a->layer, a->kind, &rows, &cols);
    if (!w.data || rows != a->rows || cols != a->cols)
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
    if (w.dtype == ZMIX_DT_F32)
        memcpy(copy, w.data, (size_t)rows * cols * sizeof(float));
    else /* the copy sgesdd needs anyway, widened: one matrix at a time */
        zmix_half_to_float(copy, w.data, (size_t)rows * cols, w.dtype);
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
    free(copy);
    copy = NULL;
    if (!rc && zmix_factors_narrow(f, dtype))
        rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: 16-bit factors: out of memory", a->name);
done:
    free(copy);
    if (rc) zmix_factors_free(f, 1);
    return rc;
}

int zmix_factors_compute(const zmix_model *model, const zmix_adapted *list, int n, zmix_dtype dtype,
                         zmix_factors *factors, zmix_error *err)
{
    memset(factors, 0, (size_t)n * sizeof *factors);
    for (int i = 0; i < n; i++) {
        int rc = factor_one(model, &list[i], dtype, &factors[i], err);
        if (rc) {
            zmix_factors_free(factors, i);
            return rc;
        }
    }
    return 0;
}
