/*
 * On-disk cache of SVD factors: one safetensors file per (model fingerprint, adapt set, dtype
 * of U and Vt), dir/factors-<first 16 hex of the fingerprint>-<set>[-f16|-bf16].safetensors,
 * holding <name>.U, <name>.S (always F32) and <name>.Vt for every adapted matrix. The metadata
 * records the format version, the full fingerprint, the adapt set, the matrix count, a SHA-256
 * of the data area and, in 16-bit files only, factor_dtype.
 *
 * The cache is only ever a shortcut: anything unexpected (another model behind a colliding
 * short name, a flipped byte, a truncated write from an older crash, a renamed file) is
 * reported as EFORMAT and the caller recomputes. Writes are atomic, so a crash leaves either
 * the old file or the new one.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model_internal.h"
#include "safetensors.h"
#include "util/sha256.h"

#define CACHE_FORMAT  "zmix-factors"
#define CACHE_VERSION "1"

static const char *dtype_suffix(zmix_dtype dtype)
{
    return dtype == ZMIX_DT_F16 ? "-f16" : dtype == ZMIX_DT_BF16 ? "-bf16" : "";
}

/* The factor_dtype metadata value: absent (NULL) in float32 files, as before 16-bit ones. */
static const char *dtype_meta(zmix_dtype dtype)
{
    return dtype == ZMIX_DT_F16 ? "F16" : dtype == ZMIX_DT_BF16 ? "BF16" : NULL;
}

/* The float32 cache keeps the name (and format) it always had; 16-bit ones add the dtype. */
static void cache_path(const char *dir, const zmix_model *model, zmix_adapt_set set,
                       zmix_dtype dtype, char *out, size_t size)
{
    snprintf(out, size, "%s/factors-%.16s-%s%s.safetensors", dir, model->fingerprint,
             zmix_adapt_set_name(set), dtype_suffix(dtype));
}

static int check_meta(const zmix_st_file *f, const char *key, const char *want, zmix_error *err)
{
    const char *got = zmix_st_meta(f, key);
    if (!got || strcmp(got, want))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: metadata %s is '%.80s', expected '%.80s'",
                              f->path, key, got ? got : "(absent)", want);
    return 0;
}

/* Drops the pages wholly inside [p, p + n) from this process; they stay in the page cache.
 * The file is read once: without this, all of it would stay resident beside the copies made
 * from it, doubling the factors' memory while the cache loads. */
static void release_pages(const void *p, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1),
              end = ((uintptr_t)p + n) & ~(page - 1);
    if (end > start) madvise((void *)start, end - start, MADV_DONTNEED);
}

/* SHA-256 of the data area, hashed a chunk at a time and released behind. */
static void data_checksum(const zmix_st_file *f, char hex[ZMIX_SHA256_HEX])
{
    const size_t chunk = (size_t)64 << 20;
    zmix_sha256 s;
    uint8_t digest[ZMIX_SHA256_BYTES];
    zmix_sha256_init(&s);
    for (size_t at = 0; at < f->data_len; at += chunk) {
        size_t n = f->data_len - at < chunk ? f->data_len - at : chunk;
        zmix_sha256_update(&s, f->data + at, n);
        release_pages(f->data + at, n);
    }
    zmix_sha256_final(&s, digest);
    zmix_sha256_hex(digest, hex);
}

/* Tensor name.suffix, checked to be of shape [d0] or [d0, d1] and of dtype. */
static int find_factor(const zmix_st_file *f, const char *name, const char *suffix, int d0, int d1,
                       zmix_dtype dtype, const zmix_st_tensor **out, zmix_error *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", name, suffix);
    const zmix_st_tensor *t = zmix_st_find(f, key);
    if (!t) return zmix_error_set(err, ZMIX_EFORMAT, "%s: tensor '%s' is missing", f->path, key);
    int ndim = d1 ? 2 : 1;
    if ((int)t->dtype != (int)dtype || t->ndim != ndim || t->shape[0] != d0 ||
        (d1 && t->shape[1] != d1))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: tensor '%s' is not %s of shape [%d, %d]",
                              f->path, key, zmix_st_dtype_name((zmix_st_dtype)dtype), d0,
                              d1 ? d1 : 1);
    *out = t;
    return 0;
}

/* The same, copied into a new malloc'ed block (float or uint16_t values). */
static int copy_factor(const zmix_st_file *f, const char *name, const char *suffix, int d0, int d1,
                       zmix_dtype dtype, void **out, zmix_error *err)
{
    const zmix_st_tensor *t = NULL;
    int rc = find_factor(f, name, suffix, d0, d1, dtype, &t, err);
    if (rc) return rc;
    size_t bytes = t->end - t->begin;
    void *block = malloc(bytes + 1);
    if (!block)
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: '%s.%s': out of memory", f->path, name,
                              suffix);
    memcpy(block, f->data + t->begin, bytes);
    release_pages(f->data + t->begin, bytes);
    *out = block;
    return 0;
}

/* U and Vt of one factor left in the mapping, when both are aligned for their element type
 * (the writer aligns the data area to 8 bytes, so only an odd-sized 16-bit tensor before an
 * F32 one could break this; they are then copied). Returns 1 when they were. */
static int map_factor(const zmix_st_file *f, const zmix_adapted *a, zmix_dtype dtype,
                      zmix_factors *x, zmix_error *err, int *rc)
{
    const zmix_st_tensor *tu = NULL, *tv = NULL;
    if ((*rc = find_factor(f, a->name, "U", a->rows, a->rank, dtype, &tu, err)) ||
        (*rc = find_factor(f, a->name, "Vt", a->rank, a->cols, dtype, &tv, err)))
        return 0;
    size_t es = dtype == ZMIX_DT_F32 ? sizeof(float) : sizeof(uint16_t);
    const uint8_t *u = f->data + tu->begin, *vt = f->data + tv->begin;
    if ((uintptr_t)u % es || (uintptr_t)vt % es) return 0;
    /* The mapping is read-only: nothing writes factors after they are made. */
    if (dtype == ZMIX_DT_F32)
        x->U = (float *)(uintptr_t)u, x->Vt = (float *)(uintptr_t)vt;
    else
        x->U16 = (uint16_t *)(uintptr_t)u, x->Vt16 = (uint16_t *)(uintptr_t)vt;
    x->mapped = 1;
    return 1;
}

static int load_factors(const zmix_st_file *f, const zmix_model *model, zmix_adapt_set set,
                        zmix_dtype dtype, const zmix_adapted *list, int n, zmix_factors *factors,
                        int in_place, zmix_error *err)
{
    char count[32];
    snprintf(count, sizeof count, "%d", n);
    int rc;
    const char *want_dtype = dtype_meta(dtype), *got_dtype = zmix_st_meta(f, "factor_dtype");
    if ((rc = check_meta(f, "format", CACHE_FORMAT, err)) ||
        (rc = check_meta(f, "version", CACHE_VERSION, err)) ||
        (rc = check_meta(f, "fingerprint", model->fingerprint, err)) ||
        (rc = check_meta(f, "adapt_set", zmix_adapt_set_name(set), err)) ||
        (rc = check_meta(f, "n_matrices", count, err)))
        return rc;
    if (want_dtype ? !got_dtype || strcmp(got_dtype, want_dtype) : got_dtype != NULL)
        return zmix_error_set(
            err, ZMIX_EFORMAT, "%s: metadata factor_dtype is '%.16s', expected '%s'", f->path,
            got_dtype ? got_dtype : "(absent)", want_dtype ? want_dtype : "(absent)");
    char checksum[ZMIX_SHA256_HEX];
    data_checksum(f, checksum);
    if ((rc = check_meta(f, "checksum", checksum, err))) return rc;
    if (f->n_tensors != 3 * n)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: %d tensors, expected %d", f->path,
                              f->n_tensors, 3 * n);
    for (int m = 0; m < n; m++) {
        const zmix_adapted *a = &list[m];
        zmix_factors *x = &factors[m];
        x->rows = a->rows, x->cols = a->cols, x->rank = a->rank;
        x->dtype = dtype;
        void *u = NULL, *s = NULL, *vt = NULL;
        rc = copy_factor(f, a->name, "S", a->rank, 0, ZMIX_DT_F32, &s, err);
        x->S = s;
        if (rc) return rc;
        if (!(in_place && map_factor(f, a, dtype, x, err, &rc))) {
            if (rc) return rc;
            rc = copy_factor(f, a->name, "U", a->rows, a->rank, dtype, &u, err);
            if (!rc) rc = copy_factor(f, a->name, "Vt", a->rank, a->cols, dtype, &vt, err);
            /* Whatever was copied belongs to the factor, so that the caller's cleanup frees
             * it. */
            if (dtype == ZMIX_DT_F32)
                x->U = u, x->Vt = vt;
            else
                x->U16 = u, x->Vt16 = vt;
            if (rc) return rc;
        }
        for (int i = 0; i < a->rank; i++)
            if (!isfinite(x->S[i]) || x->S[i] < 0 || (i > 0 && x->S[i] > x->S[i - 1]))
                return zmix_error_set(err, ZMIX_EFORMAT,
                                      "%s: '%s.S' is not finite, non-negative and descending at "
                                      "%d",
                                      f->path, a->name, i);
    }
    return 0;
}

static int cache_read(const char *dir, const zmix_model *model, zmix_adapt_set set,
                      zmix_dtype dtype, const zmix_adapted *list, int n, zmix_factors *factors,
                      zmix_mapping *map, zmix_error *err)
{
    memset(factors, 0, (size_t)n * sizeof *factors);
    char path[1200];
    cache_path(dir, model, set, dtype, path, sizeof path);
    zmix_st_file f;
    int rc = zmix_st_open(path, &f, err);
    if (rc == ZMIX_ENOTFOUND) return rc;
    if (rc) {
        /* Unreadable or malformed: for the caller both mean "recompute". */
        rc = rc == ZMIX_ENOMEM ? rc : ZMIX_EFORMAT;
        if (err) err->code = rc;
        return rc;
    }
    rc = load_factors(&f, model, set, dtype, list, n, factors, map != NULL, err);
    if (rc) {
        zmix_factors_free(factors, n);
        memset(factors, 0, (size_t)n * sizeof *factors);
        if (rc != ZMIX_ENOMEM) rc = ZMIX_EFORMAT;
        if (err) err->code = rc;
    } else if (map) {
        *map = zmix_st_take_mapping(&f);
    }
    zmix_st_close(&f);
    return rc;
}

int zmix_factor_cache_load(const char *dir, const zmix_model *model, zmix_adapt_set set,
                           zmix_dtype dtype, const zmix_adapted *list, int n, zmix_factors *factors,
                           zmix_error *err)
{
    return cache_read(dir, model, set, dtype, list, n, factors, NULL, err);
}

int zmix_factor_cache_map(const char *dir, const zmix_model *model, zmix_adapt_set set,
                          zmix_dtype dtype, const zmix_adapted *list, int n, zmix_factors *factors,
                          zmix_mapping *map, zmix_error *err)
{
    map->addr = NULL;
    map->len = 0;
    return cache_read(dir, model, set, dtype, list, n, factors, map, err);
}

void zmix_factors_release(const zmix_factors *f)
{
    if (!f->mapped) return;
    size_t es = f->dtype == ZMIX_DT_F32 ? sizeof(float) : sizeof(uint16_t);
    zmix_wref u = zmix_factors_U(f), vt = zmix_factors_Vt(f);
    release_pages(u.data, (size_t)f->rows * f->rank * es);
    release_pages(vt.data, (size_t)f->rank * f->cols * es);
}

int zmix_factor_cache_save(const char *dir, const zmix_model *model, zmix_adapt_set set,
                           const zmix_adapted *list, int n, const zmix_factors *factors,
                           unsigned mode, zmix_error *err)
{
    zmix_dtype dtype = n > 0 ? factors[0].dtype : ZMIX_DT_F32;
    char path[1200];
    cache_path(dir, model, set, dtype, path, sizeof path);
    zmix_st_out *tensors = calloc(3 * (size_t)n + 1, sizeof *tensors);
    char(*names)[3][128] = calloc((size_t)n + 1, sizeof *names);
    int rc = 0;
    if (!tensors || !names) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (int m = 0; m < n; m++) {
        const zmix_adapted *a = &list[m];
        const zmix_factors *x = &factors[m];
        if (x->rows != a->rows || x->cols != a->cols || x->rank != a->rank || x->dtype != dtype) {
            rc = zmix_error_set(err, ZMIX_EINVAL,
                                "%s: factors of '%s' are %dx%d rank %d (dtype %d), "
                                "expected %dx%d rank %d (dtype %d)",
                                path, a->name, x->rows, x->cols, x->rank, (int)x->dtype, a->rows,
                                a->cols, a->rank, (int)dtype);
            goto out;
        }
        snprintf(names[m][0], sizeof names[m][0], "%s.U", a->name);
        snprintf(names[m][1], sizeof names[m][1], "%s.S", a->name);
        snprintf(names[m][2], sizeof names[m][2], "%s.Vt", a->name);
        zmix_st_dtype st = (zmix_st_dtype)dtype;
        tensors[3 * m] = (zmix_st_out){
            .name = names[m][0], .ndim = 2, .shape = {a->rows, a->rank}, .data = x->U};
        tensors[3 * m + 1] =
            (zmix_st_out){.name = names[m][1], .ndim = 1, .shape = {a->rank}, .data = x->S};
        tensors[3 * m + 2] = (zmix_st_out){
            .name = names[m][2], .ndim = 2, .shape = {a->rank, a->cols}, .data = x->Vt};
        if (st != ZMIX_ST_F32) { /* 16-bit factors: U and Vt as stored */
            tensors[3 * m].dtype = tensors[3 * m + 2].dtype = st;
            tensors[3 * m].raw = x->U16;
            tensors[3 * m + 2].raw = x->Vt16;
        }
    }
    char checksum[ZMIX_SHA256_HEX], count[32];
    if ((rc = zmix_st_data_sha256(tensors, 3 * n, checksum, err))) goto out;
    snprintf(count, sizeof count, "%d", n);
    const char *keys[] = {"format",     "version",  "fingerprint", "adapt_set",
                          "n_matrices", "checksum", "factor_dtype"};
    const char *values[] = {
        CACHE_FORMAT, CACHE_VERSION, model->fingerprint, zmix_adapt_set_name(set),
        count,        checksum,      dtype_meta(dtype)};
    rc = zmix_st_write_mode(path, tensors, 3 * n, keys, values, dtype_meta(dtype) ? 7 : 6, mode,
                            err);
out:
    free(tensors);
    free(names);
    return rc;
}
