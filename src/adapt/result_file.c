/*
 * Result files: z' as a self-describing safetensors file, and the one reader of every result
 * file zmix writes (that file, or the JSON document of result_json.c).
 *
 * Why self-describing: a z' vector means nothing without the base model it scales (its
 * singular values), whether the mass rescale applies, and which experts made it. The
 * metadata carries exactly what the result document carries for that (docs/results.md
 * lists the fields), so a file found on disk months later can be checked against a model
 * before anything is built from it, and a copy is checked against its own data by a SHA-256.
 */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapt_internal.h"
#include "model/safetensors.h"
#include "util/file.h"
#include "zmix/adapt.h"
#include "zmix/version.h"

#define Z_FORMAT         ZMIX_Z_FORMAT
#define Z_FORMAT_VERSION ZMIX_Z_FORMAT_VERSION
/* A result document holds the history of the search (per-layer α makes it large) and, with
 * include_z, every z' value as text; 1 GiB is far above any real one. */
#define RESULT_JSON_MAX ((size_t)1 << 30)

/* ---- Writing ------------------------------------------------------------------------- */

/* Metadata values are strings: numbers as the shortest text that reads back the same, and
 * non-finite ones as "null", as in the JSON document. */
static void number_text(double v, char *buf, size_t size)
{
    if (!isfinite(v)) {
        snprintf(buf, size, "null");
        return;
    }
    for (int digits = 9; digits <= 17; digits++) {
        snprintf(buf, size, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static char *json_text(cJSON *item)
{
    char *s = item ? cJSON_PrintUnformatted(item) : NULL;
    cJSON_Delete(item);
    return s;
}

static cJSON *strings_json(char *const *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

static cJSON *fingerprints_json(const zmix_adapt_result *r)
{
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; a && k < r->n_experts; k++)
        cJSON_AddItemToArray(
            a, cJSON_CreateString(r->expert_fingerprints ? r->expert_fingerprints[k] : ""));
    return a;
}

static cJSON *alpha_json(const zmix_adapt_result *r)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < r->dim; i++) {
        char buf[40];
        number_text(r->alpha[i], buf, sizeof buf);
        cJSON_AddItemToArray(a, cJSON_CreateRaw(buf));
    }
    return a;
}

#define MAX_META 32

typedef struct meta_list {
    const char *keys[MAX_META];
    const char *values[MAX_META];
    int n;
} meta_list;

static void meta_put(meta_list *m, const char *key, const char *value)
{
    if (m->n < MAX_META) {
        m->keys[m->n] = key;
        m->values[m->n] = value;
        m->n++;
    }
}

int zmix_adapt_result_save_z(const zmix_adapt_result *r, const char *task, const char *path,
                             zmix_error *err)
{
    if (!r->z)
        return zmix_error_set(err, ZMIX_EINVAL,
                              "%s: the result has no z' (no generation has finished)", path);
    zmix_st_out *tensors = calloc((size_t)(r->n_matrices ? r->n_matrices : 1), sizeof *tensors);
    if (!tensors) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    size_t off = 0;
    for (int m = 0; m < r->n_matrices; m++) {
        tensors[m].name = r->matrix_names[m];
        tensors[m].ndim = 1;
        tensors[m].shape[0] = r->matrix_ranks[m];
        tensors[m].data = r->z + off;
        off += (size_t)r->matrix_ranks[m];
    }
    char sha[65], acc[40], ll[40], base_acc[40], base_ll[40], n_ex[24];
    int rc = zmix_st_data_sha256(tensors, r->n_matrices, sha, err);
    char *model = json_text(zmix_adapt_model_json(&r->model));
    char *alpha = json_text(alpha_json(r));
    char *experts = json_text(strings_json(r->expert_names, r->n_experts));
    char *fps = json_text(fingerprints_json(r));
    if (!rc && (!model || !alpha || !experts || !fps))
        rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory for the metadata", path);
    if (!rc) {
        number_text(r->best.accuracy, acc, sizeof acc);
        number_text(r->best.loglik, ll, sizeof ll);
        number_text(r->base.accuracy, base_acc, sizeof base_acc);
        number_text(r->base.loglik, base_ll, sizeof base_ll);
        snprintf(n_ex, sizeof n_ex, "%d", r->n_examples);
        meta_list m = {.n = 0};
        meta_put(&m, "format", "pt");
        meta_put(&m, "zmix_format", Z_FORMAT);
        meta_put(&m, "zmix_format_version", Z_FORMAT_VERSION);
        meta_put(&m, "zmix_version", ZMIX_VERSION_STRING);
        if (task && *task) {
            meta_put(&m, "name", task); /* the expert name, should it be loaded as one */
            meta_put(&m, "task", task);
        }
        meta_put(&m, "key", r->key);
        meta_put(&m, "model_fingerprint", r->model_fingerprint);
        meta_put(&m, "model", model);
        meta_put(&m, "experts_digest", r->experts_digest);
        meta_put(&m, "examples_digest", r->examples_digest);
        meta_put(&m, "adapt", zmix_adapt_set_name(r->adapt));
        meta_put(&m, "per_layer", r->per_layer ? "true" : "false");
        meta_put(&m, "normalize", r->normalize ? "true" : "false");
        meta_put(&m, "rescale", r->rescale ? "true" : "false");
        meta_put(&m, "experts", experts);
        meta_put(&m, "expert_fingerprints", fps);
        meta_put(&m, "alpha", alpha);
        meta_put(&m, "accuracy", acc);
        meta_put(&m, "loglik", ll);
        meta_put(&m, "base_accuracy", base_acc);
        meta_put(&m, "base_loglik", base_ll);
        meta_put(&m, "n_examples", n_ex);
        meta_put(&m, "stop_reason", zmix_cem_stop_name(r->stop));
        meta_put(&m, "z_sha256", sha);
        rc = zmix_st_write(path, tensors, r->n_matrices, m.keys, m.values, m.n, err);
    }
    free(model);
    free(alpha);
    free(experts);
    free(fps);
    free(tensors);
    return rc;
}

/* ---- Reading ------------------------------------------------------------------------- */

static int need_meta(const zmix_st_file *f, const char *key, const char **out, zmix_error *err)
{
    *out = zmix_st_meta(f, key);
    if (!*out)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: __metadata__ has no '%s'", f->path, key);
    return 0;
}

static int bool_meta(const zmix_st_file *f, const char *key, int *out, zmix_error *err)
{
    const char *v;
    int rc = need_meta(f, key, &v, err);
    if (rc) return rc;
    if (strcmp(v, "true") && strcmp(v, "false"))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: __metadata__.%s is '%s', not true or false",
                              f->path, key, v);
    *out = !strcmp(v, "true");
    return 0;
}

static double number_meta(const zmix_st_file *f, const char *key)
{
    const char *v = zmix_st_meta(f, key);
    char *end;
    double d = v ? strtod(v, &end) : NAN;
    return v && end != v && !*end ? d : NAN;
}

/* A metadata value that must be a JSON array of n_want entries (any count when n_want < 0). */
static cJSON *array_meta(const zmix_st_file *f, const char *key, int n_want, zmix_error *err)
{
    const char *v = zmix_st_meta(f, key);
    cJSON *a = v ? cJSON_Parse(v) : NULL;
    if (!cJSON_IsArray(a) || (n_want >= 0 && cJSON_GetArraySize(a) != n_want) ||
        cJSON_GetArraySize(a) < 1) {
        cJSON_Delete(a);
        zmix_error_set(err, ZMIX_EFORMAT, "%s: __metadata__.%s must be a JSON array of %s entries",
                       f->path, key, n_want >= 0 ? "the experts'" : "one or more");
        return NULL;
    }
    return a;
}

static char *dup_text(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int hex64_ok(const char *s)
{
    if (strlen(s) != 64) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

/* Provenance and scores from the metadata (everything but the tensors). */
static int z_meta(const zmix_st_file *f, zmix_adapt_result *r, zmix_error *err)
{
    const char *v;
    int rc;
    if ((rc = need_meta(f, "zmix_format", &v, err)))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: not a self-describing zmix z' file (no zmix_format in "
                              "__metadata__; files from before results described themselves do "
                              "not say which base model they are for)",
                              f->path);
    if (strcmp(v, Z_FORMAT))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: __metadata__.zmix_format is '%s', not '%s'",
                              f->path, v, Z_FORMAT);
    if ((rc = need_meta(f, "zmix_format_version", &v, err))) return rc;
    if (strcmp(v, Z_FORMAT_VERSION))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: z' file version %s; this zmix reads version %s", f->path, v,
                              Z_FORMAT_VERSION);
    if ((rc = need_meta(f, "model_fingerprint", &v, err))) return rc;
    if (!hex64_ok(v))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: __metadata__.model_fingerprint '%s' is not 64 hex digits",
                              f->path, v);
    snprintf(r->model_fingerprint, sizeof r->model_fingerprint, "%s", v);
    if ((v = zmix_st_meta(f, "key"))) snprintf(r->key, sizeof r->key, "%s", v);
    if ((v = zmix_st_meta(f, "experts_digest")))
        snprintf(r->experts_digest, sizeof r->experts_digest, "%s", v);
    if ((v = zmix_st_meta(f, "examples_digest")))
        snprintf(r->examples_digest, sizeof r->examples_digest, "%s", v);
    if ((rc = need_meta(f, "adapt", &v, err))) return rc;
    if (zmix_adapt_set_parse(v, &r->adapt, err))
        return zmix_error_prefix(err, "%s: __metadata__.adapt", f->path);
    if ((rc = bool_meta(f, "rescale", &r->rescale, err)) ||
        (rc = bool_meta(f, "per_layer", &r->per_layer, err)) ||
        (rc = bool_meta(f, "normalize", &r->normalize, err)))
        return rc;
    cJSON *model = cJSON_Parse(zmix_st_meta(f, "model") ? zmix_st_meta(f, "model") : "");
    int bad_model = zmix_adapt_model_from_json(model, &r->model);
    cJSON_Delete(model);
    if (bad_model)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: __metadata__.model is not an architecture summary", f->path);
    r->best.accuracy = number_meta(f, "accuracy");
    r->best.loglik = number_meta(f, "loglik");
    r->base.accuracy = number_meta(f, "base_accuracy");
    r->base.loglik = number_meta(f, "base_loglik");
    double n_ex = number_meta(f, "n_examples");
    r->n_examples = isfinite(n_ex) ? (int)n_ex : 0;
    r->stop = ZMIX_CEM_RUNNING;
    const char *stop = zmix_st_meta(f, "stop_reason");
    for (int s = ZMIX_CEM_STOP_MAX_GENERATIONS; stop && s <= ZMIX_CEM_STOP_TARGET; s++)
        if (!strcmp(stop, zmix_cem_stop_name((zmix_cem_stop)s))) r->stop = (zmix_cem_stop)s;
    zmix_cem_settings_default(&r->settings);

    cJSON *experts = array_meta(f, "experts", -1, err);
    if (!experts) return ZMIX_EFORMAT;
    r->n_experts = cJSON_GetArraySize(experts);
    cJSON *fps = array_meta(f, "expert_fingerprints", r->n_experts, err);
    cJSON *alpha = fps ? array_meta(f, "alpha", -1, err) : NULL;
    rc = alpha ? 0 : ZMIX_EFORMAT;
    if (!rc) {
        r->dim = cJSON_GetArraySize(alpha);
        r->expert_names = calloc((size_t)r->n_experts, sizeof *r->expert_names);
        r->expert_fingerprints = calloc((size_t)r->n_experts, sizeof *r->expert_fingerprints);
        r->experts = calloc((size_t)r->n_experts, sizeof *r->experts);
        r->alpha = calloc((size_t)r->dim, sizeof *r->alpha);
        if (!r->expert_names || !r->expert_fingerprints || !r->experts || !r->alpha)
            rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", f->path);
    }
    int k = 0;
    for (const cJSON *e = rc ? NULL : experts->child; e; e = e->next, k++) {
        r->experts[k].accuracy = r->experts[k].loglik = NAN;
        if (!cJSON_IsString(e) || !(r->expert_names[k] = dup_text(e->valuestring)))
            rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: __metadata__.experts[%d] is not a name",
                                f->path, k);
    }
    k = 0;
    for (const cJSON *e = rc ? NULL : fps->child; e; e = e->next, k++)
        snprintf(r->expert_fingerprints[k], sizeof r->expert_fingerprints[k], "%s",
                 cJSON_IsString(e) ? e->valuestring : "");
    int i = 0;
    for (const cJSON *e = rc ? NULL : alpha->child; e; e = e->next, i++)
        r->alpha[i] = cJSON_IsNumber(e) ? (float)e->valuedouble : NAN;
    cJSON_Delete(experts);
    cJSON_Delete(fps);
    cJSON_Delete(alpha);
    return rc;
}

static int load_z_file(const char *path, zmix_adapt_result *r, zmix_error *err)
{
    zmix_st_file f;
    int rc = zmix_st_open(path, &f, err);
    if (rc) return rc;
    if ((rc = z_meta(&f, r, err))) goto done;
    const char *sha_want;
    if ((rc = need_meta(&f, "z_sha256", &sha_want, err))) goto done;
    r->n_matrices = f.n_tensors;
    r->matrix_names = calloc((size_t)(f.n_tensors ? f.n_tensors : 1), sizeof *r->matrix_names);
    r->matrix_ranks = calloc((size_t)(f.n_tensors ? f.n_tensors : 1), sizeof *r->matrix_ranks);
    zmix_st_out *outs = calloc((size_t)(f.n_tensors ? f.n_tensors : 1), sizeof *outs);
    size_t total = 0;
    for (int m = 0; m < f.n_tensors; m++) total += f.tensors[m].numel;
    r->z = malloc((total ? total : 1) * sizeof *r->z);
    r->z_total = total;
    if (!r->matrix_names || !r->matrix_ranks || !outs || !r->z) {
        free(outs);
        rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if (f.n_tensors < 1) {
        free(outs);
        rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: no z' tensors", path);
        goto done;
    }
    size_t off = 0;
    for (int m = 0; !rc && m < f.n_tensors; m++) {
        const zmix_st_tensor *t = &f.tensors[m];
        if (t->dtype != ZMIX_ST_F32 || t->ndim != 1 || t->numel < 1) {
            rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: tensor %s is %s of %d dims, not F32 [r]",
                                path, t->name, zmix_st_dtype_name(t->dtype), t->ndim);
            break;
        }
        memcpy(r->z + off, f.data + t->begin, t->numel * sizeof(float));
        for (size_t i = 0; !rc && i < t->numel; i++)
            if (!isfinite(r->z[off + i]))
                rc = zmix_error_set(err, ZMIX_ENUMERIC, "%s: %s[%zu] is not finite", path, t->name,
                                    i);
        r->matrix_names[m] = dup_text(t->name);
        r->matrix_ranks[m] = (int)t->numel;
        if (!r->matrix_names[m]) rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
        outs[m] =
            (zmix_st_out){.name = t->name, .ndim = 1, .shape = {t->shape[0]}, .data = r->z + off};
        off += t->numel;
    }
    char sha[65];
    if (!rc) rc = zmix_st_data_sha256(outs, f.n_tensors, sha, err);
    if (!rc && strcmp(sha, sha_want))
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "%s: z' data does not match its checksum (z_sha256 %.16s…, data "
                            "%.16s…): the file is damaged",
                            path, sha_want, sha);
    free(outs);
done:
    zmix_st_close(&f);
    return rc;
}

static int load_json(const char *path, const uint8_t *text, size_t len, zmix_adapt_result *r,
                     zmix_error *err)
{
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts((const char *)text, len, &end, 0);
    if (!doc) {
        size_t at = end ? (size_t)(end - (const char *)text) : 0;
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: not a complete JSON document (parse error at byte %zu of %zu; "
                              "truncated?)",
                              path, at, len);
    }
    int rc = zmix_adapt_result_from_json(doc, r, err);
    cJSON_Delete(doc);
    if (rc) return zmix_error_prefix(err, "%s", path);
    if (!hex64_ok(r->model_fingerprint))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: model_fingerprint '%s' is not 64 hex digits: the result does "
                              "not say which base model it was made for",
                              path, r->model_fingerprint);
    return 0;
}

int zmix_adapt_result_load(const char *path, zmix_adapt_result *out, zmix_error *err)
{
    zmix_adapt_result r;
    memset(&r, 0, sizeof r);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = fs_read_file(path, RESULT_JSON_MAX, &buf, &len, err);
    if (rc) return rc;
    /* A safetensors file starts with its header length as 8 little-endian bytes, whose top
     * byte is 0 for any header below 2^56 bytes; JSON text never holds a NUL. */
    int is_safetensors = len >= 8 && buf[7] == 0;
    if (is_safetensors) {
        free(buf);
        buf = NULL;
        rc = load_z_file(path, &r, err);
    } else {
        rc = load_json(path, buf, len, &r, err);
    }
    free(buf);
    if (rc) {
        zmix_adapt_result_free(&r);
        return rc;
    }
    *out = r;
    return 0;
}
