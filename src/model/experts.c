/*
 * SVF expert files: safetensors with one F32 vector per adapted matrix, keyed by the matrix's
 * HF name, of length min(out, in). An expert is checked against the model's adapted list, so
 * an expert trained for another model or another adapt set is refused with the key at fault.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loaders.h"
#include "model_internal.h"
#include "safetensors.h"

static void name_from_path(const char *path, char *name, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t len = (dot && dot != base) ? (size_t)(dot - base) : strlen(base);
    if (len >= size) len = size - 1;
    memcpy(name, base, len);
    name[len] = '\0';
}

static int find_listed(const zmix_adapted *list, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i].name, name)) return i;
    return -1;
}

static int expert_fill(const zmix_st_file *f, const zmix_adapted *list, int n, float *z,
                       zmix_error *err)
{
    for (int m = 0; m < n; m++) {
        const zmix_st_tensor *t = zmix_st_find(f, list[m].name);
        if (!t)
            return zmix_error_set(err, ZMIX_ENOTFOUND, "%s: key '%s' is missing", f->path,
                                  list[m].name);
        if (t->dtype != ZMIX_ST_F32)
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: key '%s': dtype %s, expected F32",
                                  f->path, t->name, zmix_st_dtype_name(t->dtype));
        if (t->ndim != 1 || t->shape[0] != list[m].rank)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: key '%s': %zu values in %d dimension(s), expected a vector "
                                  "of %d (the rank of a %dx%d matrix)",
                                  f->path, t->name, t->numel, t->ndim, list[m].rank, list[m].rows,
                                  list[m].cols);
        const float *data;
        float *copy;
        int rc = zmix_st_tensor_f32(f, t, &data, &copy, err);
        if (rc) return rc;
        memcpy(z + list[m].z_offset, data, t->numel * sizeof *z);
        free(copy);
        if ((rc = zmix_check_finite(z + list[m].z_offset, t->numel, f->path, t->name, err)))
            return rc;
    }
    for (int i = 0; i < f->n_tensors; i++)
        if (find_listed(list, n, f->tensors[i].name) < 0)
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: key '%s' is not an adapted matrix of this model and adapt "
                                  "set",
                                  f->path, f->tensors[i].name);
    return 0;
}

int zmix_expert_load(const char *path, const zmix_adapted *list, int n, size_t z_total,
                     zmix_expert *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    size_t covered = 0;
    for (int m = 0; m < n; m++) covered += (size_t)list[m].rank;
    if (covered != z_total)
        return zmix_error_set(err, ZMIX_EINVAL, "%s: z_total %zu disagrees with the list (%zu)",
                              path, z_total, covered);
    zmix_st_file f;
    int rc = zmix_st_open(path, &f, err);
    if (rc) return rc;
    float *z = malloc((z_total + 1) * sizeof *z);
    if (!z) {
        zmix_st_close(&f);
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    }
    rc = expert_fill(&f, list, n, z, err);
    if (!rc) {
        const char *meta_name = zmix_st_meta(&f, "name");
        if (meta_name && meta_name[0])
            snprintf(out->name, sizeof out->name, "%s", meta_name);
        else
            name_from_path(path, out->name, sizeof out->name);
        out->z = z;
    } else {
        free(z);
    }
    zmix_st_close(&f);
    return rc;
}

int zmix_expert_save(const char *path, const zmix_adapted *list, int n, const float *z,
                     const char *const *meta_keys, const char *const *meta_values, int n_meta,
                     zmix_error *err)
{
    zmix_st_out *tensors = calloc((size_t)n + 1, sizeof *tensors);
    if (!tensors) return zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    int rc = 0;
    for (int m = 0; m < n && !rc; m++) {
        rc = zmix_check_finite(z + list[m].z_offset, (size_t)list[m].rank, path, list[m].name, err);
        tensors[m] = (zmix_st_out){
            .name = list[m].name, .ndim = 1, .shape = {list[m].rank}, .data = z + list[m].z_offset};
    }
    if (!rc) rc = zmix_st_write(path, tensors, n, meta_keys, meta_values, n_meta, err);
    free(tensors);
    return rc;
}
