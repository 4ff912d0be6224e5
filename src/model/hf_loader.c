/*
 * Hugging Face model directories: config.json plus model.safetensors, or a sharded
 * model.safetensors.index.json whose weight_map names the shard of every tensor.
 *
 * Every tensor the config implies is looked up, its shape checked against the config and its
 * values scanned for NaN/Inf. Matrices, the embedding and the LM head keep the file's dtype:
 * F32 and 16-bit ones stay in the file mapping (which then passes to the model), so a BF16
 * model takes its file size, not twice it. Norm weights and biases are float32 (16-bit ones
 * converted, a heap copy); so is an F32 tensor the file leaves unaligned. Tensors in
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
    /* Probe mode (zmix_hf_probe): tensors are found and their shapes checked, their bytes
     * counted, but no tensor byte is read and no pointer is set. */
    int probe;
    size_t probe_bytes;
    zmix_dtype probe_dtype; /* of the matrices */
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

/* The tensor name of shape [d0] (d1 == 0) or [d0, d1], checked against the config. */
static const zmix_st_tensor *find_shaped(hf_loader *L, const char *name, int64_t d0, int64_t d1,
                                         shard **where, zmix_error *err)
{
    shard *s = shard_of(L, name, err);
    if (!s) return NULL;
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
        zmix_error_set(err, ZMIX_EFORMAT,
                       "%s: tensor '%s': shape [%s], expected [%s] from config.json", s->file.path,
                       name, got, want);
        return NULL;
    }
    s->used[t - s->file.tensors] = 1;
    *where = s;
    return t;
}

/* A tensor's storage passes to the model: its heap copy, or else the shard's mapping. */
static int keep(hf_loader *L, shard *s, void *copy, const char *name, zmix_error *err)
{
    if (!copy) {
        s->in_place = 1;
        return 0;
    }
    int rc = zmix_model_own(L->model, copy);
    return rc ? zmix_error_set(err, rc, "%s: tensor '%s': out of memory", s->file.path, name) : 0;
}

/* Loads one tensor of shape [d0] (d1 == 0) or [d0, d1] as float32 into *out. */
static int load_tensor(hf_loader *L, const char *name, int64_t d0, int64_t d1, const float **out,
                       zmix_error *err)
{
    shard *s;
    const zmix_st_tensor *t = find_shaped(L, name, d0, d1, &s, err);
    if (!t) return err ? err->code : ZMIX_EFORMAT;
    if (L->probe) {
        /* Mapped (F32 in place) or a float32 heap copy (the mapped original touched once). */
        L->probe_bytes += t->end - t->begin + (t->dtype == ZMIX_ST_F32 ? 0 : t->numel * 4);
        *out = NULL;
        return 0;
    }
    float *copy;
    int rc = zmix_st_tensor_f32(&s->file, t, out, &copy, err);
    if (rc || (rc = keep(L, s, copy, name, err))) return rc;
    return zmix_check_finite(*out, t->numel, s->file.path, name, err);
}

/* ENUMERIC naming the element when a 16-bit value is NaN or Inf (all exponent bits set). */
static int check_finite_half(const uint16_t *p, size_t n, zmix_dtype dtype, const char *file,
                             const char *tensor, zmix_error *err)
{
    uint16_t exp = dtype == ZMIX_DT_BF16 ? 0x7f80 : 0x7c00;
    uint16_t mant = dtype == ZMIX_DT_BF16 ? 0x007f : 0x03ff;
    for (size_t i = 0; i < n; i++)
        if ((p[i] & exp) == exp)
            return zmix_error_set(err, ZMIX_ENUMERIC, "%s: tensor '%s': element %zu is %s", file,
                                  tensor, i, p[i] & mant ? "NaN" : "Inf");
    return 0;
}

/* Loads a matrix [d0, d1] in the dtype the file holds: F32 as load_tensor does, F16/BF16 as
 * 16-bit values used in place (never widened: that is what keeps a BF16 model at its size). */
static int load_matrix(hf_loader *L, const char *name, int64_t d0, int64_t d1, zmix_wref *out,
                       zmix_error *err)
{
    shard *s;
    const zmix_st_tensor *t = find_shaped(L, name, d0, d1, &s, err);
    if (!t) return err ? err->code : ZMIX_EFORMAT;
    if (L->probe) {
        L->probe_bytes += t->end - t->begin; /* used in place from the mapping */
        L->probe_dtype = (zmix_dtype)t->dtype;
        *out = (zmix_wref){NULL, (zmix_dtype)t->dtype};
        return 0;
    }
    if (t->dtype == ZMIX_ST_F32) {
        s->used[t - s->file.tensors] = 0; /* load_tensor marks it again */
        const float *f;
        int rc = load_tensor(L, name, d0, d1, &f, err);
        *out = (zmix_wref){f, ZMIX_DT_F32};
        return rc;
    }
    const uint16_t *data;
    uint16_t *copy;
    int rc = zmix_st_tensor_half(&s->file, t, &data, &copy, err);
    if (rc || (rc = keep(L, s, copy, name, err))) return rc;
    out->data = data;
    out->dtype = t->dtype == ZMIX_ST_BF16 ? ZMIX_DT_BF16 : ZMIX_DT_F16;
    return check_finite_half(data, t->numel, out->dtype, s->file.path, name, err);
}

static int load_layer(hf_loader *L, int l, zmix_layer *layer, zmix_error *err)
{
    const zmix_model_config *c = &L->model->cfg;
    int64_t dim = c->dim, hidden = c->hidden_dim;
    int64_t q_dim = (int64_t)c->n_heads * c->head_dim,
            kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    static const char *const matrix_suffix[ZMIX_MAT_COUNT] = {
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
        "mlp.down_proj.weight"};
    const int64_t shape[ZMIX_MAT_COUNT][2] = {{q_dim, dim}, {kv_dim, dim}, {kv_dim, dim},
                                              {dim, q_dim}, {hidden, dim}, {hidden, dim},
                                              {dim, hidden}};
    char name[128];
    int rc;
    for (int k = 0; k < ZMIX_MAT_COUNT; k++) {
        zmix_wref w;
        snprintf(name, sizeof name, "model.layers.%d.%s", l, matrix_suffix[k]);
        if ((rc = load_matrix(L, name, shape[k][0], shape[k][1], &w, err))) return rc;
        zmix_layer_set_matrix(layer, (zmix_matrix_kind)k, w);
    }
    struct {
        const char *suffix;
        int64_t d0;
        const float **dst;
    } vectors[] = {
        {"input_layernorm.weight", dim, &layer->attn_norm},
        {"post_attention_layernorm.weight", dim, &layer->ffn_norm},
        {"self_attn.q_proj.bias", q_dim, &layer->bq},
        {"self_attn.k_proj.bias", kv_dim, &layer->bk},
        {"self_attn.v_proj.bias", kv_dim, &layer->bv},
    };
    int n_vectors = c->qkv_bias ? 5 : 2; /* the biases come last in the table */
    for (int i = 0; i < n_vectors; i++) {
        snprintf(name, sizeof name, "model.layers.%d.%s", l, vectors[i].suffix);
        if ((rc = load_tensor(L, name, vectors[i].d0, 0, vectors[i].dst, err))) return rc;
    }
    return 0;
}

/* Row r of a matrix [.., dim] as floats: in place when float32, else widened into buf. */
static const float *row_values(zmix_wref w, size_t r, size_t dim, float *buf)
{
    if (w.dtype == ZMIX_DT_F32) return (const float *)w.data + r * dim;
    zmix_half_to_float(buf, (const uint16_t *)w.data + r * dim, dim, w.dtype);
    return buf;
}

/* Tied embeddings with lm_head.weight stored anyway: accepted when it is the embedding, value
 * for value (whatever dtype each is stored in). */
static int check_tied_head(hf_loader *L, zmix_error *err)
{
    const zmix_model_config *c = &L->model->cfg;
    zmix_wref head, embed = zmix_model_embed_ref(L->model);
    int rc = load_matrix(L, "lm_head.weight", c->vocab_size, c->dim, &head, err);
    if (rc || L->probe) return rc;
    size_t dim = (size_t)c->dim;
    float *buf = malloc(2 * dim * sizeof *buf);
    if (!buf) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", L->dir);
    for (size_t r = 0; r < (size_t)c->vocab_size && !rc; r++) {
        const float *a = row_values(head, r, dim, buf), *b = row_values(embed, r, dim, buf + dim);
        if (!memcmp(a, b, dim * sizeof *a)) continue;
        size_t col = 0;
        while (!memcmp(&a[col], &b[col], sizeof *a)) col++;
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "%s: tie_word_embeddings is true but lm_head.weight differs from "
                            "model.embed_tokens.weight (row %zu, column %zu)",
                            L->dir, r, col);
    }
    free(buf);
    return rc;
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
    zmix_wref w;
    int rc = load_matrix(L, "model.embed_tokens.weight", c->vocab_size, c->dim, &w, err);
    if (rc) return rc;
    m->embed = w.dtype == ZMIX_DT_F32 ? w.data : NULL;
    m->embed_half = m->embed ? NULL : w.data;
    m->embed_dtype = w.dtype;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", L->dir);
    for (int l = 0; l < c->n_layers; l++)
        if ((rc = load_layer(L, l, &m->layers[l], err))) return rc;
    if ((rc = load_tensor(L, "model.norm.weight", c->dim, 0, &m->final_norm, err))) return rc;
    if (c->tied_embeddings) {
        m->lm_head = m->embed;
        m->lm_head_half = m->embed_half;
        m->lm_head_dtype = m->embed_dtype;
        if (has_tensor(L, "lm_head.weight") && (rc = check_tied_head(L, err))) return rc;
    } else {
        if ((rc = load_matrix(L, "lm_head.weight", c->vocab_size, c->dim, &w, err))) return rc;
        m->lm_head = w.dtype == ZMIX_DT_F32 ? w.data : NULL;
        m->lm_head_half = m->lm_head ? NULL : w.data;
        m->lm_head_dtype = w.dtype;
    }
    return check_all_used(L, err);
}

static int hf_open_and_load(hf_loader *L, zmix_error *err);

int zmix_hf_load(const char *dir, zmix_model *model, zmix_error *err)
{
    hf_loader L = {.dir = dir, .model = model};
    return hf_open_and_load(&L, err);
}

int zmix_hf_probe(const char *dir, zmix_model_config *cfg, zmix_dtype *dtype, size_t *bytes,
                  zmix_error *err)
{
    zmix_model *scratch = calloc(1, sizeof *scratch);
    if (!scratch) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", dir);
    hf_loader L = {.dir = dir, .model = scratch, .probe = 1};
    int rc = hf_open_and_load(&L, err);
    *cfg = scratch->cfg;
    *dtype = L.probe_dtype;
    *bytes = L.probe_bytes;
    zmix_model_free(scratch);
    return rc;
}

static int hf_open_and_load(hf_loader *L, zmix_error *err)
{
    const char *dir = L->dir;
    zmix_model *model = L->model;
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = zmix_hf_config_load(path, &model->cfg, err);
    if (rc) return rc;

    struct stat st;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(L->index_path, sizeof L->index_path, "%s/model.safetensors.index.json", dir);
    if (stat(path, &st) == 0) {
        L->shards = calloc(1, sizeof *L->shards);
        rc = L->shards ? open_shard(L, "model.safetensors", err)
                       : zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", dir);
    } else if (stat(L->index_path, &st) == 0) {
        rc = open_index(L, err);
    } else {
        rc = zmix_error_set(err, ZMIX_ENOTFOUND,
                            "%s: neither model.safetensors nor model.safetensors.index.json", dir);
    }
    if (!rc) rc = load_weights(L, err);
    /* Mappings that weights point into pass to the model; the rest close with the shard. */
    for (int i = 0; i < L->n_shards; i++) {
        shard *s = &L->shards[i];
        if (!rc && s->in_place &&
            (rc = zmix_model_own_mapping(model, zmix_st_take_mapping(&s->file))))
            zmix_error_set(err, rc, "%s: out of memory", dir);
        zmix_st_close(&s->file);
        free(s->used);
    }
    free(L->shards);
    cJSON_Delete(L->index);
    return rc;
}
