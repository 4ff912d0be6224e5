/*
 * Random-weight models of any LLaMA shape, for tests and benchmarks: every matrix (and the
 * embedding) ~ N(0, 1/in), norm weights 1, biases ~ N(0, 1/dim) when the config asks for
 * them. Deterministic from the seed: each tensor draws from its own PCG32 stream, so the
 * weights of one tensor do not depend on the shapes of the others.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loaders.h"
#include "model_internal.h"
#include "util/pcg.h"

typedef struct builder {
    float *block;
    size_t used;
    uint64_t seed, stream;
} builder;

static float *take_normal(builder *b, size_t n, int fan_in)
{
    float *p = b->block + b->used;
    b->used += n;
    pcg32 rng;
    pcg32_seed(&rng, b->seed, b->stream++);
    double scale = 1.0 / sqrt((double)fan_in);
    double pair[2];
    for (size_t i = 0; i < n; i += 2) {
        pcg32_normal_fill(&rng, pair, 2);
        p[i] = (float)(pair[0] * scale);
        if (i + 1 < n) p[i + 1] = (float)(pair[1] * scale);
    }
    return p;
}

static float *take_ones(builder *b, size_t n)
{
    float *p = b->block + b->used;
    b->used += n;
    for (size_t i = 0; i < n; i++) p[i] = 1.0f;
    b->stream++;
    return p;
}

int zmix_model_create_random(const zmix_model_config *cfg, uint64_t seed, zmix_model **out,
                             zmix_error *err)
{
    *out = NULL;
    int rc = zmix_model_config_check(cfg, "random model", err);
    if (rc) return rc;
    size_t dim = (size_t)cfg->dim, hid = (size_t)cfg->hidden_dim, vocab = (size_t)cfg->vocab_size;
    size_t q_dim = (size_t)cfg->n_heads * cfg->head_dim;
    size_t kv_dim = (size_t)cfg->n_kv_heads * cfg->head_dim;
    size_t per_layer = 2 * dim + q_dim * dim + 2 * kv_dim * dim + dim * q_dim + 3 * hid * dim;
    if (cfg->qkv_bias) per_layer += q_dim + 2 * kv_dim;
    size_t total = vocab * dim + (size_t)cfg->n_layers * per_layer + dim;
    if (!cfg->tied_embeddings) total += vocab * dim;

    zmix_model *m = calloc(1, sizeof *m);
    if (!m) return zmix_error_set(err, ZMIX_ENOMEM, "random model: out of memory");
    m->cfg = *cfg;
    m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers);
    builder b = {malloc(total * sizeof(float)), 0, seed, 1};
    if (!m->layers || !b.block || zmix_model_own(m, b.block)) {
        if (!m->layers) free(b.block);
        zmix_model_free(m);
        return zmix_error_set(err, ZMIX_ENOMEM, "random model: %zu weights: out of memory", total);
    }

    m->embed = take_normal(&b, vocab * dim, cfg->dim);
    for (int l = 0; l < cfg->n_layers; l++) {
        zmix_layer *L = &m->layers[l];
        L->attn_norm = take_ones(&b, dim);
        L->wq = take_normal(&b, q_dim * dim, cfg->dim);
        L->wk = take_normal(&b, kv_dim * dim, cfg->dim);
        L->wv = take_normal(&b, kv_dim * dim, cfg->dim);
        L->wo = take_normal(&b, dim * q_dim, (int)q_dim);
        if (cfg->qkv_bias) {
            L->bq = take_normal(&b, q_dim, cfg->dim);
            L->bk = take_normal(&b, kv_dim, cfg->dim);
            L->bv = take_normal(&b, kv_dim, cfg->dim);
        }
        L->ffn_norm = take_ones(&b, dim);
        L->w_gate = take_normal(&b, hid * dim, cfg->dim);
        L->w_up = take_normal(&b, hid * dim, cfg->dim);
        L->w_down = take_normal(&b, dim * hid, cfg->hidden_dim);
    }
    m->final_norm = take_ones(&b, dim);
    m->lm_head = cfg->tied_embeddings ? m->embed : take_normal(&b, vocab * dim, cfg->dim);
    zmix_model_compute_fingerprint(m);
    *out = m;
    return 0;
}

/* One matrix of n values in dtype: a new block owned by out (or the float32 original when
 * both are float32). */
static int convert_matrix(zmix_model *out, zmix_wref src, size_t n, zmix_dtype dtype,
                          zmix_wref *dst)
{
    if (src.dtype == dtype) {
        *dst = src; /* the source stays alive as long as the copy: see zmix_model_convert */
        return 0;
    }
    float *wide = NULL;
    const float *f = src.data;
    if (src.dtype != ZMIX_DT_F32) {
        wide = malloc((n ? n : 1) * sizeof *wide);
        if (!wide) return ZMIX_ENOMEM;
        zmix_half_to_float(wide, src.data, n, src.dtype);
        f = wide;
    }
    if (dtype == ZMIX_DT_F32) {
        *dst = (zmix_wref){wide, ZMIX_DT_F32};
        return zmix_model_own(out, wide);
    }
    uint16_t *half = malloc((n ? n : 1) * sizeof *half);
    if (!half) {
        free(wide);
        return ZMIX_ENOMEM;
    }
    zmix_float_to_half(half, f, n, dtype);
    free(wide);
    *dst = (zmix_wref){half, dtype};
    return zmix_model_own(out, half);
}

static void set_ref(const float **f, const uint16_t **h, zmix_dtype *dt, zmix_wref w)
{
    *f = w.dtype == ZMIX_DT_F32 ? w.data : NULL;
    *h = w.dtype == ZMIX_DT_F32 ? NULL : w.data;
    *dt = w.dtype;
}

int zmix_model_convert(const zmix_model *model, zmix_dtype dtype, zmix_model **out, zmix_error *err)
{
    /* Every converted block is new; what needs no conversion (norms, biases, matrices already
     * in dtype) is borrowed from model, which must outlive the copy. */
    *out = NULL;
    const zmix_model_config *c = &model->cfg;
    zmix_model *m = calloc(1, sizeof *m);
    if (!m) return zmix_error_set(err, ZMIX_ENOMEM, "model copy: out of memory");
    m->cfg = *c;
    m->final_norm = model->final_norm;
    memcpy(m->fingerprint, model->fingerprint, sizeof m->fingerprint);
    m->layers = malloc((size_t)c->n_layers * sizeof *m->layers);
    int rc = m->layers ? 0 : ZMIX_ENOMEM;
    size_t vd = (size_t)c->vocab_size * (size_t)c->dim;
    zmix_wref w, embed = zmix_model_embed_ref(model), head = zmix_model_lm_head_ref(model);
    if (!rc && !(rc = convert_matrix(m, embed, vd, dtype, &w)))
        set_ref(&m->embed, &m->embed_half, &m->embed_dtype, w);
    if (!rc && head.data == embed.data)
        set_ref(&m->lm_head, &m->lm_head_half, &m->lm_head_dtype, w);
    else if (!rc && !(rc = convert_matrix(m, head, vd, dtype, &w)))
        set_ref(&m->lm_head, &m->lm_head_half, &m->lm_head_dtype, w);
    for (int l = 0; !rc && l < c->n_layers; l++) {
        zmix_layer *L = &m->layers[l];
        *L = model->layers[l];
        for (int k = 0; !rc && k < ZMIX_MAT_COUNT; k++) {
            int rows, cols;
            zmix_wref src = zmix_model_matrix_ref(model, l, (zmix_matrix_kind)k, &rows, &cols);
            if ((rc = convert_matrix(m, src, (size_t)rows * cols, dtype, &w))) break;
            zmix_layer_set_matrix(L, (zmix_matrix_kind)k, w);
        }
    }
    if (rc) {
        zmix_model_free(m);
        return zmix_error_set(err, ZMIX_ENOMEM, "model copy: out of memory");
    }
    /* Narrowing changes the values, hence the model: a new fingerprint. */
    zmix_model_compute_fingerprint(m);
    *out = m;
    return 0;
}
