/* Numeric building blocks of the forward pass: RoPE tables, RMSNorm, linear maps. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "compute.h"

int zmix_rope_init(zmix_rope *rope, const zmix_model_config *cfg, int max_pos, zmix_error *err)
{
    rope->max_pos = max_pos;
    rope->half = cfg->head_dim / 2;
    size_t n = (size_t)max_pos * (size_t)rope->half;
    rope->cos = malloc((n ? n : 1) * sizeof(float));
    rope->sin = malloc((n ? n : 1) * sizeof(float));
    if (!rope->cos || !rope->sin) {
        zmix_rope_free(rope);
        return zmix_error_set(err, ZMIX_ENOMEM, "RoPE table for %d positions: out of memory",
                              max_pos);
    }
    for (int i = 0; i < rope->half; i++) {
        /* Same float expression as llama2.c's run.c and HF's inv_freq, so that the angles
         * (and the known greedy outputs) match theirs. */
        float freq = 1.0f / powf(cfg->rope_theta, (float)(2 * i) / (float)cfg->head_dim);
        for (int pos = 0; pos < max_pos; pos++) {
            float angle = (float)pos * freq;
            rope->cos[(size_t)pos * rope->half + i] = cosf(angle);
            rope->sin[(size_t)pos * rope->half + i] = sinf(angle);
        }
    }
    return 0;
}

void zmix_rope_free(zmix_rope *rope)
{
    free(rope->cos);
    free(rope->sin);
    rope->cos = rope->sin = NULL;
}

void zmix_linear_apply(const zmix_linear *lin, const float *x, int n, float *y, float *tmp)
{
    if (lin->W) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, lin->rows, lin->cols, 1.0f, x,
                    lin->cols, lin->W, lin->cols, 0.0f, y, lin->rows);
        return;
    }
    int r = lin->rank;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r, lin->cols, 1.0f, x, lin->cols,
                lin->Vt, lin->cols, 0.0f, tmp, r);
    for (int i = 0; i < n; i++) zmix_vec_mul(tmp + (size_t)i * r, lin->scale, (size_t)r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, lin->rows, r, 1.0f, tmp, r, lin->U, r,
                0.0f, y, lin->rows);
}

void zmix_rmsnorm_rows(float *out, const float *x, const float *w, int n_rows, int dim, float eps)
{
    for (int i = 0; i < n_rows; i++) {
        const float *xi = x + (size_t)i * dim;
        float ss = zmix_vec_sum_squares(xi, (size_t)dim);
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        zmix_vec_scale_weight(out + (size_t)i * dim, w, inv, xi, (size_t)dim);
    }
}
