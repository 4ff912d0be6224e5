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
