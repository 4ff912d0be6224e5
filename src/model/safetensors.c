/*
 * safetensors reader and writer. The reader trusts nothing in the file: the header length,
 * every offset and every shape are checked against the file size before any tensor byte is
 * touched, so a truncated or hostile file yields an error naming the file and tensor rather
 * than a read past the mapping.
 */
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/file.h"
#include "util/sha256.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "zmix reads and writes little-endian tensor data in place: a little-endian host is required"
#endif

/* The reference implementation refuses headers above 100 MB; so do we, so that a corrupt
 * length cannot make us parse gigabytes of tensor data as JSON. */
#define MAX_HEADER_BYTES (100u * 1000u * 1000u)

static const char *const dtype_names[] = {"F32", "F16", "BF16"};
_Static_assert((int)ZMIX_ST_F16 == (int)ZMIX_DT_F16 && (int)ZMIX_ST_BF16 == (int)ZMIX_DT_BF16,
               "zmix_st_dtype and zmix_dtype share their numbering");
static const size_t dtype_sizes[] = {4, 2, 2};

const char *zmix_st_dtype_name(zmix_st_dtype dtype)
{
    return (dtype >= ZMIX_ST_F32 && dtype <= ZMIX_ST_BF16) ? dtype_names[dtype] : "?";
}

size_t zmix_st_dtype_size(zmix_st_dtype dtype)
{
    return (dtype >= ZMIX_ST_F32 && dtype <= ZMIX_ST_BF16) ? dtype_sizes[dtype] : 0;
}

uint16_t zmix_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even (carries into Inf) */
    return (uint16_t)(u >> 16);
}

uint16_t zmix_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00u;  /* NaN */
    if (abs >= 0x477ff000u) return sign | 0x7c00u; /* rounds to beyond 65504: Inf */
    if (abs < 0x38800000u) {
        /* Below the smallest normal half (2^-14): a subnormal, mantissa · 2^-24. Adding
         * 0.5 (2^-1) as a float aligns the value so that the FPU's own round-to-nearest-even
         * leaves the half's 10-bit mantissa in the low bits. */
        float a, half = 0.5f;
        memcpy(&a, &abs, sizeof a);
        a += half;
        uint32_t bits;
        memcpy(&bits, &a, sizeof bits);
        return sign | (uint16_t)(bits - 0x3f000000u);
    }
    uint32_t mant_odd = (abs >> 13) & 1u;
    abs += 0xc8000fffu + mant_odd; /* rebias 127 -> 15 (-112 << 23) and round to even */
    return sign | (uint16_t)(abs >> 13);
}

float zmix_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exponent = (h >> 10) & 0x1f;
    uint32_t mantissa = h & 0x3ff;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13); /* Inf or NaN, payload kept */
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13); /* rebias 15 -> 127 */
    } else if (mantissa == 0) {
        bits = sign; /* signed zero */
    } else {
        /* Subnormal half: mantissa * 2^-24, normal in float32. Shift until the implicit bit
         * appears, lowering the exponent once per shift. */
        uint32_t e = 113;
        while (!(mantissa & 0x400)) mantissa <<= 1, e--;
        bits = sign | (e << 23) | ((mantissa & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float zmix_bf16_to_f32(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* ---- Reader ------------------------------------------------------------------------------ */

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const zmix_st_tensor *)a)->name, ((const zmix_st_tensor *)b)->name);
}

/* A JSON number that is an exact integer in [0, 2^53]: the largest range a double holds
 * without rounding, far beyond any real offset. */
static int json_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item)) return 0;
    double d = item->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

static int parse_tensor(zmix_st_file *f, const cJSON *item, zmix_st_tensor *t, zmix_error *err)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: tensor '%s': entry is not a JSON object",
                              f->path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dtype))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: tensor '%s': missing or non-string dtype",
                              f->path, name);
    int found = 0;
    for (int d = ZMIX_ST_F32; d <= ZMIX_ST_BF16; d++)
        if (!strcmp(dtype->valuestring, dtype_names[d])) t->dtype = (zmix_st_dtype)d, found = 1;
    if (!found)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: tensor '%s': dtype '%s' is not supported (F32, F16 or BF16)",
                              f->path, name, dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: tensor '%s': missing or non-array shape",
                              f->path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ZMIX_ST_MAX_DIMS)
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: tensor '%s': %d dimensions (at most %d)",
                              f->path, name, ndim, ZMIX_ST_MAX_DIMS);
    t->ndim = ndim;
    /* Element count bounded by the file size, so that size arithmetic cannot overflow. */
    uint64_t numel = 1, limit = (uint64_t)f->data_len / dtype_sizes[t->dtype] + 1;
    int i = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape)
    {
        uint64_t v;
        if (!json_uint(dim, &v))
            return zmix_error_set(err, ZMIX_EFORMAT,
                                  "%s: tensor '%s': shape[%d] is not a non-negative integer",
                                  f->path, name, i);
        t->shape[i++] = (int64_t)v;
        numel = (v == 0 || numel == 0) ? 0 : (numel > limit / v ? limit + 1 : numel * v);
    }
    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        !json_uint(cJSON_GetArrayItem(offsets, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(offsets, 1), &end))
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: tensor '%s': data_offsets is not [begin, end] with "
                              "non-negative integers",
                              f->path, name);
    if (begin > end || end > f->data_len)
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] lie outside the data "
                              "area of %zu bytes",
                              f->path, name, (unsigned long long)begin, (unsigned long long)end,
                              f->data_len);
    if (numel > limit || end - begin != numel * dtype_sizes[t->dtype])
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes but "
                              "the shape and dtype %s need %llu",
                              f->path, name, (unsigned long long)begin, (unsigned long long)end,
                              (unsigned long long)(end - begin), dtype_names[t->dtype],
                              (unsigned long long)(numel * dtype_sizes[t->dtype]));
    t->numel = (size_t)numel;
    t->begin = (size_t)begin;
    t->end = (size_t)end;
    return 0;
}

static int parse_metadata(zmix_st_file *f, const cJSON *meta, zmix_error *err)
{
    if (!cJSON_IsObject(meta))
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: __metadata__ is not a JSON object", f->path);
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = calloc((size_t)n + 1, sizeof *f->meta_keys);
    f->meta_values = calloc((size_t)n + 1, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values)
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: metadata: out of memory", f->path);
    const cJSON *item;
    cJSON_ArrayForEach(item, meta)
    {
        if (!cJSON_IsString(item))
            return zmix_error_set(err, ZMIX_EFORMAT, "%s: __metadata__ '%s' is not a string",
                                  f->path, item->string);
        for (int i = 0; i < f->n_meta; i++)
            if (!strcmp(f->meta_keys[i], item->string))
                return zmix_error_set(err, ZMIX_EFORMAT, "%s: __metadata__ '%s' appears twice",
                                      f->path, item->string);
        f->meta_keys[f->n_meta] = strdup(item->string);
        f->meta_values[f->n_meta] = strdup(item->valuestring);
        if (!f->meta_keys[f->n_meta] || !f->meta_values[f->n_meta])
            return zmix_error_set(err, ZMIX_ENOMEM, "%s: metadata: out of memory", f->path);
        f->n_meta++;
    }
    return 0;
}

static int parse_header(zmix_st_file *f, const char *json, size_t len, zmix_error *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = (end && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
        return zmix_error_set(err, ZMIX_EFORMAT, "%s: header JSON is malformed near byte %zu",
                              f->path, at);
    }
    int rc = 0;
    for (const char *p = end; p < json + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = zmix_error_set(err, ZMIX_EFORMAT,
                                "%s: header JSON has trailing bytes after the object (byte %zu)",
                                f->path, (size_t)(p - json));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: header JSON is not an object", f->path);
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    if (!f->tensors) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: header: out of memory", f->path);
        goto done;
    }
    const cJSON *item;
    int seen_meta = 0;
    cJSON_ArrayForEach(item, root)
    {
        if (!strcmp(item->string, "__metadata__")) {
            if (seen_meta++) {
                rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: __metadata__ appears twice", f->path);
                goto done;
            }
            if ((rc = parse_metadata(f, item, err))) goto done;
            continue;
        }
        zmix_st_tensor *t = &f->tensors[f->n_tensors];
        if ((rc = parse_tensor(f, item, t, err))) goto done;
        if (!(t->name = strdup(item->string))) {
            rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: header: out of memory", f->path);
            goto done;
        }
        f->n_tensors++;
    }
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
    for (int i = 1; i < f->n_tensors; i++) {
        if (!strcmp(f->tensors[i - 1].name, f->tensors[i].name)) {
            rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: tensor '%s' appears twice in the header",
                                f->path, f->tensors[i].name);
            goto done;
        }
    }
done:
    cJSON_Delete(root);
    return rc;
}

int zmix_st_open(const char *path, zmix_st_file *out, zmix_error *err)
{
    memset(out, 0, sizeof *out);
    snprintf(out->path, sizeof out->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return zmix_error_set(err, errno == ENOENT ? ZMIX_ENOTFOUND : ZMIX_EIO,
                              "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return zmix_error_set(err, ZMIX_EIO, "%s: not a readable regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        close(fd);
        return zmix_error_set(err, ZMIX_EFORMAT,
                              "%s: file is %zu bytes, too short for the 8-byte header length", path,
                              size);
    }
    void *addr = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (addr == MAP_FAILED)
        return zmix_error_set(err, ZMIX_EIO, "%s: mmap failed: %s", path, strerror(errno));
    out->map.addr = addr;
    out->map.len = size;
    const uint8_t *bytes = addr;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | bytes[i];
    int rc;
    if (header_len > size - 8) {
        rc = zmix_error_set(err, ZMIX_EFORMAT,
                            "%s: header length %llu runs past the end of the file (%zu bytes)",
                            path, (unsigned long long)header_len, size);
    } else if (header_len < 2 || header_len > MAX_HEADER_BYTES) {
        rc = zmix_error_set(err, ZMIX_EFORMAT, "%s: header length %llu is implausible", path,
                            (unsigned long long)header_len);
    } else {
        out->data = bytes + 8 + header_len;
        out->data_len = size - 8 - (size_t)header_len;
        rc = parse_header(out, (const char *)bytes + 8, (size_t)header_len, err);
    }
    if (rc) zmix_st_close(out);
    return rc;
}

void zmix_st_close(zmix_st_file *f)
{
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) free(f->meta_keys[i]), free(f->meta_values[i]);
    free(f->meta_keys);
    free(f->meta_values);
    if (f->map.addr) munmap(f->map.addr, f->map.len);
    memset(f, 0, sizeof *f);
}

zmix_mapping zmix_st_take_mapping(zmix_st_file *f)
{
    zmix_mapping m = f->map;
    f->map.addr = NULL;
    f->map.len = 0;
    return m;
}

const zmix_st_tensor *zmix_st_find(const zmix_st_file *f, const char *name)
{
    if (f->n_tensors == 0) return NULL;
    zmix_st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof key, cmp_tensor_name);
}

const char *zmix_st_meta(const zmix_st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

int zmix_st_tensor_f32(const zmix_st_file *f, const zmix_st_tensor *t, const float **data,
                       float **copy, zmix_error *err)
{
    const uint8_t *src = f->data + t->begin;
    *copy = NULL;
    if (t->dtype == ZMIX_ST_F32 && (uintptr_t)src % sizeof(float) == 0) {
        *data = (const float *)(const void *)src;
        return 0;
    }
    float *dst = malloc(t->numel ? t->numel * sizeof *dst : 1);
    if (!dst)
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: tensor '%s': out of memory (%zu floats)",
                              f->path, t->name, t->numel);
    if (t->dtype == ZMIX_ST_F32) {
        memcpy(dst, src, t->numel * sizeof *dst);
    } else {
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t v = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            dst[i] = t->dtype == ZMIX_ST_F16 ? zmix_f16_to_f32(v) : zmix_bf16_to_f32(v);
        }
    }
    *data = dst;
    *copy = dst;
    return 0;
}

int zmix_st_tensor_half(const zmix_st_file *f, const zmix_st_tensor *t, const uint16_t **data,
                        uint16_t **copy, zmix_error *err)
{
    const uint8_t *src = f->data + t->begin;
    *copy = NULL;
    if (t->dtype == ZMIX_ST_F32)
        return zmix_error_set(err, ZMIX_EINTERNAL, "%s: tensor '%s' is F32, not 16-bit", f->path,
                              t->name);
    if ((uintptr_t)src % sizeof(uint16_t) == 0) {
        *data = (const uint16_t *)(const void *)src;
        return 0;
    }
    /* An odd offset (legal, never seen in practice): a 16-bit copy, still not widened. */
    uint16_t *dst = malloc(t->numel ? t->numel * sizeof *dst : 1);
    if (!dst)
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: tensor '%s': out of memory (%zu values)",
                              f->path, t->name, t->numel);
    memcpy(dst, src, t->numel * sizeof *dst);
    *data = dst;
    *copy = dst;
    return 0;
}

/* ---- Writer ------------------------------------------------------------------------------ */

static size_t out_numel(const zmix_st_out *t)
{
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

/* Bytes of a tensor to write, and where they are: raw as given, or data as F32. */
static size_t out_bytes(const zmix_st_out *t)
{
    return out_numel(t) * (t->raw ? zmix_st_dtype_size(t->dtype) : sizeof(float));
}

static const void *out_bytes_ptr(const zmix_st_out *t)
{
    return t->raw ? t->raw : (const void *)t->data;
}

static int cmp_out_name(const void *a, const void *b)
{
    return strcmp((*(const zmix_st_out *const *)a)->name, (*(const zmix_st_out *const *)b)->name);
}

/* Validates the tensors and returns them as a name-sorted array of pointers (malloc'ed). */
static int sorted_outputs(const zmix_st_out *tensors, int n, const zmix_st_out ***out,
                          zmix_error *err)
{
    const zmix_st_out **sorted = malloc(((size_t)n + 1) * sizeof *sorted);
    if (!sorted) return zmix_error_set(err, ZMIX_ENOMEM, "safetensors writer: out of memory");
    for (int i = 0; i < n; i++) {
        const zmix_st_out *t = &tensors[i];
        if (!t->name || !t->name[0] || !strcmp(t->name, "__metadata__") || t->ndim < 0 ||
            t->ndim > ZMIX_ST_MAX_DIMS || (!t->data && !t->raw && out_numel(t) > 0) ||
            (t->raw && !zmix_st_dtype_size(t->dtype))) {
            free(sorted);
            return zmix_error_set(err, ZMIX_EINVAL,
                                  "safetensors writer: tensor %d ('%s') is "
                                  "invalid (name, ndim or data)",
                                  i, t->name ? t->name : "");
        }
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) {
                free(sorted);
                return zmix_error_set(err, ZMIX_EINVAL,
                                      "safetensors writer: tensor '%s': negative shape", t->name);
            }
        }
        sorted[i] = t;
    }
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_out_name);
    for (int i = 1; i < n; i++) {
        if (!strcmp(sorted[i - 1]->name, sorted[i]->name)) {
            int rc = zmix_error_set(err, ZMIX_EINVAL, "safetensors writer: tensor '%s' given twice",
                                    sorted[i]->name);
            free(sorted);
            return rc;
        }
    }
    *out = sorted;
    return 0;
}

int zmix_st_data_sha256(const zmix_st_out *tensors, int n, char hex[65], zmix_error *err)
{
    const zmix_st_out **sorted;
    int rc = sorted_outputs(tensors, n, &sorted, err);
    if (rc) return rc;
    zmix_sha256 s;
    uint8_t digest[ZMIX_SHA256_BYTES];
    zmix_sha256_init(&s);
    for (int i = 0; i < n; i++)
        zmix_sha256_update(&s, out_bytes_ptr(sorted[i]), out_bytes(sorted[i]));
    zmix_sha256_final(&s, digest);
    zmix_sha256_hex(digest, hex);
    free(sorted);
    return 0;
}

static char *build_header(const zmix_st_out **sorted, int n, const char *const *meta_keys,
                          const char *const *meta_values, int n_meta)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; meta && i < n_meta; i++)
            if (!cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i])) meta = NULL;
        if (!meta) goto fail;
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        const zmix_st_out *t = sorted[i];
        size_t bytes = out_bytes(t);
        cJSON *entry = cJSON_AddObjectToObject(root, t->name);
        if (!entry || !cJSON_AddStringToObject(entry, "dtype",
                                               zmix_st_dtype_name(t->raw ? t->dtype : ZMIX_ST_F32)))
            goto fail;
        cJSON *shape = cJSON_AddArrayToObject(entry, "shape");
        cJSON *offsets = cJSON_AddArrayToObject(entry, "data_offsets");
        if (!shape || !offsets) goto fail;
        for (int d = 0; d < t->ndim; d++) {
            cJSON *v = cJSON_CreateNumber((double)t->shape[d]);
            if (!v || !cJSON_AddItemToArray(shape, v)) goto fail;
        }
        cJSON *b = cJSON_CreateNumber((double)offset),
              *e = cJSON_CreateNumber((double)(offset + bytes));
        if (!b || !cJSON_AddItemToArray(offsets, b) || !e || !cJSON_AddItemToArray(offsets, e))
            goto fail;
        offset += bytes;
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
fail:
    cJSON_Delete(root);
    return NULL;
}

int zmix_st_write(const char *path, const zmix_st_out *tensors, int n, const char *const *meta_keys,
                  const char *const *meta_values, int n_meta, zmix_error *err)
{
    /* 0644: model files (experts, demo weights) are shared, not secrets. */
    return zmix_st_write_mode(path, tensors, n, meta_keys, meta_values, n_meta, 0644, err);
}

int zmix_st_write_mode(const char *path, const zmix_st_out *tensors, int n,
                       const char *const *meta_keys, const char *const *meta_values, int n_meta,
                       unsigned mode, zmix_error *err)
{
    for (int i = 0; i < n_meta; i++)
        if (!meta_keys[i] || !meta_values[i])
            return zmix_error_set(err, ZMIX_EINVAL, "%s: metadata pair %d is NULL", path, i);
    const zmix_st_out **sorted;
    int rc = sorted_outputs(tensors, n, &sorted, err);
    if (rc) return zmix_error_prefix(err, "%s", path);
    char *header = build_header(sorted, n, meta_keys, meta_values, n_meta);
    if (!header) {
        free(sorted);
        return zmix_error_set(err, ZMIX_ENOMEM, "%s: header: out of memory", path);
    }
    /* Pad with spaces so that the data area starts 8-byte aligned: F32 tensors can then be
     * used in place from a mapping. */
    size_t len = strlen(header), padded = (len + 7) & ~(size_t)7;
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";

    fs_piece *pieces = malloc(((size_t)n + 3) * sizeof *pieces);
    if (!pieces) {
        rc = zmix_error_set(err, ZMIX_ENOMEM, "%s: out of memory", path);
    } else {
        pieces[0] = (fs_piece){prefix, 8};
        pieces[1] = (fs_piece){header, len};
        pieces[2] = (fs_piece){spaces, padded - len};
        for (int i = 0; i < n; i++)
            pieces[3 + i] = (fs_piece){out_bytes_ptr(sorted[i]), out_bytes(sorted[i])};
        fs_write_opts opts = {.mode = mode};
        rc = fs_write_atomic(path, pieces, n + 3, &opts, err);
        free(pieces);
    }
    free(header);
    free(sorted);
    return rc;
}
