/*
 * Hugging Face model directories: config.json plus model.safetensors, or a sharded
 * model.safetensors.index.json whose weight_map names the shard of every tensor.
 *
 * Every tensor the config implies is looked up, its shape checked against the config, its
 * values converted to float32 when needed and scanned for NaN/Inf. F32 tensors stay in the
 * file mapping (which then passes to the model); everything else is a heap copy. Tensors in
 * the files that the model would not use are an error, not silently dropped: they mean the
 * config and the weights disagree (a bias the config does not declare, say).
 */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "loaders.h"
#include "safetensors.h"

#define MAX_INDEX_BYTES (64u << 20)

typedef struct shard {
    char name[256]; /* file name within the directory */
    zmix_st_file file;
    char *used;   /* per tensor of file: consumed by the model */
    int in_place; /* some tensor points into the mapping */
} shard;

typedef struct hf_loader {
    const char *dir;
    char index_path[1100];
    cJSON *index; /* NULL for a single file */
    const cJSON *weight_map;
    shard *shards;
    int n_shards;
    zmix_model *model;
} hf_loader;

static int is_plain_file_name(const char *s)
{
    return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..") && strlen(s) < 256;
}

static int open_shard(hf_loader *L, const char *name, zmix_error *err)
{
    shard *s = &L->shards[L->n_shards];
    snprintf(s->name, sizeof s->name, "%s", name);
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", L->dir, name);
    int rc = zmix_st_open(path, &s->file, err);
    if (rc) return rc;
    L->n_shards++;
    s->used = calloc((size_t)s->file.n_tensors + 1, 1);
    if (!s->used) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    return 0;
}

static int open_index(hf_loader *L, zmix_error *err)
{
    int rc = zmix_json_load_file(L->index_path, MAX_INDEX_BYTES, &L->index, err);
    if (rc) return rc;
    L->weight_map = cJSON_GetObjectItemCaseSensitive(L->index, "weight_map");
    if (!cJSON_IsObject(L->weight_map))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: 'weight_map' is missing or not an object",
                              L->index_path);
    int n = cJSON_GetArraySize(L->weight_map);
    L->shards = calloc((size_t)n + 1, sizeof *L->shards);
    if (!L->shards) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", L->index_path);
    const cJSON *entry;
    cJSON_ArrayForEach(entry, L->weight_map)
    {
        if (!cJSON_IsString(entry) || !is_plain_file_name(entry->valuestring))
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: weight_map['%s'] is not a file name in the directory",
                                  L->index_path, entry->string);
        int known = 0;
        for (int i = 0; i < L->n_shards && !known; i++)
            known = !strcmp(L->shards[i].name, entry->valuestring);
        if (!known && (rc = open_shard(L, entry->valuestring, err))) return rc;
    }
    return 0;
}

/* The shard holding name, or NULL (with ENOTFOUND in err) when the checkpoint lacks it. */
static shard *shard_of(hf_loader *L, const char *name, zmix_error *err)
{
    if (!L->index) {
        if (zmix_st_find(&L->shards[0].file, name)) return &L->shards[0];
        zmix_error_set(err, ZMIX_ENOTFOUND, "%s: tensor '%s' is missing", L->shards[0].file.path,
                       name);
        return NULL;
    }
    const cJSON *entry = cJSON_GetObjectItemCaseSensitive(L->weight_map, name);
    if (!entry) {
        zmix_error_set(err, ZMIX_ENOTFOUND, "%s: tensor '%s' is missing from weight_map",
                       L->index_path, name);
        return NULL;
    }
    for (int i = 0; i < L->n_shards; i++) {
        if (strcmp(L->shards[i].name, entry->valuestring)) continue;
        if (zmix_st_find(&L->shards[i].file, name)) return &L->shards[i];
        zmix_error_set(err, ZMIX_ENOTFOUND, "%s: tensor '%s' is missing (weight_map puts it here)",
                       L->shards[i].file.path, name);
        return NULL;
    }
    zmix_error_set(err, ZMIX_EINTERNAL, "%s: shard of '%s' not opened", L->index_path, name);
    return NULL;
}

static int has_tensor(const hf_loader *L, const char *name)
{
    if (L->index) return cJSON_GetObjectItemCaseSensitive(L->weight_map, name) != NULL;
    return zmix_st_find(&L->shards[0].file, name) != NULL;
}

/* Loads one tensor of shape [d0] (d1 == 0) or [d0, d1] as float32 into *out. */
static int load_tensor(hf_loader *L, const char *name, int64_t d0, int64_t d1, const float **out,
                       zmix_error *err)
{
    shard *s = shard_of(L, name, err);
    if (!s) return err ? err->code : ZMIX_ENOTFOUND;
    const zmix_st_tensor *t = zmix_st_find(&s->file, name);
    int want_ndim = d1 ? 2 : 1;
    if (t->ndim != want_ndim || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
        char got[128] = "", *p = got;
        for (int i = 0; i < t->ndim && p < got + sizeof got - 24; i++)
            p += snprintf(p, (size_t)(got + sizeof got - p), "%s%lld", i ? ", " : "",
                          (long long)t->shape[i]);
        char want[64];
        if (d1)
            snprintf(want, sizeof want, "%lld, %lld", (long long)d0, (long long)d1);
        else
            snprintf(want, sizeof want, "%lld", (long long)d0);
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: tensor '%s': shape [%s], expected [%s] from config.json",
                              s->file.path, name, got, want);
    }
    s->used[t - s->file.tensors] = 1;
    float *copy;
    int rc = zmix_st_tensor_f32(&s->file, t, out, &copy, err);
    if (rc) return rc;
    if (copy) {
        if ((rc = zmix_model_own(L->model, copy)))
            return zmix_error_set(err, rc, "%s: tensor '%s': out of memory", s->file.path, name);
    } else {
        s->in_place = 1;
    }
    return zmix_check_finite(*out, t->numel, s->file.path, name, err);
}

static int load_layer(hf_loader *L, int l, zmix_layer *layer, zmix_error *err)
{
    const zmix_model_config *c = &L->model->cfg;
    int64_t dim = c->dim, hidden = c->hidden_dim;
    int64_t q_dim = (int64_t)c->n_heads * c->head_dim,
            kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    struct {
        const char *suffix;
        int64_t d0, d1;
        const float **dst;
    } parts[] = {
        {"input_layernorm.weight", dim, 0, &layer->attn_norm},
        {"self_attn.q_proj.weight", q_dim, dim, &layer->wq},
        {"self_attn.k_proj.weight", kv_dim, dim, &layer->wk},
        {"self_attn.v_proj.weight", kv_dim, dim, &layer->wv},
        {"self_attn.o_proj.weight", dim, q_dim, &layer->wo},
        {"post_attention_layernorm.weight", dim, 0, &layer->ffn_norm},
        {"mlp.gate_proj.weight", hidden, dim, &layer->w_gate},
        {"mlp.up_proj.weight", hidden, dim, &layer->w_up},
        {"mlp.down_proj.weight", dim, hidden, &layer->w_down},
        {"self_attn.q_proj.bias", q_dim, 0, &layer->bq},
        {"self_attn.k_proj.bias", kv_dim, 0, &layer->bk},
        {"self_attn.v_proj.bias", kv_dim, 0, &layer->bv},
    };
    int n_parts = c->qkv_bias ? 12 : 9; /* the biases come last in the table */
    for (int i = 0; i < n_parts; i++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.%s", l, parts[i].suffix);
        int rc = load_tensor(L, name, parts[i].d0, parts[i].d1, parts[i].dst, err);
        if (rc) return rc;
    }
    return 0;
}

/* Tied embeddings with lm_head.weight stored anyway: accepted when it is the embedding. */
static int check_tied_head(hf_loader *L, zmix_error *err)
{
    const zmix_model_config *c = &L->model->cfg;
    const float *head;
    int rc = load_tensor(L, "lm_head.weight", c->vocab_size, c->dim, &head, err);
    if (rc) return rc;
    size_t n = (size_t)c->vocab_size * (size_t)c->dim;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&head[i], &L->model->embed[i], sizeof(float)))
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: tie_word_embeddings is true but lm_head.weight differs from "
                                  "model.embed_tokens.weight (row %zu, column %zu)",
                                  L->dir, i / (size_t)c->dim, i % (size_t)c->dim);
    return 0;
}

static int check_all_used(hf_loader *L, zmix_error *err)
{
    for (int i = 0; i < L->n_shards; i++) {
        shard *s = &L->shards[i];
        for (int t = 0; t < s->file.n_tensors; t++) {
            const char *name = s->file.tensors[t].name;
            /* Older checkpoints store the RoPE frequencies, which zmix recomputes. */
            size_t len = strlen(name), tail = strlen("rotary_emb.inv_freq");
            if (s->used[t] || (len >= tail && !strcmp(name + len - tail, "rotary_emb.inv_freq")))
                continue;
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: tensor '%s' is not part of a %s model with this config.json",
                                  s->file.path, name, L->model->cfg.model_type);
        }
    }
    return 0;
}

static int load_weights(hf_loader *L, zmix_error *err)
{
    zmix_model *m = L->model;
    const zmix_model_config *c = &m->cfg;
    int rc = load_tensor(L, "model.embed_tokens.weight", c->vocab_size, c->dim, &m->embed, err);
    if (rc) return rc;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", L->dir);
    for (int l = 0; l < c->n_layers; l++)
        if ((rc = load_layer(L, l, &m->layers[l], err))) return rc;
    if ((rc = load_tensor(L, "model.norm.weight", c->dim, 0, &m->final_norm, err))) return rc;
    if (c->tied_embeddings) {
        m->lm_head = m->embed;
        if (has_tensor(L, "lm_head.weight") && (rc = check_tied_head(L, err))) return rc;
    } else {
        rc = load_tensor(L, "lm_head.weight", c->vocab_size, c->dim, &m->lm_head, err);
        if (rc) return rc;
    }
    return check_all_used(L, err);
}

int zmix_hf_load(const char *dir, zmix_model *model, zmix_error *err)
{
    hf_loader L = {.dir = dir, .model = model};
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = zmix_hf_config_load(path, &model->cfg, err);
    if (rc) return rc;

    struct stat st;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(L.index_path, sizeof L.index_path, "%s/model.safetensors.index.json", dir);
    if (stat(path, &st) == 0) {
        L.shards = calloc(1, sizeof *L.shards);
        rc = L.shards ? open_shard(&L, "model.safetensors", err)
                      : zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", dir);
    } else if (stat(L.index_path, &st) == 0) {
        rc = open_index(&L, err);
    } else {
        rc = zmix_error_set(err, ZMIX_ENOTFOUND,
                            "%s: neither model.safetensors nor model.safetensors.index.json", dir);
    }
    if (!rc) rc = load_weights(&L, err);
    /* Mappings that weights point into pass to the model; the rest close with the shard. */
    for (int i = 0; i < L.n_shards; i++) {
        shard *s = &L.shards[i];
        if (!rc && s->in_place &&
            (rc = zmix_model_own_mapping(model, zmix_st_take_mapping(&s->file))))
            zmix_error_set(err, rc, "%s: out of memory", dir);
        zmix_st_close(&s->file);
        free(s->used);
    }
    free(L.shards);
    cJSON_Delete(L.index);
    return rc;
}
