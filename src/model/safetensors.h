/*
 * safetensors files: a reader that maps the file read-only and validates its header, and an
 * atomic writer (temporary file, fsync, rename, fsync of the directory).
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON, then the data area. The JSON
 * maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to
 * the data area) plus an optional "__metadata__" object of string values. zmix reads and
 * writes F32, F16 and BF16 tensors.
 */
#ifndef ZMIX_MODEL_SAFETENSORS_H
#define ZMIX_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model_internal.h"
#include "zmix/common.h"

#define ZMIX_ST_MAX_DIMS 8

typedef enum zmix_st_dtype { ZMIX_ST_F32 = 0, ZMIX_ST_F16, ZMIX_ST_BF16 } zmix_st_dtype;

typedef struct zmix_st_tensor {
    char *name;
    zmix_st_dtype dtype;
    int ndim;
    int64_t shape[ZMIX_ST_MAX_DIMS];
    size_t numel;
    size_t begin, end; /* byte range within the data area */
} zmix_st_tensor;

typedef struct zmix_st_file {
    char path[1024];
    zmix_mapping map;        /* the whole file, read-only */
    const uint8_t *data;     /* start of the data area, inside map */
    size_t data_len;         /* bytes from data to the end of the file */
    zmix_st_tensor *tensors; /* sorted by name */
    int n_tensors;
    char **meta_keys, **meta_values;
    int n_meta;
} zmix_st_file;

/* Maps and validates path. On failure nothing is left open and err names the file. */
int zmix_st_open(const char *path, zmix_st_file *out, zmix_error *err);
/* Releases everything, including the mapping unless it was taken by zmix_st_take_mapping. */
void zmix_st_close(zmix_st_file *f);
/* Hands the mapping over to the caller (who must munmap it); pointers into it stay valid. */
zmix_mapping zmix_st_take_mapping(zmix_st_file *f);

/* Tensor by name (NULL when absent), metadata value by key (NULL when absent). */
const zmix_st_tensor *zmix_st_find(const zmix_st_file *f, const char *name);
const char *zmix_st_meta(const zmix_st_file *f, const char *key);
const char *zmix_st_dtype_name(zmix_st_dtype dtype);

/* Float32 view of a tensor. An F32 tensor whose data is 4-byte aligned is returned in place
 * (*copy = NULL); anything else is converted into a malloc'ed block returned both as *data
 * and *copy, which the caller owns. */
int zmix_st_tensor_f32(const zmix_st_file *f, const zmix_st_tensor *t, const float **data,
                       float **copy, zmix_error *err);

/* The raw values of an F16 or BF16 tensor, in place when 2-byte aligned (*copy = NULL), else
 * copied (still 16-bit) into a malloc'ed block returned as *data and *copy. */
int zmix_st_tensor_half(const zmix_st_file *f, const zmix_st_tensor *t, const uint16_t **data,
                        uint16_t **copy, zmix_error *err);

/* Conversions, exposed for tests. Exact: every F16 and BF16 value is representable in F32. */
float zmix_f16_to_f32(uint16_t h);
float zmix_bf16_to_f32(uint16_t b);
/* Rounding to the nearest, ties to even; values beyond the range become infinities, NaN stays
 * NaN. f32_to_f16(f16_to_f32(h)) == h for every non-NaN h, and likewise for BF16. */
uint16_t zmix_f32_to_bf16(float f);
uint16_t zmix_f32_to_f16(float f);
/* Bytes per element of a dtype (4 or 2). */
size_t zmix_st_dtype_size(zmix_st_dtype dtype);

/* A tensor to write, row-major: F32 from data, or, when raw is set, numel elements of dtype
 * already encoded (little-endian), written as they are (a tensor copied from another file,
 * or converted with zmix_f32_to_bf16 / zmix_f32_to_f16). */
typedef struct zmix_st_out {
    const char *name;
    int ndim;
    int64_t shape[ZMIX_ST_MAX_DIMS];
    const float *data;   /* product of shape floats; unused when raw is set */
    zmix_st_dtype dtype; /* of raw */
    const void *raw;
} zmix_st_out;

/* Writes tensors (sorted by name in the file, packed back to back after a header padded to a
 * multiple of 8 bytes) and the metadata pairs to path through fs_write_atomic (util/file.h),
 * mode 0644, so that a reader sees the old file or the new, never half. */
int zmix_st_write(const char *path, const zmix_st_out *tensors, int n, const char *const *meta_keys,
                  const char *const *meta_values, int n_meta, zmix_error *err);
/* The same with the new file's permission bits (before the umask): a cache the daemon keeps
 * private (0600) or shares with a group (0640). */
int zmix_st_write_mode(const char *path, const zmix_st_out *tensors, int n,
                       const char *const *meta_keys, const char *const *meta_values, int n_meta,
                       unsigned mode, zmix_error *err);

/* SHA-256 (hex) of the data area zmix_st_write would produce for tensors: lets a writer put a
 * checksum of the data into the metadata, which a reader checks against f->data. */
int zmix_st_data_sha256(const zmix_st_out *tensors, int n, char hex[65], zmix_error *err);

#endif
