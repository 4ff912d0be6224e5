/*
 * The merged model: the base model's Hugging Face directory with W' written in.
 *
 * Everything but the adapted matrices is copied byte for byte — every other file (config,
 * tokenizer, generation config), every other tensor in its own dtype, the same shard files
 * and the same index — so any tool that loads the base model loads this one unchanged. W' is
 * composed from the factors exactly as the scorer composes it, (U·diag(s·σ⊙z'))·Vᵀ, and
 * stored in the dtype the base tensor had (rounded to nearest even for F16/BF16). Shards are
 * written one at a time, so memory holds one shard's W', not the model's.
 *
 * Weight files in other formats (pytorch_model.bin, *.pt, *.gguf, ...) are not copied: they
 * would still hold the base weights, and a loader preferring them would silently serve the
 * unadapted model.
 */
#include <cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "export_internal.h"
#include "model/safetensors.h"
#include "util/file.h"

#define INDEX_NAME "model.safetensors.index.json"
#define INDEX_MAX  ((size_t)64 << 20)

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Weight files of every format: written anew (safetensors) or left out (the rest). */
static int is_weight_file(const char *name)
{
    static const char *const ext[] = {".safetensors", ".bin", ".pt",      ".pth",  ".ckpt",
                                      ".gguf",        ".h5",  ".msgpack", ".onnx", ".npz"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (has_suffix(name, ext[i])) return 1;
    return !strcmp(name, INDEX_NAME) || !strcmp(name, "pytorch_model.bin.index.json");
}

static int copy_file(const char *src_dir, const char *dst_dir, const char *name, size_t *bytes,
                     zmix_error *err)
{
    char src[PATH_MAX], dst[PATH_MAX];
    int rc = fs_join(src, sizeof src, src_dir, name, err);
    if (!rc) rc = fs_join(dst, sizeof dst, dst_dir, name, err);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!rc) rc = fs_read_file(src, (size_t)1 << 32, &buf, &len, err);
    if (!rc) {
        fs_piece piece = {buf, len};
        fs_write_opts wo = {.mode = 0644};
        rc = fs_write_atomic(dst, &piece, 1, &wo, err);
    }
    free(buf);
    *bytes += rc ? 0 : len;
    return rc;
}

/* Every regular file of the base directory that is not a weight file. */
static int copy_other_files(const char *src, const char *dst, size_t *bytes, zmix_error *err)
{
    DIR *d = opendir(src);
    if (!d) return zmix_error_set(err, ZMIX_EIO, "%s: cannot list the model directory", src);
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        if (e->d_name[0] == '.' || is_weight_file(e->d_name)) continue;
        char path[PATH_MAX];
        struct stat st;
        if (fs_join(path, sizeof path, src, e->d_name, err)) {
            rc = ZMIX_ELIMIT;
            break;
        }
        if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
        rc = copy_file(src, dst, e->d_name, bytes, err);
    }
    closedir(d);
    return rc;
}

/* The adapted matrix a tensor name is, or NULL. */
static const export_delta *adapted(const export_plan *p, const char *name)
{
    for (int m = 0; m < p->n; m++)
        if (!strcmp(p->m[m].a->name, name)) return &p->m[m];
    return NULL;
}

/* Rewrites one weight file of the base model into dir. */
static int write_shard(const export_plan *p, const char *src_dir, const char *file, const char *dir,
                       zmix_export_report *report, zmix_error *err)
{
    char src[PATH_MAX], dst[PATH_MAX];
    int rc = fs_join(src, sizeof src, src_dir, file, err);
    if (!rc) rc = fs_join(dst, sizeof dst, dir, file, err);
    if (rc) return rc;
    zmix_st_file f;
    if ((rc = zmix_st_open(src, &f, err))) return rc;
    int n = f.n_tensors;
    zmix_st_out *outs = calloc((size_t)(n ? n : 1), sizeof *outs);
    void **blocks = calloc((size_t)(n ? n : 1), sizeof *blocks);
    const char **keys = calloc((size_t)f.n_meta + 8, sizeof *keys);
    const char **values = calloc((size_t)f.n_meta + 8, sizeof *values);
    if (!outs || !blocks || !keys || !values)
        rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", dst);
    for (int t = 0; !rc && t < n; t++) {
        const zmix_st_tensor *x = &f.tensors[t];
        zmix_st_out *o = &outs[t];
        o->name = x->name;
        o->ndim = x->ndim;
        memcpy(o->shape, x->shape, sizeof o->shape);
        o->dtype = x->dtype;
        o->raw = f.data + x->begin;
        const export_delta *e = adapted(p, x->name);
        if (!e) continue;
        int m = (int)(e - p->m);
        size_t numel = (size_t)e->a->rows * e->a->cols;
        float *w = malloc(numel * sizeof *w);
        float *tmp = malloc((size_t)e->a->rows * e->a->rank * sizeof *tmp);
        float *tile = malloc((zmix_runtime_tile_floats(p->rt) + 1) * sizeof *tile);
        if (!w || !tmp || !tile) {
            free(w);
            free(tmp);
            free(tile);
            rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory for %s", dst, x->name);
            break;
        }
        zmix_wprime_compose(p->rt, m, e->z, e->s, w, tmp, tile);
        free(tmp);
        free(tile);
        if (x->dtype == ZMIX_ST_F32) {
            blocks[t] = w;
        } else {
            uint16_t *h = malloc(numel * sizeof *h);
            if (!h) {
                free(w);
                rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory for %s", dst, x->name);
                break;
            }
            for (size_t i = 0; i < numel; i++)
                h[i] = x->dtype == ZMIX_ST_BF16 ? zmix_f32_to_bf16(w[i]) : zmix_f32_to_f16(w[i]);
            free(w);
            blocks[t] = h;
        }
        o->raw = blocks[t];
        report->matrices[m].bytes = numel * zmix_st_dtype_size(x->dtype);
    }
    int n_meta = 0;
    for (int i = 0; !rc && i < f.n_meta; i++)
        if (strncmp(f.meta_keys[i], "zmix_", 5)) {
            keys[n_meta] = f.meta_keys[i];
            values[n_meta++] = f.meta_values[i];
        }
    if (!rc) {
        n_meta += export_provenance_meta(p->res, keys + n_meta, values + n_meta, 8);
        rc = zmix_st_write(dst, outs, n, keys, values, n_meta, err);
    }
    struct stat st;
    if (!rc && stat(dst, &st) == 0) report->bytes += (size_t)st.st_size;
    for (int t = 0; blocks && t < n; t++) free(blocks[t]);
    free(blocks);
    free(outs);
    free(keys);
    free(values);
    zmix_st_close(&f);
    return rc;
}

/* The shard files an index names, each once, in order of first mention. */
static int index_shards(const char *path, char ***files, int *n, zmix_error *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = fs_read_file(path, INDEX_MAX, &buf, &len, err);
    if (rc) return rc;
    cJSON *doc = cJSON_ParseWithLength((const char *)buf, len);
    free(buf);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(doc, "weight_map");
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(doc);
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: no weight_map object", path);
    }
    *files = calloc((size_t)cJSON_GetArraySize(map) + 1, sizeof **files);
    *n = 0;
    if (!*files) rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    for (const cJSON *e = rc ? NULL : map->child; e; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/')) {
            rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: weight_map.%s is not a file name", path,
                                e->string);
            break;
        }
        int seen = 0;
        for (int i = 0; i < *n && !seen; i++) seen = !strcmp((*files)[i], e->valuestring);
        if (seen) continue;
        if (!((*files)[*n] = strdup(e->valuestring))) {
            rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
            break;
        }
        (*n)++;
    }
    cJSON_Delete(doc);
    return rc;
}

int export_write_merged(const export_plan *p, const zmix_export_opts *opts, const char *dir,
                        zmix_export_report *report, zmix_error *err)
{
    const zmix_model *model = p->rt->model;
    const char *src = opts->model_path ? opts->model_path : model->source;
    struct stat st;
    if (stat(src, &st) || !S_ISDIR(st.st_mode))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "export --format merged: %s is not a Hugging Face model directory "
                              "(a llama2.c checkpoint holds its q/k rows in another order; "
                              "convert it to a Hugging Face directory first)",
                              src);
    char real_src[PATH_MAX], real_dst[PATH_MAX];
    if (realpath(src, real_src) && realpath(dir, real_dst) && !strcmp(real_src, real_dst))
        return zmix_error_set(err, ZMIX_EINVAL,
                              "export --format merged: the output directory is the base model's "
                              "own (%s)",
                              src);
    char single[PATH_MAX], index[PATH_MAX];
    int rc = fs_join(single, sizeof single, src, "model.safetensors", err);
    if (!rc) rc = fs_join(index, sizeof index, src, INDEX_NAME, err);
    if (rc) return rc;
    report->bytes = 0;
    if ((rc = copy_other_files(src, dir, &report->bytes, err))) return rc;
    /* The loader's rule (and transformers'): model.safetensors wins over an index. */
    if (stat(single, &st) == 0) return write_shard(p, src, "model.safetensors", dir, report, err);
    char **files = NULL;
    int n = 0;
    rc = index_shards(index, &files, &n, err);
    if (!rc) rc = copy_file(src, dir, INDEX_NAME, &report->bytes, err);
    for (int i = 0; !rc && i < n; i++) rc = write_shard(p, src, files[i], dir, report, err);
    for (int i = 0; files && i < n; i++) free(files[i]);
    free(files);
    return rc;
}
