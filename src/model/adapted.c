#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Matrix shapes and names, the stored dtype of each matrix, and the adapted-matrix list. */

static const char *const hf_suffix[ZMIX_MAT_COUNT] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

const char *zmix_matrix_kind_hf_suffix(zmix_matrix_kind kind)
{
    return (kind >= 0 && kind < ZMIX_MAT_COUNT) ? hf_suffix[kind] : "?";
}

const float *zmix_model_matrix(const zmix_model *model, int layer, zmix_matrix_kind kind, int *rows,
                               int *cols)
{
    const zmix_model_config *c = &model->cfg;
    const zmix_layer *l = &model->layers[layer];
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    switch (kind) {
    case ZMIX_MAT_Q: *rows = q_dim, *cols = c->dim; return l->wq;
    case ZMIX_MAT_K: *rows = kv_dim, *cols = c->dim; return l->wk;
    case ZMIX_MAT_V: *rows = kv_dim, *cols = c->dim; return l->wv;
    case ZMIX_MAT_O: *rows = c->dim, *cols = q_dim; return l->wo;
    case ZMIX_MAT_GATE: *rows = c->hidden_dim, *cols = c->dim; return l->w_gate;
    case ZMIX_MAT_UP: *rows = c->hidden_dim, *cols = c->dim; return l->w_up;
    case ZMIX_MAT_DOWN: *rows = c->dim, *cols = c->hidden_dim; return l->w_down;
    default: *rows = *cols = 0; return NULL;
    }
}

const float **zmix_layer_matrix_slot(zmix_layer *layer, zmix_matrix_kind kind)
{
    switch (kind) {
    case ZMIX_MAT_Q: return &layer->wq;
    case ZMIX_MAT_K: return &layer->wk;
    case ZMIX_MAT_V: return &layer->wv;
    case ZMIX_MAT_O: return &layer->wo;
    case ZMIX_MAT_GATE: return &layer->w_gate;
    case ZMIX_MAT_UP: return &layer->w_up;
    default: return &layer->w_down;
    }
}

void zmix_layer_set_matrix(zmix_layer *layer, zmix_matrix_kind kind, zmix_wref w)
{
    const float *f = w.dtype == ZMIX_DT_F32 ? w.data : NULL;
    *zmix_layer_matrix_slot(layer, kind) = f;
    layer->half[kind] = f ? NULL : w.data;
    layer->half_dtype[kind] = w.dtype;
}

zmix_wref zmix_model_matrix_ref(const zmix_model *model, int layer, zmix_matrix_kind kind,
                                int *rows, int *cols)
{
    const float *w = zmix_model_matrix(model, layer, kind, rows, cols);
    if (w || kind < 0 || kind >= ZMIX_MAT_COUNT) return (zmix_wref){w, ZMIX_DT_F32};
    const zmix_layer *l = &model->layers[layer];
    return (zmix_wref){l->half[kind], l->half_dtype[kind]};
}

zmix_wref zmix_model_embed_ref(const zmix_model *model)
{
    if (model->embed) return (zmix_wref){model->embed, ZMIX_DT_F32};
    return (zmix_wref){model->embed_half, model->embed_dtype};
}

void zmix_model_embed_rows(const zmix_model *model, const int32_t *tokens, int n, float *x)
{
    zmix_wref embed = zmix_model_embed_ref(model);
    size_t dim = (size_t)model->cfg.dim;
    for (int r = 0; r < n; r++) {
        size_t at = (size_t)tokens[r] * dim;
        if (embed.dtype == ZMIX_DT_F32)
            memcpy(x + (size_t)r * dim, (const float *)embed.data + at, dim * sizeof *x);
        else
            zmix_half_to_float(x + (size_t)r * dim, (const uint16_t *)embed.data + at, dim,
                               embed.dtype);
    }
}

zmix_wref zmix_model_lm_head_ref(const zmix_model *model)
{
    if (model->lm_head) return (zmix_wref){model->lm_head, ZMIX_DT_F32};
    return (zmix_wref){model->lm_head_half, model->lm_head_dtype};
}

int zmix_model_has_half(const zmix_model *model)
{
    if (!model->embed || !model->lm_head) return 1;
    for (int l = 0; l < model->cfg.n_layers; l++)
        for (int k = 0; k < ZMIX_MAT_COUNT; k++) {
            int rows, cols;
            if (!zmix_model_matrix(model, l, (zmix_matrix_kind)k, &rows, &cols)) return 1;
        }
    return 0;
}

int zmix_adapt_set_parse(const char *s, zmix_adapt_set *out, zmix_error *err)
{
    if (!strcmp(s, "mlp"))
        *out = ZMIX_ADAPT_MLP;
    else if (!strcmp(s, "attn"))
        *out = ZMIX_ADAPT_ATTN;
    else if (!strcmp(s, "all"))
        *out = ZMIX_ADAPT_ALL;
    else
        return zmix_error_set(err, ZMIX_EINVAL, "adapt set '%s': expected mlp, attn or all", s);
    return 0;
}

const char *zmix_adapt_set_name(zmix_adapt_set set)
{
    switch (set) {
    case ZMIX_ADAPT_MLP: return "mlp";
    case ZMIX_ADAPT_ATTN: return "attn";
    case ZMIX_ADAPT_ALL: return "all";
    default: return "?";
    }
}

static int kind_in_set(zmix_matrix_kind kind, zmix_adapt_set set)
{
    int is_mlp = kind >= ZMIX_MAT_GATE;
    return is_mlp ? (set & ZMIX_ADAPT_MLP) != 0 : (set & ZMIX_ADAPT_ATTN) != 0;
}

int zmix_adapted_list(const zmix_model *model, zmix_adapt_set set, zmix_adapted **out, int *n_out,
                      size_t *z_total, zmix_error *err)
{
    if (set < ZMIX_ADAPT_MLP || set > ZMIX_ADAPT_ALL)
        return zmix_error_set(err, ZMIX_EINVAL, "adapt set %d is not mlp, attn or all", (int)set);
    int per_layer = 0;
    for (int k = 0; k < ZMIX_MAT_COUNT; k++) per_layer += kind_in_set((zmix_matrix_kind)k, set);
    int n = per_layer * model->cfg.n_layers;
    zmix_adapted *list = calloc((size_t)n, sizeof *list);
    if (!list) return zmix_error_set(err, ZMIX_ENOMEM, "adapted matrix list: out of memory");
    size_t offset = 0;
    int i = 0;
    for (int l = 0; l < model->cfg.n_layers; l++) {
        for (int k = 0; k < ZMIX_MAT_COUNT; k++) {
            if (!kind_in_set((zmix_matrix_kind)k, set)) continue;
            zmix_adapted *a = &list[i++];
            a->layer = l;
            a->kind = (zmix_matrix_kind)k;
            zmix_model_matrix(model, l, a->kind, &a->rows, &a->cols);
            a->rank = a->rows < a->cols ? a->rows : a->cols;
            a->z_offset = offset;
            offset += (size_t)a->rank;
            snprintf(a->name, sizeof a->name, "model.layers.%d.%s.weight", l, hf_suffix[k]);
        }
    }
    *out = list;
    *n_out = n;
    *z_total = offset;
    return 0;
}
