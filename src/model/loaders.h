/*
 * Internal entry points of the model loaders (model.c dispatches, hf_loader.c and
 * llama2c_loader.c fill a zero-initialised zmix_model, json_config.c reads config.json).
 * On failure a loader may leave the model partly filled; the caller frees it with
 * zmix_model_free, which releases only what was registered with it.
 */
#ifndef ZMIX_MODEL_LOADERS_H
#define ZMIX_MODEL_LOADERS_H

#include <stddef.h>

#include "model_internal.h"

/* Sanity limits on configuration values: far above any real model, low enough that every
 * tensor size computed from them fits comfortably in 64 bits. */
#define ZMIX_MAX_DIM     (1 << 20) /* dim, hidden_dim, head_dim */
#define ZMIX_MAX_LAYERS  4096
#define ZMIX_MAX_HEADS   4096
#define ZMIX_MAX_VOCAB   (1 << 24)
#define ZMIX_MAX_SEQ_LEN (1 << 24)

/* Whether path is a directory (a Hugging Face model) or a regular file (llama2.c); anything
 * else, or nothing, is an error naming the path. */
int zmix_model_path_kind(const char *path, int *is_dir, zmix_error *err);
int zmix_hf_load(const char *dir, struct zmix_model *model, zmix_error *err);
int zmix_llama2c_load(const char *path, struct zmix_model *model, zmix_error *err);
/* What loading would give, without reading a tensor: the config, the dtype the matrices are
 * stored in, and the bytes the weights will occupy (mapped or copied). Every check the loader
 * makes without the data (config, tensor names and shapes, file sizes) is made. */
int zmix_hf_probe(const char *dir, zmix_model_config *cfg, zmix_dtype *dtype, size_t *bytes,
                  zmix_error *err);
int zmix_llama2c_probe(const char *path, zmix_model_config *cfg, size_t *bytes,
                       zmix_error *err);

struct cJSON;
/* Parses a whole JSON file of at most max_bytes whose top level must be an object; *out is
 * freed with cJSON_Delete. */
int zmix_json_load_file(const char *path, size_t max_bytes, struct cJSON **out, zmix_error *err);
/* The same for JSON text already in memory (len bytes); path names it in messages. */
int zmix_json_parse_object(const char *text, size_t len, const char *path, struct cJSON **out,
                           zmix_error *err);

/* Reads a Hugging Face config.json into cfg (then checked with zmix_model_config_check). */
int zmix_hf_config_load(const char *path, zmix_model_config *cfg, zmix_error *err);

/* Checks every value of cfg for sense; where names the source ("dir/config.json"). */
int zmix_model_config_check(const zmix_model_config *cfg, const char *where, zmix_error *err);

/* Registers a read-only file mapping to be unmapped with the model. On failure (ENOMEM) the
 * mapping is unmapped at once. */
int zmix_model_own_mapping(struct zmix_model *model, zmix_mapping map);

/* ENUMERIC naming file, tensor and element when any of the n floats is NaN or Inf. */
int zmix_check_finite(const float *p, size_t n, const char *file, const char *tensor,
                      zmix_error *err);

#endif
